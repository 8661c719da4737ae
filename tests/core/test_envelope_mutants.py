"""Envelope details that the round-trip and refusal tests leave open.

``test_seal_limits`` shows that seal refuses one past each decoder limit; these show that it
accepts exactly at the limit (seal must not be stricter than open), that each refusal keeps
its documented reason code, that the body-data walk checks every item even after one it
leaves to ``pack``, and the exact shape of ``Header.summary`` (what inspect, logs and reports
print). Each one pins down behaviour ``make mutants`` showed could change unnoticed.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from fixednet import NOW, FixedNet, FixedRandom
from test_seal_limits import READER, SENDER, open_as_reader, raw_header, refused, seal

from i24net.core import envelope as env
from i24net.core import keys as k
from i24net.core.errors import WireFormatError
from i24net.core.labels import TLP, Evaluation, HandlingCodes, Label, Precedence
from i24net.core.wire import MAX_BODY, MAX_RECIPIENTS

MAX_INT = (1 << 63) - 1


def sealed_and_parsed(net: FixedNet, h: env.Header) -> env.Header:
    """Seal ``h`` and return the header the receiver's decoder reads back."""
    return env.Envelope.parse(seal(net, h)).header


# -- header fields exactly at their limits ----------------------------------------------------

@pytest.mark.parametrize("fields", [
    {"sender": "N"},
    {"sender": "N" * 32},
    {"recipients": (READER, "R" * 32)},
    {"addressing": ("@" + "G" * 32,)},
    {"addressing": tuple(f"A{i}" for i in range(MAX_RECIPIENTS))},
    {"caveats": frozenset(f"C{i}" for i in range(64))},
    {"created": 0, "expires": 1},
    {"created": NOW, "expires": MAX_INT},
    {"serial": 1},
    {"serial": MAX_INT},
], ids=["sender-1", "sender-32", "recipient-32", "address-33", "addressing-4096",
        "caveats-64", "time-0", "expires-max", "serial-1", "serial-max"])
def test_header_fields_at_the_decoder_limits_seal_and_parse(net: FixedNet,
                                                            fields: dict[str, Any]) -> None:
    h = raw_header(net, **fields)
    assert sealed_and_parsed(net, h) == h


@pytest.mark.parametrize(("fields", "what"), [
    ({"sender": ""}, "sender"),
    ({"recipients": ("", READER)}, "recipient"),
    ({"addressing": ("",)}, "addressing"),
], ids=["sender", "recipient", "addressing"])
def test_empty_names_are_refused_at_seal(net: FixedNet, fields: dict[str, Any],
                                         what: str) -> None:
    h = raw_header(net, **fields)
    with pytest.raises(WireFormatError) as info:
        seal(net, h)
    assert info.value.reason == "wire.schema"
    assert what in info.value.message
    assert refused(env.Header.decode, h.encode()) is not None


def test_too_many_addressing_items_is_oversized(net: FixedNet) -> None:
    h = raw_header(net, addressing=tuple(f"A{i}" for i in range(MAX_RECIPIENTS + 1)))
    with pytest.raises(WireFormatError) as info:
        seal(net, h)
    assert info.value.reason == "wire.oversized"


def _header_of_size(net: FixedNet, size: int) -> env.Header:
    """A header whose encoding is exactly ``size`` bytes: every recipient id 32 characters,
    addressing items of 32 characters (34 bytes encoded) or 33 (35 bytes)."""
    ids = tuple(sorted(f"A{i:031d}" for i in range(MAX_RECIPIENTS)))
    short = tuple(f"@{i:031d}" for i in range(MAX_RECIPIENTS))
    n = MAX_RECIPIENTS
    while len(raw_header(net, recipients=ids, addressing=short[:n]).encode()) > size:
        n -= 1
    base = len(raw_header(net, recipients=ids, addressing=short[:n]).encode())
    longer = size - base  # lengthen this many items by one character each
    assert 0 <= longer <= n
    addressing = tuple(a + "x" if i < longer else a for i, a in enumerate(short[:n]))
    h = raw_header(net, recipients=ids, addressing=addressing)
    assert len(h.encode()) == size
    return h


def test_a_header_of_exactly_max_header_bytes_seals_and_parses(net: FixedNet) -> None:
    h = _header_of_size(net, env.MAX_HEADER)
    assert sealed_and_parsed(net, h) == h


# -- body fields exactly at their limits ------------------------------------------------------

