"""Keys: an agency's Ed25519 signing key and X25519 encryption key, and the pairwise wrap keys.

Theory of operation: each agency holds two long-term secrets. The Ed25519 key signs
everything it sends (envelopes, receipts, releases, its prekeys; the GS authority key signs
the directory). The X25519 key agrees a *pair key* with each correspondent: BLAKE2b over the
X25519 shared secret and both public keys, personalised for i24net. Two medium-term keys give
forward secrecy: a *prekey* (X25519, listed in the directory with the agency's signature,
rotated, its secret erased after a grace period) and a *sending key* (X25519, in memory only,
replaced after an hour of use). A message's wrap keys derive from the pair key and the
agreement of the sending key with the recipient's prekey (envelope.py). ``PairKeyCache``
keeps pair keys and wrap-derivation prefixes so the X25519 work is paid once per
correspondent and key, as libsodium's ``crypto_box_beforenm`` intends. Every signature is over a domain-separated message (``DOMAIN_* || bytes``), so a
signature made for one purpose can never be replayed as another.

PyNaCl raises ``RuntimeError`` for a low-order X25519 point and ``BadSignatureError`` /
``CryptoError`` / ``ValueError`` elsewhere; all are converted to ``CryptoError`` here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions

from i24net.core.errors import CryptoError, WireFormatError

KEY_SIZE = 32
SIG_SIZE = 64
KEY_ID_SIZE = 8

DOMAIN_ENVELOPE = b"i24net/v2/envelope\x00"
DOMAIN_BODY = b"i24net/v2/body\x00"
DOMAIN_WRAP = b"i24net/v2/wrap\x00"
DOMAIN_DIRECTORY = b"i24net/v1/directory\x00"
DOMAIN_STAMP = b"i24net/v2/stamp\x00"
DOMAIN_RECEIPT = b"i24net/v1/receipt\x00"
DOMAIN_RELEASE = b"i24net/v1/release\x00"
DOMAIN_CONTROL = b"i24net/v1/control\x00"
DOMAIN_PREKEY = b"i24net/v2/prekey\x00"
_PAIR_PERSON = b"i24net-pair-v1"  # BLAKE2b personalisation, at most 16 bytes
_KID_PERSON = b"i24net-kid-v1"
_PREKEY_ID_PERSON = b"i24net-pkid-v2"


def key_id(verify_key: bytes) -> bytes:
    """A short public identifier of a signing key, carried in headers to name the key used."""
    return hashlib.blake2b(verify_key, digest_size=KEY_ID_SIZE, person=_KID_PERSON).digest()


def sign(signing_seed: bytes, domain: bytes, message: bytes) -> bytes:
    """Ed25519 signature over ``domain || message``."""
    _, secret = sodium.crypto_sign_seed_keypair(signing_seed)
    return sodium.crypto_sign(domain + message, secret)[:SIG_SIZE]


def verify(verify_key: bytes, domain: bytes, message: bytes, signature: bytes, *,
           what: str, agency: str | None = None) -> None:
    """Check an Ed25519 signature or raise ``CryptoError(reason="sig.invalid")``.

    The rules are libsodium's (``crypto_sign_open``; docs/protocol.md 2.2, pinned by
    tests/core/test_ed25519_rules.py): S < L; neither A nor R of small order; A's y
    coordinate canonical; the cofactorless equation, compared on the bytes of R (so R must
    be canonical). A mixed-order ``verify_key`` is not refused here: the directory refuses
    such keys (``check_public_keys``).
    """
    if len(signature) != SIG_SIZE:
        raise WireFormatError(f"{what}: signature must be {SIG_SIZE} bytes",
                              reason="wire.schema", agency=agency)
    if len(verify_key) != KEY_SIZE:
        # libsodium reads exactly 32 bytes of the key whatever its length: a short key
        # would be read past its end, a long one cut
        raise CryptoError(f"{what}: signature does not verify"
                          + (f" with {agency}'s key" if agency else "")
                          + f": the verify key is {len(verify_key)} bytes, not {KEY_SIZE}",
                          reason="sig.invalid", agency=agency)
    try:
        # libsodium directly: a VerifyKey object per call costs more than the check itself
        sodium.crypto_sign_open(signature + domain + message, verify_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError,
            TypeError) as exc:
        raise CryptoError(
            f"{what}: signature does not verify"
            + (f" with {agency}'s key" if agency else "")
            + " (altered in transit, or signed by someone else)",
            reason="sig.invalid",
            agency=agency,
        ) from exc


def prekey_id(public: bytes) -> bytes:
    """The 8-byte name of a prekey, carried in each key wrap to say which prekey it used."""
    return hashlib.blake2b(public, digest_size=KEY_ID_SIZE, person=_PREKEY_ID_PERSON).digest()


def prekey_message(agency: str, public: bytes) -> bytes:
    """What an agency signs to vouch for its prekey: the key, then its own id."""
    return public + agency.encode()


def check_prekey(agency: str, sign_key: bytes, public: bytes, signature: bytes) -> None:
    """Refuse a prekey its agency did not sign (``sig.invalid``) or of low order."""
    if len(public) != KEY_SIZE:
        raise CryptoError(f"the prekey of {agency} must be {KEY_SIZE} bytes",
                          reason="key.size", agency=agency)
    verify(sign_key, DOMAIN_PREKEY, prekey_message(agency, public), signature,
           what=f"prekey of {agency}", agency=agency)
    check_public_keys(sign_key, public, who=f"prekey of {agency}")


@dataclass(frozen=True, slots=True)
class Prekey:
    """A medium-term X25519 key pair: the directory lists the public half (signed by the
    agency); the secret is erased once retired and past the grace period, and with it the
    ability to open what was sent under it."""

    secret: bytes = field(repr=False)
    issued_ms: int
    retired_ms: int | None = None
    public: bytes = field(init=False)
    id: bytes = field(init=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_SIZE:
            raise CryptoError(f"a prekey secret is {KEY_SIZE} bytes", reason="key.size")
        public = sodium.crypto_scalarmult_base(self.secret)
        object.__setattr__(self, "public", public)
        object.__setattr__(self, "id", prekey_id(public))


@dataclass(frozen=True, slots=True)
class PublicKeys:
    """What the directory lists for an agency: its two long-term public keys and its
    current prekey with the agency's signature over it."""

    sign_key: bytes
    enc_key: bytes
    prekey: bytes
    prekey_sig: bytes


