"""Keys and the signed directory of a simulated network, derived from the seed.

Theory of operation: a simulation never touches files. Every private key (one signing seed
and one X25519 secret per agency, the router's key and the directory authority's seed) is
drawn from the simulation's one ``random.Random(seed)``, in the spec's agency order, so the
same seed always yields the same keys, message ids and ciphertexts. The directory is built
with ``netspec.build_directory`` exactly as ``i24net init`` builds it, signed with the
authority seed, and then *loaded back* through ``directory.load`` (signature, trust anchor,
rollback guard), so every version the simulated nodes use went through the real checks.

``SimKeys`` is ``AgencyKeys`` with its derived values computed once: PyNaCl's
``SigningKey(seed)`` re-derives the Ed25519 key pair (a SHA-512 and a scalar
multiplication, about as costly as the signature itself) and ``encryption_public`` re-runs
an X25519 base-point multiplication on every call. The bytes produced are identical; only
the repeated derivation is gone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import nacl.bindings as sodium
import nacl.signing

from i24net.core import directory as dirmod
from i24net.core.directory import Directory
from i24net.core.keys import KEY_SIZE, AgencyKeys, Prekey
from i24net.core.netspec import NetworkSpec, build_directory

ROUTER_ID = "i24-router"  # the router's key name, as in ``i24net.config.home.ROUTER_ACCOUNT``


class SimKeys(AgencyKeys):
    """``AgencyKeys`` that derive their public keys and signer once."""

    __slots__ = ("_encryption_public", "_signer", "_verify_key")
    _encryption_public: bytes
    _signer: nacl.signing.SigningKey
    _verify_key: bytes

    def __post_init__(self) -> None:
        AgencyKeys.__post_init__(self)
        signer = nacl.signing.SigningKey(self.signing_seed)
        object.__setattr__(self, "_signer", signer)
        object.__setattr__(self, "_verify_key", bytes(signer.verify_key))
        object.__setattr__(self, "_encryption_public",
                           sodium.crypto_scalarmult_base(self.encryption_secret))

    @property
    def verify_key(self) -> bytes:
        return self._verify_key

    @property
    def encryption_public(self) -> bytes:
        return self._encryption_public

    def sign(self, domain: bytes, message: bytes) -> bytes:
        return self._signer.sign(domain + message).signature

    @classmethod
    def draw(cls, agency: str, rng: random.Random, *, now_ms: int = 0) -> SimKeys:
        """Signing seed, encryption secret, first prekey and sending key, in that order."""
        seed, enc, pre, send = (rng.randbytes(KEY_SIZE) for _ in range(4))
        return cls(agency, seed, enc, (Prekey(pre, now_ms),), send)


@dataclass
class Keyring:
    """Every private key of a simulated network, and its first directory version."""

    agencies: dict[str, SimKeys]
    router: SimKeys
    authority_seed: bytes
    anchor: bytes
    directory: Directory

    @classmethod
    def build(cls, spec: NetworkSpec, rng: random.Random, *, issued_ms: int) -> Keyring:
        authority_seed = rng.randbytes(KEY_SIZE)
        anchor = bytes(nacl.signing.SigningKey(authority_seed).verify_key)
        router = SimKeys.draw(ROUTER_ID, rng)
        keys = {a.id: SimKeys.draw(a.id, rng) for a in spec.agencies}
        pubs = {a: kk.public() for a, kk in keys.items()}
        d = build_directory(spec, pubs, authority_key=anchor, serial=1, issued_ms=issued_ms,
                            router_keys=(router.verify_key,))
        ring = cls(keys, router, authority_seed, anchor, d)
        ring.directory = ring.publish(d, held=None)
        return ring

    def publish(self, d: Directory, *, held: Directory | None) -> Directory:
        """Sign ``d`` with the authority key and load it back as a node would: the version
        every simulated component then holds (one verified object, shared)."""
        return dirmod.load(d.sign(self.authority_seed), self.anchor, held=held)
