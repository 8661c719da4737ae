"""Keys: an agency's Ed25519 signing key and X25519 encryption key, and the pairwise wrap keys.

Theory of operation: each agency holds two secrets. The Ed25519 key signs everything it
sends (envelopes, receipts, releases; the GS authority key signs the directory). The X25519
key agrees a *pair key* with each correspondent: BLAKE2b over the X25519 shared secret and
both public keys, personalised for i24net. The pair key wraps a message's fresh body key with
XChaCha20-Poly1305, so a broadcast costs one body encryption plus one 32-byte AEAD per
recipient instead of a public-key operation per recipient. ``PairKeyCache`` keeps pair keys
so the X25519 work is paid once per correspondent, as libsodium's ``crypto_box_beforenm``
intends. Every signature is over a domain-separated message (``DOMAIN_* || bytes``), so a
signature made for one purpose can never be replayed as another.

PyNaCl raises ``RuntimeError`` for a low-order X25519 point and ``BadSignatureError`` /
``CryptoError`` / ``ValueError`` elsewhere; all are converted to ``CryptoError`` here.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

import nacl.bindings as sodium
import nacl.exceptions

from i24net.core.errors import CryptoError, WireFormatError

KEY_SIZE = 32
SIG_SIZE = 64
KEY_ID_SIZE = 8

DOMAIN_ENVELOPE = b"i24net/v1/envelope\x00"
DOMAIN_BODY = b"i24net/v1/body\x00"
DOMAIN_WRAP = b"i24net/v1/wrap\x00"
DOMAIN_DIRECTORY = b"i24net/v1/directory\x00"
DOMAIN_STAMP = b"i24net/v1/stamp\x00"
DOMAIN_RECEIPT = b"i24net/v1/receipt\x00"
DOMAIN_RELEASE = b"i24net/v1/release\x00"
DOMAIN_CONTROL = b"i24net/v1/control\x00"
_PAIR_PERSON = b"i24net-pair-v1"  # BLAKE2b personalisation, at most 16 bytes
_KID_PERSON = b"i24net-kid-v1"


def key_id(verify_key: bytes) -> bytes:
    """A short public identifier of a signing key, carried in headers to name the key used."""
    return hashlib.blake2b(verify_key, digest_size=KEY_ID_SIZE, person=_KID_PERSON).digest()


def sign(signing_seed: bytes, domain: bytes, message: bytes) -> bytes:
    """Ed25519 signature over ``domain || message``."""
    _, secret = sodium.crypto_sign_seed_keypair(signing_seed)
    return sodium.crypto_sign(domain + message, secret)[:SIG_SIZE]


def verify(verify_key: bytes, domain: bytes, message: bytes, signature: bytes, *,
           what: str, agency: str | None = None) -> None:
    """Check an Ed25519 signature or raise ``CryptoError(reason="sig.invalid")``."""
    if len(signature) != SIG_SIZE:
        raise WireFormatError(f"{what}: signature must be {SIG_SIZE} bytes",
                              reason="wire.schema", agency=agency)
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


@dataclass(frozen=True, slots=True)
class AgencyKeys:
    """An agency's private keys (32-byte Ed25519 seed, 32-byte X25519 secret)."""

    agency: str
    signing_seed: bytes = field(repr=False)
    encryption_secret: bytes = field(repr=False)
    # Derived once: re-deriving the Ed25519 key pair or the X25519 public key on every use
    # cost about as much as the signature itself.
    _secret: bytes = field(init=False, repr=False, compare=False)
    _verify_key: bytes = field(init=False, repr=False, compare=False)
    _enc_public: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.signing_seed) != KEY_SIZE or len(self.encryption_secret) != KEY_SIZE:
            raise CryptoError(f"keys of {self.agency} must be {KEY_SIZE} bytes each",
                              reason="key.size", agency=self.agency)
        public, secret = sodium.crypto_sign_seed_keypair(self.signing_seed)
        object.__setattr__(self, "_secret", secret)
        object.__setattr__(self, "_verify_key", public)
        object.__setattr__(self, "_enc_public",
                           sodium.crypto_scalarmult_base(self.encryption_secret))

    @classmethod
    def generate(cls, agency: str, random_bytes: object) -> AgencyKeys:
        """New keys from the caller's random source (``random_bytes(n) -> bytes``)."""
        rb = random_bytes  # a callable; typed loosely to keep the core free of os.urandom
        return cls(agency, rb(KEY_SIZE), rb(KEY_SIZE))  # type: ignore[operator]

    @property
    def verify_key(self) -> bytes:
        return self._verify_key

    @property
    def encryption_public(self) -> bytes:
        return self._enc_public

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

    def __len__(self) -> int:
        return len(self._cache)
