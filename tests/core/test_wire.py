"""wire: strict msgpack decoding under limits, and the exhaustive ``Fields`` reader.

Hostile input must end in a ``WireFormatError`` with a reason code: never another exception,
never a hang, never a silently accepted oddity (extension types, bytes map keys).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from i24net.core.errors import WireFormatError
from i24net.core.wire import MAX_DEPTH, Fields, pack, unpack

LIMIT = 1 << 16

# msgpack values our codecs can produce: str keys only, no floats needed but allowed
scalars = st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) \
    | st.text(max_size=40) | st.binary(max_size=40) | st.floats(allow_nan=False)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=5),
    max_leaves=30,
)


def depth(obj: object) -> int:
    if isinstance(obj, list):
        return 1 + max((depth(x) for x in obj), default=0)
    if isinstance(obj, dict):
        return 1 + max((depth(x) for x in obj.values()), default=0)
    return 1


def reason_of(data: bytes, **kw: int) -> str:
    with pytest.raises(WireFormatError) as info:
        unpack(data, what="test", max_size=kw.pop("max_size", LIMIT), **kw)
    return info.value.reason


# -- round trips -----------------------------------------------------------------------------

@given(values)
def test_pack_unpack_round_trip(obj: object) -> None:
    data = pack(obj)
    if depth(obj) > MAX_DEPTH:
        assert reason_of(data, max_size=len(data)) == "wire.depth"
    else:
        assert unpack(data, what="test", max_size=len(data)) == obj


def test_pack_uses_bin_type_for_bytes() -> None:
    assert pack(b"\x00") == b"\xc4\x01\x00"
    assert pack("a") == b"\xa1a"


def test_depth_limit_is_inclusive() -> None:
    nested: list[object] = []
    for _ in range(MAX_DEPTH - 1):
        nested = [nested]
    assert unpack(pack(nested), what="t", max_size=LIMIT) == nested
    assert reason_of(pack([nested])) == "wire.depth"


def test_maps_count_towards_depth() -> None:
    obj: object = 1
    for _ in range(MAX_DEPTH):
        obj = {"k": obj}
    assert reason_of(pack(obj)) == "wire.depth"


# -- hostile input ---------------------------------------------------------------------------

@given(st.binary(min_size=0, max_size=300))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    try:
        unpack(data, what="test", max_size=LIMIT)
    except WireFormatError as exc:
        assert exc.reason.startswith("wire.")


def test_not_bytes() -> None:
    with pytest.raises(WireFormatError) as info:
        unpack("text", what="test", max_size=LIMIT)  # type: ignore[arg-type]
    assert info.value.reason == "wire.type"


def test_accepts_bytearray_and_memoryview() -> None:
    data = pack([1, "a"])
    assert unpack(bytearray(data), what="t", max_size=LIMIT) == [1, "a"]
    assert unpack(memoryview(data), what="t", max_size=LIMIT) == [1, "a"]


def test_empty_is_truncated() -> None:
    assert reason_of(b"") == "wire.truncated"


def test_every_truncation_is_reported_as_truncated() -> None:
    data = pack(["i24e", 1, b"x" * 300, {"a": [1, 2, "three"], "b": b"\x00" * 70000}])
    for n in range(1, len(data), 7):
        assert reason_of(data[:n], max_size=1 << 20) == "wire.truncated", n


def test_oversized_is_refused_before_decoding() -> None:
    assert reason_of(b"\xc0" * 101, max_size=100) == "wire.oversized"
    # a megabyte of garbage is refused on its length alone
    assert reason_of(b"\xc1" * (1 << 20), max_size=LIMIT) == "wire.oversized"


def test_trailing_bytes() -> None:
    assert reason_of(pack([1, 2]) + b"\xc0") == "wire.trailing"
    assert reason_of(b"\xc0\xc0") == "wire.trailing"


@pytest.mark.timeout(10)
def test_deep_nesting_ten_thousand_arrays() -> None:
    assert reason_of(b"\x91" * 10_000 + b"\xc0") == "wire.malformed"
    assert reason_of(b"\x81\xa1k" * 10_000 + b"\xc0") == "wire.malformed"
    assert reason_of(b"\xdc\x00\x01" * 10_000 + b"\xc0") == "wire.malformed"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("marker", [b"\xc6", b"\xdb", b"\xdd", b"\xdf", b"\xc5", b"\xda",
                                    b"\xdc", b"\xde", b"\xc9"])
def test_huge_length_prefixes_claiming_gigabytes(marker: bytes) -> None:
    size = b"\xff\xff" if marker in (b"\xc5", b"\xda", b"\xdc", b"\xde") else b"\xff\xff\xff\xff"
    extra = b"\x01" if marker == b"\xc9" else b""
    for tail in (b"", b"abc", b"\xc0" * 100):
        assert reason_of(marker + size + extra + tail) in {"wire.truncated", "wire.malformed"}


def test_length_limits() -> None:
    assert reason_of(pack("x" * 11), max_str=10) == "wire.malformed"
    assert unpack(pack("x" * 10), what="t", max_size=LIMIT, max_str=10) == "x" * 10
    assert reason_of(pack(b"x" * 11), max_bin=10) == "wire.malformed"
    assert reason_of(pack(list(range(5))), max_items=4) == "wire.malformed"
    assert reason_of(pack({str(i): i for i in range(5)}), max_items=4) == "wire.malformed"


@pytest.mark.parametrize("data", [
    b"\xd4\x05\x00",  # fixext 1
    b"\xd5\x05\x00\x00",  # fixext 2
    b"\xd8\x05" + b"\x00" * 16,  # fixext 16
    b"\xc7\x00\x05",  # ext 8, zero length: slips past max_ext_len=0
    b"\xc7\x00\xff",  # zero-length timestamp
    b"\xd6\xff\x00\x00\x00\x01",  # timestamp 32
    b"\x91\xc7\x00\x05",  # inside an array
    b"\x81\xa1k\xc7\x00\x05",  # as a map value
    b"\xc8\x00\x00\x05",  # ext 16, zero length
    b"\xc9\x00\x00\x00\x00\x05",  # ext 32, zero length
])
def test_extension_types_are_refused(data: bytes) -> None:
    assert reason_of(data) == "wire.malformed"


@pytest.mark.parametrize("data", [
    b"\x81\x01\x01",  # int key
    b"\x81\xc0\x01",  # nil key
    b"\x81\xc3\x01",  # bool key
    b"\x81\xca\x00\x00\x00\x00\x01",  # float key
    b"\x81\x91\x01\x01",  # array key
    b"\x81\xc4\x01k\x01",  # bytes key: msgpack's strict_map_key still admits it
    b"\x91\x81\xc4\x01k\x01",  # ... nested
    b"\x82\xa1a\x01\xc4\x01b\x01",  # ... next to a str key
])
def test_non_string_map_keys_are_refused(data: bytes) -> None:
    assert reason_of(data) == "wire.malformed"


def test_invalid_utf8() -> None:
    assert reason_of(b"\xa2\xff\xfe") == "wire.utf8"
    assert reason_of(b"\x91\xa1\x80") == "wire.utf8"


@pytest.mark.parametrize("data", [b"\xc1", b"\x92\xc1\xc0"])
def test_reserved_marker(data: bytes) -> None:
    assert reason_of(data) == "wire.malformed"


@given(st.lists(st.sampled_from([b"\x91", b"\x81\xa1k", b"\xc7\x00\x01", b"\xdd\xff\xff\xff\xff",
                                 b"\xc4\x10", b"\xa3ab", b"\x81\x01", b"\xc1", b"\x00",
                                 b"\xc6\x00\x00\x00\x03"]), max_size=40))
def test_hostile_fragments(parts: list[bytes]) -> None:
    try:
        unpack(b"".join(parts), what="test", max_size=LIMIT)
    except WireFormatError:
        pass


def test_errors_name_the_object() -> None:
    with pytest.raises(WireFormatError, match=r"^widget: "):
        unpack(b"\xc1", what="widget", max_size=LIMIT)


# -- Fields ----------------------------------------------------------------------------------

def fields(**m: object) -> Fields:
    return Fields(dict(m), "thing")


def schema_error(fn, *args, **kw) -> WireFormatError:  # type: ignore[no-untyped-def]
    with pytest.raises(WireFormatError) as info:
        fn(*args, **kw)
    assert info.value.reason == "wire.schema"
    assert str(info.value).startswith("thing")
    return info.value


def test_fields_needs_a_map() -> None:
    schema_error(Fields, [1], "thing")
    schema_error(Fields, None, "thing")


def test_fields_reads_every_type() -> None:
    f = fields(t="abc", b=b"\x00" * 4, i=7, f=True, lst=["a", "b"], r={"x": 1}, e="")
    assert f.text("t") == "abc"
    assert f.blob("b", size=4) == b"\x00" * 4
    assert f.integer("i", lo=1, hi=7) == 7
    assert f.flag("f") is True
    assert f.text_list("lst") == ["a", "b"]
    assert f.raw("r") == {"x": 1}
    assert f.text("e", allow_empty=True) == ""
    f.done()


def test_fields_missing_and_optional() -> None:
    schema_error(fields().text, "x")
    f = fields(n=None)
    assert f.text("n", optional=True) is None
    assert f.blob("absent", optional=True) is None
    assert f.integer("absent2", optional=True) is None
    f.done()


def test_fields_refuses_extra_fields() -> None:
    f = fields(a="x", smuggled=1)
    f.text("a")
    exc = schema_error(f.done)
    assert "smuggled" in str(exc)


@pytest.mark.parametrize(("call", "value"), [
    ("text", 1), ("text", b"x"), ("text", ""), ("text", "x" * 257),
    ("blob", "x"), ("integer", True), ("integer", -1), ("integer", 1.0), ("integer", "1"),
    ("integer", 1 << 63), ("flag", 1), ("flag", None),
    ("text_list", "ab"), ("text_list", [1]), ("text_list", [""]), ("text_list", ["a", "a"]),
    ("text_list", ["x" * 65]),
])
def test_fields_refuse_wrong_types(call: str, value: object) -> None:
    schema_error(getattr(fields(k=value), call), "k")


def test_fields_blob_sizes() -> None:
    schema_error(fields(k=b"abc").blob, "k", size=4)
    schema_error(fields(k=b"abcde").blob, "k", max_len=4)


def test_fields_text_list_limits() -> None:
    schema_error(fields(k=["a", "b", "c"]).text_list, "k", max_items=2)
    assert fields(k=["a", "a"]).text_list("k", unique=False) == ["a", "a"]


@pytest.mark.parametrize("data, what", [
    (b"\xcd\x00\x05", "5 as uint16"),
    (b"\xcc\x05", "5 as uint8 (a fixint suffices)"),
    (b"\xd0\xff", "-1 as int8"),
    (b"\xd9\x02hi", "a 2-character text as str8"),
    (b"\xc5\x00\x01x", "one byte as bin16"),
    (b"\xdc\x00\x01\x01", "a one-item array as array16"),
    (b"\xde\x00\x01\xa1a\x01", "a one-entry map as map16"),
    (b"\xca\x3f\x80\x00\x00", "1.0 as float32"),
])
def test_a_value_in_any_but_its_one_encoding_is_refused(data: bytes, what: str) -> None:
    """Two readers must never disagree about what signed bytes say: every value has one
    encoding, the one ``pack`` makes."""
    with pytest.raises(WireFormatError) as info:
        unpack(data, what="x", max_size=1024)
    assert info.value.reason == "wire.noncanonical", what


@pytest.mark.parametrize("data, what", [
    (b"\x82\xa5level\x01\xa5level\x02", "a duplicate key"),
    (b"\x82\xa5level\x01\xa5level\x01", "a duplicate key with the same value twice"),
    (b"\x81\xa1a\x82\xa1b\x01\xa1b\x01", "a duplicate key in a nested map"),
    (b"\x91\x82\xa1x\xc0\xa1x\xa1y", "a duplicate key in a map inside an array"),
])
def test_a_repeated_map_key_is_refused_by_name(data: bytes, what: str) -> None:
    """msgpack-python keeps the last of repeated keys; another reader may keep the first."""
    with pytest.raises(WireFormatError) as info:
        unpack(data, what="x", max_size=1024)
    assert info.value.reason == "wire.duplicate-key", what


def test_the_canonical_forms_are_accepted_in_any_key_order() -> None:
    for obj in ({"level": 1, "id": b"\x00" * 16}, {"id": b"", "level": -33},
                [1.5, "hi", 2**40, -(2**40), None, True], {"b": {"a": []}, "a": {}}):
        data = pack(obj)
        assert unpack(data, what="x", max_size=1024) == obj
