"""Frames: the signed objects besides envelopes that travel on the submit and inbox topics.

Theory of operation: every frame is ``msgpack [magic, 2, doc: bin, signature: bin64, extra]``
where ``doc`` is a msgpack map signed as ``DOMAIN || doc`` and ``extra`` is unsigned payload
whose integrity the doc pins by digest (the envelope inside a delivery). Magic strings keep
the kinds apart (and the domains keep their signatures apart):

- ``i24d`` delivery, router -> recipient: a routing stamp (message id, envelope digest,
  sender, accepted recipients, a per-recipient sequence number, router time, directory
  serial) signed by a router key listed in the directory, followed by the envelope bytes.
- ``i24s`` report, router -> sender: accepted (with recipients) or refused (reason code).
- ``i24r`` receipt, recipient -> router -> sender: delivered / read / refused, bound to the
  message id and envelope digest, signed by the recipient.
- ``i24g`` gap request, node -> router: "resend my deliveries with these sequence numbers".

Parsing is strict (limits, exact fields) and verification is explicit: ``parse_frame`` only
decodes; each ``verify_*`` checks the signature against the directory before anything acts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from i24net.core import keys as k
from i24net.core.directory import AgencyRecord, Directory
from i24net.core.envelope import ID_SIZE, MAX_HEADER, WIRE_VERSION
from i24net.core.errors import CryptoError, I24Error, WireFormatError
from i24net.core.labels import Precedence
from i24net.core.wire import (
    MAX_ENVELOPE,
    MAX_RECIPIENTS,
    Fields,
    fail,
    pack,
    peek_field,
    unpack,
)

DELIVERY, REPORT, RECEIPT, GAP = "i24d", "i24s", "i24r", "i24g"
ENVELOPE = "i24e"
FRAME_VERSION = 2  # 2: the routing stamp names the agreement it applied (agr)
MAX_DOC = 256 * 1024  # a stamp for 4,096 recipients with sequence numbers fits easily
RECEIPT_STATUSES = ("delivered", "read", "refused")
MAX_GAP = 10_000  # one request may ask for at most this many sequence numbers
DOMAIN_REPORT = b"i24net/v1/report\x00"
DOMAIN_GAP = b"i24net/v1/gap\x00"

# Control traffic (reports, receipts, gap requests, resends) goes ahead of ROUTINE and behind
# FLASH, level with IMMEDIATE: a sender waiting on an answer should not queue behind a flood
# of routine deliveries. The router's outbound queue and every inbound queue use it.
CONTROL_PRIORITY = 1


def peek_magic(raw: bytes) -> str | None:
    """The frame kind, read from the first bytes without decoding the whole frame.

    A msgpack array of 4 or 5 starts with 0x94/0x95 then a fixstr of 4 (0xa4) + magic.
    """
    if len(raw) >= 6 and raw[0] in (0x94, 0x95) and raw[1] == 0xA4:
        try:
            return raw[2:6].decode("ascii")
        except UnicodeDecodeError:
            return None
    return None


def _bin_at(raw: bytes, pos: int) -> tuple[int, int]:
    """(start, end) of the msgpack bin object at ``pos``, without copying it."""
    head = raw[pos] if pos < len(raw) else -1
    width = {0xC4: 1, 0xC5: 2, 0xC6: 4}.get(head)
    if width is None:
        fail("frame", "expected a binary field", reason="wire.malformed")
    start = pos + 1 + width
    end = start + int.from_bytes(raw[pos + 1:start], "big")
    if start > len(raw) or end > len(raw):
        fail("frame", "truncated", reason="wire.truncated")
    return start, end


_ENVELOPE_HEAD = b"\x94\xa4" + ENVELOPE.encode() + bytes([WIRE_VERSION])
_DELIVERY_HEAD = b"\x95\xa4" + DELIVERY.encode() + bytes([FRAME_VERSION])


def peek_header_bytes(raw: bytes) -> bytes | None:
    """The clear header bytes of an envelope, or of the envelope inside a delivery, found
    without verifying, copying or decoding anything else; None for every other frame kind
    (reports, receipts, gap requests). Only for ordering and filtering work: the frame is
    still verified in full before anything acts on it. Raises ``WireFormatError`` if
    malformed.

    Cost: a few slices (microseconds at any size), against a full ``parse_frame`` +
    ``Envelope.parse`` (0.1-1.5 ms) that copies and re-encodes the whole envelope.
    """
    if raw.startswith(_DELIVERY_HEAD):
        pos = _bin_at(raw, len(_DELIVERY_HEAD))[1]  # doc
        pos = _bin_at(raw, pos)[1]  # signature
        pos = _bin_at(raw, pos)[0]  # extra: the envelope
    elif raw.startswith(_ENVELOPE_HEAD):
        pos = 0
    else:
        return None
    if raw[pos:pos + len(_ENVELOPE_HEAD)] != _ENVELOPE_HEAD:
        fail("envelope", "not an i24net envelope of this version (bad magic or version)",
             reason="wire.magic")
    signed = _bin_at(raw, pos + len(_ENVELOPE_HEAD))[0]
    if raw[signed:signed + 1] != b"\x95":
        fail("envelope content", "expected [header, sending key, commitment, wraps, "
             "ciphertext]")
    start, end = _bin_at(raw, signed + 1)
    return raw[start:end]


def peek_precedence(raw: bytes) -> int | None:
    """The precedence of an envelope, or of the envelope inside a delivery, read from the
    clear header (``peek_header_bytes``, then a walk over the header's keys: about 10 us);
    None for every other frame kind. Only for ordering work."""
    header = peek_header_bytes(raw)
    if header is None:
        return None
    prec = peek_field(header, "prec", what="header", max_size=MAX_HEADER)
    if not isinstance(prec, str):
        fail("header", "no precedence")
    try:
        return int(Precedence[prec])
    except KeyError:
        fail("header", f"unknown precedence {prec[:16]!r}", reason="wire.schema")


def frame_priority(payload: bytes) -> int:
    """Where an inbound frame goes in its receiver's queue, without verifying it (only used
    to order work; lower first).

    Envelopes (at the router) and deliveries (at a node) carry their message's precedence,
    read from the clear header in ~10-20 us whatever the size (``peek_precedence``); control
    frames (reports, receipts, gap requests) go at ``CONTROL_PRIORITY``. A malformed frame
    goes first (0): it is cheap to refuse, and refusing it promptly tells its sender.
    """
    try:
        prec = peek_precedence(payload)
    except I24Error:
        return 0
    return CONTROL_PRIORITY if prec is None else prec


@dataclass(frozen=True, slots=True)
class Frame:
    magic: str
    doc: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    extra: bytes = field(repr=False, default=b"")


def make_frame(magic: str, domain: bytes, doc: dict[str, Any], signer: k.AgencyKeys,
               extra: bytes | None = None) -> bytes:
    raw_doc = pack(doc)
    sig = signer.sign(domain, raw_doc)
    parts: list[Any] = [magic, FRAME_VERSION, raw_doc, sig]
    if extra is not None:
        parts.append(extra)
    return pack(parts)


def parse_frame(raw: bytes) -> Frame:
    outer = unpack(raw, what="frame", max_size=MAX_ENVELOPE + MAX_DOC, max_items=8)
    if not isinstance(outer, list) or len(outer) not in (4, 5):
        fail("frame", "expected [magic, version, doc, signature(, extra)]")
    magic, version, doc, sig = outer[:4]
    extra = outer[4] if len(outer) == 5 else b""
    if magic not in (DELIVERY, REPORT, RECEIPT, GAP):
        fail("frame", f"unknown frame kind {magic!r}", reason="wire.magic")
    if type(version) is not int or version != FRAME_VERSION:  # not 2.0, not a bool
        fail("frame", f"frame version {version!r} is not supported", reason="wire.version")
    if len(outer) == 5 and magic != DELIVERY:  # unsigned bytes a receipt would carry along
        fail("frame", f"a {magic} frame has no extra part")
    if not (isinstance(doc, bytes) and isinstance(sig, bytes) and isinstance(extra, bytes)):
        fail("frame", "doc, signature and extra must be binary")
    if len(doc) > MAX_DOC or len(sig) != k.SIG_SIZE:
        fail("frame", "doc too large or signature not 64 bytes")
    return Frame(magic, doc, sig, extra)


def _verify_router(frame: Frame, domain: bytes, directory: Directory, key_id: bytes) -> None:
    for key in directory.router_keys:
        if k.key_id(key) == key_id:
            k.verify(key, domain, frame.doc, frame.signature, what=f"{frame.magic} frame",
                     agency="router")
            return
    raise CryptoError("frame signed by a router key the directory does not list",
                      reason="sig.unknown-key", agency="router")


def _active(directory: Directory, agency_id: str) -> AgencyRecord:
    """The signer's record; a revoked agency's key is no longer trusted for anything."""
    rec = directory.agency(agency_id)
    if not rec.active:
        raise CryptoError(f"{agency_id} is revoked (directory version {directory.serial})",
                          reason="sender.revoked", agency=agency_id)
    return rec


# -- routing stamp + delivery -------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Stamp:
    """What the router countersigns for an accepted message."""

    msg_id: bytes
    digest: bytes
    sender: str
    recipients: tuple[str, ...]
    seqs: dict[str, int]
    router_ms: int
    directory_serial: int
    router_kid: bytes
    duplicate: bool = False
    # the agreement under which the message crossed to the recipient's organisation ("" when
    # sender and recipient belong to the same one)
    agreement: str = ""

    def to_doc(self) -> dict[str, Any]:
        return {"id": self.msg_id, "digest": self.digest, "from": self.sender,
                "to": list(self.recipients), "seq": dict(self.seqs),
                "at": self.router_ms, "dir": self.directory_serial, "rk": self.router_kid,
                "dup": self.duplicate, "agr": self.agreement}

    @classmethod
    def from_doc(cls, doc: bytes) -> Stamp:
        f = Fields(unpack(doc, what="stamp", max_size=MAX_DOC, max_items=MAX_RECIPIENTS),
                   "stamp")
        seqs = f.raw("seq")
        st = cls(f.blob("id", size=ID_SIZE), f.blob("digest", size=32),
                 f.text("from", max_len=32), tuple(f.text_list("to", max_len=32)), {},
                 f.integer("at"), f.integer("dir", lo=1), f.blob("rk", size=k.KEY_ID_SIZE),
                 f.flag("dup"), f.text("agr", max_len=64, allow_empty=True))
        f.done()
        if not isinstance(seqs, dict) or not all(
                isinstance(a, str) and isinstance(n, int) and not isinstance(n, bool)
                and n >= 1 for a, n in seqs.items()):
            fail("stamp", "seq must map agency ids to positive integers")
        object.__setattr__(st, "seqs", dict(seqs))
        return st


def make_delivery(stamp: Stamp, envelope: bytes, router: k.AgencyKeys) -> bytes:
    return make_frame(DELIVERY, k.DOMAIN_STAMP, stamp.to_doc(), router, envelope)


def verify_delivery(frame: Frame, directory: Directory, me: str) -> Stamp:
    """Check a delivery's stamp: router signature, digest of the enclosed envelope, and that
    ``me`` is among the stamped recipients with a sequence number."""
    if frame.magic != DELIVERY:
        fail("delivery", f"expected a delivery, got {frame.magic}", reason="wire.magic")
    stamp = Stamp.from_doc(frame.doc)
    _verify_router(frame, k.DOMAIN_STAMP, directory, stamp.router_kid)
    if hashlib.sha256(frame.extra).digest() != stamp.digest:
        raise CryptoError("the envelope does not match the digest the router stamped",
                          reason="stamp.digest", msg_id=stamp.msg_id.hex())
    if me not in stamp.recipients or me not in stamp.seqs:
        raise CryptoError(f"the routing stamp does not name {me}", reason="stamp.recipient",
                          agency=me, msg_id=stamp.msg_id.hex())
    return stamp


# -- router report -------------------------------------------------------------------------

# The id a report names when the submission it answers did not decode (there is no id to
# name): 16 zero bytes. Its digest names the bytes received; no outbox entry matches it.
NO_MESSAGE_ID = bytes(ID_SIZE)

@dataclass(frozen=True, slots=True)
class Report:
    """The router's answer to a sender."""

    msg_id: bytes
    digest: bytes
    sender: str
    accepted: bool
    reason: str
    message: str
    recipients: tuple[str, ...]
    router_ms: int
    router_kid: bytes

    def to_doc(self) -> dict[str, Any]:
        return {"id": self.msg_id, "digest": self.digest, "from": self.sender,
                "ok": self.accepted, "reason": self.reason, "msg": self.message,
                "to": list(self.recipients), "at": self.router_ms, "rk": self.router_kid}

    @classmethod
    def from_doc(cls, doc: bytes) -> Report:
        f = Fields(unpack(doc, what="report", max_size=MAX_DOC, max_items=MAX_RECIPIENTS),
                   "report")
        r = cls(f.blob("id", size=ID_SIZE), f.blob("digest", size=32, optional=False),
                f.text("from", max_len=64), f.flag("ok"), f.text("reason", max_len=64),
                f.text("msg", max_len=4096, allow_empty=True),
                tuple(f.text_list("to", max_len=32)), f.integer("at"),
                f.blob("rk", size=k.KEY_ID_SIZE))
        f.done()
        return r


