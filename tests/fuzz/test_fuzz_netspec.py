"""Fuzz the network spec parser: ``netspec.parse_spec`` over ``tomllib`` output. Seeds: the
``demo`` and ``interpol`` presets. Two levels: mutations of the parsed TOML tables (values of
every TOML type, deleted, added, swapped and re-typed keys) and byte mutations of the TOML
text (``tomllib`` refuses what is not TOML with its own ``TOMLDecodeError``, which the home
loader reports; whatever it accepts goes to ``parse_spec``).

Contract: ``parse_spec`` raises only ``I24Error`` (``ConfigError`` naming the field), and a
spec it accepts issues a directory that signs and loads (netspec's own rule: never accept
what would issue a directory nobody can load).
"""

from __future__ import annotations

import copy
import datetime
import functools
import hashlib
import tomllib
from typing import Any

import pytest
from fuzzkit import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from i24net.config.presets import preset_toml
from i24net.core.directory import load
from i24net.core.errors import I24Error
from i24net.core.keys import AgencyKeys, Prekey
from i24net.core.netspec import build_directory, parse_spec

pytestmark = pytest.mark.timeout(120)
FUZZ = fuzz_settings(2.5)
AUTHORITY = AgencyKeys("authority", hashlib.sha256(b"fuzz-authority").digest(), bytes(32))

KEYS = ("network", "broker", "groups", "agency", "name", "prefix", "levels", "caveats",
        "max_skew_seconds", "default_ttl_hours", "engine", "host", "port", "tls", "id",
        "kind", "region", "clearance", "roles", "EU", "ALL", "NCB", "EUROPE")

toml_scalars = st.one_of(
    st.booleans(), st.integers(-(1 << 63), (1 << 63) - 1),
    st.sampled_from([0, 1, -1, 300, 86_400, 86_401, 65_535, 65_536, 24 * 365 * 5 + 1]),
    st.floats(allow_nan=True), st.text(max_size=40),
    st.sampled_from(["", "NCB-FR", "ncb-fr", "NCB-", "-NCB", "NCB-FR\n", "GS-LYON", "ncb", "gs",
                     "europol", "SECRET", "TOP-SECRET", "EU", "eu", "ALL", "NCB", "EUROPE",
                     "notice-authority", "directory-authority", "mosquitto", "embedded",
                     "i24/v1", "i24/+/v1", "/abs", "x" * 300, "A" * 33, "é", "\x00"]),
    st.just(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)),
    st.just(datetime.date(2024, 1, 1)), st.just(datetime.time(12, 0)),
)
toml_values = st.one_of(
    toml_scalars, st.lists(toml_scalars, max_size=6),
    st.dictionaries(st.sampled_from(KEYS), toml_scalars, max_size=4),
    st.lists(st.dictionaries(st.sampled_from(KEYS), toml_scalars, max_size=4), max_size=3),
)


@functools.cache
def seed_texts() -> tuple[str, ...]:
    return preset_toml("demo"), preset_toml("interpol")


@functools.cache
def seed_docs() -> tuple[dict[str, Any], ...]:
    return tuple(tomllib.loads(t) for t in seed_texts())


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(tree, dict):
        for key, v in tree.items():
            out += _paths(v, (*prefix, key))
    elif isinstance(tree, list):
        for i, v in enumerate(tree[:12]):  # the interpol preset has 198 agencies
            out += _paths(v, (*prefix, i))
    return out


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


@st.composite
def mutated_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(seed_docs()[draw(st.integers(0, len(seed_docs()) - 1))])
    for _ in range(draw(st.integers(1, 4))):
        ps = _paths(doc)
        path = ps[draw(st.integers(1, len(ps) - 1))]
        parent, key = _get(doc, path[:-1]), path[-1]
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "swap", "dup"]))
        if op == "replace":
            parent[key] = draw(toml_values)
        elif op == "delete":
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = draw(toml_values)
        elif op == "swap" and isinstance(parent, dict) and len(parent) > 1:
            other = list(parent)[draw(st.integers(0, len(parent) - 1))]
            parent[key], parent[other] = parent[other], parent[key]
        elif op == "dup" and isinstance(parent, list):
            parent.insert(draw(st.integers(0, len(parent))), copy.deepcopy(parent[key]))
    return doc


@st.composite
def mutated_texts(draw: st.DrawFn) -> bytes:
    raw = bytearray(seed_texts()[draw(st.integers(0, len(seed_texts()) - 1))].encode())
    for _ in range(draw(st.integers(1, 4))):
        if not raw:
            break
        i = draw(st.integers(0, len(raw) - 1))
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if op == "flip":
            raw[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del raw[i:i + draw(st.integers(1, 40))]
        elif op == "insert":
            raw[i:i] = draw(st.sampled_from([b"=", b"[", b"]", b'"', b"\n", b"[[agency]]\n",
                                             b"x = 1\n", b'id = "NCB-FR"\n', b"\\u0000",
                                             b"'", b"#", b","]))
        else:
            del raw[i:]
    return bytes(raw)


@functools.cache
def keys_of(agency: str) -> tuple[bytes, bytes]:
    kk = AgencyKeys(agency, hashlib.sha256(b"s" + agency.encode()).digest(),
                    hashlib.sha256(b"e" + agency.encode()).digest(),
                    (Prekey(hashlib.sha256(b"p" + agency.encode()).digest(), 0),))
    return kk.public()


def check(doc: Any) -> None:
    try:
        spec = parse_spec(doc)
    except I24Error:
        return
    # accepted: it must issue a directory that signs and loads
    d = build_directory(spec, {a: keys_of(a) for a in spec.agency_ids()},
                        authority_key=AUTHORITY.verify_key, serial=1, issued_ms=0)
    loaded = load(d.sign(AUTHORITY.signing_seed), AUTHORITY.verify_key)
    assert sorted(loaded.agencies) == sorted(spec.agency_ids())


@FUZZ
@given(doc=mutated_docs())
def test_parse_spec_on_mutated_tables(doc: dict[str, Any]) -> None:
    check(doc)


@FUZZ
@given(text=mutated_texts())
def test_parse_spec_on_mutated_text(text: bytes) -> None:
    try:
        doc = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return  # not TOML: the loader's error, before parse_spec
    check(doc)


@given(doc=st.dictionaries(st.sampled_from(KEYS), toml_values))  # tomllib gives a dict
@fuzz_settings(1.5)
def test_parse_spec_on_arbitrary_tables(doc: dict[str, Any]) -> None:
    check(doc)
