"""audit: the hash chain verifies, and every edit, removal, insertion or re-ordering of an
entry is found at the first line it touched; signed checkpoints catch what a bare chain
cannot (tail truncation, a rewrite with fresh hashes)."""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from fixednet import agency_keys
from hypothesis import given
from hypothesis import strategies as st

from i24net.core import audit as au
from i24net.core.audit import AuditChain, AuditEntry, Checkpoint, encode_line, verify_lines
from i24net.core.errors import CryptoError, WireFormatError

T0 = 1_767_225_600_000
N = 20
EVENTS = ("accept", "refuse", "deliver", "drop", "receipt")
SIGNER = "NCB-FR"
KEYS = agency_keys(SIGNER)
PUBLIC = {SIGNER: KEYS.verify_key}


def build(n: int = N, chain: AuditChain | None = None) -> tuple[AuditChain, list[bytes]]:
    chain = AuditChain() if chain is None else chain
    lines = []
    for i in range(n):
        j = chain.count
        e = chain.append(EVENTS[j % len(EVENTS)], at_ms=T0 + 1000 * j,
                         actor="router" if j % 3 else "NCB-FR",
                         msg_id=hashlib.sha256(b"%d" % j).digest()[:16] if j % 4 else "",
                         reason="policy.clearance" if j % 5 == 1 else "",
                         details={"to": ["NCB-DE", "NCB-IT"], "n": j} if i % 2 else None)
        lines.append(encode_line(e))
    return chain, lines


CHAIN, LINES = build()


def edited(line: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    obj = json.loads(line)
    change(obj)
    return json.dumps(obj, separators=(",", ":")).encode()


def flip_hex(h: str) -> str:
    return ("1" if h[0] == "0" else "0") + h[1:]


FIELD_EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "index": lambda o: o.update(index=o["index"] + 1),
    "at_ms": lambda o: o.update(at_ms=o["at_ms"] + 1),
    "actor": lambda o: o.update(actor=o["actor"] + "X"),
    "event": lambda o: o.update(event="accept" if o["event"] != "accept" else "refuse"),
    "msg_id": lambda o: o.update(msg_id=flip_hex(o["msg_id"]) if o["msg_id"] else "00"),
    "reason": lambda o: o.update(reason="" if o["reason"] else "policy.revoked"),
    "details": lambda o: o["details"].update(extra="smuggled"),
    "prev": lambda o: o.update(prev=flip_hex(o["prev"])),
    "hash": lambda o: o.update(hash=flip_hex(o["hash"])),
}


def assert_broken_at(lines: list[bytes], line: int, reason: str | None = None,
                     **kw: Any) -> au.VerifyReport:
    report = verify_lines(lines, **kw)
    assert not report.ok, "tampering went unnoticed"
    assert report.line == line, report
    assert report.index == line - 1
    assert report.entries == line - 1
    if reason:
        assert report.reason == reason, report
    assert report.why
    return report


# -- the happy path -----------------------------------------------------------------------


def test_append_and_verify() -> None:
    report = verify_lines(LINES)
    assert report.ok and report.error() is None
    assert (report.entries, report.head) == (N, CHAIN.head)
    assert [e.index for e in CHAIN.entries] == list(range(N))
    assert CHAIN.entries[0].prev == au.GENESIS
    for a, b in zip(CHAIN.entries, CHAIN.entries[1:], strict=False):
        assert b.prev == a.hash
    assert len(CHAIN) == CHAIN.count == N and CHAIN.last == CHAIN.entries[-1]


def test_empty_log_is_a_valid_empty_chain() -> None:
    report = verify_lines([])
    assert report.ok and (report.entries, report.head) == (0, au.GENESIS)
    assert AuditChain().head == au.GENESIS


def test_lines_round_trip() -> None:
    for e, line in zip(CHAIN.entries, LINES, strict=True):
        assert b"\n" not in line and line.isascii()
        assert AuditChain.encode_line(e) == line
        assert au.parse_line(line) == e
        assert au.parse_line(line.decode()) == e
        assert au.parse_line(line + b"\n") == au.parse_line(line + b"\r\n") == e


