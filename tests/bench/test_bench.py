"""``i24net bench --quick`` as a smoke test: it runs, and the JSON holds every figure.

No thresholds: CI machines are shared and noisy. The full run (``make bench``) is where
the figures are judged against their goals.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from i24net.bench.pipeline import REQUIRED_KEYS, percentile

# one worker runs the measure tests in turn (make test: --dist loadgroup)
pytestmark = [pytest.mark.broker, pytest.mark.xdist_group("measure")]


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


@pytest.mark.timeout(300)
def test_scale_bench_compares_two_router_shards_with_one(tmp_path: Path) -> None:
    """``i24net bench --scale --quick``: both layouts run both ways, every message is
    counted, and each shard accepted a share of the senders' messages."""
    out = tmp_path / "scale.json"
    done = subprocess.run([sys.executable, "-m", "i24net", "bench", "--scale", "--quick",
                           "--engine", _engine(), "--nodes", "3", "--messages", "60",
                           "--json", str(out)], capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout + done.stderr
    r = json.loads(out.read_text())
    for part in ("pipeline", "routers_only"):
        summary = r[part]
        assert summary["rate_1_router"] > 0 and summary["rate_2_routers"] > 0
        assert summary["ratio"] == pytest.approx(
            summary["rate_2_routers"] / summary["rate_1_router"], rel=0.02)
        assert [rd["routers"] for rd in summary["rounds"]] == [1, 2]
        assert all(rd["messages"] == 60 for rd in summary["rounds"])
    one, two = r["pipeline"]["rounds"]
    assert one["accepted"] == {"shard-1": 60}
    # Each shard accepts its own senders' messages (shard_of): LEA-0003 falls on shard 1,
    # LEA-0001 and LEA-0002 on shard 2, so neither may be idle; the shares add up to all.
    assert set(two["accepted"]) == {"shard-1", "shard-2"}, two["accepted"]
    assert all(share > 0 for share in two["accepted"].values()), two["accepted"]
    assert sum(two["accepted"].values()) == 60
    assert set(two["router_cpu_s"]) == {"router-1", "router-2"}


def test_the_crypto_floor_adds_up_the_work_of_one_message() -> None:
    from i24net.bench.pipeline import FLOOR_OPS, crypto_floor

    floor = crypto_floor(runs=2, body_bytes=1024)
    counts, per_op = floor["crypto_floor_counts"], floor["crypto_floor_ops_us"]
    assert counts == {"sign": 4, "verify": 6, "aead_body": 2, "aead_wrap": 2, "blake2b": 6}
    assert set(per_op) == {name for name, _, _ in FLOOR_OPS}
    assert all(us > 0 for us in per_op.values())
    assert per_op["verify"] > per_op["aead_wrap"]  # an Ed25519 verify is the costly part
    assert floor["crypto_floor_ms"] == pytest.approx(
        sum(per_op[name] * counts[name] for name in counts) / 1000)


def test_timed_crypto_counts_every_libsodium_call_of_a_simulation_and_restores_them() -> None:
    import nacl.bindings as sodium

    from i24net.bench.pipeline import sim_rate, timed_crypto

    original = sodium.crypto_sign
    with timed_crypto() as clock:
        sodium.crypto_sign(b"m", sodium.crypto_sign_seed_keypair(b"\x02" * 32)[1])
    assert clock.calls == 2 and clock.ns > 0
    assert sodium.crypto_sign is original
    r = sim_rate(40, None)
    assert r["delivered"] == 40
    # each message: signed and verified at least at the sender, router and recipient
    assert r["crypto_calls_per_msg"] >= 6
    assert 0 < r["crypto_share"] < 1
    assert r["crypto_ms_per_msg"] + r["ours_ms_per_msg"] == pytest.approx(r["ms_per_msg"])
