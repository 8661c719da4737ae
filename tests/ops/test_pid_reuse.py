"""A pid taken again by another process is not taken for ours.

The supervisor knows its processes by pid *and* create time (psutil): a pid recorded in
``state/processes.json`` that now belongs to another process is not reported running, not
signalled by ``kill`` or ``down``, and a state file written before create times were
recorded is still read (its records judged by their command line, as before). The
benchmark reads CPU time and memory through psutil handles, which stop answering once
their process has exited, whoever holds the pid by then."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from i24net.config.home import Home
from i24net.ops.supervisor import Proc, Supervisor, pid_runs, start_stamp


def _argv(home: Path) -> tuple[str, ...]:
    return ("-m", "i24net", "node", "NCB-FR", "--home", str(home))


@pytest.fixture
def stranger(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line ends like an agency's own process of the home: what a
    recycled pid looks like at its worst (the same node started again by someone else)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                          *_argv(tmp_path / "home")], start_new_session=True)
    deadline = time.monotonic() + 10
    while psutil.Process(p.pid).cmdline()[-6:] != list(_argv(tmp_path / "home")):
        assert time.monotonic() < deadline, "the stand-in never exec'd"
        time.sleep(0.01)
    try:
        yield p
    finally:
        p.kill()
        p.wait(10)


def _record(home: Home, proc: Proc, *, with_created: bool = True) -> None:
    data = {"pid": proc.pid, "argv": list(proc.argv), "log": proc.log,
            "started": proc.started, "agencies": list(proc.agencies)}
    if with_created:
        data["created"], data["boot"] = proc.created, proc.boot
    home.state_dir.mkdir(parents=True, exist_ok=True)
    (home.state_dir / "processes.json").write_text(json.dumps({proc.name: data}))


def _proc(home: Path, pid: int, created: float | None, boot: float | None = None) -> Proc:
    return Proc("NCB-FR", pid, _argv(home), str(home / "logs" / "NCB-FR.log"), time.time(),
                ("NCB-FR",), created, boot if boot is not None else psutil.boot_time())


def test_supervisor_a_recycled_pid_is_not_ours(tmp_path: Path,
                                    stranger: subprocess.Popen[bytes]) -> None:
    home = Home(tmp_path / "home")
    real, boot = start_stamp(stranger.pid)
    assert real is not None and boot is not None
    # What the supervisor recorded: a process with this pid, started a minute earlier.
    ours = _proc(home.path, stranger.pid, real - 60, boot)
    assert not pid_runs(ours.pid, ours.argv, ours.created, ours.boot)
    assert not ours.alive and ours.process() is None
    _record(home, ours)
    sup = Supervisor(home)
    assert sup.load()["NCB-FR"] == ours
    assert sup.running() == {}
    assert sup.kill("NCB-FR") is False
    assert sup.down() == []
    assert stranger.poll() is None, "a process that is not ours was signalled"
    # The same pid with its own create time is ours (what spawn records), also after a
    # clock step has moved both the boot time and the create time psutil derives from it.
    assert _proc(home.path, stranger.pid, real, boot).alive
    assert _proc(home.path, stranger.pid, real + 3600, boot + 3600).alive
    assert not _proc(home.path, stranger.pid, real + 0.02, boot).alive  # two ticks later


def test_supervisor_stop_leaves_a_recycled_pid_alone(tmp_path: Path,
                                                    stranger: subprocess.Popen[bytes]) -> None:
    home = Home(tmp_path / "home")
    real, boot = start_stamp(stranger.pid)
    ours = _proc(home.path, stranger.pid, real - 60, boot)  # type: ignore[operator]
    _record(home, ours)
    Supervisor(home).stop_processes([ours], timeout=0.5)
    assert stranger.poll() is None, "a process that is not ours was signalled"
    assert not (home.state_dir / "processes.json").exists()  # forgotten all the same


def test_supervisor_old_state_file_is_judged_by_command_line(
        tmp_path: Path, stranger: subprocess.Popen[bytes]) -> None:
    home = Home(tmp_path / "home")
    _record(home, _proc(home.path, stranger.pid, None), with_created=False)
    sup = Supervisor(home)
    old = sup.load()["NCB-FR"]
    assert old.created is None and old.boot is None
    assert old.alive  # the old check: the command line matches
    assert not replace(old, argv=(*old.argv[:-1], "/elsewhere")).alive
    # down stops it, as it did before create times were recorded, and reaps nothing else
    assert sup.down() == ["NCB-FR"]
    assert stranger.wait(10) is not None


def test_supervisor_spawn_records_the_start_and_stop_reaps(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    sup = Supervisor(home, python=sys.executable)
    argv = ("-c", "import time; time.sleep(120)")
    sup.argv = lambda name, engine, agencies=(): argv  # type: ignore[method-assign]
    proc = sup.spawn("host-1", agencies=("NCB-FR",))
    try:
        assert (proc.created, proc.boot) == start_stamp(proc.pid)
        saved = json.loads(sup.state_file.read_text())["host-1"]
        assert (saved["pid"], saved["created"], saved["boot"]) == \
            (proc.pid, proc.created, proc.boot)
        assert sup.running().keys() == {"host-1"}
        sup.stop_processes([proc], timeout=5.0)
        assert not proc.alive and start_stamp(proc.pid)[0] != proc.created  # gone, reaped
        assert sup.load() == {}
    finally:
        if proc.alive:
            psutil.Process(proc.pid).kill()


def _spawn_at(pid: int, argv: list[str], tries: int = 50) -> subprocess.Popen[bytes]:
    """Start ``argv`` with the pid ``pid`` (free again): Linux hands out the pid after
    ``/proc/sys/kernel/ns_last_pid``. Skips where that file may not be written."""
    for _ in range(tries):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(pid - 1))
        except OSError as exc:
            pytest.skip(f"cannot choose the next pid here: {exc}")
        p = subprocess.Popen(argv, start_new_session=True)
        if p.pid == pid:
            return p
        p.kill()
        p.wait(10)
    pytest.skip(f"pid {pid} was taken by another process {tries} times")


def test_supervisor_a_pid_really_reused_by_the_same_command_is_not_ours(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    sup = Supervisor(home)
    argv = ("-c", "import time; time.sleep(120)", *_argv(home.path))
    sup.argv = lambda name, engine, agencies=(): argv  # type: ignore[method-assign]
    ours = sup.spawn("NCB-FR")
    # The kernel stamps a start in clock ticks (10 ms): a pid taken again within one tick
    # is beyond what a create time can tell (psutil says the same of its own check).
    time.sleep(0.05)
    assert sup.kill("NCB-FR")  # SIGKILL, and waited for: exited and reaped, its pid is free
    assert not ours.alive
    stranger = _spawn_at(ours.pid, [sys.executable, *argv])
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(stranger.pid).cmdline()[-len(argv):] != list(argv):
            assert time.monotonic() < deadline, "the stranger never exec'd"
            time.sleep(0.01)
        again = Supervisor(home)  # as a later 'i24net status' or 'down' would
        record = again.load()["NCB-FR"]
        assert record.pid == stranger.pid and record.argv == argv  # the old check: ours
        assert not record.alive and again.running() == {}
        assert again.kill("NCB-FR") is False and again.down() == []
        assert stranger.poll() is None, "a process that is not ours was signalled"
    finally:
        stranger.kill()
        stranger.wait(10)


def test_bench_readings_stop_with_their_process_whoever_takes_its_pid() -> None:
    from i24net.bench import pipeline as bench

    argv = [sys.executable, "-c", "import time; time.sleep(120)"]
    first = subprocess.Popen(argv)
    handle = bench.process(first.pid)
    assert handle is not None
    assert bench.cpu_seconds(handle) >= 0 and bench.peak_rss_mb(handle) > 0
    time.sleep(0.05)  # a later start, by more than one clock tick
    first.kill()
    first.wait(10)
    second = _spawn_at(first.pid, argv)
    try:
        assert bench.cpu_seconds(second.pid) >= 0  # the pid answers, for its new process
        assert math.isnan(bench.cpu_seconds(handle))
        assert math.isnan(bench.peak_rss_mb(handle))
    finally:
        second.kill()
        second.wait(10)
