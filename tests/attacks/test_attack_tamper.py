"""Drill: tampering in transit. Someone between the sender and the router (a compromised
broker, a man in the middle without TLS) or between the router and a node edits a valid
envelope: a header field, a key wrap, the encrypted body, the signature.

The signature covers the header bytes, every wrap and the ciphertext (docs/protocol.md 13.2),
and the router checks it before anything else: every edit is ``sig.invalid`` (or a parse failure,
dropped). A node re-verifies even what the router stamped. Every single-field edit of the
header and every bit flip are already covered at the envelope level
(tests/core/test_envelope.py); here the edits travel through the router and the nodes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from attackkit import (
    Wraps,
    at_node,
    at_router,
    flip,
    kinds,
    legit_message_flows,
    rogue_delivery,
    split,
    tamper,
)
from netfixtures import HOUR, Net, build, parsed

from i24net.core import frames as fr
from i24net.core.wire import pack


def original() -> bytes:
    return build("NCB-FR", ["@EU"], lab="CONFIDENTIAL//EU")  # to EUROPOL and NCB-DE


def swap_wraps(w: Wraps) -> Wraps:
    return [[w[0][0], w[1][1], w[1][2]], [w[1][0], w[0][1], w[0][2]]]


TAMPERINGS: dict[str, Callable[[bytes], bytes]] = {
    "header.level": lambda r: tamper(r, header={"level": "UNCLASSIFIED", "caveats": []}),
    "header.prec": lambda r: tamper(r, header={"prec": "FLASH"}),
    "header.expires": lambda r: tamper(r, header={"expires": split(r)[0]["expires"] + HOUR}),
    "header.created": lambda r: tamper(r, header={"created": split(r)[0]["created"] - 1}),
    "header.kind": lambda r: tamper(r, header={"kind": "alert"}),
    "header.handling": lambda r: tamper(r, header={"handling": ["H0"]}),
    "header.ref": lambda r: tamper(r, header={"ref": bytes(16)}),
    "header.dir": lambda r: tamper(r, header={"dir": 2}),
    "wraps.byte": lambda r: tamper(r, wraps=lambda w: [[*w[0][:2], flip(w[0][2], 5)], w[1]]),
    "wraps.prekey": lambda r: tamper(r, wraps=lambda w: [[w[0][0], flip(w[0][1]), w[0][2]],
                                                         w[1]]),
    "wraps.swapped": lambda r: tamper(r, wraps=swap_wraps),
    "body.byte": lambda r: tamper(r, ciphertext=lambda c: flip(c, len(c) // 2)),
    "body.tag": lambda r: tamper(r, ciphertext=lambda c: flip(c, len(c) - 1, 0x80)),
    "body.truncated": lambda r: tamper(r, ciphertext=lambda c: c[:-1]),
    "signature.bit": lambda r: tamper(r, signature=lambda s: flip(s, 63, 0x40)),
    "signature.zero": lambda r: tamper(r, signature=lambda s: bytes(64)),
}


def test_surgery_without_changes_is_the_identity() -> None:
    raw = original()
    assert tamper(raw) == raw


@pytest.mark.parametrize("how", sorted(TAMPERINGS))
def test_tampered_envelope_is_refused_by_the_router(how: str) -> None:
    net = Net()
    bad = TAMPERINGS[how](original())
    assert bad != original()
    assert kinds(at_router(net, "NCB-FR", bad)) == [("refuse", "sig.invalid")]
    assert net.router.counters == {"refuse.sig.invalid": 1}
    net.pump()
    assert net.inbox("NCB-DE") == net.inbox("EUROPOL") == set()
    legit_message_flows(net)


@pytest.mark.parametrize("how", sorted(TAMPERINGS))
def test_tampered_envelope_is_dropped_by_a_node_despite_a_router_stamp(how: str) -> None:
    net = Net()
    bad = TAMPERINGS[how](original())
    assert kinds(at_node(net, "NCB-DE", rogue_delivery(net, bad, "NCB-DE"))) == [
        ("drop", "sig.invalid")]
    assert net.nodes["NCB-DE"].counters == {"drop.sig.invalid": 1}
    assert net.inbox("NCB-DE") == set()
    assert net.nodes["NCB-DE"].pending() == 0  # no receipt for what it could not verify
    legit_message_flows(net)


@pytest.mark.parametrize(("how", "reason"), [
    ("wrap removed", "wire.wraps"),       # the wraps no longer match the header's `to`
    ("wrap renamed", "wire.wraps"),
    ("wrap duplicated", "wire.schema"),
])
def test_structural_edits_do_not_even_parse(how: str, reason: str) -> None:
    raw = original()
    edit = {
        "wrap removed": lambda w: w[:1],
        "wrap renamed": lambda w: [["NCB-US", *w[0][1:]], w[1]],
        "wrap duplicated": lambda w: [w[0], w[0], w[1]],
    }[how]
    net = Net()
    bad = tamper(raw, wraps=edit)
    assert kinds(at_router(net, "NCB-FR", bad)) == [("drop", reason)]
    assert net.router.counters == {f"drop.{reason}": 1}
    # nothing in it is trusted, not even its id: the sender's account is told about the
    # bytes (their digest), under no message id
    ((topic, frame, _),) = net.router.pop(net.now)
    rep = fr.verify_report(fr.parse_frame(frame), net.directory)
    assert topic.endswith("/inbox/NCB-FR") and rep.reason == reason
    assert rep.msg_id == fr.NO_MESSAGE_ID and rep.digest == hashlib.sha256(bad).digest()
    legit_message_flows(net)


def test_tampered_stamp_or_swapped_envelope_in_a_delivery() -> None:
    net = Net()
    raw = original()
    net.router.handle(f"{net.directory.prefix}/submit/NCB-FR", raw, net.now)
    frames = [p for t, p, _ in net.router.pop(net.now) if t.endswith("/inbox/NCB-DE")]
    (delivery,) = [p for p in frames if fr.peek_magic(p) == fr.DELIVERY]
    f = fr.parse_frame(delivery)
    other = build("NCB-FR", ["NCB-DE"])
    stamp_edit = pack([f.magic, fr.FRAME_VERSION, f.doc.replace(b"NCB-DE", b"NCB-US"), f.signature, f.extra])
    envelope_swap = pack([f.magic, fr.FRAME_VERSION, f.doc, f.signature, other])
    assert kinds(at_node(net, "NCB-DE", stamp_edit)) == [("drop", "sig.invalid")]
    assert kinds(at_node(net, "NCB-DE", envelope_swap)) == [("drop", "stamp.digest")]
    assert net.nodes["NCB-DE"].counters == {"drop.sig.invalid": 1, "drop.stamp.digest": 1}
    assert kinds(at_node(net, "NCB-DE", delivery)) == [("received", "")]  # the genuine one
    assert net.inbox("NCB-DE") == {parsed(raw).header.id}
    net.wire.clear()
    net.pump()
    legit_message_flows(net)
