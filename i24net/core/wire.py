"""Strict msgpack decoding for untrusted bytes, and the field readers the codecs share.

Theory of operation: every byte string that arrives from the network or a file goes through
``unpack`` first. It checks the total length *before* msgpack sees it (``msgpack.unpackb``
has no buffer limit of its own), caps every string, binary, array and map length, refuses
extension types, refuses non-string map keys, then checks the nesting depth of what came out
and that the input is the one canonical encoding of it (what ``pack`` gives back).
Any failure is a ``WireFormatError`` with a reason code; msgpack's own exceptions never leave
this module. The ``Fields`` reader then pulls typed fields out of a decoded map and refuses
missing, extra or mistyped ones, so each codec states its schema in a few lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import msgpack

from i24net.core.errors import WireFormatError

# Limits. An envelope carries one body of at most MAX_BODY bytes plus one 48-byte wrap per
# recipient; 4,096 recipients covers SIENA's 3,000+ authorities with room to spare.
MAX_BODY = 1 << 20  # 1 MiB of plaintext body: messages, not file transfers
MAX_RECIPIENTS = 4096
MAX_ENVELOPE = MAX_BODY + 64 * 1024 + MAX_RECIPIENTS * 96
MAX_DEPTH = 8  # our schemas nest at most 4 deep; anything deeper is hostile
MAX_STR = 64 * 1024  # no single text field needs more; the body text is bounded separately


def pack(obj: Any) -> bytes:
    """Encode with the one msgpack configuration the protocol uses (bin type for bytes)."""
    try:
        return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]
    except (UnicodeEncodeError, TypeError, ValueError, OverflowError) as exc:
        # a lone surrogate (undecodable argv bytes), an int beyond 64 bits, a foreign type
        raise WireFormatError(f"cannot encode: {type(exc).__name__}: {exc}",
                              reason="wire.encode") from exc


def _refuse_ext(code: int, data: bytes) -> Any:
    # max_ext_len=0 still lets a zero-length ext (c7 00 <type>) through as an ExtType.
    raise ValueError(f"extension type {code} is not allowed")


def _depth(obj: Any, limit: int, what: str) -> int:
    # Depth-first, the deepest item (a scalar inside a container counts one level below
    # it). Only containers are pushed: a scalar child can only raise the depth by one,
    # which is accounted when its parent is visited. Runs after every decode, so it is kept
    # lean (the simulator decodes ~15 objects per message).
    stack: list[tuple[Any, int]] = [(obj, 1)]
    worst = 0
    while stack:
        item, d = stack.pop()
        if d > limit:
            return d
        if d > worst:
            worst = d
        if isinstance(item, list):
            children: Any = item
        elif isinstance(item, dict):
            # strict_map_key admits bytes keys as well as str; our schemas use str only.
            if not all(isinstance(key, str) for key in item):
                fail(what, "a map key is not text", reason="wire.malformed")
            children = item.values()
        else:
            continue
        if children:
            d += 1
            if d > limit:
                return d
            if d > worst:
                worst = d
            stack.extend([(x, d) for x in children if isinstance(x, (list, dict))])
    return worst


def unpack(
    data: bytes,
    *,
    what: str,
    max_size: int,
    max_str: int = MAX_STR,
    max_bin: int | None = None,
    max_items: int = MAX_RECIPIENTS,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Decode untrusted msgpack ``data`` under explicit limits, or raise ``WireFormatError``.

    ``what`` names the object for the error message ("envelope", "directory", ...).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireFormatError(f"{what}: expected bytes, got {type(data).__name__}",
                              reason="wire.type")
    if len(data) == 0:
        raise WireFormatError(f"{what}: empty input", reason="wire.truncated")
    if len(data) > max_size:
        raise WireFormatError(
            f"{what}: {len(data)} bytes is over the {max_size}-byte limit",
            reason="wire.oversized",
        )
    # An Unpacker, not unpackb: unpackb reports truncated input as a plain ValueError
    # ("incomplete input"), indistinguishable from a bad marker; Unpacker raises OutOfData.
    unpacker = msgpack.Unpacker(
        None,
        raw=False,
        strict_map_key=True,
        use_list=True,
        max_buffer_size=len(data),
        max_str_len=max_str,
        max_bin_len=max_bin if max_bin is not None else max_size,
        max_array_len=max_items,
        max_map_len=max_items,
        max_ext_len=0,
        ext_hook=_refuse_ext,
    )
    try:
        unpacker.feed(bytes(data))
        obj = unpacker.unpack()
    except (msgpack.OutOfData, EOFError):
        raise WireFormatError(f"{what}: truncated", reason="wire.truncated") from None
    except UnicodeDecodeError:
        raise WireFormatError(f"{what}: a text field is not valid UTF-8",
                              reason="wire.utf8") from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        # msgpack signals limits, bad markers, ext types and non-str keys with ValueError
        # subclasses (FormatError, StackError, ...) or TypeError; all mean "not our format".
        raise WireFormatError(f"{what}: not a valid encoding ({type(exc).__name__}: {exc})",
                              reason="wire.malformed") from None
    if unpacker.tell() != len(data):
        raise WireFormatError(f"{what}: trailing bytes after the object",
                              reason="wire.trailing")
    if _depth(obj, max_depth, what) > max_depth:
        raise WireFormatError(f"{what}: nested deeper than {max_depth} levels",
                              reason="wire.depth")
    if pack(obj) != data:
        if _has_duplicate_key(bytes(data)):
            raise WireFormatError(f"{what}: a map holds the same key twice (readers would "
                                  "disagree about which one counts)",
                                  reason="wire.duplicate-key")
        # One encoding per value (docs/protocol.md 2.2): the bytes must be what ``pack``
        # makes of what they decode to, so no two readers can disagree about what was
        # signed. This refuses duplicate map keys (a decoder keeps one; named separately
        # above), integers and lengths in a longer form than their shortest, and floats
        # not in float 64.
        raise WireFormatError(f"{what}: not the canonical encoding (a value in a longer "
                              "form than its shortest, or a float not in float 64)",
                              reason="wire.noncanonical")
    return obj


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey
    return out


class _DuplicateKey(Exception):
    pass


def _has_duplicate_key(data: bytes) -> bool:
    """Only on the refusal path of ``unpack`` (the input already decoded once under its
    limits): whether some map in ``data`` repeats a key, to name the refusal precisely."""
    try:
        msgpack.unpackb(data, raw=False, strict_map_key=False, object_pairs_hook=_pairs,
                        max_ext_len=0, ext_hook=_refuse_ext)
    except _DuplicateKey:
        return True
    except Exception:  # any other failure: not a duplicate key
        return False
    return False


def peek_field(data: bytes, key: str, *, what: str, max_size: int,
               max_items: int = MAX_RECIPIENTS) -> Any:
    """The value of ``key`` in the msgpack map ``data``, or None if absent, without building
    the other values: they are skipped under the same limits as ``unpack`` (a header's key
    lookup costs microseconds instead of decoding every recipient). For cheap looks ahead
    of the full decode (ordering work by precedence); never a substitute for it.
    """
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise WireFormatError(f"{what}: expected non-empty bytes", reason="wire.type")
    if len(data) > max_size:
        raise WireFormatError(f"{what}: {len(data)} bytes is over the {max_size}-byte limit",
                              reason="wire.oversized")
    unpacker = msgpack.Unpacker(
        None, raw=False, strict_map_key=True, use_list=True, max_buffer_size=len(data),
        max_str_len=MAX_STR, max_bin_len=max_size, max_array_len=max_items,
        max_map_len=max_items, max_ext_len=0, ext_hook=_refuse_ext)
    try:
        unpacker.feed(bytes(data))
        for _ in range(unpacker.read_map_header()):
            if unpacker.unpack() == key:
                value = unpacker.unpack()
                if _depth(value, MAX_DEPTH, what) > MAX_DEPTH:
                    fail(what, f"{key} is nested too deep", reason="wire.depth")
                return value
            unpacker.skip()
    except (msgpack.OutOfData, EOFError):
        raise WireFormatError(f"{what}: truncated", reason="wire.truncated") from None
    except UnicodeDecodeError:
        raise WireFormatError(f"{what}: a text field is not valid UTF-8",
                              reason="wire.utf8") from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        raise WireFormatError(f"{what}: not a valid encoding ({type(exc).__name__}: {exc})",
                              reason="wire.malformed") from None
    return None


def fail(what: str, message: str, reason: str = "wire.schema") -> NoReturn:
    raise WireFormatError(f"{what}: {message}", reason=reason)


class Fields:
    """Typed, exhaustive access to a decoded map: every key must be read exactly once.

    Call ``done()`` at the end: leftover keys are refused, so an attacker cannot smuggle a
    field that one implementation reads and another ignores.
    """

    __slots__ = ("_m", "_seen", "what")

    def __init__(self, obj: Any, what: str) -> None:
        if not isinstance(obj, dict):
            fail(what, f"expected a map, got {type(obj).__name__}")
        self._m: Mapping[str, Any] = obj
        self._seen: set[str] = set()
        self.what = what

    def _get(self, key: str, optional: bool) -> Any:
        self._seen.add(key)
        if key not in self._m:
            if optional:
                return None
            fail(self.what, f"missing field {key!r}")
        return self._m[key]

    def text(self, key: str, *, max_len: int = 256, optional: bool = False,
            allow_empty: bool = False) -> Any:
        v = self._get(key, optional)
        if v is None and optional:
            return None
        if not isinstance(v, str):
            fail(self.what, f"field {key!r} must be text")
        if len(v) > max_len or (not v and not allow_empty):
            fail(self.what, f"field {key!r} must be 1-{max_len} characters")
        return v

    def blob(self, key: str, *, size: int | None = None, max_len: int = MAX_ENVELOPE,
              optional: bool = False) -> Any:
        v = self._get(key, optional)
        if v is None and optional:
            return None
        if not isinstance(v, bytes):
            fail(self.what, f"field {key!r} must be binary")
        if size is not None and len(v) != size:
            fail(self.what, f"field {key!r} must be {size} bytes, got {len(v)}")
        if len(v) > max_len:
            fail(self.what, f"field {key!r} is longer than {max_len} bytes")
        return v

    def integer(self, key: str, *, lo: int = 0, hi: int = (1 << 63) - 1,
            optional: bool = False) -> Any:
        v = self._get(key, optional)
        if v is None and optional:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            fail(self.what, f"field {key!r} must be an integer in [{lo}, {hi}]")
        return v

    def flag(self, key: str) -> bool:
        v = self._get(key, False)
        if not isinstance(v, bool):
            fail(self.what, f"field {key!r} must be true or false")
        return v

    def text_list(self, key: str, *, max_items: int = MAX_RECIPIENTS, max_len: int = 64,
                 unique: bool = True) -> list[str]:
        v = self._get(key, False)
        if not isinstance(v, list) or len(v) > max_items:
            fail(self.what, f"field {key!r} must be a list of at most {max_items} items")
        for item in v:
            if not isinstance(item, str) or not item or len(item) > max_len:
                fail(self.what, f"field {key!r} must hold text items of 1-{max_len} characters")
        if unique and len(set(v)) != len(v):
            fail(self.what, f"field {key!r} has duplicate items")
        return v

    def raw(self, key: str, *, optional: bool = False) -> Any:
        return self._get(key, optional)

    def done(self) -> None:
        extra = set(self._m) - self._seen
        if extra:
            fail(self.what, f"unexpected field(s) {', '.join(sorted(map(repr, extra)))}")