def make_report(report: Report, router: k.AgencyKeys) -> bytes:
    return make_frame(REPORT, DOMAIN_REPORT, report.to_doc(), router)


def verify_report(frame: Frame, directory: Directory) -> Report:
    if frame.magic != REPORT:
        fail("report", f"expected a report, got {frame.magic}", reason="wire.magic")
    rep = Report.from_doc(frame.doc)
    _verify_router(frame, DOMAIN_REPORT, directory, rep.router_kid)
    return rep


# -- receipts ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Receipt:
    """A recipient's signed statement about one message."""

    msg_id: bytes
    digest: bytes
    sender: str  # the original sender, to whom the router forwards this receipt
    receiver: str
    status: str
    reason: str
    at_ms: int

    def __post_init__(self) -> None:
        if self.status not in RECEIPT_STATUSES:
            raise WireFormatError(f"receipt status must be one of {RECEIPT_STATUSES}",
                                  reason="wire.schema")

    def to_doc(self) -> dict[str, Any]:
        return {"id": self.msg_id, "digest": self.digest, "from": self.sender,
                "by": self.receiver, "status": self.status, "reason": self.reason,
                "at": self.at_ms}

    @classmethod
    def from_doc(cls, doc: bytes) -> Receipt:
        f = Fields(unpack(doc, what="receipt", max_size=4096, max_items=16), "receipt")
        try:
            r = cls(f.blob("id", size=ID_SIZE), f.blob("digest", size=32),
                    f.text("from", max_len=32), f.text("by", max_len=32),
                    f.text("status", max_len=16), f.text("reason", max_len=64,
                                                         allow_empty=True),
                    f.integer("at"))
        except WireFormatError:
            raise
        f.done()
        return r


