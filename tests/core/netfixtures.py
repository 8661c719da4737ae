"""The demo network in memory, envelope builders and a frame pump, for the routing-core tests.

Everything is deterministic: each secret is SHA-256 of a label, every "random" byte comes
from a counter-mode SHA-256 stream, and time is an integer the test moves by hand. The
directory is the ``demo`` preset (GS-LYON, EUROPOL, NCB-FR/DE/US/BR/JP/ZA) with fixed keys
and one router key, so envelopes, stamps and receipts are real signed bytes that take
milliseconds to build, not seconds: the property tests can afford hundreds of them.

``Net`` joins one ``RouterMachine`` and one ``NodeMachine`` per agency with an in-memory
wire. A ``fault`` callback decides, frame by frame, how many copies to deliver (0 drops the
frame, 2 duplicates it); the clock only moves when the test calls ``advance``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import nacl.signing

from i24net.config.presets import preset_toml
from i24net.core import frames as fr
from i24net.core import keys as k
from i24net.core.directory import AgencyRecord, Directory
from i24net.core.envelope import Body, Envelope, Header, make_header, recipient_keys, seal
from i24net.core.keys import AgencyKeys, PairKeyCache, Prekey
from i24net.core.labels import Label, Precedence
from i24net.core.netspec import build_directory, parse_spec
from i24net.core.node import MemoryNodeStore, NodeEvent, NodeMachine
from i24net.core.router import MemoryRouterStore, RouterEvent, RouterMachine

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

DEMO_AGENCIES = ("GS-LYON", "EUROPOL", "NCB-FR", "NCB-DE", "NCB-US", "NCB-BR", "NCB-JP",
                 "NCB-ZA")


def secret(label: str) -> bytes:
    return hashlib.sha256(b"i24net-netfixtures-" + label.encode()).digest()


@functools.cache
def keys_for(agency: str, generation: int = 0) -> AgencyKeys:
    """Fixed private keys for ``agency``; another ``generation`` is a rotated key pair."""
    tag = f"{agency}/{generation}"
    return AgencyKeys(agency, secret("sign-" + tag), secret("enc-" + tag),
                      (Prekey(secret("prekey-" + tag), T0 - DAY),), secret("sending-" + tag))


ROUTER = keys_for("i24-router")
ROGUE_ROUTER = keys_for("i24-rogue-router")
AUTHORITY_SEED = secret("authority")


class Rng:
    """A deterministic ``random_bytes(n)``: SHA-256(label || counter) blocks."""

    def __init__(self, label: str) -> None:
        self.label = label.encode()
        self.counter = itertools.count()

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.label + next(self.counter).to_bytes(8, "big")).digest()
        return out[:n]


RNG = Rng("netfixtures")  # module-wide: ids never repeat within a test run
CACHE = PairKeyCache()  # pair keys depend only on public keys: share them across tests


def label(text: str) -> Label:
    return Label.parse(text)


def record(agency: str, *, kind: str = "ncb", region: str = "EUROPE",
           clearance: str = "RESTRICTED", roles: Iterable[str] = (),
           status: str = "active", generation: int = 0,
           org: str = "INTERPOL") -> AgencyRecord:
    pk = keys_for(agency, generation).public()
    return AgencyRecord(agency, f"{agency} bureau", kind, region, label(clearance),
                        frozenset(roles), pk.sign_key, pk.enc_key, status,
                        prekey=pk.prekey, prekey_sig=pk.prekey_sig, org=org)


@functools.cache
def demo_directory() -> Directory:
    """Directory version 1 of the demo preset, with fixed keys and the router key listed."""
    spec = parse_spec(tomllib.loads(preset_toml("demo")))
    pubs = {a.id: keys_for(a.id).public() for a in spec.agencies}
    anchor = bytes(nacl.signing.SigningKey(AUTHORITY_SEED).verify_key)
    return build_directory(spec, pubs, authority_key=anchor, serial=1, issued_ms=T0 - DAY,
                           router_keys=(ROUTER.verify_key,))


def with_agency(d: Directory, rec: AgencyRecord) -> Directory:
    """The next directory version with ``rec`` added (or replaced)."""
    return d.next_version(d.issued_ms + 1, agencies={**d.agencies, rec.id: rec})


# -- envelopes ----------------------------------------------------------------------------

def header(sender: str, to: Iterable[str], *, d: Directory | None = None,
           kind: str = "message", lab: str | Label = "RESTRICTED", now: int = T0,
           ttl: int = HOUR, rng: Callable[[int], bytes] = RNG, **kw: Any) -> Header:
    """A header addressed through the directory (``make_header``)."""
    return make_header(d or demo_directory(), sender=sender, addressing=list(to), kind=kind,
                       label=lab if isinstance(lab, Label) else label(lab), now_ms=now,
                       ttl_ms=ttl, random_bytes=rng, **kw)


def raw_header(sender: str, recipients: Iterable[str], addressing: Iterable[str], *,
               lab: str | Label = "RESTRICTED", kind: str = "message", now: int = T0,
               ttl: int = HOUR, serial: int = 1, key_id: bytes | None = None,
               **kw: Any) -> Header:
    """A header built field by field, bypassing ``make_header``'s validation."""
    return Header(
        id=RNG(16), kind=kind, sender=sender, recipients=tuple(sorted(set(recipients))),
        addressing=tuple(addressing), label=lab if isinstance(lab, Label) else label(lab),
        precedence=kw.pop("precedence", Precedence.ROUTINE), created_ms=now, expires_ms=now + ttl,
        directory_serial=serial,
        key_id=key_id if key_id is not None else kid(keys_for(sender)), nonce=RNG(24), **kw)


