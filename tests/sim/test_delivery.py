"""Delivery guarantees in virtual time: nothing accepted is lost, exactly once, precedence.

Each test scripts a fault, runs, and checks both the outcome (who holds what, outbox
states) and the information-flow checker's verdict over the whole history.
"""

from __future__ import annotations

from i24net.sim import Deliver, Drop, Simulation, flow_report
from i24net.sim.history import Duplicate, Retry

from .support import assert_clean, deliveries


def test_diffusion_with_one_ncb_partitioned_is_delivered_exactly_once_after_heal(
        demo: Simulation) -> None:
    demo.partition(0.5, ["NCB-DE"])
    m = demo.send(1.0, "NCB-FR", ["@EU"], kind="diffusion", label="CONFIDENTIAL//EU",
                  handling=["H2"], subject="Convoy heading south on the A31")
    demo.heal(40.0, ["NCB-DE"])
    h = demo.run(until=300)
    got = dict(deliveries(h, m.msg_id))
    assert sorted(got) == ["EUROPOL", "GS-LYON", "NCB-DE"]  # @EU plus the GS copy
    assert got["EUROPOL"] < 2 and 40 <= got["NCB-DE"] < 41  # queued at the broker
    assert len(deliveries(h, m.msg_id)) == 3  # once each, retries notwithstanding
    assert h.where(event="retry", msg_id=m.msg_id)  # the sender did retry meanwhile
    assert demo.state(m) == "delivered"
    assert sorted(demo.holders(m)) == ["EUROPOL", "GS-LYON", "NCB-DE"]
    assert_clean(h)


def test_router_crash_and_restart_lose_nothing(demo: Simulation) -> None:
    demo.conditions.latency(20, jitter_ms=0)
    demo.conditions.router(envelope_ms=1.0, stamp_ms=1.0)  # so a backlog builds up
    sent = [demo.send(1.0 + i * 0.001, "NCB-FR", ["NCB-DE", "NCB-US"], label="RESTRICTED",
                      subject=f"liaison {i}") for i in range(15)]
    demo.crash(1.03, "router")  # mid-stream: its inbound and outbound queues are lost
    demo.restart(4.0, "router")
    h = demo.run(until=200)
    assert h.dropped_by_reason()["router:router.crash"] > 0  # inbound frames lost
    assert h.where(event="router-retry")  # accepted before the crash, repaired by retries
    assert {demo.state(s) for s in sent} == {"delivered"}
    for s in sent:
        assert sorted(r for r, _ in deliveries(h, s.msg_id)) == ["NCB-DE", "NCB-US"]
    assert_clean(h)


def test_broker_outage_loses_queues_and_in_flight_frames_but_not_messages(
        demo: Simulation) -> None:
    demo.partition(0.5, ["NCB-JP"])  # so something is queued at the broker when it dies
    before = [demo.send(1.0, "NCB-US", ["NCB-JP"], subject=f"before {i}") for i in range(3)]
    demo.crash(5.0, "broker")
    during = [demo.send(6.0, "NCB-US", ["NCB-JP", "NCB-BR"], subject=f"during {i}")
              for i in range(3)]
    demo.heal(7.0, ["NCB-JP"])
    demo.restart(20.0, "broker")
    h = demo.run(until=400)
    reasons = {e.reason for e in h.of(Drop)}
    assert {"broker.crash", "broker.down"} <= reasons
    for s in before + during:
        assert demo.state(s) == "delivered", s
        assert all(t >= 20.0 for r, t in deliveries(h, s.msg_id) if r == "NCB-JP")
    assert_clean(h)


def test_recipient_crash_then_restart_catches_up_once(demo: Simulation) -> None:
    demo.crash(0.5, "NCB-JP")
    sent = [demo.send(1.0 + i, "NCB-US", ["NCB-JP"], subject=f"update {i}") for i in range(3)]
    demo.restart(30.0, "NCB-JP")
    h = demo.run(until=300)
    for s in sent:
        assert [r for r, _ in deliveries(h, s.msg_id)] == ["NCB-JP"]
    assert len(demo.inbox("NCB-JP")) == 3
    assert_clean(h)


def test_sender_crash_mid_send_resumes_from_its_durable_outbox(demo: Simulation) -> None:
    demo.partition(0.0, ["NCB-FR"])  # its first attempts go nowhere
    m = demo.send(1.0, "NCB-FR", ["NCB-DE"], subject="persisted before sending")
    demo.crash(1.5, "NCB-FR")
    demo.heal(2.0, ["NCB-FR"])
    demo.restart(10.0, "NCB-FR")
    h = demo.run(until=200)
    assert demo.state(m) == "delivered"
    assert [r for r, _ in deliveries(h, m.msg_id)] == ["NCB-DE"]
    assert_clean(h)


