"""Security properties over whole runs: stolen keys, revocation, rotation, clearance,
handling codes, clock skew and label-aware filters."""

from __future__ import annotations

import pytest

from i24net.sim import Accept, Refuse, RefuseIn, Simulation, compromise_report, flow_report

from .support import assert_clean, deliveries


def test_stolen_key_accepted_until_revocation_then_refused_everywhere(
        demo: Simulation) -> None:
    demo.compromise(1.0, "NCB-BR")
    forged = [demo.forge(2.0 + 5 * i, "NCB-BR", ["NCB-US"], label="RESTRICTED",
                         subject=f"release the suspect {i}") for i in range(12)]
    demo.revoke(30.0, "NCB-BR")
    h = demo.run(until=200)
    ids = {f.msg_id for f in forged}
    accepted = [e for e in h.of(Accept) if e.msg_id in ids]
    refused = [e for e in h.of(Refuse) if e.msg_id in ids]
    assert accepted and all(e.t < 30.0 for e in accepted)  # the exposure window
    assert refused and all(e.t >= 30.0 and e.reason == "sender.revoked" for e in refused)
    assert len(accepted) + len(refused) == 12
    assert all(t < 30.1 for f in forged for _, t in deliveries(h, f.msg_id))
    # the real NCB-BR sees reports and receipts for messages it never sent: a signal
    assert h.where(event="drop", where="NCB-BR", reason="report.unknown")
    [report] = compromise_report(h)
    assert report["accepted_after_fix"] == 0 and report["time_to_fix"] == 29.0
    assert report["accepted_before_fix"] == len(accepted)
    assert flow_report(h).violations == []


def test_rotation_shuts_out_the_stolen_key_and_the_owner_carries_on(
        demo: Simulation) -> None:
    demo.compromise(1.0, "NCB-BR")
    demo.rotate(10.0, "NCB-BR")
    before = demo.forge(5.0, "NCB-BR", ["NCB-US"], subject="forged before")
    after = demo.forge(20.0, "NCB-BR", ["NCB-US"], subject="forged after")
    legit = demo.send(20.0, "NCB-BR", ["NCB-US"], subject="the owner, new key")
    h = demo.run(until=100)
    assert [r for r, _ in deliveries(h, before.msg_id)] == ["NCB-US"]
    assert [e.reason for e in h.of(Refuse) if e.msg_id == after.msg_id] == ["sig.unknown-key"]
    assert deliveries(h, after.msg_id) == []
    assert demo.state(legit) == "delivered"
    assert h.where(event="directory", who="NCB-BR", serial=2)
    assert_clean(h)


def test_a_recipient_not_cleared_never_receives(demo: Simulation) -> None:
    m = demo.send(1.0, "NCB-US", ["NCB-ZA", "NCB-FR"], label="CONFIDENTIAL",
                  subject="Case file 2231")
    h = demo.run(until=30)
    [refusal] = h.of(Refuse)
    assert (refusal.reason, refusal.agencies) == ("clearance.recipient", ("NCB-ZA",))
    assert deliveries(h, m.msg_id) == [] and demo.state(m) == "refused"
    assert_clean(h)


def test_h2_data_goes_onward_only_with_the_sources_release(demo: Simulation) -> None:
    d = demo.send(1.0, "NCB-DE", ["@EU"], kind="diffusion", label="CONFIDENTIAL",
                  handling=["H2"], subject="Convoy")
    plain = demo.forward(5.0, "NCB-FR", d, ["NCB-US"])
    released = demo.forward(10.0, "NCB-FR", d, ["NCB-US"], release=True)
    h = demo.run(until=60)
    assert [e.reason for e in h.of(Refuse) if e.msg_id == plain.msg_id] == [
        "handling.h2-release"]
    assert [r for r, _ in deliveries(h, released.msg_id)] == ["NCB-US"]
    sent = demo.messages[released.msg_id]
    assert (sent.ref, sent.handling, sent.release_source) == (d.msg_id, ("H2",), "NCB-DE")
    assert_clean(h)


