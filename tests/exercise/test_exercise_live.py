"""A live exercise: real processes on the embedded broker, judged from the SQLite stores and
from the outside history, and nothing left running afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .support import EXAMPLES

pytestmark = pytest.mark.broker


def test_live_smoke_passes_on_the_embedded_broker(tmp_path: Path) -> None:
    out = tmp_path / "aar.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the runner's network home goes here
    env.pop("I24NET_HOME", None)
    res = subprocess.run([sys.executable, "-m", "i24net", "exercise", "run",
                          str(EXAMPLES / "live_smoke.toml"), "--live", "--json", str(out)],
                         capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    d = json.loads(out.read_text())
    assert d["passed"] and d["exercise"]["mode"] == "live"
    assert all(o["passed"] for o in d["expectations"])
    by_kind = {o["kind"]: o for o in d["expectations"]}
    assert "time-to-withdraw" in by_kind["cancelled-everywhere"]["detail"]
    assert d["refusals"] == {"clearance.recipient": 1}
    # the refusal's time is the router's, from its report: after the send, never 0
    assert by_kind["refused"]["passed"] and by_kind["refused"]["measured_s"] > 0
    # the outside history: every submit, every hand-over the consumers saw
    h = d["history"]
    assert h["ok"] and by_kind["history"]["passed"], h
    assert (h["submitted"], h["deliveries"], h["refused"]) == (10, 21, 1), h
    assert h["duplicated"] == h["misdelivered"] == h["lost"] == h["unexpected"] == 0
    assert d["notices"]["red1"]["holders"] == 7 and d["notices"]["red1"]["withdrawn"] == 7
    played = [t for t in d["timeline"] if t["type"] == "inject"]
    assert len(played) == 11 and not any("error" in t for t in played)
    # torn down: no process of that network home survives, and its folder is gone
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps
    assert not list(tmp_path.glob("i24-exercise-*"))
