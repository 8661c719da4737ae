"""The information-flow checker finds nothing in honest runs and each planted violation.

A clean run is taken once, then copies of its history are corrupted the way a broken router
or node would have behaved; each corruption must be named by the right rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from i24net.sim import (
    Accept,
    Deliver,
    History,
    Send,
    Simulation,
    check_flow,
    flow_report,
)
from i24net.sim.history import DirectoryInstalled, Event


@pytest.fixture(scope="module")
def clean() -> tuple[History, dict[str, str]]:
    sim = Simulation.from_preset("demo", seed=21)
    ids = {}
    ids["eu"] = sim.send(1.0, "NCB-FR", ["@EU"], kind="diffusion", label="CONFIDENTIAL//EU",
                         handling=["H2"], subject="EU diffusion")
    ids["za"] = sim.send(2.0, "NCB-US", ["NCB-ZA"], label="OFFICIAL-USE", subject="to ZA")
    ids["fwd"] = sim.forward(5.0, "NCB-DE", ids["eu"], ["NCB-FR"], subject="within audience")
    ids["br"] = sim.send(6.0, "NCB-BR", ["NCB-US"], label="RESTRICTED", subject="from BR")
    sim.revoke(20.0, "NCB-BR")
    h = sim.run(until=300)
    assert check_flow(h) == []
    return h, {k: v.msg_id or "" for k, v in ids.items()}


def corrupt(h: History, edit: Callable[[list[Event]], list[Event]]) -> History:
    return dataclasses.replace(h, events=edit(list(h.events)))


def rules(h: History) -> list[str]:
    return sorted({v.rule for v in check_flow(h)})


def first(events: list[Event], cls: type, **match: str) -> int:
    return next(i for i, e in enumerate(events) if isinstance(e, cls)
                and all(getattr(e, k) == v for k, v in match.items()))


def test_a_delivery_to_an_unaddressed_agency(clean: tuple[History, dict[str, str]]) -> None:
    h, ids = clean

    def edit(ev: list[Event]) -> list[Event]:
        i = first(ev, Deliver, msg_id=ids["za"])
        return [*ev, dataclasses.replace(ev[i], recipient="NCB-JP", t=ev[i].t + 0.001)]
    bad = corrupt(h, edit)
    assert "unaddressed" in rules(bad) and "not-accepted" in rules(bad)
    assert any("NCB-JP" in str(v) and "not among its signed recipients" in str(v)
               for v in check_flow(bad))


def test_a_recipient_below_the_label(clean: tuple[History, dict[str, str]]) -> None:
    h, ids = clean

    def edit(ev: list[Event]) -> list[Event]:  # the router let NCB-ZA into an EU diffusion
        i = first(ev, Send, msg_id=ids["eu"])
        ev[i] = dataclasses.replace(ev[i], recipients=(*ev[i].recipients, "NCB-ZA"))
        j = first(ev, Accept, msg_id=ids["eu"])
        ev[j] = dataclasses.replace(ev[j], recipients=(*ev[j].recipients, "NCB-ZA"))
        d = first(ev, Deliver, msg_id=ids["eu"])
        return [*ev, dataclasses.replace(ev[d], recipient="NCB-ZA", t=ev[-1].t)]
    assert "clearance" in rules(corrupt(h, edit))


def test_h2_data_passed_on_without_a_release(clean: tuple[History, dict[str, str]]) -> None:
    h, ids = clean

    def edit(ev: list[Event]) -> list[Event]:  # the forward reached NCB-US too
        i = first(ev, Send, msg_id=ids["fwd"])
        ev[i] = dataclasses.replace(ev[i], recipients=("NCB-FR", "NCB-US"))
        j = first(ev, Accept, msg_id=ids["fwd"])
        ev[j] = dataclasses.replace(ev[j], recipients=("NCB-FR", "NCB-US"))
        d = first(ev, Deliver, msg_id=ids["fwd"])
        return [*ev, dataclasses.replace(ev[d], recipient="NCB-US", t=ev[-1].t)]
    found = rules(corrupt(h, edit))
    assert "h2-without-release" in found and "clearance" in found  # US lacks the EU caveat


def test_downgraded_or_stripped_onward_message(clean: tuple[History, dict[str, str]]) -> None:
    h, ids = clean

    def edit(ev: list[Event]) -> list[Event]:
        i = first(ev, Send, msg_id=ids["fwd"])
        ev[i] = dataclasses.replace(ev[i], label="RESTRICTED", handling=())
        return ev
    assert {"label-downgrade", "handling-dropped"} <= set(rules(corrupt(h, edit)))


def test_a_revoked_sender_accepted_after_the_revocation(
        clean: tuple[History, dict[str, str]]) -> None:
    h, ids = clean

    def edit(ev: list[Event]) -> list[Event]:
        i = first(ev, Accept, msg_id=ids["br"])
        j = first(ev, DirectoryInstalled, who="router", serial=2)
        return [*ev, dataclasses.replace(ev[i], t=ev[j].t + 1.0)]  # accepted again, late
    found = check_flow(corrupt(h, edit))
    assert [v.rule for v in found] == ["revoked-sender"]
    assert "revokes" in found[0].text


def test_a_stale_key_accepted(clean: tuple[History, dict[str, str]]) -> None:
    h, ids = clean

    def edit(ev: list[Event]) -> list[Event]:
        i = first(ev, Send, msg_id=ids["za"])
        ev[i] = dataclasses.replace(ev[i], key_id="00" * 8)
        return ev
    assert rules(corrupt(h, edit)) == ["stale-key"]


def test_a_message_lost_or_delivered_twice(clean: tuple[History, dict[str, str]]) -> None:
    h, ids = clean
    d = first(h.events, Deliver, msg_id=ids["za"])
    lost = corrupt(h, lambda ev: [e for e in ev if e is not ev[d]])
    [v] = check_flow(lost)
    assert v.rule == "lost" and v.agency == "NCB-ZA" and "never reached NCB-ZA" in v.text
    twice = corrupt(h, lambda ev: [*ev, dataclasses.replace(ev[d], t=ev[-1].t)])
    assert rules(twice) == ["duplicate-delivery"]


def test_a_message_nobody_sent(clean: tuple[History, dict[str, str]]) -> None:
    h, ids = clean
    d = first(h.events, Deliver, msg_id=ids["za"])
    ghost = corrupt(h, lambda ev: [*ev, dataclasses.replace(ev[d], msg_id="ab" * 16)])
    assert rules(ghost) == ["unknown-message"]


def test_the_report_and_its_json(clean: tuple[History, dict[str, str]]) -> None:
    h, _ = clean
    rep = flow_report(h)
    assert rep.ok and rep.checked["deliveries"] == h.delivered()
    assert rep.to_json()["ok"] is True
    loaded = History.from_json(h.to_json())
    with pytest.raises(ValueError, match="directory versions"):
        check_flow(loaded)
    assert check_flow(loaded, directories=h.directories) == []
