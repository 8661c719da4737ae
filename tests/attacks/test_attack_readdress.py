"""Drill: re-addressing a signed message to a third party (surreptitious forwarding).

NCB-DE received NCB-FR's signed message and wants NCB-US to receive it *as NCB-FR's*: it
copies the envelope into its own submission, edits the recipient list, re-signs the signed
part, or moves the encrypted body under a header of its own. The header (sender, recipients)
is signed and is the body's associated data, and each wrap is bound to its recipient
(docs/protocol.md 13.2): ``sender.topic``, ``sig.invalid``, ``not-recipient``, ``aead.invalid``.
"""

from __future__ import annotations

import dataclasses

import nacl.bindings as sodium
import pytest
from attackkit import (
    at_node,
    at_router,
    decrypt_skipping_the_signature,
    kinds,
    legit_message_flows,
    rogue_delivery,
    split,
    tamper,
)
from netfixtures import Net, keys_for, parsed

from i24net.core import keys as k
from i24net.core.envelope import commitment, make_header, unwrap, wrap_key
from i24net.core.errors import CryptoError
from i24net.core.labels import Label
from i24net.core.wire import pack


def fr_to_de(net: Net) -> tuple[bytes, bytes]:
    """NCB-FR's RESTRICTED message to NCB-DE, delivered: (message id, envelope bytes)."""
    mid = net.send("NCB-FR", ["NCB-DE"], lab="RESTRICTED", subject="for NCB-DE only")
    net.settle()
    assert net.holders(mid) == {"NCB-DE"}
    return mid, net.store("NCB-FR").outbox[mid].raw


def test_another_agencys_envelope_submitted_as_ones_own_is_refused() -> None:
    net = Net()
    mid, raw = fr_to_de(net)
    assert kinds(at_router(net, "NCB-DE", raw)) == [("refuse", "sender.topic")]
    assert net.router.counters["refuse.sender.topic"] == 1
    net.pump()
    assert net.holders(mid) == {"NCB-DE"}  # nobody new
    legit_message_flows(net)


def test_added_recipient_breaks_the_signature() -> None:
    net = Net()
    _, raw = fr_to_de(net)
    h = split(raw)[0]
    us_prekey = net.directory.agency("NCB-US").prekey_id  # so the wrap reaches the AEAD
    readdressed = tamper(raw, header={"to": ["NCB-DE", "NCB-US"], "addr": ["NCB-DE", "NCB-US"]},
                         wraps=lambda w: [w[0], ["NCB-US", us_prekey, w[0][2]]])
    assert h["to"] == ["NCB-DE"]
    assert kinds(at_router(net, "NCB-DE", readdressed)) == [("refuse", "sig.invalid")]
    assert kinds(at_router(net, "NCB-FR", readdressed)) == [("refuse", "sig.invalid")]
    assert net.router.counters == {"accept": 1, "receipt": 1, "refuse.sig.invalid": 2}
    # stamped anyway: NCB-US refuses it, and the copied wrap is not its own
    assert kinds(at_node(net, "NCB-US", rogue_delivery(net, readdressed, "NCB-US"))) == [
        ("drop", "sig.invalid")]
    with pytest.raises(CryptoError) as info:
        decrypt_skipping_the_signature(readdressed, keys_for("NCB-US"), net.directory)
    assert info.value.reason == "aead.invalid"
    legit_message_flows(net)


def test_resigning_anothers_envelope_fails_against_the_named_sender() -> None:
    net = Net()
    _, raw = fr_to_de(net)
    env = parsed(raw)
    resigned = pack(["i24e", 2, env.signed, keys_for("NCB-DE").sign(k.DOMAIN_ENVELOPE,
                                                                     env.signed)])
    assert kinds(at_router(net, "NCB-DE", resigned)) == [("refuse", "sig.invalid")]
    assert net.router.counters["refuse.sig.invalid"] == 1
    legit_message_flows(net)


def test_node_refuses_an_envelope_addressed_to_someone_else() -> None:
    net = Net()
    _, raw = fr_to_de(net)
    events = at_node(net, "NCB-US", rogue_delivery(net, raw, "NCB-US"))
    assert kinds(events) == [("drop", "not-recipient")]
    assert net.nodes["NCB-US"].counters == {"drop.not-recipient": 1}
    assert net.inbox("NCB-US") == set() and net.nodes["NCB-US"].pending() == 0
    legit_message_flows(net, "NCB-FR", "NCB-US")


def test_body_moved_under_the_insiders_own_header_does_not_decrypt() -> None:
    """NCB-DE knows the body key (it is a recipient): it signs a header of its own for
    NCB-US, wraps the key for NCB-US and reuses NCB-FR's ciphertext. The router cannot tell
    (it never sees bodies) and accepts; NCB-US cannot decrypt: the body is bound to
    NCB-FR's header bytes."""
    net = Net()
    _, raw = fr_to_de(net)
    src = parsed(raw)
    de = keys_for("NCB-DE")
    content_key = unwrap(src, de, net.directory)  # NCB-DE may: it is a recipient
    h = make_header(net.directory, sender="NCB-DE", addressing=["NCB-US"], kind="message",
                    label=Label("RESTRICTED"), now_ms=net.now, ttl_ms=3_600_000,
                    random_bytes=net.nodes["NCB-DE"].random_bytes)
    h = dataclasses.replace(h, nonce=src.header.nonce)
    us = net.directory.agency("NCB-US")
    commit = commitment(content_key, h.id)
    cache = k.PairKeyCache()
    pair = cache.get(de, de.encryption_public, us.enc_key, i_am_sender=True)
    shared = k.x25519(de.sending_secret or b"", us.prekey)
    wk, wn = wrap_key(pair, shared, de.sending_public, us.prekey, h.id, "NCB-US")
    wrap = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(content_key, k.DOMAIN_WRAP + commit,
                                                           wn, wk)
    signed = pack([h.encode(), de.sending_public, commit, [["NCB-US", us.prekey_id, wrap]],
                   src.ciphertext])
    moved = pack(["i24e", 2, signed, de.sign(k.DOMAIN_ENVELOPE, signed)])

    assert kinds(at_router(net, "NCB-DE", moved)) == [("accept", "ok")]  # headers only
    net.pump()
    assert ("refused-in", "aead.invalid") in [(e.kind, e.reason)
                                              for e in net.node_events["NCB-US"]]
    assert net.nodes["NCB-US"].counters == {"refuse.aead.invalid": 1}
    assert net.inbox("NCB-US") == set()
    legit_message_flows(net, "NCB-FR", "NCB-US")
