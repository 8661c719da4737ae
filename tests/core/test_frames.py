"""Frames: deliveries (routing stamps), reports, receipts and gap requests.

Round trips through make_* / parse_frame / verify_*, one tamper test per signed part (doc,
signature, the envelope pinned by digest), the keys each frame must be signed with, and
hostile bytes (Hypothesis) that may only ever raise ``I24Error``.
"""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netfixtures import (
    ROGUE_ROUTER,
    ROUTER,
    T0,
    build,
    demo_directory,
    keys_for,
    kid,
    parsed,
    stamp_delivery,
)

from i24net.core import frames as fr
from i24net.core import keys as k
from i24net.core.errors import CryptoError, I24Error, WireFormatError

D = demo_directory()
ENV = build("NCB-FR", ["@EU"])
MSG = parsed(ENV)
RKID = kid(ROUTER)


def stamp(**changes: object) -> fr.Stamp:
    base = {"msg_id": MSG.header.id, "digest": MSG.digest, "sender": "NCB-FR",
            "recipients": ("NCB-DE",), "seqs": {"NCB-DE": 7}, "router_ms": T0,
            "directory_serial": 1, "router_kid": RKID}
    base.update(changes)
    return fr.Stamp(**base)  # type: ignore[arg-type]


def report(**changes: object) -> fr.Report:
    base = {"msg_id": MSG.header.id, "digest": MSG.digest, "sender": "NCB-FR",
            "accepted": True, "reason": "ok", "message": "accepted for 2 recipient(s)",
            "recipients": ("EUROPOL", "NCB-DE"), "router_ms": T0, "router_kid": RKID}
    base.update(changes)
    return fr.Report(**base)  # type: ignore[arg-type]


def receipt(**changes: object) -> fr.Receipt:
    base = {"msg_id": MSG.header.id, "digest": MSG.digest, "sender": "NCB-FR",
            "receiver": "NCB-DE", "status": "delivered", "reason": "", "at_ms": T0}
    base.update(changes)
    return fr.Receipt(**base)  # type: ignore[arg-type]


GAP = fr.GapRequest("NCB-DE", 3, 9, T0)


def delivery() -> bytes:
    return fr.make_delivery(stamp(), ENV, ROUTER)


def all_frames() -> dict[str, bytes]:
    return {
        "delivery": delivery(),
        "report": fr.make_report(report(), ROUTER),
        "receipt": fr.make_receipt(receipt(), keys_for("NCB-DE")),
        "gap": fr.make_gap(GAP, keys_for("NCB-DE")),
    }


def verify(kind: str, raw: bytes) -> object:
    f = fr.parse_frame(raw)
    if kind == "delivery":
        return fr.verify_delivery(f, D, "NCB-DE")
    if kind == "report":
        return fr.verify_report(f, D)
    if kind == "receipt":
        return fr.verify_receipt(f, D)
    assert f.magic == fr.GAP
    return fr.verify_gap(f, D)


# -- round trips ------------------------------------------------------------------------------

def test_delivery_round_trip() -> None:
    raw = delivery()
    assert fr.peek_magic(raw) == fr.DELIVERY
    f = fr.parse_frame(raw)
    assert f.extra == ENV
    assert fr.verify_delivery(f, D, "NCB-DE") == stamp()


def test_report_round_trip() -> None:
    for rep in (report(), report(accepted=False, reason="clearance.recipient",
                                 message="not cleared", recipients=())):
        raw = fr.make_report(rep, ROUTER)
        assert fr.peek_magic(raw) == fr.REPORT
        assert fr.verify_report(fr.parse_frame(raw), D) == rep


@pytest.mark.parametrize("status", fr.RECEIPT_STATUSES)
def test_receipt_round_trip(status: str) -> None:
    rec = receipt(status=status, reason="clearance.recipient" if status == "refused" else "")
    raw = fr.make_receipt(rec, keys_for("NCB-DE"))
    assert fr.peek_magic(raw) == fr.RECEIPT
    assert fr.verify_receipt(fr.parse_frame(raw), D) == rec


