"""What a live run fits on a machine: the size check (memory, cores, open files, measured
figures instead of a count of agencies), the outbox watch a settling run polls, and the
whole 198-agency interpol preset run live with a crashed and restarted NCB."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from i24net.config.home import Home
from i24net.config.presets import preset_toml
from i24net.exercise import livesize, livestores, loads
from i24net.exercise import model as m
from i24net.exercise.live import LiveRun
from i24net.exercise.livesize import Machine, live_size
from i24net.exercise.livestores import OutboxWatch
from i24net.ops import client
from i24net.shell.runtime import node_store_path
from i24net.store import SqliteNodeStore

from .support import EXAMPLES

ROOMY = Machine(cores=2, available_mib=8000.0, files_soft=1024, files_hard=65536)

INTERPOL_CRASH = """\
[exercise]
name = "interpol, one NCB down and back"
seed = 11
duration = 60

[network]
preset = "interpol"

[[inject]]
at = 2
action = "crash"
who = "NCB-FR"

[[inject]]
at = 4
action = "send"
name = "alert"
from = "NCB-US"
to = "@NCB"
kind = "alert"
label = "OFFICIAL-USE"
precedence = "IMMEDIATE"
subject = "Alert to every NCB"

[[inject]]
at = 10
action = "restart"
who = "NCB-FR"

[[expect]]
kind = "delivered"
message = "alert"
within = 50

