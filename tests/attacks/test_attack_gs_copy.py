"""Drill: a diffusion whose mandatory copy to the General Secretariat is unreadable. NCB-FR
sends a diffusion to NCB-DE and GS-LYON (the rules require the GS among its recipients), but
gives GS-LYON a wrap it cannot use: random bytes, or a correct encryption of another content
key. It signs the whole with its own key, so the router, which never sees keys, accepts it.

Where it is caught (docs/protocol.md 4.5-4.6, 9.3): the envelope commits to its content key,
so the GS knows that its wrap does not open to the key the other recipients read
(``aead.commitment``) or does not open at all (``aead.invalid``). It records a compliance
violation naming the sender, answers with a signed refusal (``copy.unreadable``) that reaches
the sender's node, and NCB-DE still receives the diffusion.
"""

from __future__ import annotations

import hashlib

import nacl.bindings as sodium
import pytest
from attackkit import kinds
from netfixtures import Net, keys_for

from i24net.core import envelope as env
from i24net.core import keys as k
from i24net.core.errors import CryptoError
from i24net.core.labels import Label
from i24net.core.node import OutboxEntry
from i24net.core.wire import pack


def evil_diffusion(net: Net, how: str) -> env.Envelope:
    fr = keys_for("NCB-FR")
    node = net.nodes["NCB-FR"]
    d = node.directory
    h = env.make_header(d, sender="NCB-FR", addressing=["NCB-DE", "GS-LYON"],
                        kind="diffusion", label=Label("RESTRICTED"), now_ms=net.now,
                        ttl_ms=3_600_000, random_bytes=node.random_bytes)
    good = env.Envelope.parse(env.seal(h, env.Body("Wanted: R. Roe", "seen in Nice"), fr,
                                       env.recipient_keys(d, h),
                                       random_bytes=node.random_bytes))
    if how == "garbage":
        gs_wrap = hashlib.sha256(b"garbage").digest() + bytes(16)
    else:  # a genuine wrap of a different content key
        gs = d.agency("GS-LYON")
        cache = k.PairKeyCache()
        pair = cache.get(fr, fr.encryption_public, gs.enc_key, i_am_sender=True)
        shared = k.x25519(node.keys.sending_secret or b"", gs.prekey)
        wk, wn = env.wrap_key(pair, shared, good.sending_key, gs.prekey, h.id, "GS-LYON")
        gs_wrap = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            b"\x07" * 32, k.DOMAIN_WRAP + good.commitment, wn, wk)
    wraps = [[r, good.prekey_ids[r], gs_wrap if r == "GS-LYON" else good.wraps[r]]
             for r in h.recipients]
    signed = pack([good.header_bytes, good.sending_key, good.commitment, wraps,
                   good.ciphertext])
    return env.Envelope.parse(pack(["i24e", 2, signed, fr.sign(k.DOMAIN_ENVELOPE, signed)]))


@pytest.mark.parametrize(("how", "cause"), [("garbage", "aead.invalid"),
                                            ("other-key", "aead.commitment")])
def test_an_unreadable_gs_copy_is_a_violation_reported_to_the_sender(how: str,
                                                                      cause: str) -> None:
    net = Net()
    e = evil_diffusion(net, how)
    h = e.header
    # NCB-FR's node sends it like any other message (a malicious NCB controls its node)
    net.store("NCB-FR").outbox_put(OutboxEntry(
        h.id, e.raw, h.kind, int(h.precedence), h.recipients, h.created_ms, h.expires_ms,
        next_ms=net.now, subject="Wanted: R. Roe"))
    net.nodes["NCB-FR"].outbox_changed()
    net.settle()
    assert ("accept", "ok") in kinds(net.router_events)  # the router cannot tell
    gs_events = [(ev.kind, ev.reason, ev.peer) for ev in net.node_events["GS-LYON"]
                 if ev.msg_id == h.id_hex]
    assert ("violation", "copy.unreadable", "NCB-FR") in gs_events
    assert ("refused-in", "copy.unreadable", "NCB-FR") in gs_events
    assert net.nodes["GS-LYON"].counters[f"refuse.{cause}"] == 1
    assert h.id not in net.inbox("GS-LYON")
    assert net.holders(h.id) == {"NCB-DE"}  # the other recipient reads it
    entry = net.store("NCB-FR").outbox[h.id]
    assert entry.receipts == {"NCB-DE": "delivered", "GS-LYON": "refused"}
    told = [(ev.kind, ev.peer, ev.reason) for ev in net.node_events["NCB-FR"]
            if ev.kind == "receipt" and ev.msg_id == h.id_hex]
    assert ("receipt", "GS-LYON", "copy.unreadable") in told


def test_the_other_recipient_reads_what_the_gs_cannot() -> None:
    """NCB-DE opens the envelope whose GS copy is bad; the GS's own open refuses it."""
    net = Net()
    e = evil_diffusion(net, "other-key")
    opened = env.open_envelope(e, keys_for("NCB-DE"), net.nodes["NCB-DE"].directory)
    assert opened.body.subject == "Wanted: R. Roe"
    with pytest.raises(CryptoError) as info:
        env.open_envelope(e, keys_for("GS-LYON"), net.nodes["GS-LYON"].directory)
    assert info.value.reason == "aead.commitment"
