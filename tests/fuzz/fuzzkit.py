"""Structured mutation of valid objects, for the Hypothesis fuzzers in this folder.

A seed (a valid envelope, frame, signed directory...) is decoded into a tree in which every
``bin`` field that itself holds one complete msgpack array or map (the signed part of an
envelope, its header, a frame's doc, the envelope inside a delivery, a release token) becomes
a ``Nested`` node, so mutations reach every layer. Then one to four mutations are applied:

- tree mutations: replace any node with another msgpack value (of any type, including deep
  nesting, huge ints, long strings), delete or add a map key or list item, swap two fields'
  values, swap two items, repeat a map key (one map, two values), re-encode a node in a
  wider, non-canonical form;
- byte mutations of the encoded result, or of one inner document with every layer around
  it kept well-formed: bit flips, truncation, deleting, inserting or duplicating a span,
  splicing with another seed.

The encoder is written here (msgpack-python cannot repeat a key or pick a wider form).
Optionally the caller re-signs what it can (``resign``) so that mutated content gets past
the signature checks and reaches the decoders behind them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def fuzz_settings(factor: float) -> settings:
    """``factor`` times the active profile's examples (tests/conftest.py: 60 by default,
    600 with ``HYPOTHESIS_PROFILE=thorough``); no deadline, no health checks (the seeds are
    large on purpose)."""
    return settings(max_examples=int(factor * settings.default.max_examples), deadline=None,
                    suppress_health_check=list(HealthCheck))

# -- the tree ---------------------------------------------------------------------------------


@dataclass
class Nested:
    """A ``bin`` whose content is itself a msgpack document (mutated as a tree)."""

    inner: Any


@dataclass
class Pairs:
    """A map written from a list of pairs: keys may repeat."""

    pairs: list[tuple[Any, Any]]


@dataclass
class Wide:
    """A value written in a wider (non-canonical) msgpack form."""

    value: Any


def _nested_candidate(b: bytes) -> bool:
    if len(b) < 2:
        return False
    head = b[0]
    return 0x80 <= head <= 0x9F or head in (0xDC, 0xDD, 0xDE, 0xDF)


def to_tree(obj: Any, depth: int = 0) -> Any:
    if isinstance(obj, bytes) and depth < 6 and _nested_candidate(obj):
        try:
            inner = msgpack.unpackb(obj, raw=False, strict_map_key=False)
        except Exception:
            return obj
        if isinstance(inner, (list, dict)):
            return Nested(to_tree(inner, depth + 1))
        return obj
    if isinstance(obj, list):
        return [to_tree(x, depth) for x in obj]
    if isinstance(obj, dict):
        return {k: to_tree(v, depth) for k, v in obj.items()}
    return obj


def decode(raw: bytes) -> Any:
    return to_tree(msgpack.unpackb(raw, raw=False, strict_map_key=False))


_PACKER = msgpack.Packer(use_bin_type=True)


def _bin(data: bytes) -> bytes:
    return _PACKER.pack(data)


def _wide(v: Any) -> bytes:
    if isinstance(v, bool) or v is None:
        return _PACKER.pack(v)
    if isinstance(v, int):
        return (b"\xcf" + struct.pack(">Q", v)) if 0 <= v < 1 << 64 else (
            b"\xd3" + struct.pack(">q", max(min(v, (1 << 63) - 1), -(1 << 63))))
    if isinstance(v, str):
        data = v.encode("utf-8", "surrogatepass")
        return b"\xdb" + struct.pack(">I", len(data)) + data
    if isinstance(v, bytes):
        return b"\xc6" + struct.pack(">I", len(v)) + v
    if isinstance(v, list):
        return b"\xdd" + struct.pack(">I", len(v)) + b"".join(encode(x) for x in v)
    if isinstance(v, dict):
        return b"\xdf" + struct.pack(">I", len(v)) + b"".join(
            encode(k) + encode(x) for k, x in v.items())
    return encode(v)


def encode(x: Any) -> bytes:
    if isinstance(x, Nested):
        return _bin(encode(x.inner))
    if isinstance(x, Pairs):
        return _PACKER.pack_map_header(len(x.pairs)) + b"".join(
            encode(k) + encode(v) for k, v in x.pairs)
    if isinstance(x, Wide):
        return _wide(x.value)
    if isinstance(x, list):
        return _PACKER.pack_array_header(len(x)) + b"".join(encode(v) for v in x)
    if isinstance(x, dict):
        return _PACKER.pack_map_header(len(x)) + b"".join(
            encode(k) + encode(v) for k, v in x.items())
    if isinstance(x, str):
        try:
            return _PACKER.pack(x)
        except UnicodeEncodeError:  # a lone surrogate: write the bytes anyway (invalid UTF-8)
            data = x.encode("utf-8", "surrogatepass")
            return b"\xdb" + struct.pack(">I", len(data)) + data
    try:
        return _PACKER.pack(x)
    except (OverflowError, TypeError, ValueError):
        return b"\xc1"  # an int beyond 64 bits, say: a marker msgpack never uses


# -- paths ------------------------------------------------------------------------------------

Path = tuple[Any, ...]


def _children(node: Any) -> list[tuple[Any, Any]]:
    if isinstance(node, Nested):
        return [("inner", node.inner)]
    if isinstance(node, list):
        return list(enumerate(node))
    if isinstance(node, dict):
        return list(node.items())
    return []


def paths(tree: Any) -> list[Path]:
    out: list[Path] = [()]
    stack: list[tuple[Path, Any]] = [((), tree)]
    while stack:
        p, node = stack.pop()
        for key, child in _children(node):
            out.append((*p, key))
            stack.append(((*p, key), child))
    return out


def get(tree: Any, path: Path) -> Any:
    for key in path:
        tree = tree.inner if isinstance(tree, Nested) else tree[key]
    return tree


def put(tree: Any, path: Path, value: Any) -> Any:
    if not path:
        return value
    parent = get(tree, path[:-1])
    if isinstance(parent, Nested):
        parent.inner = value
    else:
        parent[path[-1]] = value
    return tree


# -- values -----------------------------------------------------------------------------------

KEYS = ("v", "id", "kind", "from", "to", "addr", "level", "prec", "created", "expires", "ref",
        "release", "dir", "kid", "nonce", "seq", "digest", "by", "status", "first", "last",
        "serial", "agencies", "groups", "sign_key", "enc_key", "status", "ok", "reason", "")

scalars = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, 1, -1, 2, 255, 256, 65_535, 1 << 31, (1 << 63) - 1, 1 << 63,
                     (1 << 64) - 1, -(1 << 63), 1_700_000_000_000]),
    st.integers(), st.floats(allow_nan=True),
    st.sampled_from(["", "i24e", "i24d", "NCB-FR", "NCB-DE", "@EU", "@ALL", "SECRET", "FLASH",
                     "H2", "RED", "message", "notice", "ok", "delivered", "\x00", "\ud800",
                     "é" * 40, "x" * 70_000]),
    st.text(max_size=40),
    st.sampled_from([b"", bytes(8), bytes(16), bytes(24), bytes(32), bytes(48), bytes(64),
                     b"\xff" * 65]),
    st.binary(max_size=80),
)


def deep(n: int) -> Any:
    v: Any = 1
    for _ in range(n):
        v = [v]
    return v


values = st.one_of(
    scalars,
    st.lists(scalars, max_size=5),
    st.dictionaries(st.sampled_from(KEYS), scalars, max_size=5),
    st.integers(7, 40).map(deep),
    st.integers(0, 5000).map(lambda n: [0] * n),
)


# -- mutations --------------------------------------------------------------------------------

def _mutate_nested_bytes(draw: st.DrawFn, tree: Any, seeds: Sequence[bytes]) -> Any:
    """Byte-mutate the content of one ``bin`` document, keeping every layer around it
    well-formed (so the mutation reaches that document's own decoder)."""
    nested = [p for p in paths(tree) if isinstance(get(tree, p), Nested)]
    if not nested:
        return tree
    path = nested[draw(st.integers(0, len(nested) - 1))]
    inner = encode(get(tree, path).inner)
    return put(tree, path, _mutate_bytes(draw, inner, seeds))


def _mutate_tree(draw: st.DrawFn, tree: Any) -> Any:
    ps = paths(tree)
    path = ps[draw(st.integers(0, len(ps) - 1))]
    node = get(tree, path)
    op = draw(st.sampled_from(["replace", "replace", "delete", "add", "swap-fields",
                               "swap-items", "duplicate-key", "widen", "retype"]))
    if op == "replace":
        return put(tree, path, draw(values))
    if op == "widen":
        return put(tree, path, Wide(node.inner if isinstance(node, Nested) else node))
    if op == "retype":
        if isinstance(node, bytes):
            return put(tree, path, node.decode("latin-1"))
        if isinstance(node, str):
            return put(tree, path, node.encode("utf-8", "surrogatepass"))
        if isinstance(node, int) and not isinstance(node, bool):
            return put(tree, path, draw(st.sampled_from([str(node), float(node), node == 1])))
        if isinstance(node, Nested):
            return put(tree, path, node.inner)  # the document unwrapped from its bin
        return put(tree, path, draw(values))
    target = node.inner if isinstance(node, Nested) else node
    if isinstance(target, dict) and target:
        keys = list(target)
        k1 = keys[draw(st.integers(0, len(keys) - 1))]
        k2 = keys[draw(st.integers(0, len(keys) - 1))]
        if op == "delete":
            del target[k1]
        elif op == "add":
            target[draw(st.sampled_from(KEYS)) + draw(st.sampled_from(["", "x"]))] = draw(values)
        elif op == "swap-fields":
            target[k1], target[k2] = target[k2], target[k1]
        elif op == "duplicate-key":
            pairs = list(target.items())
            pairs.insert(draw(st.integers(0, len(pairs))), (k1, draw(values)))
            return put(tree, path, Pairs(pairs) if not isinstance(node, Nested)
                       else Nested(Pairs(pairs)))
        return tree
    if isinstance(target, list) and target:
        i = draw(st.integers(0, len(target) - 1))
        j = draw(st.integers(0, len(target) - 1))
        if op == "delete":
            del target[i]
        elif op in ("add", "duplicate-key"):
            target.insert(i, draw(values) if op == "add" else target[j])
        else:
            target[i], target[j] = target[j], target[i]
        return tree
    return put(tree, path, draw(values))


def _mutate_bytes(draw: st.DrawFn, raw: bytes, seeds: Sequence[bytes]) -> bytes:
    if not raw:
        return draw(st.binary(max_size=64))
    op = draw(st.sampled_from(["flip", "flip", "truncate", "delete", "insert", "duplicate",
                               "splice"]))
    n = len(raw)
    i = draw(st.integers(0, n - 1))
    if op == "flip":
        out = bytearray(raw)
        for _ in range(draw(st.integers(1, 4))):
            out[draw(st.integers(0, n - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if op == "truncate":
        return raw[:i]
    j = draw(st.integers(i, min(n, i + 64)))
    if op == "delete":
        return raw[:i] + raw[j:]
    if op == "insert":
        return raw[:i] + draw(st.binary(min_size=1, max_size=16)) + raw[i:]
    if op == "duplicate":
        return raw[:j] + raw[i:j] + raw[j:]
    other = seeds[draw(st.integers(0, len(seeds) - 1))]
    k = draw(st.integers(0, max(0, len(other) - 1)))
    return raw[:i] + other[k:]


Resign = Callable[[bytes], bytes]


@st.composite
def mutants(draw: st.DrawFn, seeds: Sequence[bytes], resign: Resign | None = None) -> bytes:
    """A mutation of one of ``seeds``; ``resign`` (when given, and drawn) re-signs it
    after every mutation, so the signature covers the mutated content."""
    seed = seeds[draw(st.integers(0, len(seeds) - 1))]
    tree = decode(seed)
    structural = draw(st.integers(0, 3))
    for _ in range(structural):
        if draw(st.integers(0, 3)) == 0:
            tree = _mutate_nested_bytes(draw, tree, seeds)
        else:
            tree = _mutate_tree(draw, tree)
    raw = encode(tree)
    outer = draw(st.sampled_from([0, 0, 0, 1, 2])) if structural else draw(st.integers(1, 2))
    for _ in range(outer):
        raw = _mutate_bytes(draw, raw, seeds)
    if resign is not None and draw(st.booleans()):
        try:  # last, so that the mutated content is what gets signed
            raw = resign(raw)
        except Exception:  # the structure no longer has a signature to recompute
            pass
    return raw
