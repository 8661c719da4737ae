"""Under ``CI=true`` a missing external program is an error, never a skip.

Each test runs pytest in a child process on a throwaway directory holding a copy of
``tests/conftest.py``, a sample test file and an empty ``pytest.ini``, with ``PATH`` set to
a directory of stand-in programs (empty scripts named ``mosquitto``, ``nats-server``, ...):
removing one of them from that directory is how a machine without it is simulated.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")
PROGRAMS = ("mosquitto", "mosquitto_pub", "mosquitto_sub", "nats-server", "chromium")
PASSING = "def test_ok():\n    pass\n"


def run_pytest(tmp_path: Path, *, ci: str | None, programs: tuple[str, ...] = PROGRAMS,
               tests: str = PASSING, chromium_at: str | None = None) -> tuple[int, str]:
    """Run pytest on ``tests`` with only ``programs`` on PATH; (exit code, output)."""
    work = tmp_path / "run"
    bin_dir = tmp_path / "bin"
    work.mkdir(parents=True)
    bin_dir.mkdir()
    conftest = CONFTEST.read_text()
    if chromium_at is not None:
        default = 'CHROMIUM = "/usr/bin/chromium"'
        assert default in conftest
        conftest = conftest.replace(default, f"CHROMIUM = {chromium_at!r}")
    (work / "conftest.py").write_text(conftest)
    (work / "test_sample.py").write_text(tests)
    (work / "pytest.ini").write_text("[pytest]\n")
    for name in programs:
        stand_in = bin_dir / name
        stand_in.write_text("#!/bin/sh\nexit 0\n")
        stand_in.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PATH"] = str(bin_dir)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the conftest needs no plugin; faster
    if ci is not None:
        env["CI"] = ci
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
         str(work / "pytest.ini"), str(work)],
        cwd=work, env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("ci", ["true", "1"])
def test_ci_stops_the_session_when_mosquitto_is_not_on_path(tmp_path: Path, ci: str) -> None:
    without = tuple(p for p in PROGRAMS if not p.startswith("mosquitto"))
    code, out = run_pytest(tmp_path, ci=ci, programs=without)
    assert code == int(pytest.ExitCode.USAGE_ERROR), out
    assert "mosquitto, mosquitto_pub, mosquitto_sub: not on PATH" in out, out
    assert "apt-get install -y mosquitto mosquitto-clients" in out, out
    assert "nats-server" not in out.split("PATH=")[0], out  # only what is missing is named
    assert "1 passed" not in out  # stopped before any test ran


@pytest.mark.parametrize(("missing", "named", "install"), [
    ("nats-server", "nats-server: not on PATH", "apt-get install -y nats-server"),
    ("chromium", "chromium: not at /nonexistent/chromium nor on PATH",
     "apt-get install -y chromium"),
])
def test_ci_names_each_missing_program_and_its_package(
        tmp_path: Path, missing: str, named: str, install: str) -> None:
    code, out = run_pytest(tmp_path, ci="true", chromium_at="/nonexistent/chromium",
                           programs=tuple(p for p in PROGRAMS if p != missing))
    assert code == int(pytest.ExitCode.USAGE_ERROR), out
    assert named in out and install in out, out
    assert "'make install' (as root) installs them all" in out


def test_without_ci_nothing_is_required(tmp_path: Path) -> None:
    code, out = run_pytest(tmp_path, ci=None, programs=(), chromium_at="/nonexistent/chromium")
    assert code == 0, out
    assert "tests: 1 ran, 0 skipped" in out and "1 passed" in out, out
    code, out = run_pytest(tmp_path / "false", ci="false", programs=())
    assert code == 0, out


SKIPPING = '''\
import pytest

def test_ok():
    pass

@pytest.mark.skipif(True, reason="frobnicator is not installed (apt-get install frobnicator)")
def test_needs_a_program():
    pass

def test_needs_a_file():
    pytest.skip("/etc/frobnicator.conf not found")

def test_needs_many_files():
    pytest.skip("needs 99999 open files; the hard limit is 1024")
'''


def test_ci_turns_a_not_installed_skip_into_a_failure(tmp_path: Path) -> None:
    code, out = run_pytest(tmp_path, ci="true", tests=SKIPPING)
    assert code == int(pytest.ExitCode.TESTS_FAILED), out
    assert "a missing external dependency is an error, not a skip: frobnicator is not " \
           "installed" in out, out
    assert "error, not a skip: /etc/frobnicator.conf not found" in out, out
    assert "tests: 2 ran, 1 skipped (1 failed, 1 errored)" in out, out
    assert "skipped test_sample.py::test_needs_many_files: needs 99999 open files" in out, out


def test_without_ci_those_skips_stay_skips(tmp_path: Path) -> None:
    code, out = run_pytest(tmp_path, ci=None, tests=SKIPPING)
    assert code == 0, out
    assert "tests: 1 ran, 3 skipped" in out and "1 passed, 3 skipped" in out, out
    assert "skipped test_sample.py::" not in out  # the reasons are listed under CI only
