"""A live run keeps to the plan's clock: a repeating send plays its copies on its own, so
a crash and a restart planned between its copies are played on time, and the run reports
how late each action was played."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from i24net.exercise import load
from i24net.exercise.live import LATE_TOLERANCE_S, run_live
from i24net.exercise.observe import FLOOD

pytestmark = pytest.mark.broker

CLOCK = """\
[exercise]
name = "clock"
seed = 5
mode = "live"
duration = 40

[network]
preset = "demo"

[[inject]]
at = 1
action = "send"
name = "beat"
from = "NCB-DE"
to = ["NCB-FR"]
label = "RESTRICTED"
repeat = 8
every = 2

[[inject]]
at = 3
action = "crash"
who = "NCB-JP"

[[inject]]
at = 8
action = "restart"
who = "NCB-JP"

[[expect]]
kind = "delivered"
message = "beat"
within = 30
"""


def test_crash_and_restart_beside_a_repeating_send_play_on_time(tmp_path: Path) -> None:
    path = tmp_path / "clock.toml"
    path.write_text(CLOCK)
    result = run_live(load(path), workdir=tmp_path)
    played = {i.index: i for i in result.obs.injects}
    assert sorted(played) == [1, 2, 3] and all(i.ok for i in played.values()), played
    for index, at in ((1, 1.0), (2, 3.0), (3, 8.0)):
        assert at <= played[index].t <= at + LATE_TOLERANCE_S, (index, played[index])
    copies = sorted(x.sent for x in result.obs.messages if x.origin == FLOOD)
    assert len(copies) == 8, copies
    for n, sent in enumerate(copies):  # the store's creation time of each copy
        assert abs(sent - (1 + 2 * n)) <= LATE_TOLERANCE_S, (n, copies)
    late = result.extra["lateness"]
    assert late["tolerance_s"] == LATE_TOLERANCE_S and late["late"] == []
    assert 0 <= late["worst_s"] <= LATE_TOLERANCE_S and late["played"] == 10
    assert "played up to" in played[1].detail and "s late" in played[2].detail
    assert result.passed, [o for o in result.outcomes if not o.passed]
    # torn down
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps
    assert not list(tmp_path.glob("i24-exercise-*"))