def test_lossy_links_are_repaired_by_retries_and_gap_requests() -> None:
    sim = Simulation.from_preset("demo", seed=11)
    sim.conditions.latency(30, jitter_ms=20, loss=0.15)
    sent = [sim.send(1.0 + i * 0.05, a, [b], subject=f"m{i}")
            for i, (a, b) in enumerate([("NCB-FR", "NCB-DE"), ("NCB-US", "NCB-JP"),
                                        ("EUROPOL", "NCB-FR"), ("NCB-ZA", "NCB-BR")] * 5)]
    h = sim.run(until=900)
    assert h.dropped_by_reason().get("link:loss", 0) > 5
    assert {sim.state(s) for s in sent} == {"delivered"}
    assert h.delivered() == len(sent)  # exactly once each
    assert h.of(Duplicate) or h.of(Retry)
    assert_clean(h)


def test_flash_under_a_routine_flood_keeps_low_latency() -> None:
    sim = Simulation.from_preset("demo", seed=3)
    sim.conditions.latency(20, jitter_ms=0)
    sim.conditions.router(envelope_ms=2.0, stamp_ms=1.0)  # ~3 ms of router work a message
    senders = ["NCB-FR", "NCB-DE", "NCB-US", "NCB-BR", "NCB-JP", "NCB-ZA", "EUROPOL"]
    flood = [sim.send(1.0, senders[i % 7], [senders[(i + 3) % 7]], label="RESTRICTED"
                      if "ZA" not in (senders[i % 7] + senders[(i + 3) % 7]) else
                      "OFFICIAL-USE", subject=f"routine {i}") for i in range(300)]
    flash = sim.send(1.2, "EUROPOL", ["NCB-FR", "NCB-DE"], kind="alert", label="RESTRICTED",
                     precedence="FLASH", subject="Armed suspect at the border")
    h = sim.run(until=120)
    lat = h.latency_percentiles()
    assert lat["ROUTINE"]["p50"] > 300  # the backlog is real: ~1 s of router work
    flash_lat = [e.latency_ms for e in h.of(Deliver) if e.msg_id == flash.msg_id]
    assert len(flash_lat) == 2 and max(flash_lat) < 60  # 2 x 20 ms links + a few jobs
    assert {sim.state(s) for s in flood} == {"delivered"}
    assert_clean(h)


def test_undelivered_to_a_node_down_at_the_end_is_explained_not_a_violation(
        demo: Simulation) -> None:
    demo.crash(0.5, "NCB-JP")
    m = demo.send(1.0, "NCB-US", ["NCB-JP", "NCB-BR"], subject="for JP and BR")
    h = demo.run(until=100)
    rep = flow_report(h)
    assert rep.violations == []
    assert [(u.recipient, u.reason) for u in rep.undelivered] == [("NCB-JP", "unreachable")]
    assert demo.state(m) == "accepted"


def test_a_message_to_nobody_is_a_send_error_not_an_exception(demo: Simulation) -> None:
    demo.revoke(0.5, "NCB-ZA")
    s = demo.send(1.0, "NCB-US", ["@AFRICA"], subject="to the region")  # only NCB-ZA
    down = demo.send(2.0, "NCB-JP", ["NCB-US"], subject="from a crashed node")
    demo.crash(1.5, "NCB-JP")
    h = demo.run(until=10)
    assert s.error == "addressing.empty" and s.msg_id is None
    assert down.error == "node.down"
    assert [e.reason for e in h.where(event="send-error")] == ["addressing.empty",
                                                                "node.down"]


def test_a_flooding_sender_is_rate_limited_and_still_delivers_everything() -> None:
    from i24net.core.router import RateLimit

    sim = Simulation.from_preset("demo", seed=9, rate_limit=RateLimit(capacity=5,
                                                                      per_second=2))
    flood = [sim.send(1.0, "NCB-FR", ["NCB-DE"], subject=f"flood {i}") for i in range(20)]
    other = sim.send(1.0, "NCB-US", ["NCB-DE"], subject="another sender, not delayed")
    h = sim.run(until=600)
    assert h.refused_by_reason()["rate.limited"] >= 10
    assert {sim.state(s) for s in flood} == {"delivered"}
    [(_, t)] = deliveries(h, other.msg_id)
    assert t < 1.2
    assert_clean(h)
