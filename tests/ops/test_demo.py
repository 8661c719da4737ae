"""The demo storyline, headless, on the embedded broker: every step must do its part."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker


def test_headless_demo_plays_the_whole_storyline(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    home = tmp_path / "home"
    demo = subprocess.Popen([sys.executable, "-m", "i24net", "demo", "--headless", "--home",
                             str(home), "--json", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = demo.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        demo.terminate()  # SIGTERM: the demo stops the network it started (a SIGKILL would not)
        stdout, stderr = demo.communicate(timeout=60)
        pytest.fail("the demo took more than 240 s:\n" + stdout[-3000:] + stderr[-3000:])
    assert demo.returncode == 0, stdout[-3000:] + stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["ok"] and all(s["state"] == "ok" for s in summary["steps"])
    assert summary["refused"] == {"agreement.level": 1, "clearance.recipient": 1,
                                  "handling.h2-release": 1}
    assert summary["notice_refused"] == {"article3.political": 1}
    assert summary["dropped"] == {"sig.unknown-key": 1}
    # notice to 7 holders + decision, diffusion to 3, FLASH to 4, Article 3 request and
    # its decision, the notice request itself, 3 catch-up messages, cancel request and
    # the cancellation to 7 holders
    assert summary["delivered"] == 8 + 3 + 4 + 2 + 1 + 3 + 1 + 7
    assert summary["latency_p50_ms"] is not None
    # Teardown left nothing running from this home.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(home) not in ps


def test_tour_needs_no_network(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "i24net", "demo", "--tour", "--home",
                          str(tmp_path / "h")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "NCB-US: refused (not-recipient)" in run.stdout