def test_gap_round_trip() -> None:
    raw = fr.make_gap(GAP, keys_for("NCB-DE"))
    assert fr.peek_magic(raw) == fr.GAP
    assert fr.verify_gap(fr.parse_frame(raw), D) == GAP


def test_envelope_magic_is_peeked_too() -> None:
    assert fr.peek_magic(ENV) == fr.ENVELOPE
    assert fr.peek_magic(b"") is None
    assert fr.peek_magic(b"\x94\xa4\xff\xfe\xfd\xfc") is None


gaps = st.integers(1, 10**6).flatmap(lambda first: st.builds(
    fr.GapRequest, st.sampled_from(["NCB-DE", "NCB-FR"]), st.just(first),
    st.integers(first, first + fr.MAX_GAP - 1), st.integers(0, 2**62)))


@given(gaps)
@settings(max_examples=50, deadline=None)
def test_property_gap_round_trip(gap: fr.GapRequest) -> None:
    raw = fr.make_gap(gap, keys_for(gap.agency))
    assert fr.verify_gap(fr.parse_frame(raw), D) == gap


@given(seqs=st.dictionaries(st.sampled_from(sorted(D.agencies)), st.integers(1, 2**40),
                            min_size=1),
       dup=st.booleans(), at=st.integers(0, 2**62))
@settings(max_examples=50, deadline=None)
def test_property_stamp_round_trip(seqs: dict[str, int], dup: bool, at: int) -> None:
    st_ = stamp(recipients=tuple(sorted(seqs)), seqs=seqs, duplicate=dup, router_ms=at)
    f = fr.parse_frame(fr.make_delivery(st_, ENV, ROUTER))
    for me in seqs:
        assert fr.verify_delivery(f, D, me) == st_


def test_gap_request_limits() -> None:
    with pytest.raises(WireFormatError):
        fr.GapRequest("NCB-DE", 0, 3, T0)
    with pytest.raises(WireFormatError):
        fr.GapRequest("NCB-DE", 5, 4, T0)
    with pytest.raises(WireFormatError):
        fr.GapRequest("NCB-DE", 1, fr.MAX_GAP + 1, T0)
    assert fr.GapRequest("NCB-DE", 1, fr.MAX_GAP, T0).last == fr.MAX_GAP


def test_receipt_status_is_checked() -> None:
    with pytest.raises(WireFormatError):
        receipt(status="lost")


# -- tampering --------------------------------------------------------------------------------

def _rebuild(raw: bytes, index: int, flip_at: int) -> bytes:
    parts = msgpack.unpackb(raw)
    part = bytearray(parts[index])
    part[flip_at % len(part)] ^= 0x01
    parts[index] = bytes(part)
    return msgpack.packb(parts, use_bin_type=True)


@pytest.mark.parametrize("kind", ["delivery", "report", "receipt", "gap"])
@pytest.mark.parametrize("part", [2, 3], ids=["doc", "signature"])
def test_flipping_a_bit_of_doc_or_signature_is_refused(kind: str, part: int) -> None:
    raw = all_frames()[kind]
    verify(kind, raw)  # the original is fine
    for at in (0, 5, 17, 31, 63, -1):
        with pytest.raises(I24Error):
            verify(kind, _rebuild(raw, part, at))


def test_flipping_a_bit_of_the_envelope_breaks_the_stamped_digest() -> None:
    for at in (0, 100, len(ENV) // 2, -1):
        with pytest.raises(CryptoError) as exc:
            verify("delivery", _rebuild(delivery(), 4, at))
        assert exc.value.reason == "stamp.digest"


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_property_any_single_bit_flip_anywhere_is_refused(data: st.DataObject) -> None:
    frames = all_frames()
    kind = data.draw(st.sampled_from(sorted(frames)))
    raw = frames[kind]
    pos = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, 7))
    bad = bytearray(raw)
    bad[pos] ^= 1 << bit
    with pytest.raises(I24Error):
        verify(kind, bytes(bad))


