"""Drill: re-addressing a signed message to a third party (surreptitious forwarding).

NCB-DE received NCB-FR's signed message and wants NCB-US to receive it *as NCB-FR's*: it
copies the envelope into its own submission, edits the recipient list, re-signs the signed
part, or moves the encrypted body under a header of its own. The header (sender, recipients)
is signed and is the body's associated data, and each wrap is bound to its recipient
``sender.topic``, ``sig.invalid``, ``not-recipient``, ``aead.invalid``.
"""

from __future__ import annotations

import dataclasses

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
from i24net.core.envelope import _aead_decrypt, _aead_encrypt, _wrap_ad, make_header
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
    readdressed = tamper(raw, header={"to": ["NCB-DE", "NCB-US"], "addr": ["NCB-DE", "NCB-US"]},
                         wraps=lambda w: [w[0], ["NCB-US", w[0][1]]])
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
    resigned = pack(["i24e", 1, env.signed, keys_for("NCB-DE").sign(k.DOMAIN_ENVELOPE,
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
    fr_pub = net.directory.agency("NCB-FR").enc_key
    pair_in = k.PairKeyCache().get(de, de.encryption_public, fr_pub, i_am_sender=False)
    body_key = _aead_decrypt(pair_in, src.header.nonce, _wrap_ad(src.header.id, "NCB-DE"),
                             src.wraps["NCB-DE"], what="wrap", msg_id="")
    h = make_header(net.directory, sender="NCB-DE", addressing=["NCB-US"], kind="message",
                    label=Label("RESTRICTED"), now_ms=net.now, ttl_ms=3_600_000,
                    random_bytes=net.nodes["NCB-DE"].random_bytes)
    h = dataclasses.replace(h, nonce=src.header.nonce)  # the nonce the ciphertext used
    us_pub = net.directory.agency("NCB-US").enc_key
    pair_out = k.PairKeyCache().get(de, de.encryption_public, us_pub, i_am_sender=True)
    wrap = _aead_encrypt(pair_out, h.nonce, _wrap_ad(h.id, "NCB-US"), body_key)
    signed = pack([h.encode(), [["NCB-US", wrap]], src.ciphertext])
    moved = pack(["i24e", 1, signed, de.sign(k.DOMAIN_ENVELOPE, signed)])

    assert kinds(at_router(net, "NCB-DE", moved)) == [("accept", "ok")]  # headers only
    net.pump()
    assert ("drop", "aead.invalid") in [(e.kind, e.reason) for e in net.node_events["NCB-US"]]
    assert net.nodes["NCB-US"].counters == {"drop.aead.invalid": 1}
    assert net.inbox("NCB-US") == set()
    legit_message_flows(net, "NCB-FR", "NCB-US")