def test_subject_and_text_at_their_limits_seal_and_open(net: FixedNet) -> None:
    body = env.Body("s" * env.MAX_SUBJECT, "t" * env.MAX_TEXT)
    assert open_as_reader(net, seal(net, raw_header(net), body)).body == body


def test_text_over_the_limit_is_a_body_error() -> None:
    with pytest.raises(WireFormatError) as info:
        env.Body("s", "t" * (env.MAX_TEXT + 1))
    assert info.value.reason == "wire.body"
    assert str(env.MAX_TEXT) in info.value.message


def test_a_body_of_exactly_max_body_bytes_seals_and_opens(net: FixedNet) -> None:
    def body(n: int) -> env.Body:
        return env.Body("s", "", {"blob": b"x" * n})

    probe = 70_000  # past 64 KiB: the blob's length prefix no longer changes size
    fits = MAX_BODY - len(body(probe).encode()) + probe
    assert len(body(fits).encode()) == MAX_BODY
    assert open_as_reader(net, seal(net, raw_header(net), body(fits))).body == body(fits)
    with pytest.raises(WireFormatError) as info:
        body(fits + 1).encode()
    assert info.value.reason == "wire.oversized"


# -- the body-data walk ---------------------------------------------------------------------

def test_a_read_only_mapping_as_data_is_checked_like_a_dict() -> None:
    # Body.encode packs dict(data), so a top-level Mapping is encodable and must be checked.
    wide = MappingProxyType({f"k{i}": i for i in range(env.MAX_BODY_ITEMS + 1)})
    with pytest.raises(WireFormatError) as info:
        env.Body("s", "", wide).encode()
    assert info.value.reason == "wire.oversized"


def test_a_nested_mapping_msgpack_cannot_encode_is_left_to_pack() -> None:
    with pytest.raises(WireFormatError) as info:
        env.Body("s", "", {"m": MappingProxyType({1: "x"})}).encode()
    assert info.value.reason == "wire.encode"


def test_items_after_an_unencodable_mapping_are_still_checked() -> None:
    # The walk visits "m" first (last in, first out); "big" must still be refused by size.
    data = {"big": [0] * (env.MAX_BODY_ITEMS + 1), "m": MappingProxyType({})}
    with pytest.raises(WireFormatError) as info:
        env.Body("s", "", data).encode()
    assert info.value.reason == "wire.oversized"
    assert "data.big" in info.value.message


# -- seal -------------------------------------------------------------------------------------

def test_seal_uses_the_pair_key_cache_it_is_given(net: FixedNet) -> None:
    cache = k.PairKeyCache()
    h = raw_header(net)
    env.seal(h, env.Body("s"), net.keys[SENDER], env.recipient_keys(net.directory, h),
             random_bytes=FixedRandom("cache"), cache=cache)
    assert len(cache) == 2  # the pair key and the sending key / prekey agreement


# -- Header.summary ---------------------------------------------------------------------------

def _header(**changes: Any) -> env.Header:
    fields: dict[str, Any] = dict(
        id=bytes(range(16)), kind="message", sender="NCB-FR", recipients=("NCB-DE", "NCB-US"),
        addressing=("@G7",), label=Label("RESTRICTED", frozenset({"EU", "CT"})),
        precedence=Precedence.PRIORITY, created_ms=NOW, expires_ms=NOW + 60_000,
        directory_serial=7, key_id=bytes(range(8)), nonce=bytes(24))
    return env.Header(**(fields | changes))


def test_summary_of_a_plain_header() -> None:
    assert _header().summary() == {
        "id": bytes(range(16)).hex(), "kind": "message", "from": "NCB-FR",
        "to": ["NCB-DE", "NCB-US"], "addressing": ["@G7"], "label": "RESTRICTED//CT/EU",
        "handling": str(HandlingCodes()), "tlp": None, "evaluation": None,
        "precedence": "PRIORITY", "created_ms": NOW, "expires_ms": NOW + 60_000,
        "ref": None, "release": False, "directory_serial": 7, "key_id": bytes(range(8)).hex(),
    }


def test_summary_of_a_header_with_every_option() -> None:
    s = _header(handling=HandlingCodes.parse(["H3", "H1"], "no onward use"), tlp=TLP.AMBER,
                evaluation=Evaluation("B", 2), ref=b"\xab" * 16, release=b"signed").summary()
    assert (s["handling"], s["tlp"], s["evaluation"], s["ref"], s["release"]) == (
        "H1,H3 (no onward use)", "TLP:AMBER", "B2", "ab" * 16, True)
