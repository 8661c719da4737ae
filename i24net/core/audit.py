"""Audit: a tamper-evident hash chain of the decisions a daemon takes.

Theory of operation. Every decision a daemon takes about a message (accept, refuse, deliver,
drop, receipt...) becomes an ``AuditEntry``: its index (0, 1, 2...), time, actor, event,
message id, reason code and a few details, plus ``prev``, the hash of the entry before it
(32 zero bytes for the first). Its own hash is

    SHA-256("i24net/v1/audit\\0" || msgpack [index, at_ms, actor, event, msg_id, reason,
                                              details (keys sorted), prev])

so every entry commits to the whole history before it. The log file holds one JSON line per
entry (bytes as hex). ``verify_lines`` re-reads such a file strictly (bounded line length,
exact field set, no duplicate keys, no floats) and walks the chain: indexes consecutive from
0, each ``prev`` equal to the previous hash, each hash recomputed. An edited, removed,
inserted or re-ordered entry breaks one of these at the first place it was touched, and the
report names that line and why.

What a bare hash chain cannot show, and how checkpoints close the gap:

* Removing entries from the *end* leaves a shorter chain that is still perfectly valid.
* Someone who can write the file can also rewrite it whole, recomputing every hash.

Catching either needs a secret that whoever edits the file does not hold.
``AuditChain.checkpoint`` signs (Ed25519 through ``keys.sign``, domain
``"i24net/v1/audit-head\\0"``) the pair (entry count, head hash) with the daemon's key and
appends a ``checkpoint`` entry carrying the signature. Verified with the daemon's public
key, those entries expose a rewrite of anything before them (a rewrite that also drops
them is caught by an anchor). Kept *outside* the file too (``Checkpoint.encode_line`` into a
separate file, or sent to another agency), the latest checkpoint is an anchor:
``verify_lines(..., anchor=cp)`` then refuses a file that no longer reaches the anchored
head, which is exactly tail truncation. Between the last anchor and the end of the file,
truncation stays undetectable; checkpoint as often as that matters.

Sans-IO: the chain never reads a clock or a file; the daemon passes ``at_ms``, writes the
lines it gets back, and on restart resumes from the last line of its file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from i24net.core import keys as k
from i24net.core.errors import CryptoError, I24Error, WireFormatError
from i24net.core.wire import pack

DOMAIN_AUDIT = b"i24net/v1/audit\x00"
DOMAIN_AUDIT_HEAD = b"i24net/v1/audit-head\x00"
HASH_SIZE = 32
GENESIS = bytes(HASH_SIZE)  # the "previous hash" of entry 0
CHECKPOINT_EVENT = "checkpoint"

# Limits. An entry records a decision, not a message: names, codes and a few details. 64 KiB
# is far above any honest line (a full entry is a few hundred bytes) and bounds what a
# hostile file can make the reader hold at once.
MAX_LINE = 64 * 1024
MAX_ACTOR = 64
MAX_EVENT = 32
MAX_REASON = 128
MAX_MSG_ID = 64  # hex characters: up to 32 bytes
MAX_DETAILS = 32  # keys per entry
MAX_DETAIL_TEXT = 1024
MAX_DETAIL_ITEMS = 64
MAX_DETAIL_ITEM = 256
_INT_RANGE = (-(1 << 63), (1 << 63) - 1)  # what msgpack and every JSON reader keep exact

_ACTOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_EVENT = re.compile(r"^[a-z][a-z0-9._-]*$")
_REASON = re.compile(r"^[a-z0-9][a-z0-9.+_-]*$")
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_HEX = re.compile(r"^(?:[0-9a-f]{2})*$")

DetailItem = str | int
DetailValue = str | int | tuple[DetailItem, ...]
DetailInput = str | int | list[DetailItem] | tuple[DetailItem, ...]

_FIELDS = ("index", "at_ms", "actor", "event", "msg_id", "reason", "details", "prev", "hash")
_CHECKPOINT_FIELDS = ("checkpoint", "signer", "count", "head", "at_ms", "sig")

# Which failures are about integrity (the content does not add up) rather than format.
_INTEGRITY = frozenset({"audit.sequence", "audit.hash", "audit.chain", "audit.truncated",
                        "audit.anchor", "audit.signature", "audit.no-key"})


def _schema(message: str, reason: str = "audit.schema") -> NoReturn:
    raise WireFormatError(message, reason=reason)


def _text(name: str, v: object, pattern: re.Pattern[str] | None, max_len: int, *,
          allow_empty: bool = False) -> str:
    if not isinstance(v, str):
        _schema(f"{name} must be text")
    if not v:
        if allow_empty:
            return v
        _schema(f"{name} must not be empty")
    if len(v) > max_len:
        _schema(f"{name} is longer than {max_len} characters")
    if pattern is not None and not pattern.match(v):
        _schema(f"{name} {v!r} has characters outside {pattern.pattern}")
    return v


def _ms(name: str, v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 63:
        _schema(f"{name} must be a non-negative integer")
    return v


def _detail_item(key: str, v: object, max_len: int) -> DetailItem:
    if isinstance(v, int) and not isinstance(v, bool):
        if not _INT_RANGE[0] <= v <= _INT_RANGE[1]:
            _schema(f"detail {key!r} is outside the 64-bit integer range")
        return v
    if isinstance(v, str):
        if len(v) > max_len:
            _schema(f"detail {key!r} is longer than {max_len} characters")
        return v
    _schema(f"detail {key!r} must be text, an integer or a list of those")


def canonical_details(details: Mapping[str, object] | None) -> tuple[tuple[str, DetailValue],
                                                                      ...]:
    """Details as the entry stores them: sorted by key, lists as tuples, limits checked."""
    if details is None:
        return ()
    if not isinstance(details, Mapping):
        _schema("details must be a map")
    if len(details) > MAX_DETAILS:
        _schema(f"details has more than {MAX_DETAILS} keys")
    out: list[tuple[str, DetailValue]] = []
    for key in sorted(details):
        _text("detail key", key, _KEY, 64)
        v = details[key]
        if isinstance(v, (list, tuple)):
            if len(v) > MAX_DETAIL_ITEMS:
                _schema(f"detail {key!r} has more than {MAX_DETAIL_ITEMS} items")
            out.append((key, tuple(_detail_item(key, x, MAX_DETAIL_ITEM) for x in v)))
        else:
            out.append((key, _detail_item(key, v, MAX_DETAIL_TEXT)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One decision in the chain. Build with ``AuditEntry.make`` (or ``AuditChain.append``);
    the constructor checks shapes and limits but not the hash, so a parsed entry with a
    wrong hash can still be held and reported (``hash_ok``)."""

    index: int  # 0, 1, 2... within the chain
    at_ms: int  # the daemon's clock when it decided
    actor: str  # the daemon: "router", "NCB-FR"...
    event: str  # "accept", "refuse", "deliver", "drop", "receipt", "checkpoint"...
    msg_id: str  # lower-case hex id of the message concerned, or ""
    reason: str  # a reason code such as "clearance.recipient", or ""
    details: tuple[tuple[str, DetailValue], ...]  # sorted by key (see canonical_details)
    prev: bytes  # hash of the entry before (GENESIS for index 0)
    hash: bytes  # SHA-256 over DOMAIN_AUDIT and everything above

    def __post_init__(self) -> None:
        _ms("index", self.index)
        _ms("at_ms", self.at_ms)
        _text("actor", self.actor, _ACTOR, MAX_ACTOR)
        _text("event", self.event, _EVENT, MAX_EVENT)
        _text("msg_id", self.msg_id, _HEX, MAX_MSG_ID, allow_empty=True)
        _text("reason", self.reason, _REASON, MAX_REASON, allow_empty=True)
        d = self.details
        pairs_ok = isinstance(d, tuple) and all(
            isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in d)
        if not pairs_ok or len(dict(d)) != len(d) or canonical_details(dict(d)) != d:
            _schema("details must be sorted (key, value) pairs, unique and within limits")
        for name in ("prev", "hash"):
            v = getattr(self, name)
            if not isinstance(v, bytes) or len(v) != HASH_SIZE:
                _schema(f"{name} must be {HASH_SIZE} bytes")

    @classmethod
    def make(cls, *, index: int, at_ms: int, actor: str, event: str, msg_id: str | bytes = "",
             reason: str = "", details: Mapping[str, DetailInput] | None = None,
             prev: bytes) -> AuditEntry:
        """A new entry with its hash computed."""
        mid = msg_id.hex() if isinstance(msg_id, (bytes, bytearray)) else msg_id.lower()
        canon = canonical_details(details)
        digest = _entry_hash(index, at_ms, actor, event, mid, reason, canon, prev)
        return cls(index, at_ms, actor, event, mid, reason, canon, prev, digest)

    def compute_hash(self) -> bytes:
        return _entry_hash(self.index, self.at_ms, self.actor, self.event, self.msg_id,
                           self.reason, self.details, self.prev)

    @property
    def hash_ok(self) -> bool:
        try:
            return self.compute_hash() == self.hash
        except I24Error:  # content that cannot even be encoded (e.g. a lone surrogate)
            return False

    def details_map(self) -> dict[str, str | int | list[DetailItem]]:
        return {key: list(v) if isinstance(v, tuple) else v for key, v in self.details}

    def to_json(self) -> dict[str, Any]:
        """The JSON object of one log line (bytes as lower-case hex)."""
        return {"index": self.index, "at_ms": self.at_ms, "actor": self.actor,
                "event": self.event, "msg_id": self.msg_id, "reason": self.reason,
                "details": self.details_map(), "prev": self.prev.hex(), "hash": self.hash.hex()}


