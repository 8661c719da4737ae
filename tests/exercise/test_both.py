"""``exercise run --both``: one file, virtual then live, verdicts compared; ``validate
--live`` says whether a file can run live here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .support import EXAMPLES

SMALL = """\
[exercise]
name = "both ways"
seed = 2
duration = 12

[network]
preset = "demo"

[[inject]]
at = 2
action = "send"
name = "hello"
from = "NCB-FR"
to = ["NCB-DE", "EUROPOL"]
label = "RESTRICTED"

[[inject]]
at = 3
action = "send"
name = "uncleared"
from = "NCB-US"
to = ["NCB-ZA"]
label = "CONFIDENTIAL"

[[expect]]
kind = "delivered"
message = "hello"
within = 15

[[expect]]
kind = "refused"
message = "uncleared"
reason = "clearance.recipient"

[[expect]]
kind = "no-loss"
"""


def i24net(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "i24net", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_both_modes_agree_on_a_small_drill(tmp_path: Path) -> None:
    f = tmp_path / "both.toml"
    f.write_text(SMALL)
    out = tmp_path / "both.json"
    run = i24net("exercise", "run", "--both", "-q", str(f), "--json", str(out),
                 "--workdir", str(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "virtual met, live met" in run.stdout and "DIFFERS" not in run.stdout
    data = json.loads(out.read_text())
    assert data["same"] is True
    rows = [r for r in data["comparison"] if r["kind"] != "history"]
    assert [r["kind"] for r in rows] == ["delivered", "refused", "no-loss"]
    assert all(r["virtual"] is True and r["live"] is True for r in rows)
    assert data["live"]["settle"]["pending"] == 0
    assert list(tmp_path.glob("i24-exercise-*")) == []  # the live home is gone


def test_validate_live_refuses_what_cannot_run_live_with_the_reason(tmp_path: Path) -> None:
    ok = i24net("exercise", "validate", "--live", str(EXAMPLES / "live_smoke.toml"))
    assert ok.returncode == 0 and "runnable live" in ok.stdout
    skewed = tmp_path / "skewed.toml"
    skewed.write_text((EXAMPLES / "stolen_key.toml").read_text().replace(
        'action = "rotate"\nagency = "NCB-JP"', 'action = "skew"\nagency = "NCB-JP"\nseconds = 600'))
    bad = i24net("exercise", "validate", "--live", str(skewed))
    assert bad.returncode == 2
    assert "not runnable live" in bad.stderr and "skew: a live run has one clock" in bad.stderr
    big = i24net("exercise", "validate", "--live", str(EXAMPLES / "interpol_broadcast.toml"))
    assert big.returncode == 0, big.stderr
    assert "runnable live: 198 agencies in" in big.stdout and "MiB" in big.stdout