SKEWS = {"NCB-FR": -600, "NCB-DE": 600, "NCB-US": -300, "NCB-JP": 300, "NCB-BR": 0}


def test_clock_skew_of_ten_minutes_gives_no_false_refusals() -> None:
    # two nodes may be 20 minutes apart: a bound of 20 minutes covers them
    sim = Simulation.from_preset("demo", seed=5, max_skew_seconds=1200)
    for a, s in SKEWS.items():
        sim.skew(0.0, a, s)
    sim.skew(0.0, "router", 120)
    sent = [sim.send(1.0 + i * 0.5, a, [b], subject=f"{a} to {b}")
            for i, (a, b) in enumerate((a, b) for a in SKEWS for b in SKEWS if a != b)]
    h = sim.run(until=600)
    assert h.of(Refuse) == [] and h.of(RefuseIn) == []
    assert {sim.state(s) for s in sent} == {"delivered"}
    assert len(h.where(event="retry")) == 0  # no retry storm from skewed timers
    assert_clean(h)


def test_skew_beyond_the_bound_is_refused_as_time_future() -> None:
    sim = Simulation.from_preset("demo", seed=5)  # the preset's bound: 300 s
    sim.skew(0.0, "NCB-DE", 600)
    ahead = sim.send(1.0, "NCB-DE", ["NCB-FR"], subject="from the future")
    h = sim.run(until=30)
    assert [e.reason for e in h.of(Refuse) if e.msg_id == ahead.msg_id] == ["time.future"]


def test_label_aware_filters_drop_eu_traffic_and_delay_flash(demo: Simulation) -> None:
    demo.conditions.latency(20, jitter_ms=0)
    demo.conditions.filter(addressing="@EU", drop=1.0, until=60)
    demo.conditions.filter(precedence="FLASH", direction="down", delay_ms=500)
    eu = demo.send(1.0, "NCB-US", ["@EU"], label="RESTRICTED", subject="to the EU")
    other = demo.send(1.0, "NCB-US", ["NCB-JP"], label="RESTRICTED", subject="not EU")
    flash = demo.send(1.0, "NCB-US", ["NCB-JP"], precedence="FLASH", subject="flash")
    h = demo.run(until=300)
    assert h.dropped_by_reason()["link:filter:filter-1"] >= 1
    assert all(t > 60 for _, t in deliveries(h, eu.msg_id))  # after the filter lifted
    assert all(t < 1.1 for _, t in deliveries(h, other.msg_id))
    [(_, t_flash)] = deliveries(h, flash.msg_id)
    assert 1.5 < t_flash < 1.6  # 20 ms up, 500 ms held, 20 ms down
    assert_clean(h)


def test_bad_script_arguments_fail_at_once(demo: Simulation) -> None:
    with pytest.raises(ValueError, match="unknown agency"):
        demo.send(1.0, "NCB-XX", ["NCB-FR"], subject="x")
    with pytest.raises(Exception, match="unknown classification level"):
        demo.send(1.0, "NCB-FR", ["NCB-DE"], label="TOPSECRET", subject="x")
    with pytest.raises(Exception, match="precedence"):
        demo.send(1.0, "NCB-FR", ["NCB-DE"], precedence="URGENT", subject="x")
    with pytest.raises(ValueError, match="unknown group"):
        demo.partition(1.0, ["@NOWHERE"])
    demo.run(until=5)
    with pytest.raises(ValueError, match="in the past"):
        demo.crash(1.0, "router")


def test_a_router_down_during_a_revocation_installs_it_on_restart(
        demo: Simulation) -> None:
    demo.crash(5.0, "router")
    demo.revoke(10.0, "NCB-BR")
    demo.restart(15.0, "router")
    late = demo.send(20.0, "NCB-BR", ["NCB-US"], subject="after the revocation")
    h = demo.run(until=60)
    assert [(e.t, e.serial) for e in h.where(event="directory", who="router")] == [(15.0, 2)]
    assert [e.reason for e in h.of(Refuse) if e.msg_id == late.msg_id] == ["sender.revoked"]
    assert flow_report(h).violations == []
