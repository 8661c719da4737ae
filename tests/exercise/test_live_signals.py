"""A live run stopped by SIGTERM or SIGHUP, or by an error, stops every process it started
and removes its temporary home before it exits non-zero."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from i24net.exercise import load
from i24net.exercise.live import LiveRun

pytestmark = pytest.mark.broker

LONG = """\
[exercise]
name = "long"
seed = 5
mode = "live"
duration = 300

[network]
preset = "demo"

[[inject]]
at = 1
action = "send"
name = "hello"
from = "NCB-DE"
to = ["NCB-FR"]

[[inject]]
at = 200
action = "send"
name = "late"
from = "NCB-FR"
to = ["NCB-DE"]

[[expect]]
kind = "delivered"
message = "late"
within = 30
"""


def _daemons_of(path: Path) -> list[str]:
    """The command lines of running processes that name ``path``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            raw = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if str(path).encode() in raw and b"i24net" in raw:
            out.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return out


def _network_up(workdir: Path) -> bool:
    """True once the run's processes are recorded and each has printed its ready line."""
    for state in workdir.glob("i24-exercise-*/home/state/processes.json"):
        try:
            procs = json.loads(state.read_text())
        except (OSError, ValueError):
            return False
        if not any(n.startswith("host-") for n in procs):
            return False
        return all(any(ln.startswith("ready ") for ln in
                       Path(p["log"]).read_text(errors="replace").splitlines())
                   for p in procs.values() if Path(p["log"]).exists())
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_the_network_and_removes_its_home(tmp_path: Path,
                                                         sig: signal.Signals) -> None:
    path = tmp_path / "long.toml"
    path.write_text(LONG)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "I24NET_HOME"}
    proc = subprocess.Popen([sys.executable, "-m", "i24net", "exercise", "run", str(path),
                             "--live", "-q", "--workdir", str(work)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not _network_up(work):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the network did not come up"
            time.sleep(0.2)
        assert _daemons_of(work)  # the run's broker, router and hosts run
        time.sleep(1.0)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        deadline = time.monotonic() + 5
        while _daemons_of(work) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _daemons_of(work)
        for home in work.glob("i24-exercise-*/home"):  # the run failed: leave nothing behind
            subprocess.run([sys.executable, "-m", "i24net", "down", "--home", str(home)],
                           capture_output=True, timeout=60)
    assert proc.returncode == 128 + sig, (proc.returncode, out, err)
    assert f"interrupted by {sig.name}" in err.decode(), err
    assert left == []
    assert list(work.iterdir()) == []  # the temporary home is gone


def test_an_error_stops_the_network_and_puts_the_handlers_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "long.toml"
    path.write_text(LONG)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}

    def boom(self: LiveRun, inj: object) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr(LiveRun, "_act", boom)
    with pytest.raises(RuntimeError, match="boom"):
        LiveRun(load(path), workdir=tmp_path).run()
    assert _daemons_of(tmp_path) == []
    assert not list(tmp_path.glob("i24-exercise-*"))
    assert {s: signal.getsignal(s) for s in before} == before
