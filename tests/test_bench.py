"""``i24net bench --quick`` as a smoke test: it runs, and the JSON holds every figure.

No thresholds: CI machines are shared and noisy. The full run (``make bench``) is where
the figures are judged against their goals (issue 7).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from i24net.bench import REQUIRED_KEYS, percentile

pytestmark = pytest.mark.broker


def _engine() -> str:
    found = shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()
    return "mosquitto" if found else "embedded"


@pytest.mark.timeout(240)
def test_quick_bench_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "i24net", "bench", "--quick",
                           "--engine", _engine(), "--json", str(out)],
                          capture_output=True, text=True, timeout=220)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    for key in REQUIRED_KEYS:
        value = results.get(key)
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value), (key, value)
    assert results["quick"] is True
    assert results["cores"] >= 1 and results["python"] and results["cpu_model"]
    assert "relay_ratio" in done.stdout  # the table
    assert (tmp_path / "results.md").read_text().count("| `") == len(REQUIRED_KEYS)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))