def test_dropping_or_adding_the_extra_part() -> None:
    parts = msgpack.unpackb(delivery())
    without = msgpack.packb(parts[:4], use_bin_type=True)
    with pytest.raises(CryptoError) as exc:
        verify("delivery", without)
    assert exc.value.reason == "stamp.digest"
    with pytest.raises(WireFormatError):
        fr.parse_frame(msgpack.packb([*parts, b"more"], use_bin_type=True))


# -- who signs ---------------------------------------------------------------------------------

def test_stamp_by_a_router_key_the_directory_does_not_list() -> None:
    raw = fr.make_delivery(stamp(router_kid=kid(ROGUE_ROUTER)), ENV, ROGUE_ROUTER)
    with pytest.raises(CryptoError) as exc:
        verify("delivery", raw)
    assert exc.value.reason == "sig.unknown-key"


def test_stamp_naming_the_router_key_but_signed_by_another() -> None:
    for signer in (ROGUE_ROUTER, keys_for("NCB-FR")):
        raw = fr.make_delivery(stamp(), ENV, signer)
        with pytest.raises(CryptoError) as exc:
            verify("delivery", raw)
        assert exc.value.reason == "sig.invalid"


def test_stamp_signed_by_an_agency_key() -> None:
    raw = stamp_delivery(ENV, "NCB-DE", 1, signer=keys_for("NCB-FR"))
    with pytest.raises(CryptoError) as exc:
        verify("delivery", raw)
    assert exc.value.reason == "sig.unknown-key"


def test_report_by_a_rogue_router() -> None:
    for rk, signer in ((kid(ROGUE_ROUTER), ROGUE_ROUTER), (RKID, ROGUE_ROUTER)):
        raw = fr.make_report(report(router_kid=rk), signer)
        with pytest.raises(CryptoError):
            verify("report", raw)


def test_stamp_digest_mismatch() -> None:
    other = build("NCB-FR", ["@EU"])
    raw = fr.make_delivery(stamp(), other, ROUTER)  # stamp says ENV, carries another one
    with pytest.raises(CryptoError) as exc:
        verify("delivery", raw)
    assert exc.value.reason == "stamp.digest"
    assert hashlib.sha256(other).digest() != stamp().digest


def test_stamp_not_naming_me() -> None:
    raw = delivery()
    for me in ("EUROPOL", "NCB-US"):
        with pytest.raises(CryptoError) as exc:
            fr.verify_delivery(fr.parse_frame(raw), D, me)
        assert exc.value.reason == "stamp.recipient"
    # named in the list but without a sequence number is not enough either
    raw = fr.make_delivery(stamp(recipients=("EUROPOL", "NCB-DE"), seqs={"NCB-DE": 1}), ENV,
                           ROUTER)
    with pytest.raises(CryptoError) as exc:
        fr.verify_delivery(fr.parse_frame(raw), D, "EUROPOL")
    assert exc.value.reason == "stamp.recipient"


def test_receipt_signed_by_another_agency() -> None:
    raw = fr.make_receipt(receipt(receiver="NCB-DE"), keys_for("NCB-FR"))
    with pytest.raises(CryptoError) as exc:
        verify("receipt", raw)
    assert exc.value.reason == "sig.invalid"


def test_receipt_from_an_agency_the_directory_does_not_know() -> None:
    raw = fr.make_receipt(receipt(receiver="NCB-XX"), keys_for("NCB-XX"))
    with pytest.raises(I24Error):
        verify("receipt", raw)


def test_receipts_and_gap_requests_from_a_revoked_agency_are_refused() -> None:
    revoked = D.revoke("NCB-DE", T0)
    for kind in ("receipt", "gap"):
        f = fr.parse_frame(all_frames()[kind])
        with pytest.raises(CryptoError) as exc:
            fr.verify_receipt(f, revoked) if kind == "receipt" else fr.verify_gap(f, revoked)
        assert exc.value.reason == "sender.revoked"


def test_gap_signed_by_another_agency() -> None:
    raw = fr.make_gap(GAP, keys_for("NCB-FR"))
    with pytest.raises(CryptoError):
        verify("gap", raw)


