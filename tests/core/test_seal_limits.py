"""Seal refuses what open would refuse: whatever ``seal`` accepts, ``open`` accepts.

The decoder has explicit limits (docs/protocol.md 1.3, 11): header bytes, envelope bytes, field
lengths,
items per array or map, nesting depth, text map keys. A sender that sealed something beyond
them would get a signed message that every receiver drops as malformed, after the router has
accepted it, with no useful reason given to anyone. So seal checks the same limits and says
why, with ``wire.oversized`` for sizes and counts and ``wire.schema`` for shapes.

The properties run both ways: seal-accepted implies open-accepted, and seal-refused (by a
limit) implies the decoder refuses the same bytes, so seal is not stricter than it must be.
"""

from __future__ import annotations

from typing import Any

import pytest
from fixednet import NOW, FixedNet, FixedRandom
from hypothesis import given
from hypothesis import strategies as st

from i24net.core import envelope as env
from i24net.core import keys as k
from i24net.core.errors import I24Error, WireFormatError
from i24net.core.labels import Label
from i24net.core.wire import MAX_BODY, MAX_DEPTH, MAX_ENVELOPE, MAX_RECIPIENTS, pack

SENDER, READER = "NCB-FR", "NCB-DE"


def raw_header(net: FixedNet, *, recipients: tuple[str, ...] = (READER,),
               addressing: tuple[str, ...] = (READER,), caveats: frozenset[str] = frozenset(),
               created: int = NOW, expires: int = NOW + 3_600_000, serial: int = 1,
               sender: str = SENDER) -> env.Header:
    """A header built field by field (``make_header`` would refuse most of these)."""
    rng = FixedRandom(f"hdr-{len(recipients)}-{created}-{serial}")
    return env.Header(
        id=rng(env.ID_SIZE), kind="message", sender=sender, recipients=recipients,
        addressing=addressing, label=Label("UNCLASSIFIED", caveats),
        precedence=env.Precedence.ROUTINE, created_ms=created, expires_ms=expires,
        directory_serial=serial, key_id=net.directory.agency(SENDER).key_id,
        nonce=rng(env.NONCE_SIZE))


def seal(net: FixedNet, header: env.Header, body: env.Body | None = None) -> bytes:
    """Seal as SENDER; recipients unknown to the directory share READER's public key."""
    reader = net.directory.agency(READER)
    keys = {r: (reader.enc_key, reader.prekey) for r in header.recipients}
    me = net.keys[SENDER]
    if header.sender != SENDER:  # SENDER's keys under another name
        me = k.AgencyKeys(header.sender, me.signing_seed, me.encryption_secret, me.prekeys,
                          me.sending_secret)
    return env.seal(header, body or env.Body("subject", "text"), me, keys,
                    random_bytes=FixedRandom("body-key"), cache=net.cache)


def open_as_reader(net: FixedNet, raw: bytes) -> env.Opened:
    return env.open_envelope(raw, net.keys[READER], net.directory, cache=net.cache)


def refused(fn: Any, *args: Any) -> str | None:
    """The reason code ``fn(*args)`` raises, or None if it returns."""
    try:
        fn(*args)
    except I24Error as exc:
        return exc.reason
    return None


def nested(depth: int, leaf: Any = 1) -> Any:
    """``depth`` levels: a leaf at level 1, wrapped in ``depth - 1`` lists."""
    value = leaf
    for _ in range(depth - 1):
        value = [value]
    return value


# -- body data ------------------------------------------------------------------------------

def test_data_at_every_limit_seals_and_opens(net: FixedNet) -> None:
    # body map = level 1, data = level 2: a leaf may sit at level MAX_DEPTH.
    data = {"deep": nested(MAX_DEPTH - 2), "wide": list(range(env.MAX_BODY_ITEMS)),
            **{f"k{i}": i for i in range(env.MAX_BODY_ITEMS - 2)}}
    assert len(data) == env.MAX_BODY_ITEMS
    opened = open_as_reader(net, seal(net, raw_header(net), env.Body("s", "", data)))
    assert opened.body.data == data


