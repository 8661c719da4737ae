"""keys: agency keys as value objects, domain-separated signatures, pair keys and their cache."""

from __future__ import annotations

import hashlib
import itertools

import nacl.bindings as sodium
import nacl.signing
import pytest
from fixednet import LOW_ORDER, FixedRandom, agency_keys
from hypothesis import given
from hypothesis import strategies as st

from i24net.core import keys as k
from i24net.core.errors import CryptoError, WireFormatError

DOMAINS = [k.DOMAIN_ENVELOPE, k.DOMAIN_BODY, k.DOMAIN_WRAP, k.DOMAIN_DIRECTORY, k.DOMAIN_STAMP,
           k.DOMAIN_RECEIPT, k.DOMAIN_RELEASE, k.DOMAIN_CONTROL, k.DOMAIN_PREKEY]



# -- AgencyKeys ------------------------------------------------------------------------------

@pytest.mark.parametrize(("seed", "secret"), [(b"\x00" * 31, b"\x00" * 32),
                                              (b"\x00" * 32, b"\x00" * 33), (b"", b"")])
def test_agency_keys_check_sizes(seed: bytes, secret: bytes) -> None:
    with pytest.raises(CryptoError) as info:
        k.AgencyKeys("NCB-FR", seed, secret)
    assert info.value.reason == "key.size"
    assert info.value.agency == "NCB-FR"


def test_generate_takes_randomness_from_the_caller() -> None:
    a = k.AgencyKeys.generate("NCB-FR", FixedRandom("g"))
    b = k.AgencyKeys.generate("NCB-FR", FixedRandom("g"))
    c = k.AgencyKeys.generate("NCB-FR", FixedRandom("h"))
    assert a == b and a != c
    assert a.signing_seed != a.encryption_secret


def test_keys_are_values_and_never_print_secrets() -> None:
    a, b = agency_keys("NCB-FR"), agency_keys("NCB-FR")
    assert a == b and hash(a) == hash(b)
    assert a != agency_keys("NCB-DE") and a != agency_keys("NCB-FR", generation=1)
    assert k.AgencyKeys("NCB-DE", a.signing_seed, a.encryption_secret) != a
    assert (a == "NCB-FR") is False
    text = repr(a)
    assert a.signing_seed.hex() not in text and a.encryption_secret.hex() not in text
    with pytest.raises(AttributeError):
        a.agency = "NCB-DE"  # type: ignore[misc]


def test_public_keys_match_libsodium() -> None:
    a = agency_keys("NCB-FR")
    assert a.verify_key == bytes(nacl.signing.SigningKey(a.signing_seed).verify_key)
    assert a.encryption_public == sodium.crypto_scalarmult_base(a.encryption_secret)
    assert len(a.verify_key) == len(a.encryption_public) == k.KEY_SIZE


def test_key_id() -> None:
    a, b = agency_keys("NCB-FR"), agency_keys("NCB-DE")
    kid = k.key_id(a.verify_key)
    assert len(kid) == k.KEY_ID_SIZE
    assert kid == hashlib.blake2b(a.verify_key, digest_size=8, person=b"i24net-kid-v1").digest()
    assert kid != k.key_id(b.verify_key)


# -- signatures ------------------------------------------------------------------------------

def test_domains_are_distinct_and_prefix_free() -> None:
    """No domain is a prefix of another, so ``domain || msg`` never collides across uses."""
    assert len(set(DOMAINS)) == len(DOMAINS)
    for a, b in itertools.permutations(DOMAINS, 2):
        assert not b.startswith(a)
    assert all(d.startswith((b"i24net/v1/", b"i24net/v2/")) and d.endswith(b"\x00")
               for d in DOMAINS)


@given(st.binary(max_size=200), st.sampled_from(DOMAINS))
def test_sign_verify_round_trip(message: bytes, domain: bytes) -> None:
    a = agency_keys("NCB-FR")
    sig = a.sign(domain, message)
    assert len(sig) == k.SIG_SIZE
    k.verify(a.verify_key, domain, message, sig, what="test")
    # the signature is plain Ed25519 over domain || message
    nacl.signing.VerifyKey(a.verify_key).verify(domain + message, sig)


def sig_invalid(*args: bytes) -> CryptoError:
    with pytest.raises(CryptoError) as info:
        k.verify(*args, what="test", agency="NCB-FR")
    assert info.value.reason == "sig.invalid"
    assert "NCB-FR" in str(info.value)
    return info.value


def test_signature_for_one_domain_never_verifies_for_another() -> None:
    a = agency_keys("NCB-FR")
    for signed_for, checked_for in itertools.permutations(DOMAINS, 2):
        sig = a.sign(signed_for, b"message")
        sig_invalid(a.verify_key, checked_for, b"message", sig)


