"""A small, deterministic i24net network built in memory: fixed keys, no files, no clock.

Every secret is SHA-256 of a label (``i24net-test-sign-NCB-FR``...), every "random" byte
comes from a counter-mode SHA-256 stream, and time is the constant ``NOW``. Two runs build
byte-identical directories and envelopes, so a failure reproduces exactly.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import nacl.signing

from i24net.core import envelope as env
from i24net.core.directory import AgencyRecord, Directory
from i24net.core.keys import AgencyKeys, PairKeyCache, Prekey
from i24net.core.labels import ClassificationScale, Label
from i24net.core.netspec import build_directory, parse_spec

NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z, in ms
HOUR = 3_600_000
CAVEATS = frozenset({"EU", "CT", "FIN"})

# id, kind, region, clearance level, caveats, roles
AGENCIES: tuple[tuple[str, str, str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("GS-LYON", "gs", "EUROPE", "SECRET", ("EU", "CT", "FIN"),
     ("notice-authority", "directory-authority")),
    ("EUROPOL", "europol", "EUROPE", "SECRET", ("EU",), ()),
    ("NCB-FR", "ncb", "EUROPE", "CONFIDENTIAL", ("EU", "CT"), ()),
    ("NCB-DE", "ncb", "EUROPE", "CONFIDENTIAL", ("EU",), ()),
    ("NCB-IT", "ncb", "EUROPE", "CONFIDENTIAL", ("EU",), ()),
    ("NCB-ES", "ncb", "EUROPE", "RESTRICTED", ("EU",), ()),
    ("NCB-US", "ncb", "AMERICAS", "SECRET", ("CT", "FIN"), ()),
    ("NCB-BR", "ncb", "AMERICAS", "RESTRICTED", (), ()),
    ("NCB-JP", "ncb", "ASIA-PACIFIC", "CONFIDENTIAL", (), ()),
    ("NCB-AU", "ncb", "ASIA-PACIFIC", "CONFIDENTIAL", ("CT",), ()),
    ("NCB-ZA", "ncb", "AFRICA", "OFFICIAL-USE", (), ()),
    ("NCB-MA", "ncb", "MENA", "RESTRICTED", ("CT",), ()),
)
AGENCY_IDS: tuple[str, ...] = tuple(a[0] for a in AGENCIES)
REGIONS: tuple[str, ...] = tuple(sorted({a[2] for a in AGENCIES}))
GROUPS: dict[str, tuple[str, ...]] = {
    "EU": ("EUROPOL", "NCB-DE", "NCB-ES", "NCB-FR", "NCB-IT"),
    "G7": ("NCB-DE", "NCB-FR", "NCB-IT", "NCB-JP", "NCB-US"),
    "CT-CELL": ("NCB-AU", "NCB-FR", "NCB-MA", "NCB-US"),
}
GROUP_ADDRESSES: tuple[str, ...] = (
    "@ALL", "@NCB", *(f"@{r}" for r in REGIONS), *(f"@{g}" for g in sorted(GROUPS)))

# Curve25519 points of small order (libsodium's blocklist) and non-canonical encodings of
# them: X25519 with any of these gives an all-zero shared secret.
LOW_ORDER = [bytes.fromhex(h) for h in (
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4 (x=0)
    "0100000000000000000000000000000000000000000000000000000000000000",  # order 1
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",  # order 8
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",  # order 8
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p - 1 (order 2)
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p (= 0)
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p + 1 (= 1)
)]
LOW_ORDER += [p[:31] + bytes([p[31] | 0x80]) for p in LOW_ORDER]  # top bit is ignored


def secret(label: str) -> bytes:
    return hashlib.sha256(b"i24net-test-" + label.encode()).digest()


def agency_keys(agency: str, generation: int = 0) -> AgencyKeys:
    """Fixed keys for ``agency``; ``generation`` > 0 gives the keys after that many rotations."""
    suffix = f"-g{generation}" if generation else ""
    return AgencyKeys(agency, secret(f"sign-{agency}{suffix}"), secret(f"enc-{agency}{suffix}"),
                      (Prekey(secret(f"prekey-{agency}{suffix}"), NOW - HOUR),),
                      secret(f"sending-{agency}{suffix}"))


class FixedRandom:
    """A deterministic ``random_bytes(n)``: SHA-256(label || counter), concatenated."""

    def __init__(self, label: str = "rng") -> None:
        self.label = label.encode()
        self.counter = 0
        self.calls: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.label + self.counter.to_bytes(8, "big")).digest()
            self.counter += 1
        self.calls.append(out[:n])
        return out[:n]


class Replay:
    """A ``random_bytes`` that hands out the given byte strings in order (known answers)."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    def __call__(self, n: int) -> bytes:
        chunk = self.chunks.pop(0)
        assert len(chunk) == n, f"asked for {n} bytes, next chunk has {len(chunk)}"
        return chunk


