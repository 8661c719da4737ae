"""Drill: malformed, truncated, oversized and deeply nested msgpack on every topic the router
and the nodes consume: ``submit/<AGENCY>`` (envelopes, receipts, gap requests),
``inbox/<AGENCY>`` (deliveries, reports, forwarded receipts) and ``directory`` (the signed
directory, read by the daemons through ``directory.load``).

Each hostile frame is dropped with a ``wire.*`` reason (docs/protocol.md 1.3 and 11: explicit
size and depth
limits, a typed error, counted), nothing but a refusal report is published in answer, and a
legitimate message goes through afterwards. The strict decoder itself is
tested in tests/core/test_wire.py; here every consumer is fed. The router answers what arrives
on an agency's submit topic with a signed report under no message id (the sender is known
from the topic), and records the first drops of each source one by one, the rest in a
summary (``router.AuditBound``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
from attackkit import counted, legit_message_flows
from netfixtures import AUTHORITY_SEED, T0, Net, build, keys_for, stamp_delivery

from i24net.core import frames as fr
from i24net.core.directory import MAX_DIRECTORY, load
from i24net.core.errors import I24Error
from i24net.core.keys import AgencyKeys
from i24net.core.wire import MAX_ENVELOPE, pack

ANCHOR = AgencyKeys("authority", AUTHORITY_SEED, bytes(32)).verify_key
DEEP = 10_000  # nesting far beyond the limit of 8: would blow a recursive decoder's stack


@functools.cache
def specimens() -> dict[str, tuple[str, str, bytes]]:
    """name -> (topic kind, agency, valid bytes) for every frame kind on every topic."""
    env = build("NCB-FR", ["NCB-DE"], now=T0)
    from netfixtures import parsed
    e = parsed(env)
    receipt = fr.make_receipt(fr.Receipt(e.header.id, e.digest, "NCB-FR", "NCB-DE",
                                         "delivered", "", T0), keys_for("NCB-DE"))
    report = fr.make_report(fr.Report(e.header.id, e.digest, "NCB-FR", True, "ok", "", (),
                                      T0, b"\x00" * 8), keys_for("i24-router"))
    return {
        "envelope": ("submit", "NCB-FR", env),
        "receipt": ("submit", "NCB-DE", receipt),
        "gap": ("submit", "NCB-DE", fr.make_gap(fr.GapRequest("NCB-DE", 1, 3, T0),
                                                 keys_for("NCB-DE"))),
        "delivery": ("inbox", "NCB-DE", stamp_delivery(env, "NCB-DE", 1)),
        "report": ("inbox", "NCB-FR", report),
        "forwarded-receipt": ("inbox", "NCB-FR", receipt),
    }


def prefix_of(raw: bytes) -> bytes:
    """The first bytes every consumer peeks at: fixarray + fixstr magic (+ version)."""
    return raw[:7]


def malformed(raw: bytes) -> list[bytes]:
    head = prefix_of(raw)
    return [
        head + b"\xc1" + raw[8:],                  # a marker msgpack never uses
        head + b"\xa3abc" + raw[8:],               # text where bin is required
        head[:6] + b"\xc3" + raw[7:],              # version true
        head[:6] + b"\xcb\x3f\xf0" + bytes(6) + raw[7:],  # version 1.0
        head + b"\xd4\x01\x00" + raw[8:],          # an extension type
        head + b"\x81\x01\x02" + raw[8:],          # a map with an integer key
        raw[:1] + b"\xa4" + b"i24x" + raw[6:],     # unknown magic
        raw + b"\x00",                             # trailing byte
        b"\x85" + raw[1:],                         # a map where the array was
        head + b"\xa4\xff\xfe\xfd\xfc" + raw[8:],  # invalid UTF-8
    ]


def truncated(raw: bytes) -> list[bytes]:
    return [raw[:n] for n in range(len(raw))]


def oversized(raw: bytes) -> list[bytes]:
    head = prefix_of(raw)
    return [
        head + b"\xc6" + (3 << 20).to_bytes(4, "big") + bytes(3 << 20),  # 3 MiB frame
        head + b"\xc6\xff\xff\xff\xff",            # a bin claiming 4 GiB
        head + b"\xdb\xff\xff\xff\xff",            # a text claiming 4 GiB
        head + b"\xdd\xff\xff\xff\xff",            # an array claiming 4 billion items
        head + b"\xdf\xff\xff\xff\xff",            # a map claiming 4 billion pairs
        # a doc / signed part that is itself over its own limit
        pack([raw[2:6].decode(), 1, bytes(MAX_ENVELOPE), bytes(64)]),
    ]


def deep(raw: bytes) -> list[bytes]:
    head = prefix_of(raw)
    nested_doc = pack([raw[2:6].decode(), 1, b"\x91" * DEEP + b"\xc0", bytes(64)])
    return [
        head + b"\x91" * DEEP + b"\xc0",
        head + b"\x81\xa1k" * DEEP + b"\xc0",
        nested_doc,                                # deep inside the signed bytes
        pack([raw[2:6].decode(), 1, pack([[[[[[[[[[1]]]]]]]]]]), bytes(64)]),  # depth 10
    ]


FAMILIES: dict[str, Callable[[bytes], list[bytes]]] = {
    "malformed": malformed, "truncated": truncated, "oversized": oversized, "deep": deep,
}


def feed(net: Net, where: str, agency: str, payload: bytes) -> list[tuple[str, str]]:
    if where == "submit":
        events = net.router.handle(f"{net.directory.prefix}/submit/{agency}", payload, net.now)
    else:
        events = net.nodes[agency].handle(f"{net.directory.prefix}/inbox/{agency}", payload,
                                          net.now)
    return [(e.kind, e.reason) for e in events]


def router_accounts_for(net: Net, agency: str, n: int, recorded: int) -> None:
    """After ``n`` hostile submissions from ``agency``, ``recorded`` of them recorded one by one:
    the router's summary accounts for the rest, and each recorded one was answered to the
    sender with a signed report under no message id (the bytes do not decode: there is no
    id to trust), never anything else."""
    summaries = net.router.close_drop_windows(net.now)
    assert all(e.kind == "drop-summary" and e.source == agency for e in summaries)
    assert recorded + sum(e.count for e in summaries) == n
    assert all(r.startswith("wire.") for e in summaries for r, _ in e.reasons)
    answers = net.router.pop(net.now, limit=10_000)
    assert len(answers) == recorded
    for topic, frame, _ in answers:
        rep = fr.verify_report(fr.parse_frame(frame), net.directory)
        assert topic == f"{net.directory.prefix}/inbox/{agency}"
        assert rep.msg_id == fr.NO_MESSAGE_ID and not rep.accepted
        assert rep.reason.startswith("wire.") and rep.sender == agency


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("specimen", sorted(specimens()))
def test_hostile_msgpack_is_dropped_on_every_consumed_topic(specimen: str,
                                                            family: str) -> None:
    where, agency, raw = specimens()[specimen]
    net = Net()
    # the specimen itself is well-formed (a report or receipt for nothing may be dropped,
    # but not for its encoding)
    assert not any(r.startswith("wire.") for _, r in feed(Net(), where, agency, raw))
    payloads = FAMILIES[family](raw)
    recorded = 0
    for payload in payloads:
        events = feed(net, where, agency, payload)
        if where == "submit" and not events:
            continue  # over the audit bound: counted, summed up when the window closes
        assert len(events) == 1 and events[0][0] == "drop", (payload[:40], events)
        assert events[0][1].startswith("wire."), (payload[:40], events)
        recorded += 1
    machine = net.router if where == "submit" else net.nodes[agency]
    assert counted(machine.counters, "drop.wire.") == len(payloads)
    if where == "submit":
        router_accounts_for(net, agency, len(payloads), recorded)
    assert net.router.pop(net.now) == []
    assert all(n.pending() == 0 for n in net.nodes.values())
    legit_message_flows(net)


def signed_doc(doc: bytes) -> bytes:
    """``doc`` signed by the genuine authority: hostile content past the signature check."""
    from i24net.core import keys as k
    return pack([doc, k.sign(AUTHORITY_SEED, k.DOMAIN_DIRECTORY, doc)])


def hostile_directories(signed: bytes) -> dict[str, list[bytes]]:
    doc, sig = signed[4:-66], signed[-64:]
    assert signed_doc(doc) == signed
    return {
        "malformed": [
            b"\x92\xc1" + signed[2:], b"\x92\xa3abc\xc4\x40" + sig, b"\x82" + signed[1:],
            signed + b"\x00", pack([doc, sig, b""]), b"\x92\xd4\x01\x00" + signed[4:],
            signed_doc(doc[:-1] + b"\xc1"),              # signed, but not msgpack inside
            signed_doc(pack({1: 2})),                     # signed, a map with an int key
            signed_doc(pack({"v": 1})),                   # signed, missing every field
        ],
        "truncated": [signed[:n] for n in range(0, len(signed), 3)] + [
            signed_doc(doc[:n]) for n in range(1, len(doc), 97)],
        "oversized": [
            b"\x92\xc6" + (MAX_DIRECTORY + 1).to_bytes(4, "big") + bytes(MAX_DIRECTORY + 1)
            + b"\xc4\x40" + bytes(64),
            b"\x92\xc6\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff",
            signed_doc(pack({"v": 1, "network": "x" * 70_000})),  # a text over its limit
            signed_doc(pack({"v": 1, "agencies": [0] * 5000})),    # over 4,096 items
        ],
        "deep": [
            b"\x91" * DEEP + b"\xc0",
            signed_doc(b"\x91" * DEEP + b"\xc0"),
            signed_doc(pack({"v": [[[[[[[[[1]]]]]]]]]})),  # depth 10 inside a signed doc
        ],
    }


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hostile_directory_files_are_refused_with_a_typed_error(family: str) -> None:
    signed = Net().directory.sign(AUTHORITY_SEED)
    for payload in hostile_directories(signed)[family]:
        with pytest.raises(I24Error) as info:
            load(payload, ANCHOR)
        assert info.value.reason.startswith(("wire.", "sig.")), (payload[:40], info.value)
    assert load(signed, ANCHOR).serial == 1
