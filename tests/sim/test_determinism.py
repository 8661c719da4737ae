"""A run is a function of (network, seed, script): same seed, same bytes; another seed,
other timings. Checked within one process and across processes whose string hashing
differs (PYTHONHASHSEED), which is what would expose an iteration over a set."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from i24net.sim import Deliver, History, Simulation

from .support import assert_clean


def scenario(seed: int) -> History:
    """A bit of everything: jitter, loss, a partition, crashes, a compromise, a notice."""
    sim = Simulation.from_preset("demo", seed=seed)
    sim.conditions.latency(30, jitter_ms=15, loss=0.05)
    sim.conditions.link("NCB-BR", latency_ms=200)
    sim.conditions.filter(precedence="FLASH", delay_ms=5, jitter_ms=5)
    sim.partition(1.0, ["NCB-DE"])
    sim.send(2.0, "NCB-FR", ["@EU"], kind="diffusion", label="CONFIDENTIAL//EU",
             precedence="FLASH", subject="EU diffusion", handling=["H2"])
    for i in range(8):
        sim.send(3.0 + i * 0.3, "NCB-US", ["NCB-JP", "NCB-BR"], subject=f"routine {i}")
    r = sim.notice_request(4.0, "NCB-FR", subject="John DOE", offence="homicide",
                           warrant="FR-2026-0417")
    sim.crash(5.0, "router")
    sim.restart(7.0, "router")
    sim.compromise(8.0, "NCB-BR")
    sim.forge(9.0, "NCB-BR", ["NCB-US"], subject="forged")
    sim.heal(20.0, ["NCB-DE"])
    sim.revoke(30.0, "NCB-BR")
    sim.cancel_notice(40.0, "NCB-FR", r)
    return sim.run(until=400)


def test_same_seed_gives_byte_identical_json() -> None:
    a, b = scenario(7), scenario(7)
    assert a.dumps() == b.dumps()
    assert len(a) > 100
    assert_clean(a)


def test_another_seed_changes_the_timings_not_the_outcome() -> None:
    a, b = scenario(7), scenario(8)
    assert a.dumps() != b.dumps()
    la = sorted(e.latency_ms for e in a.of(Deliver))
    lb = sorted(e.latency_ms for e in b.of(Deliver))
    assert la != lb
    assert a.summary()["delivered"] == b.summary()["delivered"]


_CHILD = """
import hashlib, sys
sys.path.insert(0, {tests!r})
from sim.test_determinism import scenario
print(hashlib.sha256(scenario(7).dumps().encode()).hexdigest())
"""


def test_identical_across_processes_with_different_string_hashing() -> None:
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", _CHILD.format(tests=tests)], env=env,
                             capture_output=True, text=True, timeout=120, check=True)
        digests.add(out.stdout.strip())
    assert digests == {hashlib.sha256(scenario(7).dumps().encode()).hexdigest()}


def test_history_json_round_trips() -> None:
    h = scenario(3)
    data = json.loads(h.dumps())
    assert list(data) == ["meta", "directory_versions", "events"]
    assert data["meta"]["seed"] == 3 and data["meta"]["network"] == "demo"
    assert [v["reason"] for v in data["directory_versions"]] == ["initial", "revoke NCB-BR"]
    first = data["events"][0]
    assert list(first)[:2] == ["event", "t"]
    again = History.from_json(data)
    assert again.dumps() == h.dumps()
    assert again.summary() == h.summary()