[[expect]]
kind = "no-loss"
"""


def _interpol(text: str = INTERPOL_CRASH) -> m.Exercise:
    return loads(text, source="interpol.toml")


def _synthetic(n: int) -> m.Exercise:
    return loads(INTERPOL_CRASH.replace('preset = "interpol"', f"synthetic = {n}")
                 .replace("NCB-FR", "LEA-0001").replace("NCB-US", "LEA-0002")
                 .replace('"@NCB"', '"@ALL"'), source="synthetic.toml")


# -- the size check -----------------------------------------------------------------------
def test_the_interpol_preset_fits_a_machine_with_the_memory_for_it() -> None:
    size = live_size(_interpol(), machine=ROOMY)
    assert size.problem is None
    assert size.agencies == 198 and 1 <= size.hosts <= (os.cpu_count() or 1)
    # the broker, the router, the hosts and the crashed NCB on its own
    assert size.isolated == ("NCB-FR",) and size.processes == 3 + size.hosts
    assert 300 < size.estimated_mib < 600  # 385 MiB measured on 2 hosts
    assert size.start_s < 30 and size.open_files > 198 * livesize.RUNNER_AGENCY_FILES
    text = size.describe()
    assert text.startswith(f"198 agencies in {size.hosts} host process")
    assert "NCB-FR in a process of its own" in text and "MiB" in text


def test_too_little_memory_is_refused_with_what_it_needs_and_what_to_do() -> None:
    small = dataclasses.replace(ROOMY, available_mib=300.0)
    problem = live_size(_interpol(), machine=small).problem
    assert problem is not None and problem.startswith("interpol.toml: network: 198 agencies")
    assert "MiB" in problem and "240 MiB this machine can spare" in problem
    assert "free memory" in problem and "--virtual" in problem
    assert live_size(_interpol(), machine=dataclasses.replace(ROOMY, available_mib=600.0)
                     ).problem is None


def test_a_network_too_large_to_start_before_the_ready_timeout_is_refused() -> None:
    one_core = dataclasses.replace(ROOMY, cores=1, available_mib=10**6, files_hard=10**6)
    problem = live_size(_synthetic(3000), machine=one_core).problem
    assert problem is not None and "to start on 1 core(s)" in problem
    assert "the supervisor waits at most 60 s" in problem and "more cores" in problem


def test_open_files_beyond_the_hard_limit_are_refused_the_soft_limit_is_not() -> None:
    size = live_size(_interpol(), machine=dataclasses.replace(ROOMY, files_hard=512))
    assert size.problem is not None and "open files" in size.problem
    assert "ulimit -Hn" in size.problem
    # a soft limit below the need is the runner's to raise (allow_open_files)
    assert live_size(_interpol(), machine=dataclasses.replace(ROOMY, files_soft=256)
                     ).problem is None


def test_allow_open_files_raises_the_soft_limit_within_the_hard_one() -> None:
    code = ("import resource\n"
            "from i24net.exercise.livesize import allow_open_files\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
            "allow_open_files(1000)\n"
            "raised = resource.getrlimit(resource.RLIMIT_NOFILE)[0]\n"
            "allow_open_files(300)\n"
            "print(raised, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    raised, after, hard = (int(x) for x in out)
    assert raised == min(1000, hard) and after == raised  # never lowered


def test_validate_live_states_the_layout_and_its_cost() -> None:
    done = subprocess.run([sys.executable, "-m", "i24net", "exercise", "validate", "--live",
                           str(EXAMPLES / "interpol_broadcast.toml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "runnable live: 198 agencies in " in done.stdout
    assert " host process" in done.stdout and "MiB" in done.stdout


def test_a_run_that_does_not_fit_starts_nothing(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Machine, "here",
                        classmethod(lambda cls: dataclasses.replace(ROOMY, available_mib=100)))
    with pytest.raises(m.NotSupportedLive, match="more than the 80 MiB"):
        LiveRun(_interpol(), workdir=tmp_path).run()
    assert list(tmp_path.iterdir()) == []


# -- the outbox watch ---------------------------------------------------------------------
def test_the_outbox_watch_reads_a_store_again_only_once_it_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Home(tmp_path / "home")
    home.init(preset_toml("demo"))
    watch = OutboxWatch(home, home.directory().agencies)
    assert watch.pending() == [] and watch.reads == 0  # no store yet: nothing to read
    header = client.send(home, "NCB-FR", ["NCB-DE"], subject="watched")  # no node: queued
    assert [e.msg_id for e in watch.pending()] == [header.id]
    # just written: read again even though the files look the same (coarse file times)
    reads = watch.reads
    watch.pending()
    assert watch.reads == reads + 1
    monkeypatch.setattr(livestores, "RECENT_S", 0.0)
    reads = watch.reads
    assert [e.msg_id for e in watch.pending()] == [header.id] and watch.reads == reads
    with SqliteNodeStore(node_store_path(home, "NCB-FR")) as store:
        entry = store.outbox_get(header.id)
        assert entry is not None
        store.outbox_put(dataclasses.replace(entry, state="delivered"))
    assert watch.pending() == [] and watch.reads == reads + 1


# -- the whole interpol preset, live ----------------------------------------------------------
@pytest.mark.broker
@pytest.mark.timeout(150)
def test_the_interpol_preset_runs_live_with_an_ncb_crashed_in_its_own_process(
        tmp_path: Path) -> None:
    run = LiveRun(_interpol(), workdir=tmp_path)
    result = run.run()
    assert result.passed, [(o.description, o.detail) for o in result.outcomes]
    history = result.extra["history"]
    assert history["ok"] and history["deliveries"] >= 195  # every other NCB, NCB-FR late
    alert = next(x for x in result.obs.messages if x.name == "alert")
    assert len(alert.delivered) == 195 and alert.delivered["NCB-FR"] >= 9.5  # after restart
    crash = next(i for i in result.obs.injects if i.action == "crash")
    assert crash.ok, crash
    time = result.extra["time"]
    assert time["startup_s"] < 30, time  # the supervisor's ready timeout is 60 s
    assert {"broker", "router", "NCB-FR"} <= set(time["ready_s"])
    assert time["planned_s"] == 60 and time["ended_s"] <= time["elapsed_s"]
    size = result.extra["size"]
    assert size["estimate"]["isolated"] == ["NCB-FR"]
    measured = size["measured"]
    assert measured["processes"]["NCB-FR"]["agencies"] == 1  # the restarted process
    assert sum(p["agencies"] for p in measured["processes"].values()) == 198
    # The processes the run started, against their estimate: the runner here is the test
    # session, whose peak holds every test before this one.
    started = sum(p["peak_mib"] for name, p in measured["processes"].items()
                  if name != "runner")
    runner_part = livesize.RUNNER_MIB + 198 * livesize.RUNNER_AGENCY_MIB
    assert started < 1.5 * (size["estimate"]["estimated_mib"] - runner_part), size
    # a quiet settle reads few stores: far fewer than one per agency and look
    assert run.outboxes.reads < 198 * run.outboxes.looks / 2, (run.outboxes.reads,
                                                               run.outboxes.looks)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps
    assert not list(tmp_path.glob("i24-exercise-*"))