def _entry_hash(index: int, at_ms: int, actor: str, event: str, msg_id: str, reason: str,
                details: tuple[tuple[str, DetailValue], ...], prev: bytes) -> bytes:
    # msgpack keeps map order as given; ``details`` is sorted, so the encoding is canonical.
    detail_map = {key: list(v) if isinstance(v, tuple) else v for key, v in details}
    body = pack([index, at_ms, actor, event, msg_id, reason, detail_map, prev])
    return hashlib.sha256(DOMAIN_AUDIT + body).digest()


# -- lines --------------------------------------------------------------------------------


def encode_line(entry: AuditEntry) -> bytes:
    """One log line for ``entry``: compact ASCII JSON, without the newline (the writer adds
    ``b"\\n"``, as it would after ``json.dumps``)."""
    return _dump(entry.to_json())


def _dump(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            _schema(f"duplicate key {key!r}", "audit.json")
        out[key] = value
    return out


def _no_float(text: str) -> NoReturn:
    _schema(f"number {text} is not an integer", "audit.json")


def _load_json(line: bytes | str) -> dict[str, Any]:
    """Strictly decode one line to a JSON object; ``WireFormatError`` says what is wrong."""
    if isinstance(line, str):
        try:
            data = line.encode("utf-8")
        except UnicodeEncodeError:
            _schema("line is not valid UTF-8 text", "audit.utf8")
    elif isinstance(line, (bytes, bytearray, memoryview)):
        data = bytes(line)
    else:
        _schema(f"expected a line of text, got {type(line).__name__}", "audit.type")
    if data.endswith(b"\n"):
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
    if len(data) > MAX_LINE:
        _schema(f"line is {len(data)} bytes, over the {MAX_LINE}-byte limit", "audit.oversized")
    if not data.strip():
        _schema("empty line", "audit.empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        _schema("line is not valid UTF-8 text", "audit.utf8")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_no_float,
                         parse_constant=_no_float)
    except json.JSONDecodeError as exc:
        _schema(f"not valid JSON ({exc.msg} at column {exc.colno})", "audit.json")
    except RecursionError:
        _schema("not valid JSON (nested too deeply)", "audit.json")
    if not isinstance(obj, dict):
        _schema("a line must hold a JSON object", "audit.json")
    return obj


def _exact_keys(obj: Mapping[str, Any], fields: tuple[str, ...]) -> None:
    missing = [f for f in fields if f not in obj]
    extra = sorted(set(obj) - set(fields))
    if missing:
        _schema(f"missing field(s) {', '.join(missing)}")
    if extra:
        _schema(f"unexpected field(s) {', '.join(extra)}")


def _hash_hex(name: str, v: object) -> bytes:
    if not isinstance(v, str) or len(v) != 2 * HASH_SIZE or not _HEX.match(v):
        _schema(f"{name} must be {2 * HASH_SIZE} lower-case hex digits")
    return bytes.fromhex(v)


def parse_line(line: bytes | str) -> AuditEntry:
    """Strictly parse one log line (with or without its newline) into an ``AuditEntry``.

    Checks shapes and limits only; whether the hash and the chain add up is
    ``verify_lines``'s business (or ``entry.hash_ok`` for one entry).
    """
    obj = _load_json(line)
    _exact_keys(obj, _FIELDS)
    details = obj["details"]
    if not isinstance(details, dict):
        _schema("details must be a JSON object")
    canon = canonical_details(details)
    return AuditEntry(index=obj["index"], at_ms=obj["at_ms"], actor=obj["actor"],
                      event=obj["event"], msg_id=obj["msg_id"], reason=obj["reason"],
                      details=canon, prev=_hash_hex("prev", obj["prev"]),
                      hash=_hash_hex("hash", obj["hash"]))


# -- signed checkpoints -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement "the first ``count`` entries of my chain end in ``head``"."""

    signer: str  # the agency whose key signed (the daemon's agency)
    count: int  # entries covered: indexes 0 .. count-1
    head: bytes  # hash of entry count-1 (GENESIS when count is 0)
    at_ms: int
    signature: bytes

    def __post_init__(self) -> None:
        _text("checkpoint signer", self.signer, _ACTOR, MAX_ACTOR)
        _ms("checkpoint count", self.count)
        _ms("checkpoint at_ms", self.at_ms)
        if not isinstance(self.head, bytes) or len(self.head) != HASH_SIZE:
            _schema(f"checkpoint head must be {HASH_SIZE} bytes")
        if not isinstance(self.signature, bytes) or len(self.signature) != k.SIG_SIZE:
            _schema(f"checkpoint signature must be {k.SIG_SIZE} bytes")

    @staticmethod
    def signed_bytes(signer: str, count: int, head: bytes, at_ms: int) -> bytes:
        return pack([signer, count, head, at_ms])

    def verify(self, verify_key: bytes) -> None:
        """``CryptoError`` unless ``verify_key`` signed this checkpoint."""
        k.verify(verify_key, DOMAIN_AUDIT_HEAD,
                 self.signed_bytes(self.signer, self.count, self.head, self.at_ms),
                 self.signature, what="audit checkpoint", agency=self.signer)

    def encode_line(self) -> bytes:
        return _dump({"checkpoint": 1, "signer": self.signer, "count": self.count,
                      "head": self.head.hex(), "at_ms": self.at_ms,
                      "sig": self.signature.hex()})

    @classmethod
    def parse_line(cls, line: bytes | str) -> Checkpoint:
        obj = _load_json(line)
        _exact_keys(obj, _CHECKPOINT_FIELDS)
        if obj["checkpoint"] != 1:
            _schema("unknown checkpoint version")
        return cls(signer=obj["signer"], count=obj["count"],
                   head=_hash_hex("head", obj["head"]), at_ms=obj["at_ms"],
                   signature=_sig_hex(obj["sig"]))

    @classmethod
    def from_entry(cls, entry: AuditEntry) -> Checkpoint:
        """The checkpoint a ``checkpoint`` entry records (it covers the entries before it)."""
        if entry.event != CHECKPOINT_EVENT or [key for key, _ in entry.details] != ["sig"]:
            _schema("a checkpoint entry carries exactly one detail, 'sig'")
        return cls(signer=entry.actor, count=entry.index, head=entry.prev, at_ms=entry.at_ms,
                   signature=_sig_hex(entry.details[0][1]))


def _sig_hex(v: object) -> bytes:
    if not isinstance(v, str) or len(v) != 2 * k.SIG_SIZE or not _HEX.match(v):
        _schema(f"signature must be {2 * k.SIG_SIZE} lower-case hex digits")
    return bytes.fromhex(v)


# -- the chain ----------------------------------------------------------------------------

Signer = Callable[[bytes, bytes], bytes]  # sign(domain, message), e.g. AgencyKeys.sign
Keyring = Mapping[str, bytes | Sequence[bytes]]  # signer -> its public key(s)


class AuditChain:
    """The writing end: appends entries linked to the head. No I/O.

    ``entries`` holds what was appended in this process (the last ``keep`` of them, or all
    when ``keep`` is None): the file is the record, memory is only a convenience.
    """

    __slots__ = ("_entries", "_head", "_last", "_next")

    def __init__(self, *, keep: int | None = None) -> None:
        self._entries: deque[AuditEntry] = deque(maxlen=keep)
        self._head = GENESIS
        self._next = 0
        self._last: AuditEntry | None = None

    @classmethod
    def resume(cls, last_line: bytes | str, *, keep: int | None = None) -> AuditChain:
        """Continue the chain whose file ends with ``last_line`` (after a restart).

        The line must parse and its hash must recompute; this does not re-check the rest of
        the file (``verify_lines`` does that, and a daemon may run it first).
        """
        entry = parse_line(last_line)
        if not entry.hash_ok:
            raise CryptoError(f"cannot resume the audit chain: entry {entry.index}'s hash does "
                              "not match its content (the file was edited)",
                              reason="audit.hash")
        chain = cls(keep=keep)
        chain._head, chain._next, chain._last = entry.hash, entry.index + 1, entry
        return chain

    @property
    def head(self) -> bytes:
        """Hash of the last entry (GENESIS while the chain is empty)."""
        return self._head

    @property
    def count(self) -> int:
        """Entries in the chain so far, including those before a resume."""
        return self._next

    def __len__(self) -> int:
        return self._next

    @property
    def entries(self) -> tuple[AuditEntry, ...]:
        return tuple(self._entries)

    @property
    def last(self) -> AuditEntry | None:
        return self._last

    encode_line = staticmethod(encode_line)  # so a writer needs only the chain

    def append(self, event: str, *, at_ms: int, actor: str, msg_id: str | bytes = "",
               reason: str = "", details: Mapping[str, DetailInput] | None = None) -> AuditEntry:
        """Record one decision; returns the entry (write ``encode_line(entry) + b"\\n"``)."""
        entry = AuditEntry.make(index=self._next, at_ms=at_ms, actor=actor, event=event,
                                msg_id=msg_id, reason=reason, details=details,
                                prev=self._head)
        self._entries.append(entry)
        self._head, self._next, self._last = entry.hash, self._next + 1, entry
        return entry

    def checkpoint(self, *, signer: str, sign: Signer, at_ms: int) -> tuple[AuditEntry,
                                                                           Checkpoint]:
        """Sign the current head and append a ``checkpoint`` entry recording the signature.

        Returns the entry (write it like any other) and the checkpoint (keep it outside the
        file, e.g. ``Checkpoint.encode_line`` into a separate file, to detect truncation).
        """
        count, head = self._next, self._head
        signature = sign(DOMAIN_AUDIT_HEAD, Checkpoint.signed_bytes(signer, count, head, at_ms))
        cp = Checkpoint(signer, count, head, at_ms, signature)
        entry = self.append(CHECKPOINT_EVENT, at_ms=at_ms, actor=signer,
                            details={"sig": signature.hex()})
        return entry, cp


# -- verification -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``verify_lines`` found. ``ok`` when ``reason`` is empty; otherwise ``line`` (1-based)
    and ``index`` say where the first problem is and ``why`` says what it is."""

    entries: int  # entries that verified, i.e. before the first problem
    head: bytes  # hash of the last entry that verified (GENESIS if none)
    checkpoints: int = 0  # checkpoint entries among them
    checkpoints_verified: int = 0  # ... whose signature was checked against a key
    anchored: bool = False  # an external checkpoint was matched
    line: int | None = None
    index: int | None = None
    reason: str = ""
    why: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason

    def error(self, source: str = "audit log") -> I24Error | None:
        """The problem as an error (``CryptoError`` for integrity, ``WireFormatError`` for
        format), with a message naming ``source`` and the line; None when the chain is valid."""
        if self.ok:
            return None
        where = f"{source} line {self.line}" if self.line is not None else source
        cls = CryptoError if self.reason in _INTEGRITY else WireFormatError
        return cls(f"{where}: {self.why}", reason=self.reason)

    def raise_for_error(self, source: str = "audit log") -> None:
        exc = self.error(source)
        if exc is not None:
            raise exc


def verify_lines(lines: Iterable[bytes | str], *, keys: Keyring | None = None,
                 anchor: Checkpoint | None = None) -> VerifyReport:
    """Walk a log's lines and report the first entry that does not add up.

    Streams: holds one line at a time. Checks, in order, per line: it parses strictly; its
    index is the next one; its hash recomputes; its ``prev`` is the previous hash.

    ``keys`` maps signer -> Ed25519 public key (or several, e.g. the router's keys): when
    given, every ``checkpoint`` entry's signature must verify under one of its actor's keys
    (a chain rewritten with fresh hashes fails there). ``anchor`` is a checkpoint kept outside the file: it must verify under ``keys``
    and the file must reach ``anchor.count`` entries ending in ``anchor.head``.

    Without an anchor, entries removed from the *end* of the file cannot be detected: what
    is left is a valid, shorter chain. That is a property of any hash chain, not a bug here.
    """
    state = _Walk()
    if anchor is not None:
        found = _signed_by(anchor, keys)
        if found is False:
            return state.fail(None, "audit.signature",
                              f"the external checkpoint is not signed by {anchor.signer}")
        if found is not True:
            return state.fail(None, *found)
    for lineno, raw in enumerate(lines, 1):
        try:
            entry = parse_line(raw)
        except WireFormatError as exc:
            return state.fail(lineno, exc.reason, exc.message)
        problem = state.check(entry, keys, anchor)
        if problem:
            return state.fail(lineno, *problem)
    if anchor is not None:
        if state.count < anchor.count:
            return state.fail(state.count + 1, "audit.truncated",
                              f"the file ends after {state.count} entries but the signed "
                              f"checkpoint of {anchor.signer} covers {anchor.count} "
                              "(entries were removed from the end)")
        state.anchored = True
    return state.report()


def _signed_by(cp: Checkpoint, keys: Keyring | None) -> bool | tuple[str, str]:
    """True if one of the signer's keys verifies ``cp``, False if none does, or the problem
    when there is no key to try."""
    found = (keys or {}).get(cp.signer)
    if not found:
        return ("audit.no-key", f"no public key for checkpoint signer {cp.signer}")
    for key in (found,) if isinstance(found, bytes) else found:
        try:
            cp.verify(key)
        except (CryptoError, WireFormatError):
            continue
        return True
    return False


class _Walk:
    """The running state of one verification (next index, previous hash, counters)."""

    __slots__ = ("anchored", "checkpoints", "count", "prev", "verified")

    def __init__(self) -> None:
        self.count = 0
        self.prev = GENESIS
        self.checkpoints = 0
        self.verified = 0
        self.anchored = False

    def check(self, e: AuditEntry, keys: Keyring | None,
              anchor: Checkpoint | None) -> tuple[str, str] | None:
        i = self.count
        if e.index != i:
            return ("audit.sequence", f"entry index {e.index} where {i} was expected "
                    "(an entry was removed, inserted or moved)")
        if not e.hash_ok:
            return ("audit.hash", f"entry {i}'s hash does not match its content "
                    "(the entry was edited)")
        if e.prev != self.prev:
            return ("audit.chain", f"entry {i}'s prev does not match the hash of entry "
                    f"{i - 1} (an entry was edited, inserted or moved)" if i else
                    "entry 0's prev is not the genesis value (the start was removed)")
        if e.event == CHECKPOINT_EVENT:
            try:
                cp = Checkpoint.from_entry(e)
            except WireFormatError as exc:
                return ("audit.schema", f"entry {i}: {exc.message}")
            self.checkpoints += 1
            if keys is not None:
                found = _signed_by(cp, keys)
                if found is False:
                    return ("audit.signature", f"checkpoint entry {i} is not signed by "
                            f"{cp.signer} over the chain before it (the chain was rewritten)")
                if found is not True:
                    return found
                self.verified += 1
        if anchor is not None and anchor.count == i + 1 and e.hash != anchor.head:
            return ("audit.anchor", f"entry {i} differs from the one the signed checkpoint of "
                    f"{anchor.signer} covers (the chain was rewritten)")
        self.count, self.prev = i + 1, e.hash
        return None

    def fail(self, line: int | None, reason: str, why: str) -> VerifyReport:
        return VerifyReport(self.count, self.prev, self.checkpoints, self.verified,
                            False, line, self.count, reason, why)

    def report(self) -> VerifyReport:
        return VerifyReport(self.count, self.prev, self.checkpoints, self.verified,
                            self.anchored)