def test_wrong_key_and_altered_message() -> None:
    a, b = agency_keys("NCB-FR"), agency_keys("NCB-DE")
    sig = a.sign(k.DOMAIN_ENVELOPE, b"message")
    sig_invalid(b.verify_key, k.DOMAIN_ENVELOPE, b"message", sig)
    sig_invalid(a.verify_key, k.DOMAIN_ENVELOPE, b"messagE", sig)
    for i in range(0, 64 * 8, 37):
        bad = bytearray(sig)
        bad[i // 8] ^= 1 << (i % 8)
        sig_invalid(a.verify_key, k.DOMAIN_ENVELOPE, b"message", bytes(bad))


def test_garbage_verify_key_is_a_crypto_error() -> None:
    a = agency_keys("NCB-FR")
    sig = a.sign(k.DOMAIN_ENVELOPE, b"m")
    for vk in (b"\x00" * 32, b"\xff" * 32, b"\x01" * 31):
        sig_invalid(vk, k.DOMAIN_ENVELOPE, b"m", sig)


@pytest.mark.parametrize("size", [0, 63, 65])
def test_signature_of_wrong_length(size: int) -> None:
    with pytest.raises(WireFormatError) as info:
        k.verify(agency_keys("NCB-FR").verify_key, k.DOMAIN_ENVELOPE, b"m", b"\x00" * size,
                 what="test")
    assert info.value.reason == "wire.schema"


# -- pair keys -------------------------------------------------------------------------------

def test_pair_key_is_the_documented_construction() -> None:
    s, r = agency_keys("NCB-FR"), agency_keys("NCB-DE")
    shared = sodium.crypto_scalarmult(s.encryption_secret, r.encryption_public)
    expected = hashlib.blake2b(shared + s.encryption_public + r.encryption_public,
                               digest_size=32, person=b"i24net-pair-v1").digest()
    at_sender = k.pair_key(s.encryption_secret, s.encryption_public, r.encryption_public,
                           sender_public=s.encryption_public)
    at_recipient = k.pair_key(r.encryption_secret, r.encryption_public, s.encryption_public,
                              sender_public=s.encryption_public)
    assert at_sender == at_recipient == expected


def test_pair_key_depends_on_direction_and_peer() -> None:
    s, r, o = agency_keys("NCB-FR"), agency_keys("NCB-DE"), agency_keys("NCB-US")
    fwd = k.pair_key(s.encryption_secret, s.encryption_public, r.encryption_public,
                     sender_public=s.encryption_public)
    back = k.pair_key(s.encryption_secret, s.encryption_public, r.encryption_public,
                      sender_public=r.encryption_public)
    other = k.pair_key(s.encryption_secret, s.encryption_public, o.encryption_public,
                       sender_public=s.encryption_public)
    assert len({fwd, back, other}) == 3


@pytest.mark.parametrize("point", LOW_ORDER, ids=lambda p: p.hex()[:8] + p.hex()[-2:])
def test_low_order_point_is_a_crypto_error_not_runtime_error(point: bytes) -> None:
    s = agency_keys("NCB-FR")
    with pytest.raises(CryptoError) as info:
        k.pair_key(s.encryption_secret, s.encryption_public, point,
                   sender_public=s.encryption_public)
    assert info.value.reason == "key.low-order"
    assert not isinstance(info.value, RuntimeError)


@pytest.mark.parametrize("size", [0, 31, 33])
def test_pair_key_with_wrong_size_public_key(size: int) -> None:
    s = agency_keys("NCB-FR")
    with pytest.raises(CryptoError) as info:
        k.pair_key(s.encryption_secret, s.encryption_public, b"\x09" * size,
                   sender_public=s.encryption_public)
    assert info.value.reason == "key.size"


# -- PairKeyCache ----------------------------------------------------------------------------

@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real = k.pair_key

    def counting(my_secret: bytes, my_public: bytes, their_public: bytes, *,
                 sender_public: bytes) -> bytes:
        calls.append(their_public)
        return real(my_secret, my_public, their_public, sender_public=sender_public)

    monkeypatch.setattr(k, "pair_key", counting)
    return calls


def test_cache_pays_x25519_once_per_peer_and_direction(counted: list[bytes]) -> None:
    s, r = agency_keys("NCB-FR"), agency_keys("NCB-DE")
    cache = k.PairKeyCache()
    first = cache.get(s, s.encryption_public, r.encryption_public, i_am_sender=True)
    assert cache.get(s, s.encryption_public, r.encryption_public, i_am_sender=True) == first
    assert len(counted) == 1 and len(cache) == 1
    # the other direction is a different key and a different entry
    back = cache.get(s, s.encryption_public, r.encryption_public, i_am_sender=False)
    assert back != first and len(cache) == 2
    # and it is what the peer derives as sender
    assert back == k.PairKeyCache().get(r, r.encryption_public, s.encryption_public,
                                        i_am_sender=True)


def test_cache_is_keyed_by_public_keys_so_rotation_never_reuses(counted: list[bytes]) -> None:
    s = agency_keys("NCB-FR")
    cache = k.PairKeyCache()
    old = cache.get(s, s.encryption_public, agency_keys("NCB-DE").encryption_public,
                    i_am_sender=True)
    new = cache.get(s, s.encryption_public,
                    agency_keys("NCB-DE", generation=1).encryption_public, i_am_sender=True)
    assert old != new and len(counted) == 2


def test_cache_is_bounded_fifo(counted: list[bytes]) -> None:
    s = agency_keys("NCB-FR")
    cache = k.PairKeyCache(limit=3)
    peers = [agency_keys(f"P{i}").encryption_public for i in range(5)]
    for p in peers:
        cache.get(s, s.encryption_public, p, i_am_sender=True)
    assert len(cache) == 3
    cache.get(s, s.encryption_public, peers[4], i_am_sender=True)  # still cached
    assert len(counted) == 5
    cache.get(s, s.encryption_public, peers[0], i_am_sender=True)  # evicted first
    assert len(counted) == 6 and len(cache) == 3


def test_cache_does_not_store_failures() -> None:
    s = agency_keys("NCB-FR")
    cache = k.PairKeyCache()
    with pytest.raises(CryptoError):
        cache.get(s, s.encryption_public, LOW_ORDER[0], i_am_sender=True)
    assert len(cache) == 0
