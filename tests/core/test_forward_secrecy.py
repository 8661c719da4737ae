"""Forward secrecy: what a thief of an agency's keys can open, before and after a prekey
rotation (docs/protocol.md 13.3).

A thief who copies NCB-DE's keys at some moment gets its long-term secrets and every prekey
NCB-DE still holds then. Messages sealed to a prekey that NCB-DE has erased (retired longer
than the directory's grace period ago) stay unreadable; so do messages whose sender's sending
key is gone, even with the sender's long-term keys.
"""

from __future__ import annotations

import nacl.bindings as sodium
import nacl.exceptions
import pytest
from netfixtures import DAY, HOUR, T0, Net, header, keys_for

from i24net.core import envelope as env
from i24net.core import keys as k
from i24net.core.errors import CryptoError, I24Error
from i24net.core.node import SENDING_KEY_MS

GRACE = 2 * HOUR


def rotate_de(net: Net, at: int) -> None:
    """NCB-DE gets a new prekey in a new directory version that everyone adopts."""
    de = net.nodes["NCB-DE"]
    d = de.directory
    new_keys = de.keys.with_new_prekey(bytes([at % 251 + 1]) * 32, at)
    pk = new_keys.public()
    nd = d.rotate_prekeys({"NCB-DE": (pk.prekey, pk.prekey_sig)}, at)
    for node in net.nodes.values():
        node.set_directory(nd)
    net.router.set_directory(nd)
    assert de.needs_keys()
    de.set_keys(new_keys)
    assert not de.needs_keys()


def captured(net: Net, subject: str) -> bytes:
    """A message from NCB-FR to NCB-DE, as an eavesdropper on the broker records it."""
    fr = net.nodes["NCB-FR"]
    h = header("NCB-FR", ["NCB-DE"], d=fr.directory, now=net.now, rng=fr.random_bytes)
    raw, _ = fr.submit(h, env.Body(subject, "text"), net.now)
    net.settle()
    return raw


def thief_opens(raw: bytes, stolen: k.AgencyKeys, net: Net) -> str:
    try:
        return env.open_envelope(raw, stolen, net.nodes["NCB-DE"].directory).body.subject
    except CryptoError as exc:
        return exc.reason


@pytest.fixture
def net() -> Net:
    n = Net()
    d = n.nodes["NCB-DE"].directory
    short = d.next_version(d.issued_ms + 1, prekey_grace_ms=GRACE)
    for node in n.nodes.values():
        node.set_directory(short)
    n.router.set_directory(short)
    return n


def test_a_thief_after_rotation_and_grace_cannot_open_earlier_traffic(net: Net) -> None:
    before = captured(net, "before the rotation")
    assert thief_opens(before, net.nodes["NCB-DE"].keys, net) == "before the rotation"
    rotate_de(net, net.now)
    during = captured(net, "under the new prekey")
    # within the grace period the old prekey is still held: in-flight mail still opens
    net.advance(GRACE // 2)
    assert len(net.nodes["NCB-DE"].keys.prekeys) == 2
    assert thief_opens(before, net.nodes["NCB-DE"].keys, net) == "before the rotation"
    # the grace passes: the node erases the retired prekey on its own deadline
    net.advance(GRACE)
    de = net.nodes["NCB-DE"]
    assert [p.retired_ms for p in de.keys.prekeys] == [None]
    stolen = de.keys  # everything NCB-DE holds now, long-term keys included
    assert thief_opens(before, stolen, net) == "prekey.unknown"
    assert thief_opens(during, stolen, net) == "under the new prekey"  # the window


def test_the_senders_stolen_keys_do_not_open_what_an_old_sending_key_sealed(net: Net) -> None:
    """A thief of NCB-FR's keys after its sending key was replaced holds the long-term X25519
    secret (so the pair key) and the new sending key, but the old wrap's agreement was the
    forgotten sending key with NCB-DE's prekey: the wrap does not open."""
    old = env.Envelope.parse(captured(net, "sealed under the first sending key"))
    net.advance(SENDING_KEY_MS + 1)
    stolen = net.nodes["NCB-FR"].keys
    assert stolen.sending_public != old.sending_key and stolen.sending_secret is not None
    de = net.nodes["NCB-FR"].directory.agency("NCB-DE")
    pair = k.PairKeyCache().get(stolen, stolen.encryption_public, de.enc_key,
                                i_am_sender=True)
    wk, wn = env.wrap_key(pair, k.x25519(stolen.sending_secret, de.prekey), old.sending_key,
                          de.prekey, old.header.id, "NCB-DE")
    with pytest.raises(nacl.exceptions.CryptoError):
        sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            old.wraps["NCB-DE"], k.DOMAIN_WRAP + old.commitment, wn, wk)
    # while the recipient, holding its prekey, still opens it
    assert thief_opens(old.raw, net.nodes["NCB-DE"].keys, net) == \
        "sealed under the first sending key"


def test_rotation_needs_the_new_keys_and_keeps_the_sending_key(net: Net) -> None:
    de = net.nodes["NCB-DE"]
    sending = de.keys.sending_public
    rotate_de(net, T0 + DAY)
    assert de.keys.sending_public == sending
    assert len(de.keys.prekeys) == 2 and de.keys.prekeys[0].retired_ms == T0 + DAY
    with pytest.raises(I24Error):
        de.set_keys(keys_for("NCB-FR"))