def kid(keys: AgencyKeys) -> bytes:
    return k.key_id(keys.verify_key)


def seal_header(h: Header, *, d: Directory | None = None, signer: AgencyKeys | None = None,
                body: Body | None = None, extra_keys: Mapping[str, bytes] | None = None
                ) -> bytes:
    """Seal ``h``; recipients the directory does not know get ``extra_keys`` (or a made-up
    key), so a test can build the envelope a broken or hostile sender would send."""
    d = d or demo_directory()
    pubs = recipient_keys(d, h)
    for r in h.recipients:
        if r not in pubs:
            made_up = keys_for(r)
            pubs[r] = ((extra_keys or {}).get(r) or made_up.encryption_public,
                       made_up.current_prekey.public)
    return seal(h, body or Body("subject", "text"), signer or keys_for(h.sender), pubs,
                random_bytes=RNG, cache=CACHE)


def build(sender: str, to: Iterable[str], *, d: Directory | None = None,
          signer: AgencyKeys | None = None, body: Body | None = None, **kw: Any) -> bytes:
    """Envelope bytes from ``sender`` to the addressing ``to`` (ids and @groups)."""
    return seal_header(header(sender, to, d=d, **kw), d=d, signer=signer, body=body)


def parsed(raw: bytes) -> Envelope:
    return Envelope.parse(raw)


def flip_signature(raw: bytes, byte: int = 0) -> bytes:
    """The same envelope with one bit of its signature flipped, re-packed."""
    magic, version, signed, sig = msgpack.unpackb(raw)
    sig = bytearray(sig)
    sig[byte] ^= 0x01
    return msgpack.packb([magic, version, signed, bytes(sig)], use_bin_type=True)


# -- router stamps made by hand ---------------------------------------------------------------

def stamp_delivery(raw_env: bytes, recipient: str, seq: int, *, signer: AgencyKeys = ROUTER,
                   kid_of: AgencyKeys | None = None, now: int = T0, serial: int = 1,
                   recipients: tuple[str, ...] | None = None,
                   digest: bytes | None = None) -> bytes:
    """A delivery frame stamped by ``signer`` (the router unless a test says otherwise)."""
    env = Envelope.parse(raw_env)
    st = fr.Stamp(env.header.id, digest or env.digest, env.header.sender,
                  recipients or (recipient,), {recipient: seq}, now, serial,
                  kid(kid_of or signer))
    return fr.make_delivery(st, raw_env, signer)


# -- the network pump -------------------------------------------------------------------------

Fault = Callable[[str, bytes], int]  # how many copies of this frame reach its destination


def inbox_topic(agency: str, d: Directory | None = None) -> str:
    return f"{(d or demo_directory()).prefix}/inbox/{agency}"


def submit_topic(agency: str, d: Directory | None = None) -> str:
    return f"{(d or demo_directory()).prefix}/submit/{agency}"


