"""Fuzz the frame parser (``frames.parse_frame``), every ``verify_*``, the peeks the daemons
use (``peek_magic``, ``peek_precedence``), and the two machines that consume frames: the
router on a submit topic and a node on its inbox must turn anything into events, never an
exception. Seeds: a delivery (stamp + envelope), a report, a receipt and a gap request.
Half the mutants get their doc re-signed with the key the verifier expects (the router's for
deliveries and reports, NCB-DE's for receipts and gap requests), so mutated docs reach the
field decoders behind the signature.
"""

from __future__ import annotations

import functools

import msgpack
import pytest
from fuzzkit import fuzz_settings, mutants
from hypothesis import given
from netfixtures import (
    ROUTER,
    T0,
    Rng,
    build,
    demo_directory,
    inbox_topic,
    keys_for,
    kid,
    parsed,
    stamp_delivery,
    submit_topic,
)

from i24net.core import frames as fr
from i24net.core import keys as k
from i24net.core.errors import I24Error
from i24net.core.node import MemoryNodeStore, NodeMachine
from i24net.core.router import MemoryRouterStore, RouterMachine
from i24net.core.wire import pack

pytestmark = pytest.mark.timeout(120)
D = demo_directory()
FUZZ = fuzz_settings(4)

SIGNERS = {fr.DELIVERY: (k.DOMAIN_STAMP, ROUTER), fr.REPORT: (fr.DOMAIN_REPORT, ROUTER),
           fr.RECEIPT: (k.DOMAIN_RECEIPT, keys_for("NCB-DE")),
           fr.GAP: (fr.DOMAIN_GAP, keys_for("NCB-DE"))}


@functools.cache
def seeds() -> tuple[bytes, ...]:
    env = build("NCB-FR", ["NCB-DE"], now=T0)
    e = parsed(env)
    return (
        stamp_delivery(env, "NCB-DE", 3),
        fr.make_report(fr.Report(e.header.id, e.digest, "NCB-FR", False, "clearance.recipient",
                                 "not cleared", (), T0, kid(ROUTER)), ROUTER),
        fr.make_receipt(fr.Receipt(e.header.id, e.digest, "NCB-FR", "NCB-DE", "delivered", "",
                                   T0), keys_for("NCB-DE")),
        fr.make_gap(fr.GapRequest("NCB-DE", 2, 9, T0), keys_for("NCB-DE")),
    )


def resign(raw: bytes) -> bytes:
    parts = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    domain, signer = SIGNERS[parts[0]]
    parts[3] = signer.sign(domain, parts[2])
    return pack(parts)


@FUZZ
@given(raw=mutants(seeds(), resign))
def test_frame_parser_and_verifiers_raise_only_i24error(raw: bytes) -> None:
    fr.peek_magic(raw)
    try:
        fr.peek_precedence(raw)
    except I24Error:
        pass
    try:
        frame = fr.parse_frame(raw)
    except I24Error:
        return
    for check in (fr.verify_delivery, fr.verify_report, fr.verify_receipt, fr.verify_gap):
        try:  # every verifier on every kind: each must refuse the others cleanly
            if check is fr.verify_delivery:
                fr.verify_delivery(frame, D, "NCB-DE")
            else:
                check(frame, D)  # type: ignore[operator]
        except I24Error:
            pass


@functools.cache
def _machines() -> tuple[RouterMachine, NodeMachine, NodeMachine]:
    return (RouterMachine(D, ROUTER, MemoryRouterStore()),
            NodeMachine("NCB-DE", keys_for("NCB-DE"), D, MemoryNodeStore(),
                        random_bytes=Rng("fuzz-de")),
            NodeMachine("NCB-FR", keys_for("NCB-FR"), D, MemoryNodeStore(),
                        random_bytes=Rng("fuzz-fr")))


@FUZZ
@given(raw=mutants(seeds(), resign))
def test_router_and_nodes_turn_any_frame_into_events(raw: bytes) -> None:
    router, de, fr_node = _machines()  # shared: state accumulates, as in a long-lived daemon
    for agency in ("NCB-DE", "NCB-FR"):
        drops = sum(v for name, v in router.counters.items() if name.startswith("drop."))
        events = router.handle(submit_topic(agency), raw, T0)
        # one event; or none for a drop beyond the audit bound, which is still counted
        assert len(events) == 1 or (not events and drops + 1 == sum(
            v for name, v in router.counters.items() if name.startswith("drop.")))
    for node in (de, fr_node):
        events = node.handle(inbox_topic(node.agency), raw, T0)
        assert events == [] or events[0].kind in ("drop", "received", "duplicate", "refused-in",
                                                  "receipt", "accepted", "refused",
                                                  "deferred", "delivered")
        node.handle_timer(T0 + 10_000)
        node.pop(limit=1000)
    router.pop(T0, limit=1000)
