"""The simulator at INTERPOL scale (198 agencies) and at SIENA scale (3,000)."""

from __future__ import annotations

import random

from i24net.sim import NoticePublished, Simulation, Withdrawn

from .support import assert_clean


def test_interpol_preset_notice_diffusion_and_traffic() -> None:
    sim = Simulation.from_preset("interpol", seed=1)
    sim.conditions.latency(40, jitter_ms=20)
    pick = random.Random(1)
    ncbs = [a for a in sim.agencies if a.startswith("NCB-")]
    req = sim.notice_request(1.0, "NCB-FR", subject="John DOE", offence="homicide",
                             warrant="FR-2026-0417")
    sim.partition(2.0, ["NCB-BR", "NCB-JP"])
    eu = sim.send(3.0, "NCB-DE", ["@EU"], kind="diffusion", label="RESTRICTED//EU",
                  precedence="PRIORITY", subject="EU-wide diffusion")
    traffic = [sim.send(4.0 + i * 0.05, a, [b], label="OFFICIAL-USE", subject=f"m{i}")
               for i, (a, b) in enumerate(tuple(pick.sample(ncbs, 2)) for _ in range(60))]
    sim.heal(30.0)
    sim.cancel_notice(60.0, "NCB-FR", req)
    h = sim.run(until=400)
    [pub] = h.of(NoticePublished)
    holders = sim.messages[pub.msg_id].recipients
    assert len(holders) > 150
    assert len({e.holder for e in h.of(Withdrawn)}) == len(holders)
    assert len(sim.messages[eu.msg_id].recipients) == 28  # 26 other EU NCBs, Europol, GS
    assert sim.state(eu) == "delivered"
    assert {sim.state(s) for s in traffic} == {"delivered"}
    assert_clean(h)


def test_three_thousand_agencies() -> None:
    sim = Simulation.synthetic(3000, seed=2)
    assert len(sim.agencies) == 3000
    pick = random.Random(2)
    sent = [sim.send(1.0 + i * 0.01, a, [b], label="OFFICIAL-USE", subject=f"m{i}")
            for i, (a, b) in enumerate(tuple(pick.sample(sim.agencies, 2)) for _ in range(40))]
    team = sim.send(2.0, "EUROPOL", ["@JIT-1"], label="OFFICIAL-USE", subject="JIT")
    h = sim.run(until=60)
    assert {sim.state(s) for s in [*sent, team]} == {"delivered"}
    assert len(sim.messages[team.msg_id].recipients) == 12
    assert_clean(h)
