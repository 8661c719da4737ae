"""Shared test configuration: Hypothesis profiles, and what CI demands of the machine.

``default`` keeps the whole suite fast on two cores; ``thorough`` (set
``HYPOTHESIS_PROFILE=thorough``) runs ten times the examples for a deeper search before a
release. Deadlines are off: crypto timings vary on loaded CI machines and a deadline failure
would say nothing about correctness.

With ``CI=true`` (or ``CI=1``) a missing external program is an error, never a skip: the
session stops before collecting anything if ``mosquitto``, ``mosquitto_pub``/``mosquitto_sub``
or ``nats-server`` is not on ``PATH`` or Chromium is not at ``/usr/bin/chromium`` (nor
``chromium`` on ``PATH``), naming what is missing and the package that provides it; and any
test that still skips because something is "not installed" or "not found" is reported as a
failure. Every run ends with a ``tests: N ran, M skipped`` line; under CI the skip reasons
follow it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Generator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Where tests/exercise/test_exercise_report.py runs the headless browser.
CHROMIUM = "/usr/bin/chromium"
# A skip reason that means "this machine lacks a program", which CI must not accept.
MISSING = re.compile(r"not installed|not found", re.IGNORECASE)
# What pytest.exit returns when CI finds a program missing (pytest's own code for a bad setup).
MISSING_EXIT = int(pytest.ExitCode.USAGE_ERROR)


def in_ci() -> bool:
    """True when the ``CI`` environment variable is ``true`` or ``1``."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def missing_programs() -> list[str]:
    """One line per external program the tests need and this machine lacks: what, where it
    was looked for, and the command that installs it. ``PATH`` only, on purpose: CI must
    find the programs the way the code under test does."""
    missing: list[str] = []
    mosquitto = [p for p in ("mosquitto", "mosquitto_pub", "mosquitto_sub") if not shutil.which(p)]
    if mosquitto:
        missing.append(f"{', '.join(mosquitto)}: not on PATH "
                       "(install: apt-get install -y mosquitto mosquitto-clients)")
    if not shutil.which("nats-server"):
        missing.append("nats-server: not on PATH (install: apt-get install -y nats-server)")
    if not os.access(CHROMIUM, os.X_OK) and not shutil.which("chromium"):
        missing.append(f"chromium: not at {CHROMIUM} nor on PATH "
                       "(install: apt-get install -y chromium)")
    return missing


def pytest_sessionstart(session: pytest.Session) -> None:
    if not in_ci():
        return
    missing = missing_programs()
    if missing:
        lines = "\n".join(f"  - {line}" for line in missing)
        pytest.exit(
            "CI=true: a missing external dependency is an error, not a skip. Missing:\n"
            f"{lines}\n  PATH={os.environ.get('PATH', '')}\n"
            "  'make install' (as root) installs them all.",
            returncode=MISSING_EXIT,
        )


# The groups that run in turn on one worker each (``xdist_group``), longest first. They are
# collected ahead of everything else, so under ``--dist loadgroup`` each starts at once on a
# worker of its own while the other workers share the rest, instead of starting last and
# running alone at the end.
LONG_GROUPS = ("soak", "nats", "measure")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        marker = item.get_closest_marker("xdist_group")
        name = marker.args[0] if marker is not None and marker.args else \
            (marker.kwargs.get("name") if marker is not None else None)
        return LONG_GROUPS.index(name) if name in LONG_GROUPS else len(LONG_GROUPS)

    items.sort(key=rank)  # stable: the order within each group, and of the rest, stays


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr: Any = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if MISSING.search(reason):
            report.outcome = "failed"
            report.longrepr = (f"CI=true: a missing external dependency is an error, not a "
                               f"skip: {reason}")
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    stats = terminalreporter.stats

    def nodeids(*categories: str) -> set[str]:
        return {r.nodeid for c in categories for r in stats.get(c, ())}

    ran = nodeids("passed", "failed", "xfailed", "xpassed")
    skipped = list(stats.get("skipped", ()))
    errors = nodeids("error") - ran  # setup and collection errors: nothing of the test ran
    line = f"tests: {len(ran)} ran, {len(skipped)} skipped"
    failed = nodeids("failed")
    if failed or errors:
        line += f" ({len(failed)} failed, {len(errors)} errored)"
    terminalreporter.write_line(line)
    if in_ci():
        for r in skipped:
            terminalreporter.write_line(f"  skipped {r.nodeid}: {_skip_reason(r)}")