def test_known_answer_hash() -> None:
    """The hash is SHA-256 over the domain and the msgpack array of the fields (spec)."""
    e = AuditEntry.make(index=0, at_ms=T0, actor="router", event="refuse",
                        msg_id=bytes(range(16)), reason="policy.clearance",
                        details={"to": ["NCB-DE"], "n": 2}, prev=au.GENESIS)
    body = msgpack.packb([0, T0, "router", "refuse", bytes(range(16)).hex(),
                          "policy.clearance", {"n": 2, "to": ["NCB-DE"]}, bytes(32)],
                         use_bin_type=True)
    assert e.hash == hashlib.sha256(b"i24net/v1/audit\x00" + body).digest()
    assert au.DOMAIN_AUDIT_HEAD == b"i24net/v1/audit-head\x00"


def test_details_are_canonical_whatever_the_order() -> None:
    a = AuditEntry.make(index=0, at_ms=T0, actor="r", event="x", details={"b": 1, "a": [2]},
                        prev=au.GENESIS)
    b = AuditEntry.make(index=0, at_ms=T0, actor="r", event="x", details={"a": (2,), "b": 1},
                        prev=au.GENESIS)
    assert a == b and a.details == (("a", (2,)), ("b", 1))
    assert a.details_map() == {"a": [2], "b": 1}


@pytest.mark.parametrize("details", [
    {"x": 1.5}, {"x": True}, {"x": {"nested": 1}}, {"x": [[1]]}, {"x": None},
    {f"k{i}": i for i in range(au.MAX_DETAILS + 1)}, {"x": "y" * (au.MAX_DETAIL_TEXT + 1)},
    {"x": list(range(au.MAX_DETAIL_ITEMS + 1))}, {"": 1}, {"x": 1 << 63},
])
def test_bad_details_are_refused(details: dict[str, Any]) -> None:
    with pytest.raises(WireFormatError):
        AuditChain().append("accept", at_ms=T0, actor="router", details=details)


@pytest.mark.parametrize("kw", [
    {"actor": ""}, {"actor": "a b"}, {"event": "Accept"}, {"event": ""},
    {"msg_id": "abc"}, {"msg_id": "zz"}, {"reason": "Bad Reason"}, {"at_ms": -1},
])
def test_bad_fields_are_refused(kw: dict[str, Any]) -> None:
    args: dict[str, Any] = {"event": "accept", "at_ms": T0, "actor": "router", **kw}
    event = args.pop("event")
    with pytest.raises(WireFormatError):
        AuditChain().append(event, **args)


def test_keep_bounds_memory_not_the_chain() -> None:
    chain, lines = build(10, AuditChain(keep=3))
    assert [e.index for e in chain.entries] == [7, 8, 9] and chain.count == 10
    assert verify_lines(lines).ok


# -- tampering: edit, remove, swap, insert ------------------------------------------------


@pytest.mark.parametrize("field", list(FIELD_EDITS))
@pytest.mark.parametrize("i", range(N))
def test_editing_any_field_of_any_entry_is_found_there(field: str, i: int) -> None:
    lines = list(LINES)
    lines[i] = edited(lines[i], FIELD_EDITS[field])
    assert lines[i] != LINES[i]
    assert_broken_at(lines, i + 1)


@pytest.mark.parametrize("i", range(N - 1))
def test_removing_any_entry_is_found(i: int) -> None:
    lines = LINES[:i] + LINES[i + 1:]
    assert_broken_at(lines, i + 1, "audit.sequence")


@pytest.mark.parametrize("i", range(N - 1))
def test_swapping_any_two_adjacent_entries_is_found(i: int) -> None:
    lines = list(LINES)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    assert_broken_at(lines, i + 1, "audit.sequence")


@pytest.mark.parametrize("i", range(N))
def test_inserting_a_copy_is_found(i: int) -> None:
    lines = [*LINES[:i + 1], LINES[i], *LINES[i + 1:]]
    assert_broken_at(lines, i + 2, "audit.sequence")


