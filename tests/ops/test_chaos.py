"""A quick chaos soak (the CI variant of ``make chaos``): kills during traffic, then the
checker must find every message delivered exactly once; and a soak whose every message is
refused must fail."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# one worker runs the soak tests in turn (make test: --dist loadgroup)
pytestmark = [pytest.mark.broker, pytest.mark.xdist_group("soak")]


@pytest.mark.skipif(not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists(),
                    reason="mosquitto is not installed (make install installs it)")
def test_quick_chaos_soak_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    run = subprocess.run(
        [sys.executable, "-m", "i24net", "chaos", "--messages", "300", "--nodes", "5",
         "--duration", "18", "--seed", "7", "--settle", "120", "--home",
         str(tmp_path / "home"), "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    report = json.loads(out.read_text())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    for key in ("sent", "accepted", "delivered", "lost", "duplicated", "unexpected",
                "misdelivered", "refused", "expired", "pending", "failed", "kills"):
        assert isinstance(report[key], int), key
    assert report["ok"] is True and report["failures"] == []
    assert report["sent"] == 300 and report["kills"] > 0
    assert report["delivered"] == report["accepted"] == 300
    assert report["lost"] == report["duplicated"] == report["unexpected"] == 0
    assert report["refused"] == report["expired"] == report["pending"] == 0


@pytest.mark.skipif(not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists(),
                    reason="mosquitto is not installed (make install installs it)")
def test_a_run_whose_router_refuses_everything_fails(tmp_path: Path) -> None:
    """Nothing lost, nothing duplicated, and still a failure: every message was refused
    (the agencies are cleared below the label the soak sends)."""
    import re

    from i24net.config.presets import synthetic_toml

    spec = tmp_path / "network.toml"
    spec.write_text(re.sub(r'clearance = "[A-Z-]+"', 'clearance = "OFFICIAL-USE"',
                           synthetic_toml(5, seed=1)))
    out = tmp_path / "chaos.json"
    run = subprocess.run(
        [sys.executable, "-m", "i24net", "chaos", "--messages", "40", "--network", str(spec),
         "--label", "RESTRICTED", "--duration", "8", "--settle", "60", "--home",
         str(tmp_path / "home"), "--json", str(out), "--history",
         str(tmp_path / "history.jsonl")],
        capture_output=True, text=True, timeout=240)
    assert run.returncode == 3, run.stdout[-3000:] + run.stderr[-2000:]
    assert "FAILED: refused (unexpected): 40 message(s)" in run.stdout, run.stdout[-3000:]
    report = json.loads(out.read_text())
    assert report["sent"] == report["refused"] == report["refused_unexpected"] == 40
    assert report["accepted"] == report["delivered"] == report["lost"] == 0
    assert report["ok"] is False
    assert report["failed_reasons"] == {"clearance.sender": 40}
    again = subprocess.run([sys.executable, "-m", "i24net", "check",
                            str(tmp_path / "history.jsonl")], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 3 and "refused (unexpected)" in again.stdout
    allowed = subprocess.run([sys.executable, "-m", "i24net", "check", "--allow-refusal",
                              "clearance.sender", str(tmp_path / "history.jsonl")],
                             capture_output=True, text=True, timeout=60)
    assert allowed.returncode == 0, allowed.stdout