@pytest.mark.parametrize(("data", "reason"), [
    ({"deep": nested(MAX_DEPTH - 1)}, "wire.schema"),
    ({"deep": {"a": {"b": {"c": {"d": {"e": {"f": {}}}}}}}}, "wire.schema"),
    ({"wide": list(range(env.MAX_BODY_ITEMS + 1))}, "wire.oversized"),
    ({"wide": tuple(range(env.MAX_BODY_ITEMS + 1))}, "wire.oversized"),
    ({f"k{i}": i for i in range(env.MAX_BODY_ITEMS + 1)}, "wire.oversized"),
    ({"inner": {str(i): i for i in range(env.MAX_BODY_ITEMS + 1)}}, "wire.oversized"),
    ({1: "int key"}, "wire.schema"),
    ({b"bytes": "bytes key"}, "wire.schema"),
    ({"inner": {("t",): "tuple key"}}, "wire.schema"),
    ({"blob": "x" * MAX_BODY}, "wire.oversized"),
])
def test_data_the_decoder_refuses_is_refused_at_seal(net: FixedNet, data: dict[Any, Any],
                                                     reason: str) -> None:
    body = env.Body("s", "", data)
    with pytest.raises(WireFormatError) as info:
        seal(net, raw_header(net), body)
    assert info.value.reason == reason, info.value.message
    # ... and it is indeed what the decoder refuses (when msgpack can encode it at all).
    try:
        encoded = pack({"subject": "s", "text": "", "data": data})
    except WireFormatError:
        return
    assert refused(env.Body.decode, encoded) is not None


@pytest.mark.parametrize("data", [["a", "list"], "text", 3, None])
def test_data_that_is_not_a_map_is_refused(net: FixedNet, data: Any) -> None:
    with pytest.raises(WireFormatError) as info:
        seal(net, raw_header(net), env.Body("s", "", data))
    assert info.value.reason == "wire.schema"
    assert "map" in info.value.message


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                    st.floats(allow_nan=False), st.text(max_size=8), st.binary(max_size=8))
# Mostly text keys, now and then one the decoder refuses (an int, bytes).
keys = st.integers(0, 19).flatmap(
    lambda n: st.integers(0, 9) if n == 0 else st.binary(min_size=1, max_size=3) if n == 1
    else st.text(max_size=6))
wide = st.integers(env.MAX_BODY_ITEMS - 2, env.MAX_BODY_ITEMS + 2).map(lambda n: [0] * n)
values = st.recursive(
    st.integers(0, 9).flatmap(lambda n: wide if n == 0 else scalars),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.lists(inner, max_size=2).map(tuple),
                            st.dictionaries(keys, inner, max_size=3)),
    max_leaves=14)


def plain_text(value: Any) -> Any:
    """What a value looks like after a msgpack round trip (tuples become lists)."""
    if isinstance(value, (list, tuple)):
        return [plain_text(v) for v in value]
    if isinstance(value, dict):
        return {kk: plain_text(v) for kk, v in value.items()}
    return value


@given(data=st.dictionaries(keys, values, max_size=4), depth=st.integers(0, 3))
def test_seal_accepts_exactly_what_open_accepts(net: FixedNet, data: dict[Any, Any],
                                                depth: int) -> None:
    for _ in range(depth):  # push everything deeper, past the limit now and then
        data = {"d": [data]}
    body = env.Body("s", "t", data)
    try:
        raw = seal(net, raw_header(net), body)
    except WireFormatError as exc:
        if exc.reason == "wire.encode":
            return  # msgpack cannot encode it at all (an int beyond 64 bits...)
        assert exc.reason in ("wire.schema", "wire.oversized"), exc
        encoded = pack({"subject": "s", "text": "t", "data": plain_text(data)})
        assert refused(env.Body.decode, encoded) is not None, \
            f"seal refused ({exc.message}) what the decoder accepts"
        return
    assert open_as_reader(net, raw).body.data == plain_text(data)


# -- header ---------------------------------------------------------------------------------

def test_header_over_max_header_is_refused(net: FixedNet) -> None:
    ids = tuple(sorted(f"A{i:031d}" for i in range(MAX_RECIPIENTS)))
    addressing = tuple(f"@{i:032d}" for i in range(MAX_RECIPIENTS))
    h = raw_header(net, recipients=ids, addressing=addressing)
    assert len(h.encode()) > env.MAX_HEADER
    with pytest.raises(WireFormatError) as info:
        seal(net, h)
    assert info.value.reason == "wire.oversized"
    assert refused(env.Header.decode, h.encode()) == "wire.oversized"


