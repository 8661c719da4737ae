"""What the attack drills share: envelope surgery, injection points and "still works" checks.

An attacker's frames are handed straight to the machine that consumes them, as a broker
would: ``at_router`` is a publish on ``<prefix>/submit/<AGENCY>`` (the agency whose broker
account, stolen or not, published it), ``at_node`` a publish on ``<prefix>/inbox/<AGENCY>``
(only the router account may do that, so it stands for a compromised broker or router).
``rogue_delivery`` is a delivery stamped with the genuine router key over an envelope the
router would have refused: a mistaken or compromised router, which nodes must not trust.

Every drill ends with ``legit_message_flows``: a legitimate message submitted after the
attack is delivered exactly once and receipted, so the machines kept working.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgpack
from netfixtures import (
    ROUTER,
    Net,
    inbox_topic,
    kid,
    stamp_delivery,
    submit_topic,
)

from i24net.core import keys as k
from i24net.core.directory import Directory
from i24net.core.envelope import Envelope, decrypt_body, unwrap
from i24net.core.node import NodeEvent
from i24net.core.router import RouterEvent
from i24net.core.wire import pack

Header = dict[str, Any]
Wraps = list[list[Any]]


# -- envelope surgery (no re-signing: the attacker has no key) -------------------------------

def split(raw: bytes) -> tuple[Header, Wraps, bytes, bytes]:
    """(header map, wraps, ciphertext, signature) of an envelope, decoded without checks;
    ``join`` takes the sending key and commitment from ``raw`` (``like``)."""
    magic, version, signed, sig = msgpack.unpackb(raw, raw=False)
    assert (magic, version) == ("i24e", 2)
    header_bytes, _, _, wraps, ciphertext = msgpack.unpackb(signed, raw=False)
    return msgpack.unpackb(header_bytes, raw=False), wraps, ciphertext, sig


def join(header: Header, wraps: Wraps, ciphertext: bytes, sig: bytes, *, like: bytes) -> bytes:
    """The envelope bytes for these parts, with the sending key and commitment of ``like``,
    canonical (``Envelope.parse`` accepts them)."""
    _, _, signed, _ = msgpack.unpackb(like, raw=False)
    _, epk, commit, _, _ = msgpack.unpackb(signed, raw=False)
    return pack(["i24e", 2, pack([pack(header), epk, commit, wraps, ciphertext]), sig])


def flip(data: bytes, at: int = 0, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[at] ^= mask
    return bytes(out)


def tamper(raw: bytes, *, header: Header | None = None,
           wraps: Callable[[Wraps], Wraps] | None = None,
           ciphertext: Callable[[bytes], bytes] | None = None,
           signature: Callable[[bytes], bytes] | None = None) -> bytes:
    """``raw`` with header fields replaced and/or wraps, ciphertext or signature rewritten;
    the original signature is kept unless ``signature`` changes it."""
    h, w, ct, sig = split(raw)
    h = {**h, **(header or {})}
    return join(h, wraps(w) if wraps else w, ciphertext(ct) if ciphertext else ct,
                signature(sig) if signature else sig, like=raw)


def decrypt_skipping_the_signature(raw: bytes, me: k.AgencyKeys, directory: Directory) -> bytes:
    """Unwrap and decrypt as ``open_envelope`` does, minus the signature check: what a
    careless receiver would do. The AEAD bindings and the commitment must hold on their
    own."""
    env = Envelope.parse(raw)
    return decrypt_body(env, unwrap(env, me, directory))


# -- injection --------------------------------------------------------------------------------

def at_router(net: Net, agency: str, payload: bytes) -> list[RouterEvent]:
    """``payload`` published on ``agency``'s submit topic, handled by the router now."""
    return net.router.handle(submit_topic(agency), payload, net.now)


def at_node(net: Net, agency: str, payload: bytes, now: int | None = None) -> list[NodeEvent]:
    """``payload`` published on ``agency``'s inbox topic, handled by its node."""
    return net.nodes[agency].handle(inbox_topic(agency), payload,
                                    net.now if now is None else now)


def rogue_delivery(net: Net, raw: bytes, recipient: str) -> bytes:
    """A delivery of ``raw`` to ``recipient`` stamped with the real router key and the next
    sequence number, as a mistaken or compromised router would publish it."""
    last, _ = net.nodes[recipient].store.seq_get(kid(ROUTER))
    return stamp_delivery(raw, recipient, last + 1, now=net.now)


def kinds(events: Iterable[RouterEvent | NodeEvent]) -> list[tuple[str, str]]:
    return [(e.kind, e.reason) for e in events]


# -- after the attack -------------------------------------------------------------------------

def legit_message_flows(net: Net, sender: str = "NCB-FR", to: str = "NCB-DE",
                        lab: str = "OFFICIAL-USE") -> bytes:
    """A legitimate message submitted now reaches ``to`` (only), exactly once, receipted."""
    received = len(net.events(to, "received"))
    mid = net.send(sender, [to], subject="legitimate, after the attack", lab=lab)
    net.settle()
    assert net.holders(mid) == {to}
    assert net.outbox_state(sender, mid) == "delivered"
    assert len(net.events(to, "received")) == received + 1
    return mid


def counted(counters: dict[str, int], prefix: str) -> int:
    """How many events the counters hold under ``prefix`` (``drop.``, ``refuse.``...)."""
    return sum(n for name, n in counters.items() if name.startswith(prefix))