def test_domains_keep_frame_kinds_apart() -> None:
    # a receipt's doc and signature relabelled as a report is not a report
    parts = msgpack.unpackb(fr.make_receipt(receipt(), ROUTER))
    parts[0] = fr.REPORT
    with pytest.raises(I24Error):
        verify("report", msgpack.packb(parts, use_bin_type=True))
    # the same doc signed for the stamp domain is not a receipt
    doc = msgpack.packb(receipt().to_doc(), use_bin_type=True)
    forged = msgpack.packb([fr.RECEIPT, fr.FRAME_VERSION, doc,
                            keys_for("NCB-DE").sign(k.DOMAIN_STAMP, doc)], use_bin_type=True)
    with pytest.raises(CryptoError):
        verify("receipt", forged)


def test_verify_functions_insist_on_their_kind() -> None:
    frames = {kind: fr.parse_frame(raw) for kind, raw in all_frames().items()}
    with pytest.raises(WireFormatError):
        fr.verify_delivery(frames["report"], D, "NCB-DE")
    with pytest.raises(WireFormatError):
        fr.verify_report(frames["receipt"], D)
    with pytest.raises(WireFormatError):
        fr.verify_receipt(frames["delivery"], D)
    with pytest.raises(I24Error):
        fr.verify_gap(frames["receipt"], D)


# -- hostile bytes ----------------------------------------------------------------------------

def _try_all(raw: bytes) -> None:
    """parse_frame and every verify_* may refuse ``raw``, but only with an I24Error."""
    try:
        f = fr.parse_frame(raw)
    except I24Error:
        return
    for call in (lambda: fr.verify_delivery(f, D, "NCB-DE"), lambda: fr.verify_report(f, D),
                 lambda: fr.verify_receipt(f, D), lambda: fr.verify_gap(f, D),
                 lambda: fr.Stamp.from_doc(f.doc), lambda: fr.Report.from_doc(f.doc),
                 lambda: fr.Receipt.from_doc(f.doc), lambda: fr.GapRequest.from_doc(f.doc)):
        try:
            call()
        except I24Error:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_property_random_bytes_raise_only_i24error(raw: bytes) -> None:
    _try_all(raw)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=12)

DOC_KEYS = sorted({*stamp().to_doc(), *report().to_doc(), *receipt().to_doc(),
                   *GAP.to_doc()})


@settings(max_examples=150, deadline=None)
@given(magic=st.sampled_from([fr.DELIVERY, fr.REPORT, fr.RECEIPT, fr.GAP, "i24e", "x"]),
       version=st.sampled_from([2, 2, 2, 1, 3, "2", None]),
       doc=st.dictionaries(st.sampled_from(DOC_KEYS), msgpack_values, max_size=12)
       | msgpack_values,
       sig=st.binary(min_size=64, max_size=64) | st.binary(max_size=70),
       extra=st.none() | st.binary(max_size=64) | msgpack_values)
def test_property_structured_hostile_frames_raise_only_i24error(
        magic: str, version: object, doc: object, sig: bytes, extra: object) -> None:
    parts: list[object] = [magic, version, msgpack.packb(doc, use_bin_type=True), sig]
    if extra is not None:
        parts.append(extra)
    _try_all(msgpack.packb(parts, use_bin_type=True))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_property_valid_docs_with_one_field_changed_raise_only_i24error(
        data: st.DataObject) -> None:
    frames = all_frames()
    kind = data.draw(st.sampled_from(sorted(frames)))
    parts = msgpack.unpackb(frames[kind])
    doc = msgpack.unpackb(parts[2])
    key = data.draw(st.sampled_from(sorted(doc)))
    if data.draw(st.booleans()):
        doc[key] = data.draw(msgpack_values)
    else:
        del doc[key]
    parts[2] = msgpack.packb(doc, use_bin_type=True)
    _try_all(msgpack.packb(parts, use_bin_type=True))


def test_oversized_frame_is_refused_before_decoding() -> None:
    with pytest.raises(WireFormatError) as exc:
        fr.parse_frame(b"\x95" + b"\x00" * (fr.MAX_DOC + (1 << 21)))
    assert exc.value.reason == "wire.oversized"
