"""Simulation: the real router and node machines on a virtual clock.

The same sans-IO ``RouterMachine`` and ``NodeMachine`` that the daemons run are driven here
by a discrete-event scheduler instead of asyncio: every envelope is really sealed, signed,
routed, stamped, verified, decrypted and receipted, but time is virtual, so an hour of
traffic between 198 (or 3,000) agencies runs in seconds to minutes and a run is exactly
reproducible from its seed. Modules: ``simulation`` (the scripting API), ``engine`` (hosts,
router, broker and links), ``network`` (conditions), ``history`` (the record),
``flowcheck`` (the information-flow checker), ``scheduler``, ``keyring``, ``stores``,
``bench`` (``python -m i24net.sim.bench``).

A tour::

    from i24net.sim import Simulation, check_flow

    sim = Simulation.from_preset("demo", seed=7)       # or from_toml(text), synthetic(3000)
    sim.conditions.latency(40, jitter_ms=10)             # every link: one-way ms
    sim.conditions.link("NCB-BR", latency_ms=300, loss=0.1)
    sim.conditions.group("@EU", jitter_ms=30)
    sim.conditions.filter(precedence="FLASH", delay_ms=50)        # label-aware
    sim.conditions.filter(addressing="@EU", drop=1.0, at=100, until=160)
    sim.conditions.router(envelope_ms=0.2, stamp_ms=0.1)          # router service time

    m = sim.send(1.0, "NCB-FR", ["@EU"], kind="diffusion", label="CONFIDENTIAL",
                 precedence="FLASH", subject="Convoy", text="...", handling=["H2"])
    r = sim.notice_request(2.0, "NCB-FR", colour="RED", subject="John DOE",
                           offence="homicide", warrant="FR-2026-0417")
    sim.cancel_notice(600.0, "NCB-FR", r)
    sim.forward(5.0, "NCB-DE", m, ["NCB-US"], release=True)       # H2: source's release

    sim.partition(2.0, ["NCB-DE"]);  sim.heal(30.0, ["NCB-DE"])
    sim.crash(5.0, "router");        sim.restart(8.0, "router")  # or "broker", a node id
    sim.compromise(10.0, "NCB-BR");  sim.forge(12.0, "NCB-BR", ["NCB-US"], subject="...")
    sim.revoke(60.0, "NCB-BR")       # or rotate(60.0, "NCB-BR")
    sim.skew(0.0, "NCB-JP", +120)    # seconds

    history = sim.run(until=3600.0)  # virtual seconds; call again to continue
    print(history.summary())         # delivered, refused / dropped by reason, latency...
    assert check_flow(history) == []  # the information-flow checker
    open("run.json", "w").write(history.dumps())  # byte-identical for the same seed

Conventions: every ``at`` is in virtual seconds since the start (virtual time 0 is
2026-01-01T00:00Z on the machines' clocks, ``start_ms`` to change it); agency arguments take
ids or ``@GROUP``s; bad arguments raise at once (``ValueError`` or an ``I24Error``), while
what fails in virtual time (a node that is down, a message nobody can receive) is recorded
in the history and on the returned ``Sent`` handle. ``Sent.msg_id`` (hex) is known once the
send has happened; pass a ``Sent`` wherever a message is referred to.

What the model covers (see ``engine`` and ``network`` for the details): FIFO links with
latency, jitter and loss per agency or group; label-aware filters that peek at clear headers
(never bodies); partitions, with frames for an offline client queued at the broker like
MQTT QoS 1 persistent sessions; broker crashes that lose those queues and everything in
flight; router and node crashes that lose the machine but keep its store; a router with a
service time per job, the daemons' precedence ordering and the router machine's own
per-sender rate limit (``Simulation(..., rate_limit=...)``); per-component clock skew;
directory versions delivered to the router at once and to each node after its link latency
(or on reconnect); an attacker holding stolen keys. Deliberately not modelled: link
bandwidth, node CPU time, MQTT-level retransmission (the end-to-end receipts and retries of
the nodes are what recover, as in the live network).
"""

from i24net.sim.engine import BROKER, DEFAULT_START_MS, ROUTER
from i24net.sim.flowcheck import (
    FlowReport,
    Undelivered,
    Violation,
    check_flow,
    compromise_report,
    flow_report,
)
from i24net.sim.history import (
    Accept,
    Deliver,
    Delivered,
    DirectoryInstalled,
    Drop,
    Event,
    Expired,
    History,
    Inject,
    NoticeCancelled,
    NoticePublished,
    NoticeRefused,
    Purged,
    Receipt,
    Refuse,
    RefuseIn,
    Send,
    SendError,
    Withdrawn,
)
from i24net.sim.network import Conditions, Filter, LinkParams, RouterCost
from i24net.sim.simulation import Sent, Simulation

__all__ = [
    "BROKER",
    "DEFAULT_START_MS",
    "ROUTER",
    "Accept",
    "Conditions",
    "Deliver",
    "Delivered",
    "DirectoryInstalled",
    "Drop",
    "Event",
    "Expired",
    "Filter",
    "FlowReport",
    "History",
    "Inject",
    "LinkParams",
    "NoticeCancelled",
    "NoticePublished",
    "NoticeRefused",
    "Purged",
    "Receipt",
    "Refuse",
    "RefuseIn",
    "RouterCost",
    "Send",
    "SendError",
    "Sent",
    "Simulation",
    "Undelivered",
    "Violation",
    "Withdrawn",
    "check_flow",
    "compromise_report",
    "flow_report",
]