@dataclass(frozen=True, slots=True)
class AgencyKeys:
    """An agency's private keys: the long-term 32-byte Ed25519 seed and X25519 secret, its
    prekeys (the current one and retired ones still within their grace period) and its
    sending key (an X25519 secret that lives in memory only; see ``with_sending_key``)."""

    agency: str
    signing_seed: bytes = field(repr=False)
    encryption_secret: bytes = field(repr=False)
    prekeys: tuple[Prekey, ...] = field(default=(), repr=False)
    sending_secret: bytes | None = field(default=None, repr=False)
    # Derived once: re-deriving the Ed25519 key pair or the X25519 public key on every use
    # cost about as much as the signature itself.
    _secret: bytes = field(init=False, repr=False, compare=False)
    _verify_key: bytes = field(init=False, repr=False, compare=False)
    _enc_public: bytes = field(init=False, repr=False, compare=False)
    _sending_public: bytes | None = field(init=False, repr=False, compare=False)
    _by_id: dict[bytes, Prekey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.signing_seed) != KEY_SIZE or len(self.encryption_secret) != KEY_SIZE \
                or (self.sending_secret is not None and len(self.sending_secret) != KEY_SIZE):
            raise CryptoError(f"keys of {self.agency} must be {KEY_SIZE} bytes each",
                              reason="key.size", agency=self.agency)
        if sum(p.retired_ms is None for p in self.prekeys) > 1:
            raise CryptoError(f"{self.agency} holds more than one current prekey",
                              reason="key.prekey", agency=self.agency)
        public, secret = sodium.crypto_sign_seed_keypair(self.signing_seed)
        object.__setattr__(self, "_secret", secret)
        object.__setattr__(self, "_verify_key", public)
        object.__setattr__(self, "_enc_public",
                           sodium.crypto_scalarmult_base(self.encryption_secret))
        object.__setattr__(self, "_sending_public",
                           None if self.sending_secret is None
                           else sodium.crypto_scalarmult_base(self.sending_secret))
        object.__setattr__(self, "_by_id", {p.id: p for p in self.prekeys})

    @classmethod
    def generate(cls, agency: str, random_bytes: object, *, now_ms: int = 0) -> AgencyKeys:
        """New keys from the caller's random source (``random_bytes(n) -> bytes``): the
        signing seed, the encryption secret, a first prekey and a sending key, drawn in
        that order."""
        rb = random_bytes  # a callable; typed loosely to keep the core free of os.urandom
        seed, enc, pre, send = (rb(KEY_SIZE) for _ in range(4))  # type: ignore[operator]
        return cls(agency, seed, enc, (Prekey(pre, now_ms),), send)

    @property
    def verify_key(self) -> bytes:
        return self._verify_key

    @property
    def encryption_public(self) -> bytes:
        return self._enc_public

    @property
    def sending_public(self) -> bytes:
        if self._sending_public is None:
            raise CryptoError(f"no sending key for {self.agency}: keys loaded for sealing "
                              "need one (with_sending_key)", reason="key.sending",
                              agency=self.agency)
        return self._sending_public

    @property
    def current_prekey(self) -> Prekey:
        for p in self.prekeys:
            if p.retired_ms is None:
                return p
        raise CryptoError(f"{self.agency} has no current prekey: rotate its prekey",
                          reason="key.prekey", agency=self.agency)

    def prekey(self, pid: bytes) -> Prekey | None:
        """The prekey named ``pid`` if it is still held (current, or retired within grace)."""
        return self._by_id.get(pid)

    def public(self) -> PublicKeys:
        """The public keys the directory should list for this agency."""
        pre = self.current_prekey.public
        return PublicKeys(self.verify_key, self.encryption_public, pre,
                          self.sign(DOMAIN_PREKEY, prekey_message(self.agency, pre)))

    def with_sending_key(self, secret: bytes) -> AgencyKeys:
        """The same keys with a new sending key (the old one is forgotten). Only the new
        key's public half is computed: the long-term keys' derived halves carry over (a
        sending key is replaced every hour a node sends, and deriving the Ed25519 key pair
        again cost as much as a signature)."""
        if len(secret) != KEY_SIZE:
            raise CryptoError(f"keys of {self.agency} must be {KEY_SIZE} bytes each",
                              reason="key.size", agency=self.agency)
        new = object.__new__(type(self))  # every slot carried over, a subclass's too
        for cls in type(self).__mro__:
            for name in getattr(cls, "__slots__", ()):
                if hasattr(self, name):
                    object.__setattr__(new, name, getattr(self, name))
        object.__setattr__(new, "sending_secret", secret)
        object.__setattr__(new, "_sending_public", sodium.crypto_scalarmult_base(secret))
        return new

    def with_new_prekey(self, secret: bytes, now_ms: int) -> AgencyKeys:
        """The current prekey retired at ``now_ms`` and a new one current."""
        kept = tuple(p if p.retired_ms is not None else replace(p, retired_ms=now_ms)
                     for p in self.prekeys)
        return replace(self, prekeys=(*kept, Prekey(secret, now_ms)))

    def erase_prekeys(self, now_ms: int, grace_ms: int) -> AgencyKeys:
        """The same keys without the prekeys retired more than ``grace_ms`` ago."""
        kept = tuple(p for p in self.prekeys
                     if p.retired_ms is None or now_ms - p.retired_ms <= grace_ms)
        return self if len(kept) == len(self.prekeys) else replace(self, prekeys=kept)

    def sign(self, domain: bytes, message: bytes) -> bytes:
        return sodium.crypto_sign(domain + message, self._secret)[:SIG_SIZE]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AgencyKeys):
            return NotImplemented
        return (self.agency == other.agency
                and hmac.compare_digest(self.signing_seed, other.signing_seed)
                and hmac.compare_digest(self.encryption_secret, other.encryption_secret))

    def __hash__(self) -> int:
        return hash((self.agency, self.verify_key))