@pytest.mark.parametrize("i", range(N))
def test_inserting_a_well_formed_forged_entry_is_found(i: int) -> None:
    """The forgery itself links correctly; the genuine entry after it no longer does."""
    prev = CHAIN.entries[i - 1].hash if i else au.GENESIS
    forged = AuditEntry.make(index=i, at_ms=T0, actor="router", event="deliver",
                             msg_id="ab" * 16, prev=prev)
    lines = [*LINES[:i], encode_line(forged), *LINES[i:]]
    assert_broken_at(lines, i + 2, "audit.sequence")


@pytest.mark.parametrize("k", [1, 2, N - 1])
def test_removing_the_start_is_found(k: int) -> None:
    assert_broken_at(LINES[k:], 1, "audit.sequence")


def test_renumbered_removal_breaks_the_links() -> None:
    """Removing an entry and renumbering the rest: the indexes add up, the hashes do not."""
    lines = [edited(line, lambda o: o.update(index=o["index"] - 1)) if n > 5 else line
             for n, line in enumerate(LINES) if n != 5]
    assert_broken_at(lines, 6, "audit.hash")


@pytest.mark.parametrize("i", [0, 7, N - 1])
def test_edit_and_rehash_of_one_entry_breaks_the_next_link(i: int) -> None:
    e = CHAIN.entries[i]
    forged = AuditEntry.make(index=e.index, at_ms=e.at_ms, actor=e.actor,
                             event="drop" if e.event != "drop" else "deliver",
                             msg_id=e.msg_id, reason="", details=e.details_map(), prev=e.prev)
    lines = list(LINES)
    lines[i] = encode_line(forged)
    if i == N - 1:
        assert verify_lines(lines).ok  # the newest entry: only a checkpoint can tell
    else:
        assert_broken_at(lines, i + 2, "audit.chain")


# -- tail truncation and rewrites: what needs a signed checkpoint -------------------------


def signed_chain() -> tuple[list[bytes], Checkpoint]:
    """20 entries, a checkpoint entry in the middle, and an external one at the end."""
    chain, lines = build(10)
    entry, _ = chain.checkpoint(signer=SIGNER, sign=KEYS.sign, at_ms=T0 + 10_500)
    lines.append(encode_line(entry))
    chain, more = build(9, chain)
    lines += more
    _, anchor = chain.checkpoint(signer=SIGNER, sign=KEYS.sign, at_ms=T0 + 99_000)
    assert anchor.count == len(lines) == N
    return lines, anchor


def test_tail_truncation_is_invisible_without_a_checkpoint() -> None:
    """A hash chain cut at the end is still a valid chain: nothing in it can say otherwise."""
    report = verify_lines(LINES[:N - 3])
    assert report.ok and report.entries == N - 3


@pytest.mark.parametrize("keep", [0, 1, N - 1])
def test_signed_checkpoint_catches_tail_truncation(keep: int) -> None:
    lines, anchor = signed_chain()
    assert verify_lines(lines[:keep]).ok  # unanchored: cannot tell
    report = verify_lines(lines[:keep], keys=PUBLIC, anchor=anchor)
    assert not report.ok and report.reason == "audit.truncated"
    assert report.line == keep + 1 and f"covers {N}" in report.why
    assert isinstance(report.error(), CryptoError)


def test_anchored_full_chain_verifies() -> None:
    lines, anchor = signed_chain()
    report = verify_lines(lines, keys=PUBLIC, anchor=anchor)
    assert report.ok and report.anchored
    assert (report.checkpoints, report.checkpoints_verified) == (1, 1)
    assert Checkpoint.parse_line(anchor.encode_line()) == anchor


def test_anchor_needs_a_valid_signature_and_a_key() -> None:
    lines, anchor = signed_chain()
    forged = Checkpoint(anchor.signer, anchor.count, anchor.head, anchor.at_ms + 1,
                        anchor.signature)
    report = verify_lines(lines, keys=PUBLIC, anchor=forged)
    assert report.reason == "audit.signature" and report.line is None
    other = {SIGNER: agency_keys("NCB-DE").verify_key}
    assert verify_lines(lines, keys=other, anchor=anchor).reason == "audit.signature"
    assert verify_lines(lines, anchor=anchor).reason == "audit.no-key"