def make_receipt(receipt: Receipt, receiver: k.AgencyKeys) -> bytes:
    return make_frame(RECEIPT, k.DOMAIN_RECEIPT, receipt.to_doc(), receiver)


def verify_receipt(frame: Frame, directory: Directory) -> Receipt:
    if frame.magic != RECEIPT:
        fail("receipt", f"expected a receipt, got {frame.magic}", reason="wire.magic")
    rec = Receipt.from_doc(frame.doc)
    agency = _active(directory, rec.receiver)
    k.verify(agency.sign_key, k.DOMAIN_RECEIPT, frame.doc, frame.signature,
             what="receipt", agency=rec.receiver)
    return rec


# -- gap requests --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class GapRequest:
    """Ask for deliveries ``first``-``last`` of one router stream again.

    ``router_kid`` names the stream (the key id of the shard that numbered it); empty means
    "the router that receives this", which is the only one when there is a single shard.
    """

    agency: str
    first: int
    last: int
    at_ms: int
    router_kid: bytes = b""

    def __post_init__(self) -> None:
        if not 1 <= self.first <= self.last or self.last - self.first >= MAX_GAP:
            raise WireFormatError(f"a gap request covers 1-{MAX_GAP} sequence numbers",
                                  reason="wire.schema")

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"by": self.agency, "first": self.first, "last": self.last,
                               "at": self.at_ms}
        if self.router_kid:
            doc["rk"] = self.router_kid
        return doc

    @classmethod
    def from_doc(cls, doc: bytes) -> GapRequest:
        f = Fields(unpack(doc, what="gap request", max_size=1024, max_items=8), "gap request")
        g = cls(f.text("by", max_len=32), f.integer("first", lo=1), f.integer("last", lo=1),
                f.integer("at"), f.blob("rk", size=k.KEY_ID_SIZE, optional=True) or b"")
        f.done()
        return g


def make_gap(gap: GapRequest, node: k.AgencyKeys) -> bytes:
    return make_frame(GAP, DOMAIN_GAP, gap.to_doc(), node)


def verify_gap(frame: Frame, directory: Directory) -> GapRequest:
    gap = GapRequest.from_doc(frame.doc)
    agency = _active(directory, gap.agency)
    k.verify(agency.sign_key, DOMAIN_GAP, frame.doc, frame.signature,
             what="gap request", agency=gap.agency)
    return gap