@pytest.mark.parametrize(("fields", "what"), [
    ({"sender": "N" * 33}, "sender"),
    ({"recipients": (READER, "R" * 33)}, "recipient"),
    ({"addressing": ("@" + "G" * 33,)}, "addressing"),
    ({"addressing": tuple(f"A{i}" for i in range(MAX_RECIPIENTS + 1))}, "addressing"),
    ({"caveats": frozenset(f"C{i}" for i in range(65))}, "caveats"),
    ({"created": -5, "expires": 10}, "created"),
    ({"created": NOW, "expires": 2**63}, "expires"),
    ({"serial": 0}, "serial"),
])
def test_header_fields_the_decoder_refuses(net: FixedNet, fields: dict[str, Any],
                                           what: str) -> None:
    h = raw_header(net, **fields)
    with pytest.raises(WireFormatError) as info:
        seal(net, h)
    assert info.value.reason in ("wire.schema", "wire.oversized")
    assert what in info.value.message
    assert refused(env.Header.decode, h.encode()) is not None


ids = st.text(alphabet="ABCXYZ-0123", min_size=1, max_size=36)


@given(extra=st.lists(ids, max_size=4, unique=True),
       addressing=st.lists(st.text(alphabet="@AB1", min_size=1, max_size=36), min_size=1,
                           max_size=3, unique=True),
       caveats=st.integers(0, 66), created=st.integers(-3, 2**63 + 3),
       ttl=st.integers(1, 2**62), serial=st.integers(-1, 2**63 + 1))
def test_header_seal_accepts_exactly_what_open_accepts(
        net: FixedNet, extra: list[str], addressing: list[str], caveats: int, created: int,
        ttl: int, serial: int) -> None:
    try:
        h = raw_header(net, recipients=tuple(sorted({READER, *extra})),
                       addressing=tuple(addressing),
                       caveats=frozenset(f"C{i}" for i in range(caveats)),
                       created=created, expires=created + ttl, serial=serial)
    except I24Error:
        return  # Header itself refuses it: nothing to seal
    try:
        raw = seal(net, h)
    except WireFormatError as exc:
        if exc.reason == "wire.encode":
            return
        assert refused(env.Header.decode, h.encode()) is not None, \
            f"seal refused ({exc.message}) what the decoder accepts"
        return
    parsed = env.Envelope.parse(raw)
    assert parsed.header == h
    assert open_as_reader(net, raw).body.subject == "subject"


# -- the whole envelope -----------------------------------------------------------------------

def test_envelope_over_max_envelope_is_refused(net: FixedNet) -> None:
    # Every part within its own limit, the sum over the envelope's: 4,095 recipients with
    # 32-character ids and a body near MAX_BODY. Find the largest body that fits exactly.
    ids = sorted([READER, *(f"B{i:031d}" for i in range(MAX_RECIPIENTS - 1))])
    h = raw_header(net, recipients=tuple(ids), addressing=("@ALL",))
    assert len(h.encode()) <= env.MAX_HEADER

    def body(n: int) -> env.Body:
        return env.Body("s", "", {"blob": b"x" * n})

    probe = 70_000  # past 64 KiB: every length prefix is already 4 bytes wide
    fits = MAX_ENVELOPE - len(seal(net, h, body(probe))) + probe
    assert probe < fits and len(body(fits + 1).encode()) <= MAX_BODY
    raw = seal(net, h, body(fits))
    assert len(raw) == MAX_ENVELOPE
    assert open_as_reader(net, raw).body.data == {"blob": b"x" * fits}
    with pytest.raises(WireFormatError) as info:
        seal(net, h, body(fits + 1))
    assert info.value.reason == "wire.oversized"
    assert "envelope" in info.value.message


def test_signature_covers_the_checked_bytes(net: FixedNet) -> None:
    """The checks run on the bytes that are signed, not on a re-encoding."""
    raw = seal(net, raw_header(net))
    e = env.Envelope.parse(raw)
    assert len(e.header_bytes) <= env.MAX_HEADER
    k.verify(net.directory.agency(SENDER).sign_key, k.DOMAIN_ENVELOPE, e.signed, e.signature,
             what="test")
