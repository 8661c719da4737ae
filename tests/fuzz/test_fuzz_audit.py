"""Fuzz the audit line parser: ``audit.parse_line``, ``Checkpoint.parse_line`` and the chain
walker ``verify_lines`` (which reports, never raises). Seeds: lines of a real chain (every
detail shape: text, integers, lists) and a signed checkpoint. Two levels: mutations of the
JSON object (values of every JSON type, huge and negative integers, floats, NaN, nested
structures, repeated, missing, extra and swapped keys) re-serialised in various ways, and
byte mutations of the line (flips, truncation, invalid UTF-8, escapes, CR/LF).
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

import pytest
from fuzzkit import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from i24net.core.audit import AuditChain, Checkpoint, encode_line, parse_line, verify_lines
from i24net.core.errors import I24Error
from i24net.core.keys import AgencyKeys

pytestmark = pytest.mark.timeout(120)
FUZZ = fuzz_settings(4)
SIGNER = AgencyKeys("router", hashlib.sha256(b"fuzz-audit").digest(), bytes(32))


@functools.cache
def seeds() -> tuple[bytes, ...]:
    chain = AuditChain()
    lines = []
    for i, details in enumerate([None, {"from": "NCB-FR", "to": ["NCB-DE", "NCB-US"], "n": 2},
                                 {"peer": "NCB-DE"}, {"k": -(1 << 63), "t": "x" * 1000}]):
        e = chain.append("accept" if i % 2 else "drop", at_ms=1_700_000_000_000 + i,
                         actor="router", msg_id=bytes(range(16)) if i else "",
                         reason="sig.invalid" if i == 3 else "", details=details)
        lines.append(encode_line(e))
    entry, cp = chain.checkpoint(signer="router", sign=SIGNER.sign, at_ms=1_700_000_000_009)
    return (*lines, encode_line(entry), cp.encode_line())


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1 << 63, (1 << 63) - 1, -(1 << 63) - 1, 10 ** 40]),
    st.text(max_size=30),
    st.sampled_from(["", "router", "NCB-FR", "accept", "checkpoint", "sig.invalid", "00" * 32,
                     "0" * 63, "g" * 64, "AB" * 32, "\ud800", "x" * 2000]),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=12)

KEYS = ["index", "at_ms", "actor", "event", "msg_id", "reason", "details", "prev", "hash",
        "checkpoint", "signer", "count", "head", "sig", "extra", ""]


def _dump_pairs(pairs: list[tuple[str, Any]], style: int) -> str:
    sep = [(",", ":"), (", ", ": "), (",", ":")][style % 3]
    body = sep[0].join(json.dumps(k) + sep[1] + json.dumps(v, ensure_ascii=style != 2)
                       for k, v in pairs)
    return "{" + body + "}"


@st.composite
def json_mutants(draw: st.DrawFn) -> bytes:
    obj: dict[str, Any] = json.loads(seeds()[draw(st.integers(0, len(seeds()) - 1))])
    pairs = list(obj.items())
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "swap", "dup",
                                   "detail"]))
        i = draw(st.integers(0, max(0, len(pairs) - 1)))
        if not pairs:
            pairs.append((draw(st.sampled_from(KEYS)), draw(json_values)))
        elif op == "replace":
            pairs[i] = (pairs[i][0], draw(json_values))
        elif op == "delete":
            del pairs[i]
        elif op == "add":
            pairs.insert(i, (draw(st.sampled_from(KEYS)), draw(json_values)))
        elif op == "swap":
            j = draw(st.integers(0, len(pairs) - 1))
            pairs[i], pairs[j] = (pairs[i][0], pairs[j][1]), (pairs[j][0], pairs[i][1])
        elif op == "dup":
            pairs.insert(i, (pairs[i][0], draw(json_values)))
        else:
            details = dict(obj.get("details") or {})
            details[draw(st.text(max_size=70))] = draw(json_values)
            pairs = [(k, details if k == "details" else v) for k, v in pairs]
    text = _dump_pairs(pairs, draw(st.integers(0, 2)))
    return text.encode("utf-8", "surrogatepass") + draw(st.sampled_from(
        [b"", b"\n", b"\r\n", b"\n\n", b" "]))


@st.composite
def byte_mutants(draw: st.DrawFn) -> bytes:
    raw = bytearray(seeds()[draw(st.integers(0, len(seeds()) - 1))])
    for _ in range(draw(st.integers(1, 4))):
        if not raw:
            break
        i = draw(st.integers(0, len(raw) - 1))
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if op == "flip":
            raw[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del raw[i:i + draw(st.integers(1, 20))]
        elif op == "insert":
            raw[i:i] = draw(st.sampled_from([b"\xff", b"\xc3", b"\\ud800", b"\\u0000", b"\"",
                                             b"1e400", b"NaN", b"-0", b"[" * 2000, b"\r",
                                             b"\n", b"{}", b",", b"0.5"]))
        else:
            del raw[i:]
    return bytes(raw)


def parse_everything(line: bytes) -> None:
    for parse in (parse_line, Checkpoint.parse_line):
        try:
            parse(line)  # type: ignore[operator]
        except I24Error:
            pass
        try:
            parse(line.decode("utf-8", "surrogateescape"))  # type: ignore[operator]
        except I24Error:
            pass
    report = verify_lines([*seeds()[:2], line, *seeds()[2:]],
                          keys={"router": SIGNER.verify_key})
    assert report.ok or report.reason


@FUZZ
@given(line=json_mutants())
def test_audit_parser_on_mutated_objects(line: bytes) -> None:
    parse_everything(line)


@FUZZ
@given(line=byte_mutants())
def test_audit_parser_on_mutated_bytes(line: bytes) -> None:
    parse_everything(line)


def test_seeds_are_a_valid_chain() -> None:
    report = verify_lines(seeds()[:-1], keys={"router": SIGNER.verify_key})
    assert report.ok and report.entries == len(seeds()) - 1
    assert Checkpoint.parse_line(seeds()[-1]).count == len(seeds()) - 2
