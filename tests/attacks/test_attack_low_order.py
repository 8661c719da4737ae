"""Drill: a low-order X25519 key in a directory record. With a small-order point as an
agency's ``enc_key`` the X25519 shared secret is all zeros, a pair key anyone could compute;
libsodium refuses it and PyNaCl raises ``RuntimeError``, which the core turns
(docs/protocol.md 2.4) into ``key.low-order``.

The directory is signed by the authority, so such a record can only come from the issuer
(an agency that registered a bad public key). Issuing refuses it and so does loading
(``key.low-order``), small-order Ed25519 signing keys too. Behind that, should such a
directory be held anyway: the router never does X25519 and is unaffected; a node that
receives from that agency drops the message (``key.low-order``, counted, no receipt); a
sender cannot seal to it, nor to any group that includes it.
"""

from __future__ import annotations

import dataclasses

import pytest
from attackkit import at_router, kinds, legit_message_flows
from fixednet import LOW_ORDER
from netfixtures import AUTHORITY_SEED, T0, Net, build, header

from i24net.core import keys as k
from i24net.core.directory import Directory, load
from i24net.core.envelope import Body
from i24net.core.errors import CryptoError
from i24net.core.keys import AgencyKeys
from i24net.core.wire import pack

ANCHOR = AgencyKeys("authority", AUTHORITY_SEED, bytes(32)).verify_key


def with_low_order_key(point: bytes, agency: str = "NCB-BR") -> Net:
    """A network holding a directory with ``point`` as ``agency``'s encryption key, as if
    issuing and loading had let it through."""
    net = Net()
    loaded = with_record(net.directory, agency, enc_key=point)
    net.directory = loaded
    net.router.set_directory(loaded)
    for node in net.nodes.values():
        node.set_directory(loaded)
    return net


# the Ed25519 identity, and a point of order 2: small-order signing keys
SMALL_ORDER_ED25519 = (bytes([1]) + bytes(31), bytes([0xEC]) + bytes([0xFF]) * 30 + bytes([0x7F]))


def with_record(d: Directory, agency: str = "NCB-BR", **keys: bytes) -> Directory:
    """The next version of ``d`` with ``agency``'s record holding ``keys``, unsigned."""
    return d.next_version(T0, agencies={**d.agencies, agency: dataclasses.replace(
        d.agency(agency), **keys)})


@pytest.mark.parametrize("point", LOW_ORDER[:7], ids=lambda p: p.hex()[:8])
def test_a_directory_with_a_low_order_encryption_key_is_neither_issued_nor_loaded(
        point: bytes) -> None:
    d = Net().directory
    bad = with_record(d, enc_key=point)
    with pytest.raises(CryptoError, match="NCB-BR") as issued:
        bad.sign(AUTHORITY_SEED)
    assert issued.value.reason == "key.low-order"
    doc = bad.encode()  # an issuer that skipped the check
    signed = pack([doc, k.sign(AUTHORITY_SEED, k.DOMAIN_DIRECTORY, doc)])
    with pytest.raises(CryptoError) as loaded:
        load(signed, ANCHOR, held=d)
    assert loaded.value.reason == "key.low-order"


@pytest.mark.parametrize("point", SMALL_ORDER_ED25519, ids=lambda p: p.hex()[:8])
def test_a_small_order_signing_key_is_refused_too(point: bytes) -> None:
    d = Net().directory
    bad = with_record(d, sign_key=point)
    with pytest.raises(CryptoError, match="signing key") as info:
        bad.sign(AUTHORITY_SEED)
    assert info.value.reason == "key.low-order"
    assert load(d.sign(AUTHORITY_SEED), ANCHOR).digest == d.digest  # honest keys pass


@pytest.mark.parametrize("point", LOW_ORDER[:7], ids=lambda p: p.hex()[:8])
def test_message_from_an_agency_with_a_low_order_key_is_refused_by_the_recipient(
        point: bytes) -> None:
    net = with_low_order_key(point)
    raw = build("NCB-BR", ["NCB-DE"], d=net.directory, lab="OFFICIAL-USE")  # BR's real keys
    assert kinds(at_router(net, "NCB-BR", raw)) == [("accept", "ok")]  # headers only
    net.pump()
    de = net.nodes["NCB-DE"]
    assert de.counters == {"refuse.key.low-order": 1}  # signed, so the sender is told
    assert net.inbox("NCB-DE") == set()
    legit_message_flows(net)


@pytest.mark.parametrize("to", [["NCB-BR"], ["@AMERICAS"], ["@ALL"]])
def test_sealing_to_an_agency_with_a_low_order_key_fails_cleanly(to: list[str]) -> None:
    net = with_low_order_key(LOW_ORDER[2])
    fr_node = net.nodes["NCB-FR"]
    h = header("NCB-FR", to, d=net.directory, now=net.now, lab="OFFICIAL-USE",
               rng=fr_node.random_bytes)
    with pytest.raises(CryptoError) as info:
        fr_node.submit(h, Body("to a bad key"), net.now)
    assert info.value.reason == "key.low-order"
    assert not isinstance(info.value, RuntimeError)
    assert fr_node.store.outbox_get(h.id) is None and fr_node.pending() == 0
    legit_message_flows(net)