def rechain(lines: list[bytes], start: int, change: Callable[[AuditEntry], AuditEntry]
            ) -> list[bytes]:
    """What someone who can write the file but lacks the key can do: edit an entry and
    recompute every hash after it."""
    out = list(lines[:start])
    prev = au.parse_line(lines[start - 1]).hash if start else au.GENESIS
    for n, line in enumerate(lines[start:]):
        e = au.parse_line(line)
        if n == 0:
            e = change(e)
        e = AuditEntry.make(index=e.index, at_ms=e.at_ms, actor=e.actor, event=e.event,
                            msg_id=e.msg_id, reason=e.reason, details=e.details_map(),
                            prev=prev)
        prev = e.hash
        out.append(encode_line(e))
    return out


def _backdate(e: AuditEntry) -> AuditEntry:
    return AuditEntry.make(index=e.index, at_ms=e.at_ms - 60_000, actor=e.actor, event=e.event,
                           msg_id=e.msg_id, reason=e.reason, details=e.details_map(),
                           prev=e.prev)


def test_a_rewritten_chain_passes_the_hashes_but_not_the_checkpoint() -> None:
    lines, _ = signed_chain()
    forged = rechain(lines, 3, _backdate)
    assert verify_lines(forged).ok  # the bare chain cannot tell
    report = verify_lines(forged, keys=PUBLIC)
    assert report.reason == "audit.signature" and report.line == 11  # the checkpoint entry


def test_a_rewrite_after_the_last_checkpoint_entry_fails_the_anchor() -> None:
    lines, anchor = signed_chain()
    forged = rechain(lines, 15, _backdate)
    assert verify_lines(forged, keys=PUBLIC).ok  # the in-file checkpoint is before it
    report = verify_lines(forged, keys=PUBLIC, anchor=anchor)
    assert report.reason == "audit.anchor" and report.line == N


def test_a_signer_may_have_several_keys() -> None:
    lines, anchor = signed_chain()
    ring = {SIGNER: [agency_keys("NCB-DE").verify_key, KEYS.verify_key]}
    report = verify_lines(lines, keys=ring, anchor=anchor)
    assert report.ok and report.checkpoints_verified == 1
    assert verify_lines(lines, keys={SIGNER: []}).reason == "audit.no-key"


def test_checkpoint_entry_must_be_well_formed() -> None:
    chain, lines = build(2)
    bad = chain.append("checkpoint", at_ms=T0, actor=SIGNER, details={"sig": "00"})
    report = verify_lines([*lines, encode_line(bad)])
    assert report.reason == "audit.schema" and report.line == 3


def test_checkpoint_from_its_entry() -> None:
    chain, _ = build(4)
    head = chain.head
    entry, cp = chain.checkpoint(signer=SIGNER, sign=KEYS.sign, at_ms=T0)
    assert (cp.count, cp.head, entry.prev, entry.index) == (4, head, head, 4)
    assert Checkpoint.from_entry(entry) == cp
    cp.verify(KEYS.verify_key)
    with pytest.raises(CryptoError):
        cp.verify(agency_keys("NCB-DE").verify_key)


# -- resume -------------------------------------------------------------------------------


def test_resume_continues_a_valid_chain() -> None:
    first, lines = build(10)
    resumed = AuditChain.resume(lines[-1])
    assert (resumed.count, resumed.head, resumed.entries) == (10, first.head, ())
    _, more = build(10, resumed)
    assert verify_lines(lines + more).ok
    assert verify_lines(lines + more).head == resumed.head


def test_resume_refuses_an_edited_or_malformed_last_line() -> None:
    with pytest.raises(CryptoError) as info:
        AuditChain.resume(edited(LINES[-1], FIELD_EDITS["actor"]))
    assert info.value.reason == "audit.hash"
    with pytest.raises(WireFormatError):
        AuditChain.resume(b"{not json")


# -- strict parsing -----------------------------------------------------------------------

GOOD = json.loads(LINES[3])


def variant(**changes: Any) -> bytes:
    return json.dumps({**GOOD, **changes}, separators=(",", ":")).encode()