@dataclass
class FixedNet:
    """A directory, its authority and every agency's private keys, all in memory."""

    directory: Directory
    keys: dict[str, AgencyKeys]
    authority_seed: bytes
    cache: PairKeyCache = field(default_factory=PairKeyCache)

    @property
    def anchor(self) -> bytes:
        return bytes(nacl.signing.SigningKey(self.authority_seed).verify_key)

    @property
    def signed(self) -> bytes:
        return self.directory.sign(self.authority_seed)

    def header(self, sender: str, to: Iterable[str], *, rng: Any = None,
               kind: str = "message", label: Label | None = None, now_ms: int = NOW,
               ttl_ms: int = HOUR, **kw: Any) -> env.Header:
        return env.make_header(
            self.directory, sender=sender, addressing=list(to), kind=kind,
            label=label or Label("UNCLASSIFIED"), now_ms=now_ms, ttl_ms=ttl_ms,
            random_bytes=rng or FixedRandom(f"header-{sender}"), **kw)

    def seal_header(self, header: env.Header, body: env.Body | None = None, *,
                    rng: Any = None, keys: AgencyKeys | None = None) -> bytes:
        return env.seal(header, body or env.Body("subject", "text"),
                        keys or self.keys[header.sender],
                        env.recipient_keys(self.directory, header),
                        random_bytes=rng or FixedRandom("body-key"), cache=self.cache)

    def seal(self, sender: str, to: Iterable[str], body: env.Body | None = None, *,
             rng: Any = None, **kw: Any) -> bytes:
        rng = rng or FixedRandom(f"seal-{sender}")
        return self.seal_header(self.header(sender, to, rng=rng, **kw), body, rng=rng)

    def open(self, raw: bytes | env.Envelope, agency: str,
             directory: Directory | None = None) -> env.Opened:
        return env.open_envelope(raw, self.keys[agency], directory or self.directory,
                                 cache=self.cache)

    def with_directory(self, directory: Directory, **keys: AgencyKeys) -> FixedNet:
        return replace(self, directory=directory, keys={**self.keys, **keys})


def record(agency: str, kind: str, region: str, level: str, caveats: Iterable[str],
           roles: Iterable[str], keys: AgencyKeys) -> AgencyRecord:
    pk = keys.public()
    return AgencyRecord(agency, f"{agency} bureau", kind, region,
                        Label(level, frozenset(caveats)), frozenset(roles),
                        pk.sign_key, pk.enc_key, prekey=pk.prekey, prekey_sig=pk.prekey_sig)


def build_net(*, serial: int = 1, issued_ms: int = NOW,
              groups: Mapping[str, tuple[str, ...]] = GROUPS,
              authority: str = "authority") -> FixedNet:
    """The 12-agency test network (GS, Europol, ten NCBs over five regions)."""
    keys = {a[0]: agency_keys(a[0]) for a in AGENCIES}
    authority_seed = secret(authority)
    anchor = bytes(nacl.signing.SigningKey(authority_seed).verify_key)
    d = Directory(
        network="fixed", serial=serial, issued_ms=issued_ms,
        scale=ClassificationScale(caveats=CAVEATS),
        agencies={a[0]: record(*a, keys=keys[a[0]]) for a in AGENCIES},
        groups=dict(groups), authority_key=anchor,
    )
    return FixedNet(d, keys, authority_seed)


def build_from_spec(spec_text: str, *, authority: str = "authority") -> FixedNet:
    """A network from ``network.toml`` text (e.g. a preset), with fixed keys."""
    spec = parse_spec(tomllib.loads(spec_text))
    keys = {a.id: agency_keys(a.id) for a in spec.agencies}
    authority_seed = secret(authority)
    anchor = bytes(nacl.signing.SigningKey(authority_seed).verify_key)
    d = build_directory(spec, {i: kk.public() for i, kk in keys.items()},
                        authority_key=anchor, serial=1, issued_ms=NOW)
    return FixedNet(d, keys, authority_seed)