_PROBE_SCALAR = bytes([9]) + bytes(31)  # any non-zero scalar: libsodium clamps it


def check_public_keys(sign_key: bytes, enc_key: bytes | None, *, who: str) -> None:
    """Refuse a public key no honest agency has: an Ed25519 key that is not a canonical
    point of the prime-order subgroup (a small-order key lets many signatures verify), or
    an X25519 key of low order (its shared secret with anyone is all zeros)."""
    if len(sign_key) != KEY_SIZE or not sodium.crypto_core_ed25519_is_valid_point(sign_key):
        raise CryptoError(f"{who}: the signing key is not a valid Ed25519 public key "
                          "(small order, not canonical, or not on the curve)",
                          reason="key.low-order")
    if enc_key is None:
        return
    try:
        sodium.crypto_scalarmult(_PROBE_SCALAR, enc_key)
    except (RuntimeError, nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise CryptoError(f"{who}: the encryption key is a low-order X25519 point",
                          reason="key.low-order") from exc


def pair_key(my_secret: bytes, my_public: bytes, their_public: bytes, *,
             sender_public: bytes) -> bytes:
    """The wrap key shared by two agencies; the same on both sides.

    ``sender_public`` fixes the order of the two public keys in the hash so sender and
    recipient derive the same key: H(shared || sender_pk || recipient_pk).
    """
    if len(their_public) != KEY_SIZE:
        raise CryptoError("encryption public key must be 32 bytes", reason="key.size")
    try:
        shared = sodium.crypto_scalarmult(my_secret, their_public)
    except (RuntimeError, nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        # libsodium refuses a low-order point (all-zero shared secret); PyNaCl reports it
        # as RuntimeError.
        raise CryptoError("encryption public key is invalid (low-order point)",
                          reason="key.low-order") from exc
    recipient_public = their_public if sender_public == my_public else my_public
    return hashlib.blake2b(shared + sender_public + recipient_public, digest_size=KEY_SIZE,
                           person=_PAIR_PERSON).digest()


class PairKeyCache:
    """Pair keys by (my public key, their public key, direction); bounded, LRU-less FIFO.

    A node talks to at most a few thousand agencies; 8,192 entries cover both directions of
    a 3,000-agency network. The cache is keyed by public keys, so a rotated key never
    reuses a stale pair key.
    """

    __slots__ = ("_cache", "limit")

    def __init__(self, limit: int = 8192) -> None:
        self._cache: dict[tuple[bytes, bytes, bool], bytes] = {}
        self.limit = limit

    def get(self, keys: AgencyKeys, my_public: bytes, their_public: bytes, *,
            i_am_sender: bool) -> bytes:
        k = (my_public, their_public, i_am_sender)
        found = self._cache.get(k)
        if found is None:
            found = pair_key(keys.encryption_secret, my_public, their_public,
                             sender_public=my_public if i_am_sender else their_public)
            if len(self._cache) >= self.limit:
                self._cache.pop(next(iter(self._cache)))
            self._cache[k] = found
        return found

    def memo(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        """Any value derived from public keys (``key`` names them), made once and kept in
        the same bounded FIFO; ``forget`` drops it with any of its keys."""
        found = self._cache.get(key)
        if found is None:
            found = make()
            if len(self._cache) >= self.limit:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = found
        return found

    def lookup(self, key: tuple[Any, ...]) -> Any:
        """What ``memo`` stored under ``key``, or None."""
        return self._cache.get(key)

    def forget(self, public: bytes) -> None:
        """Drop every entry computed with ``public`` (an erased prekey or a replaced sending
        key), so nothing derived from it outlives it in memory."""
        for key in [key for key in self._cache if public in key]:
            del self._cache[key]

    def __len__(self) -> int:
        return len(self._cache)


def x25519(my_secret: bytes, their_public: bytes) -> bytes:
    """X25519, refusing a peer key of the wrong size (``key.size``) or of low order
    (``key.low-order``: libsodium refuses an all-zero output)."""
    if len(their_public) != KEY_SIZE:
        raise CryptoError("encryption public key must be 32 bytes", reason="key.size")
    try:
        return sodium.crypto_scalarmult(my_secret, their_public)
    except (RuntimeError, nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise CryptoError("encryption public key is invalid (low-order point)",
                          reason="key.low-order") from exc