@pytest.mark.parametrize(("line", "reason"), [
    (b"", "audit.empty"),
    (b"   \n", "audit.empty"),
    (b"{not json", "audit.json"),
    (b"[1,2]", "audit.json"),
    (LINES[3][:-20], "audit.json"),
    (b'{"index":1,"index":1}', "audit.json"),
    (variant(at_ms=1.5), "audit.json"),
    (variant(at_ms=float("nan")), "audit.json"),
    (b"[" * 100_000, "audit.oversized"),
    (b"[" * 60_000, "audit.json"),
    (b"\xff\xfe" + LINES[3], "audit.utf8"),
    (variant(extra=1), "audit.schema"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "reason"}).encode(), "audit.schema"),
    (variant(index=True), "audit.schema"),
    (variant(index="3"), "audit.schema"),
    (variant(prev=GOOD["prev"].upper()), "audit.schema"),
    (variant(hash=GOOD["hash"][:-2]), "audit.schema"),
    (variant(details=[]), "audit.schema"),
    (variant(msg_id="XYZ"), "audit.schema"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_strict_parsing(line: bytes, reason: str) -> None:
    with pytest.raises(WireFormatError) as info:
        au.parse_line(line)
    assert info.value.reason == reason
    report = assert_broken_at([*LINES[:3], line, *LINES[4:]], 4, reason)
    err = report.error("x.log")
    assert isinstance(err, WireFormatError) and str(err).startswith("x.log line 4: ")


def test_report_error_types_and_messages() -> None:
    lines = list(LINES)
    lines[2] = edited(lines[2], FIELD_EDITS["actor"])
    report = verify_lines(lines)
    err = report.error("router.audit")
    assert isinstance(err, CryptoError) and err.reason == "audit.hash"
    assert str(err) == "router.audit line 3: entry 2's hash does not match its content " \
        "(the entry was edited)"
    with pytest.raises(CryptoError):
        report.raise_for_error()


# -- properties ---------------------------------------------------------------------------

details_st = st.dictionaries(
    st.text("abcdefghij_", min_size=1, max_size=8),
    st.one_of(st.text(max_size=40), st.integers(-(1 << 63), (1 << 63) - 1),
              st.lists(st.one_of(st.text(max_size=10), st.integers(0, 999)), max_size=4)),
    max_size=4)
entry_st = st.fixed_dictionaries({
    "event": st.sampled_from([*EVENTS, "checkpoint-requested", "expire"]),
    "actor": st.sampled_from(["router", "NCB-FR", "GS-LYON", "node.2"]),
    "msg_id": st.one_of(st.just(""), st.binary(min_size=16, max_size=16)),
    "reason": st.sampled_from(["", "policy.clearance", "sig.invalid", "wire.oversized"]),
    "details": details_st,
    "dt": st.integers(0, 10_000),
})


@given(st.lists(entry_st, max_size=25))
def test_random_event_sequences_verify(items: list[dict[str, Any]]) -> None:
    chain, lines, t = AuditChain(), [], T0
    for it in items:
        t += it["dt"]
        e = chain.append(it["event"], at_ms=t, actor=it["actor"], msg_id=it["msg_id"],
                         reason=it["reason"], details=it["details"])
        lines.append(encode_line(e))
        assert au.parse_line(lines[-1]) == e
    report = verify_lines(lines)
    assert report.ok and (report.entries, report.head) == (len(items), chain.head)


@given(st.lists(entry_st, min_size=1, max_size=12), st.data())
def test_any_flipped_byte_is_found(items: list[dict[str, Any]], data: st.DataObject) -> None:
    chain = AuditChain()
    lines = [encode_line(chain.append(it["event"], at_ms=T0, actor=it["actor"],
                                      msg_id=it["msg_id"], reason=it["reason"],
                                      details=it["details"])) for it in items]
    i = data.draw(st.integers(0, len(lines) - 1))
    pos = data.draw(st.integers(0, len(lines[i]) - 1))
    bit = data.draw(st.integers(1, 255))
    line = bytearray(lines[i])
    line[pos] ^= bit
    lines[i] = bytes(line)
    report = verify_lines(lines)
    assert not report.ok and report.line == i + 1


# -- the sans-IO rule ---------------------------------------------------------------------

FORBIDDEN = {"asyncio", "sqlite3", "rich", "time", "random", "os", "socket", "aiomqtt"}


def test_module_is_sans_io() -> None:
    tree = ast.parse(Path(au.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
