"""History summaries and queries."""

from __future__ import annotations

import math

from i24net.sim import Deliver, Simulation
from i24net.sim.history import percentile


def test_summaries(demo: Simulation) -> None:
    demo.conditions.link("NCB-JP", loss=1.0, at=0.5)  # everything to and from JP is lost
    demo.conditions.reset_link("NCB-JP", at=50.0)
    ok = demo.send(1.0, "NCB-FR", ["NCB-DE"], precedence="FLASH", subject="a")
    demo.send(1.0, "NCB-US", ["NCB-ZA"], label="CONFIDENTIAL", subject="refused")
    demo.send(1.0, "NCB-US", ["NCB-JP"], subject="lossy")
    h = demo.run(until=200)
    s = h.summary()
    assert s["messages"] == 3 and s["accepted"] == 2 and s["delivered"] == 2
    assert s["refused"] == {"clearance.recipient": 1}
    assert s["dropped"]["link:loss"] >= 1
    assert set(s["latency_ms"]) == {"FLASH", "ROUTINE"}
    assert s["latency_ms"]["FLASH"]["n"] == 1
    assert h.per_agency()["NCB-US"] == {"sent": 2, "received": 0, "refused": 1,
                                        "dropped": 0}
    assert h.per_agency()["NCB-JP"]["dropped"] >= 1
    assert [e.event for e in h.message(ok.msg_id or "")][:2] == ["send", "accept"]
    assert h.where(event="deliver", recipient="NCB-DE")[0].msg_id == ok.msg_id
    assert h.counts()["send"] == 3
    assert len(h.of(Deliver)) == h.delivered()
    assert "0.5s link NCB-JP" in s["injects"] and "50s link-reset NCB-JP" in s["injects"]


def test_percentile_is_nearest_rank() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([1.0, 2.0], 100) == 2.0
    assert percentile([1.0, 2.0], 0) == 1.0
    assert math.isnan(percentile([], 50))


def test_progress_callback(demo: Simulation) -> None:
    seen: list[float] = []
    demo.send(1.0, "NCB-FR", ["NCB-DE"], subject="a")
    demo.send(30.0, "NCB-FR", ["NCB-DE"], subject="b")
    demo.run(until=100, progress=seen.append, step=5.0)
    assert seen and seen == sorted(seen) and seen[-1] <= 100
    assert demo.now == 100