@dataclass
class Net:
    """One router and a node per demo agency, joined by an in-memory wire and a clock."""

    directory: Directory = field(default_factory=demo_directory)
    now: int = T0
    fault: Fault | None = None
    router_store: MemoryRouterStore = field(default_factory=MemoryRouterStore)
    router: RouterMachine = field(init=False)
    nodes: dict[str, NodeMachine] = field(init=False)
    wire: list[tuple[str, bytes]] = field(default_factory=list)
    router_events: list[RouterEvent] = field(default_factory=list)
    node_events: dict[str, list[NodeEvent]] = field(default_factory=dict)
    delivered_frames: int = 0

    def __post_init__(self) -> None:
        self.router = RouterMachine(self.directory, ROUTER, self.router_store)
        self.nodes = {a: NodeMachine(a, keys_for(a), self.directory, MemoryNodeStore(),
                                     random_bytes=Rng(f"node-{a}"))
                      for a in self.directory.agencies}
        self.node_events = {a: [] for a in self.nodes}

    # -- inputs ---------------------------------------------------------------------------
    def send(self, sender: str, to: Iterable[str], *, subject: str = "subject",
             **kw: Any) -> bytes:
        """Submit a message at ``sender``'s node; returns the message id."""
        node = self.nodes[sender]
        h = header(sender, to, d=node.directory, now=self.now, rng=node.random_bytes, **kw)
        node.submit(h, Body(subject, "text"), self.now)
        return h.id

    def crash_router(self) -> None:
        """A new router process on the same durable store: the in-memory queue is lost."""
        self.router = RouterMachine(self.directory, ROUTER, self.router_store)

    # -- the wire -------------------------------------------------------------------------
    def _collect(self) -> None:
        for node in self.nodes.values():
            for topic, payload, _ in node.pop(limit=10_000):
                self._put(topic, payload)
        for topic, payload, _ in self.router.pop(self.now, limit=10_000):
            self._put(topic, payload)

    def _put(self, topic: str, payload: bytes) -> None:
        copies = 1 if self.fault is None else self.fault(topic, payload)
        self.wire.extend([(topic, payload)] * copies)

    def _deliver(self, topic: str, payload: bytes) -> None:
        self.delivered_frames += 1
        head, _, agency = topic.rpartition("/")
        if head.endswith("/submit"):
            self.router_events += self.router.handle(topic, payload, self.now)
        else:
            self.node_events[agency] += self.nodes[agency].handle(topic, payload, self.now)

    def pump(self, max_steps: int = 100_000) -> int:
        """Move frames until nothing is queued or in flight; returns frames delivered."""
        moved = 0
        self._collect()
        while self.wire:
            topic, payload = self.wire.pop(0)
            self._deliver(topic, payload)
            moved += 1
            if moved > max_steps:
                raise AssertionError("the network does not go quiet")
            if not self.wire:
                self._collect()
        return moved

    def advance(self, ms: int) -> None:
        """Move the clock, let every node's timers fire, and pump."""
        self.now += ms
        for a, node in self.nodes.items():
            self.node_events[a] += node.handle_timer(self.now)
        self.pump()

    def settle(self, *, step: int = 5 * SECOND, limit: int = 2 * HOUR) -> None:
        """Pump, then advance the clock until every outbox entry is final."""
        self.pump()
        waited = 0
        while any(n.store.outbox_active() for n in self.nodes.values()):
            if waited > limit:
                raise AssertionError("outboxes never settled: " + repr(
                    {a: [(e.msg_id.hex()[:8], e.state, sorted(e.receipts)) for e in
                         n.store.outbox_active()] for a, n in self.nodes.items()}))
            self.advance(step)
            waited += step

    # -- observations ---------------------------------------------------------------------
    def store(self, agency: str) -> MemoryNodeStore:
        s = self.nodes[agency].store
        assert isinstance(s, MemoryNodeStore)
        return s

    def inbox(self, agency: str) -> set[bytes]:
        return set(self.store(agency).inbox)

    def holders(self, msg_id: bytes) -> set[str]:
        return {a for a in self.nodes if msg_id in self.store(a).inbox}

    def outbox_state(self, agency: str, msg_id: bytes) -> str:
        entry = self.store(agency).outbox[msg_id]
        return entry.state

    def events(self, agency: str, kind: str) -> list[NodeEvent]:
        return [e for e in self.node_events[agency] if e.kind == kind]
