"""envelope: seal/open round trips, tamper resistance of every signed byte, hostile input.

Properties under test (docs/security.md 4.1-4.5): authenticity (every byte is signed),
confidentiality (only recipients open), binding (header, wraps and ciphertext cannot be
recombined), freshness, revocation and rotation, bad input yields a typed error.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import msgpack
import pytest
from fixednet import (
    AGENCY_IDS,
    GROUP_ADDRESSES,
    HOUR,
    LOW_ORDER,
    NOW,
    FixedNet,
    FixedRandom,
    agency_keys,
    build_net,
)
from hypothesis import given
from hypothesis import strategies as st

from i24net.core import envelope as env
from i24net.core import keys as k
from i24net.core.errors import (
    ConfigError,
    CryptoError,
    DirectoryError,
    I24Error,
    NotRecipientError,
    WireFormatError,
)
from i24net.core.labels import DEFAULT_LEVELS, TLP, Evaluation, HandlingCodes, Label, Precedence
from i24net.core.wire import MAX_BODY, MAX_ENVELOPE, pack

# -- helpers ---------------------------------------------------------------------------------


def split(raw: bytes) -> tuple[dict[str, Any], bytes, bytes, list[list[Any]], bytes, bytes]:
    """(header map, sending key, commitment, wraps, ciphertext, signature) of an envelope,
    decoded without checks."""
    magic, version, signed, sig = msgpack.unpackb(raw, raw=False)
    assert (magic, version) == ("i24e", 2)
    header_bytes, epk, commit, wraps, ct = msgpack.unpackb(signed, raw=False)
    return msgpack.unpackb(header_bytes, raw=False), epk, commit, wraps, ct, sig


def join(header: dict[str, Any] | bytes, epk: bytes, commit: bytes, wraps: list[list[Any]],
         ct: bytes, sig: bytes | None = None, *, signer: k.AgencyKeys | None = None,
         magic: object = "i24e", version: object = 2) -> bytes:
    """Re-assemble an envelope; with ``signer``, sign the new signed part with that key."""
    header_bytes = header if isinstance(header, bytes) else pack(header)
    signed = pack([header_bytes, epk, commit, wraps, ct])
    if signer is not None:
        sig = signer.sign(k.DOMAIN_ENVELOPE, signed)
    return pack([magic, version, signed, sig])


def refused(net: FixedNet, raw: bytes, agency: str = "NCB-DE", **kw: Any) -> I24Error:
    with pytest.raises(I24Error) as info:
        net.open(raw, agency, **kw)
    return info.value


def reason(net: FixedNet, raw: bytes, agency: str = "NCB-DE", **kw: Any) -> str:
    return refused(net, raw, agency, **kw).reason


@pytest.fixture(scope="module")
def rich_raw(net: FixedNet) -> bytes:
    """A message using every optional header field, to NCB-DE and EUROPOL."""
    return net.seal(
        "NCB-FR", ["@EU", "NCB-DE"], env.Body("Wanted: J. Doe", "seen in Lyon", {"case": 7}),
        kind="diffusion", label=Label("CONFIDENTIAL", frozenset({"EU"})),
        precedence=Precedence.PRIORITY, handling=HandlingCodes.parse(["H2", "H0"]),
        tlp=TLP.AMBER, evaluation=Evaluation("B", 2), ref=b"\x11" * 16, release=b"rel",
        rng=FixedRandom("rich"))


@pytest.fixture(scope="module")
def small_raw(net: FixedNet) -> bytes:
    return net.seal("NCB-FR", ["NCB-DE"], env.Body("s", "t"), rng=FixedRandom("small"))


# -- round trips (properties 1 and 2) --------------------------------------------------------

bodies = st.builds(
    env.Body,
    subject=st.text(min_size=1, max_size=256),
    text=st.text(max_size=300),
    data=st.dictionaries(st.text(max_size=20),
                         st.text(max_size=60) | st.integers(-(1 << 63), (1 << 64) - 1),
                         max_size=8),
)


@given(body=bodies, sender=st.sampled_from(AGENCY_IDS),
       recipients=st.sets(st.sampled_from(AGENCY_IDS), min_size=1))
def test_every_recipient_opens_and_no_one_else(net: FixedNet, body: env.Body, sender: str,
                                               recipients: set[str]) -> None:
    raw = net.seal(sender, sorted(recipients), body)
    for r in recipients:
        opened = net.open(raw, r)
        assert opened.body == body
        assert opened.header.sender == sender
        assert opened.header.recipients == tuple(sorted(recipients))
    for other in set(AGENCY_IDS) - recipients:
        with pytest.raises(NotRecipientError) as info:
            net.open(raw, other)
        assert info.value.reason == "not-recipient"
        assert info.value.agency == other


@given(body=bodies, addressing=st.lists(st.sampled_from(GROUP_ADDRESSES), min_size=1,
                                         max_size=3, unique=True))
def test_group_addressed_round_trip(net: FixedNet, body: env.Body,
                                    addressing: list[str]) -> None:
    try:
        raw = net.seal("NCB-FR", addressing, body)
    except DirectoryError as exc:
        assert exc.reason == "addressing.empty"
        return
    h = env.Envelope.parse(raw).header
    assert h.recipients == net.directory.expand(addressing, "NCB-FR")
    assert h.addressing == tuple(addressing)
    assert net.open(raw, h.recipients[-1]).body == body


def test_rich_header_round_trip(net: FixedNet, rich_raw: bytes) -> None:
    for r in ("NCB-DE", "EUROPOL", "NCB-ES", "NCB-IT"):
        opened = net.open(rich_raw, r)
        assert opened.body == env.Body("Wanted: J. Doe", "seen in Lyon", {"case": 7})
    h = opened.header
    assert h.kind == "diffusion" and h.label.marking == "CONFIDENTIAL//EU"
    assert h.handling.names() == ["H0", "H2"] and h.tlp is TLP.AMBER
    assert str(h.evaluation) == "B2" and h.ref == b"\x11" * 16 and h.release == b"rel"
    assert h.addressing == ("@EU", "NCB-DE")
    assert h.summary()["tlp"] == "TLP:AMBER" and h.summary()["release"] is True


def test_open_accepts_a_parsed_envelope(net: FixedNet, small_raw: bytes) -> None:
    e = env.Envelope.parse(small_raw)
    assert net.open(e, "NCB-DE").envelope is e
    assert e.digest == hashlib.sha256(small_raw).digest()
    assert e.raw == small_raw


def test_sealing_is_deterministic_given_the_random_source(net: FixedNet) -> None:
    a = net.seal("NCB-FR", ["NCB-DE"], rng=FixedRandom("same"))
    b = net.seal("NCB-FR", ["NCB-DE"], rng=FixedRandom("same"))
    c = net.seal("NCB-FR", ["NCB-DE"], rng=FixedRandom("other"))
    assert a == b != c


def test_ciphertext_is_shared_and_wraps_are_per_recipient(net: FixedNet) -> None:
    raw = net.seal("GS-LYON", ["@ALL"], env.Body("x" * 100, "y" * 1000))
    _, _, _, wraps, ct, _ = split(raw)
    assert len(wraps) == 11
    assert all(len(w[2]) == env.WRAP_SIZE for w in wraps)
    assert len({w[2] for w in wraps}) == 11
    assert len(ct) == len(env.Body("x" * 100, "y" * 1000).encode()) + 16
    assert b"y" * 64 not in raw  # the body does not travel in clear


def test_long_non_ascii_text_opens(net: FixedNet) -> None:
    """MAX_TEXT counts characters; a long text of 2-byte characters must still open."""
    body = env.Body("é", "é" * 300_000, {"k": "ü" * 200_000})
    assert len(body.encode()) < MAX_BODY
    raw = net.seal("NCB-FR", ["NCB-DE"], body)
    assert net.open(raw, "NCB-DE").body == body


def test_message_ids_and_nonces_are_fresh(net: FixedNet) -> None:
    rng = FixedRandom("ids")
    headers = [net.header("NCB-FR", ["NCB-DE"], rng=rng) for _ in range(50)]
    assert len({h.id for h in headers}) == 50
    assert len({h.nonce for h in headers}) == 50


# -- tampering: every bit, every field (properties 1 and 3) ----------------------------------

@pytest.mark.timeout(60)
def test_every_single_bit_flip_is_refused(net: FixedNet, small_raw: bytes) -> None:
    net.open(small_raw, "NCB-DE")  # the original opens
    reasons: dict[str, int] = {}
    for i in range(len(small_raw) * 8):
        bad = bytearray(small_raw)
        bad[i // 8] ^= 1 << (i % 8)
        try:
            net.open(bytes(bad), "NCB-DE")
        except I24Error as exc:
            reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
        else:
            pytest.fail(f"flipping bit {i} went unnoticed")
    assert sum(reasons.values()) == len(small_raw) * 8
    assert reasons["sig.invalid"] > len(small_raw) * 4  # most bytes are signed content


@given(data=st.data())
def test_random_byte_changes_in_a_larger_envelope(net: FixedNet, rich_raw: bytes,
                                                  data: st.DataObject) -> None:
    bad = bytearray(rich_raw)
    for i in data.draw(st.lists(st.integers(0, len(bad) - 1), min_size=1, max_size=4,
                                unique=True)):
        bad[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(I24Error):
        net.open(bytes(bad), data.draw(st.sampled_from(["NCB-DE", "EUROPOL"])))


# Each signed header field changed, the original signature kept: refused by the signature
# (or, for the sender and key id, by the key lookup that precedes it).
FIELD_CHANGES: list[tuple[str, Any, str]] = [
    ("id", b"\x22" * 16, "sig.invalid"),
    ("kind", "notice", "sig.invalid"),
    ("from", "NCB-IT", "sig.unknown-key"),
    ("addr", ["@ALL"], "sig.invalid"),
    ("level", "UNCLASSIFIED", "sig.invalid"),  # downgrade
    ("level", "SECRET", "sig.invalid"),
    ("caveats", [], "sig.invalid"),
    ("caveats", ["CT", "EU"], "sig.invalid"),
    ("handling", ["H0"], "sig.invalid"),  # drop H2: "no onward dissemination"
    ("handling", [], "sig.invalid"),
    ("tlp", "CLEAR", "sig.invalid"),
    ("tlp", None, "sig.invalid"),
    ("eval", "A1", "sig.invalid"),
    ("prec", "FLASH", "sig.invalid"),
    ("created", NOW + 1, "sig.invalid"),
    ("expires", NOW + 1000 * HOUR, "sig.invalid"),
    ("ref", b"\x12" * 16, "sig.invalid"),
    ("ref", None, "sig.invalid"),
    ("release", None, "sig.invalid"),
    ("release", b"another release", "sig.invalid"),
    ("dir", 2, "sig.invalid"),
    ("kid", k.key_id(agency_keys("NCB-IT").verify_key), "sig.unknown-key"),
    ("nonce", b"\x33" * 24, "sig.invalid"),
]


@pytest.mark.parametrize(("field", "value", "why"), FIELD_CHANGES,
                         ids=[f"{f}={v!r}"[:30] for f, v, _ in FIELD_CHANGES])
def test_changed_header_field_breaks_the_signature(net: FixedNet, rich_raw: bytes, field: str,
                                                   value: Any, why: str) -> None:
    header, ek, cm, wraps, ct, sig = split(rich_raw)
    assert header[field] != value
    header[field] = value
    for agency in ("NCB-DE", "EUROPOL"):
        err = refused(net, join(header, ek, cm, wraps, ct, sig), agency)
        assert isinstance(err, CryptoError) and err.reason == why


def test_h3_restriction_text_is_signed(net: FixedNet) -> None:
    raw = net.seal("NCB-FR", ["NCB-DE"], handling=HandlingCodes.parse(["H3"], "not in court"))
    header, ek, cm, wraps, ct, sig = split(raw)
    header["h3"] = "no restriction"
    assert reason(net, join(header, ek, cm, wraps, ct, sig)) == "sig.invalid"


def test_readdressing_with_a_moved_wrap_breaks_the_signature(net: FixedNet,
                                                             rich_raw: bytes) -> None:
    """Surreptitious forwarding: give NCB-DE's wrap to NCB-US and list NCB-US instead."""
    header, ek, cm, wraps, ct, sig = split(rich_raw)
    header["to"] = sorted(["NCB-US" if r == "NCB-DE" else r for r in header["to"]])
    moved = sorted([["NCB-US" if w[0] == "NCB-DE" else w[0], *w[1:]] for w in wraps])
    raw = join(header, ek, cm, moved, ct, sig)
    assert reason(net, raw, "NCB-US") == "sig.invalid"


# The same changes, re-signed by the genuine sender: the signature now verifies, and the AEAD
# associated data (header bytes for the body, id and recipient for the wraps) still refuses.
RESIGNED = [(f, v) for f, v, why in FIELD_CHANGES if why == "sig.invalid" and f != "id"]


@pytest.mark.parametrize(("field", "value"), RESIGNED,
                         ids=[f"{f}={v!r}"[:30] for f, v in RESIGNED])
def test_header_is_bound_to_the_ciphertext(net: FixedNet, rich_raw: bytes, field: str,
                                           value: Any) -> None:
    header, ek, cm, wraps, ct, _ = split(rich_raw)
    header[field] = value
    raw = join(header, ek, cm, wraps, ct, signer=net.keys["NCB-FR"])
    assert reason(net, raw) == "aead.invalid"


def test_message_id_is_bound_to_the_wraps(net: FixedNet, rich_raw: bytes) -> None:
    header, ek, cm, wraps, ct, _ = split(rich_raw)
    header["id"] = b"\x22" * 16
    raw = join(header, ek, cm, wraps, ct, signer=net.keys["NCB-FR"])
    err = refused(net, raw)
    assert err.reason == "aead.invalid" and "key wrap" in str(err)


def test_swapped_wraps_between_recipients(net: FixedNet, rich_raw: bytes) -> None:
    header, ek, cm, wraps, ct, sig = split(rich_raw)
    names = [w[0] for w in wraps]
    swapped = [[n, own[1], w[2]]
               for n, own, w in zip(names, wraps, wraps[1:] + wraps[:1], strict=True)]
    assert reason(net, join(header, ek, cm, swapped, ct, sig)) == "sig.invalid"
    resigned = join(header, ek, cm, swapped, ct, signer=net.keys["NCB-FR"])
    for agency in names:
        assert reason(net, resigned, agency) == "aead.invalid"


def test_ciphertext_from_another_message(net: FixedNet) -> None:
    a = net.seal("NCB-FR", ["NCB-DE"], env.Body("a"), rng=FixedRandom("a"))
    b = net.seal("NCB-FR", ["NCB-DE"], env.Body("b"), rng=FixedRandom("b"))
    ha, ek, cm, wa, _, sa = split(a)
    _, ek, cm, _, cb, _ = split(b)
    assert reason(net, join(ha, ek, cm, wa, cb, sa)) == "sig.invalid"
    assert reason(net, join(ha, ek, cm, wa, cb, signer=net.keys["NCB-FR"])) == "aead.invalid"


def test_whole_signed_part_from_another_message(net: FixedNet) -> None:
    a = net.seal("NCB-FR", ["NCB-DE"], rng=FixedRandom("a"))
    b = net.seal("NCB-FR", ["NCB-DE"], rng=FixedRandom("b"))
    ma = msgpack.unpackb(a)
    mb = msgpack.unpackb(b)
    assert reason(net, pack([ma[0], ma[1], mb[2], ma[3]])) == "sig.invalid"


def test_wrap_renamed_or_dropped(net: FixedNet, rich_raw: bytes) -> None:
    header, ek, cm, wraps, ct, sig = split(rich_raw)
    renamed = sorted([["NCB-US" if w[0] == "NCB-DE" else w[0], *w[1:]] for w in wraps])
    assert reason(net, join(header, ek, cm, renamed, ct, sig)) == "wire.wraps"
    dropped = [w for w in wraps if w[0] != "NCB-DE"]
    assert reason(net, join(header, ek, cm, dropped, ct, sig), "EUROPOL") == "wire.wraps"
    header["to"] = [r for r in header["to"] if r != "NCB-DE"]
    assert reason(net, join(header, ek, cm, dropped, ct, sig), "EUROPOL") == "sig.invalid"


def test_another_valid_signature_of_other_bytes(net: FixedNet, small_raw: bytes) -> None:
    other = net.seal("NCB-FR", ["NCB-DE"], rng=FixedRandom("other"))
    header, ek, cm, wraps, ct, _ = split(small_raw)
    *_, other_sig = split(other)
    assert reason(net, join(header, ek, cm, wraps, ct, other_sig)) == "sig.invalid"
    # a signature by the sender's key, but for another purpose (domain separation)
    signed = pack([pack(header), wraps, ct])
    for domain in (k.DOMAIN_STAMP, k.DOMAIN_RECEIPT, k.DOMAIN_DIRECTORY):
        sig = net.keys["NCB-FR"].sign(domain, signed)
        assert reason(net, join(header, ek, cm, wraps, ct, sig)) == "sig.invalid"


def test_forged_sender(net: FixedNet, rich_raw: bytes) -> None:
    """NCB-IT, a member with a valid key, tries to pass a message off as NCB-FR's."""
    italy = net.keys["NCB-IT"]
    header, ek, cm, wraps, ct, _ = split(rich_raw)
    header["level"] = "UNCLASSIFIED"
    # signed by NCB-IT, still claiming NCB-FR and NCB-FR's key id
    assert reason(net, join(header, ek, cm, wraps, ct, signer=italy)) == "sig.invalid"
    # ... with NCB-IT's key id: the directory lists another key for NCB-FR
    header["kid"] = k.key_id(italy.verify_key)
    assert reason(net, join(header, ek, cm, wraps, ct, signer=italy)) == "sig.unknown-key"
    # honestly as NCB-IT, reusing NCB-FR's ciphertext: signature fine, wraps do not open
    header["from"] = "NCB-IT"
    assert reason(net, join(header, ek, cm, wraps, ct, signer=italy)) == "aead.invalid"


def test_signature_is_checked_before_recipient_membership(net: FixedNet,
                                                          small_raw: bytes) -> None:
    header, ek, cm, wraps, ct, sig = split(small_raw)
    header["level"] = "SECRET"
    assert reason(net, join(header, ek, cm, wraps, ct, sig), "NCB-US") == "sig.invalid"
    assert reason(net, small_raw, "NCB-US") == "not-recipient"


# -- revocation and rotation (property 6) ----------------------------------------------------

def test_revoked_sender(net: FixedNet, small_raw: bytes) -> None:
    d2 = net.directory.revoke("NCB-FR", NOW + 1)
    err = refused(net, small_raw, directory=d2)
    assert isinstance(err, CryptoError) and err.reason == "sender.revoked"
    assert err.agency == "NCB-FR" and err.msg_id == env.Envelope.parse(small_raw).header.id_hex


def test_unknown_sender(net: FixedNet, small_raw: bytes) -> None:
    from dataclasses import replace
    agencies = {a: r for a, r in net.directory.agencies.items() if a != "NCB-FR"}
    d = replace(net.directory, agencies=agencies, groups={})
    assert reason(net, small_raw, directory=d) == "sender.unknown"


def test_rotated_sender_key(net: FixedNet, small_raw: bytes) -> None:
    new = agency_keys("NCB-FR", generation=1)
    d2 = net.directory.rotate("NCB-FR", new.public(), NOW + 1)
    assert reason(net, small_raw, directory=d2) == "sig.unknown-key"
    rotated = net.with_directory(d2, **{"NCB-FR": new})
    fresh = rotated.seal("NCB-FR", ["NCB-DE"], env.Body("after rotation"))
    assert rotated.open(fresh, "NCB-DE").body.subject == "after rotation"
    assert reason(net, fresh) == "sig.unknown-key"  # the old directory does not know it


def test_rotated_recipient_key(net: FixedNet, small_raw: bytes) -> None:
    new = agency_keys("NCB-DE", generation=1)
    d2 = net.directory.rotate("NCB-DE", new.public(), NOW + 1)
    rotated = net.with_directory(d2, **{"NCB-DE": new})
    assert reason(rotated, small_raw) == "prekey.unknown"  # the new keys hold no old prekey
    with_old_prekey = dataclasses.replace(new, prekeys=(*net.keys["NCB-DE"].prekeys, ))
    assert reason(net.with_directory(d2, **{"NCB-DE": with_old_prekey}), small_raw) \
        == "aead.invalid"  # the prekey is there, but the long-term key is another
    fresh = rotated.seal("NCB-FR", ["NCB-DE"], env.Body("to the new key"))
    assert rotated.open(fresh, "NCB-DE").body.subject == "to the new key"


# -- low-order keys (property 8: PyNaCl's RuntimeError never escapes) ------------------------

@pytest.mark.parametrize("point", LOW_ORDER[:7], ids=lambda p: p.hex()[:8])
def test_low_order_recipient_key_at_seal(net: FixedNet, point: bytes) -> None:
    h = net.header("NCB-FR", ["NCB-DE", "NCB-US"])
    good = env.recipient_keys(net.directory, h)
    for bad in ((point, good["NCB-US"][1]), (good["NCB-US"][0], point)):  # key, then prekey
        keys = {**good, "NCB-US": bad}
        with pytest.raises(CryptoError) as info:
            env.seal(h, env.Body("s"), net.keys["NCB-FR"], keys, random_bytes=FixedRandom())
        assert info.value.reason == "key.low-order"
        assert not isinstance(info.value, RuntimeError)


def test_low_order_key_in_the_directory(net: FixedNet, small_raw: bytes) -> None:
    from dataclasses import replace
    bad_de = replace(net.directory.agency("NCB-DE"), enc_key=LOW_ORDER[2])
    d = replace(net.directory, agencies={**net.directory.agencies, "NCB-DE": bad_de})
    bad = net.with_directory(d)
    h = bad.header("NCB-FR", ["NCB-DE"])
    with pytest.raises(CryptoError) as info:
        bad.seal_header(h)
    assert info.value.reason == "key.low-order"
    # a sender listed with a low-order key: opening fails cleanly too
    bad_fr = replace(net.directory.agency("NCB-FR"), enc_key=LOW_ORDER[3])
    d = replace(net.directory, agencies={**net.directory.agencies, "NCB-FR": bad_fr})
    assert reason(net.with_directory(d), small_raw, directory=d) == "key.low-order"


# -- parse: structure of the envelope --------------------------------------------------------

def parse_reason(raw: bytes) -> str:
    with pytest.raises(WireFormatError) as info:
        env.Envelope.parse(raw)
    return info.value.reason


def test_wrong_magic_or_version(small_raw: bytes) -> None:
    header, ek, cm, wraps, ct, sig = split(small_raw)
    for magic in ("i24f", b"i24e", "I24E", 1, None):
        assert parse_reason(join(header, ek, cm, wraps, ct, sig, magic=magic)) == "wire.magic"
    for version in (0, 1, 3, "2", None, True, 2.0, [2]):
        assert parse_reason(join(header, ek, cm, wraps, ct, sig, version=version)) \
            == "wire.version"
    with pytest.raises(WireFormatError, match=r"protocol version 1 .* no longer accepted"):
        env.Envelope.parse(join(header, ek, cm, wraps, ct, sig, version=1))
    header["v"] = 1
    assert parse_reason(join(header, ek, cm, wraps, ct, sig)) == "wire.version"


def test_frame_must_be_canonical(net: FixedNet, small_raw: bytes) -> None:
    """One message, one encoding: the unsigned frame cannot be re-encoded to a new digest."""
    _, _, signed, sig = msgpack.unpackb(small_raw)
    n = len(signed)
    variants = [
        b"\xdc\x00\x04" + small_raw[1:],  # array16 instead of fixarray
        b"\x94\xd9\x04i24e" + small_raw[6:],  # str8 instead of fixstr
        b"\x94\xa4i24e\xcc\x02" + small_raw[7:],  # uint8 instead of fixint
        b"\x94\xa4i24e\x02\xc6" + n.to_bytes(4, "big") + signed + pack(sig),  # bin32
        b"\x94\xa4i24e\x02" + pack(signed) + b"\xc5\x00\x40" + sig,  # bin16 signature
    ]
    for raw in variants:
        assert msgpack.unpackb(raw) == msgpack.unpackb(small_raw)
        assert reason(net, raw) == "wire.noncanonical"


@pytest.mark.parametrize("outer", [
    [], ["i24e", 2, b"s"], ["i24e", 2, b"s", b"x" * 64, b""], {"i24e": 2}, "i24e",
    ["i24e", 2, "signed", b"x" * 64], ["i24e", 2, b"s", b"x" * 63], ["i24e", 2, b"s", None],
])
def test_malformed_outer(outer: object) -> None:
    assert parse_reason(pack(outer)) in {"wire.schema", "wire.malformed", "wire.truncated"}


def inner(obj: object) -> bytes:
    return pack(["i24e", 2, pack(obj), b"\x00" * 64])


def test_malformed_signed_part(small_raw: bytes) -> None:
    header, ek, cm, wraps, ct, _ = split(small_raw)
    hb = pack(header)
    name, pid, wrap = wraps[0]
    for obj in ([hb, ek, cm, wraps], [hb, ek, cm, wraps, ct, b""], [header, ek, cm, wraps, ct],
                [hb, ek, cm, wraps, "ct"], [hb, ek[:31], cm, wraps, ct],
                [hb, ek, cm[:31], wraps, ct], [hb, None, cm, wraps, ct],
                [hb, ek, cm, {name: wrap}, ct], [hb, ek, cm, [[b"NCB-DE", pid, wrap]], ct],
                [hb, ek, cm, [[name, pid, wrap[:47]]], ct], [hb, ek, cm, [[name]], ct],
                [hb, ek, cm, [[name, wrap]], ct], [hb, ek, cm, [[name, pid[:7], wrap]], ct],
                [hb, ek, cm, [[name, pid, wrap, b""]], ct],
                [hb, ek, cm, [wraps[0], wraps[0]], ct], [hb, wraps, ct], "x", {}):
        assert parse_reason(inner(obj)) == "wire.schema", obj
    assert parse_reason(inner([hb, ek, cm, [], ct])) == "wire.wraps"
    assert parse_reason(inner([hb, ek, cm, [[name, pid, wrap], ["NCB-US", pid, wrap]], ct])) \
        == "wire.wraps"


@pytest.mark.parametrize(("field", "value"), [
    ("extra", 1), ("v", None), ("id", None), ("id", b"short"), ("kind", "gossip"),
    ("from", ""), ("from", 7), ("to", []), ("to", ["NCB-DE", "NCB-DE"]), ("to", ["NCB-DE", "A"]),
    ("addr", []), ("addr", "NCB-DE"), ("level", "secret"), ("level", "SECRET\n"),
    ("caveats", ["eu"]), ("handling", ["H5"]), ("handling", ["H3"]), ("h3", "text w/o H3"),
    ("tlp", "WHITE"), ("eval", "Z9"), ("eval", "B²"), ("prec", "URGENT"), ("created", -1),
    ("created", 1.5), ("expires", NOW - 1), ("ref", b"\x00" * 15), ("release", "text"),
    ("release", b"x" * 4097), ("dir", 0), ("kid", b"\x00" * 9), ("nonce", b"\x00" * 12),
    ("nonce", None),
])
def test_malformed_header_even_when_validly_signed(net: FixedNet, small_raw: bytes,
                                                   field: str, value: object) -> None:
    """Schema checks do not rely on the signature: the sender's own key does not help."""
    header, ek, cm, wraps, ct, _ = split(small_raw)
    if value is None and field != "v":
        del header[field]
    else:
        header[field] = value
    raw = join(header, ek, cm, wraps, ct, signer=net.keys["NCB-FR"])
    assert reason(net, raw) in {"wire.schema", "wire.version", "wire.kind",
                                "wire.no-recipients"}


def test_every_truncation(net: FixedNet, rich_raw: bytes) -> None:
    for n in range(len(rich_raw)):
        assert reason(net, rich_raw[:n]) == "wire.truncated", n


def test_trailing_and_oversized(net: FixedNet, small_raw: bytes) -> None:
    assert reason(net, small_raw + b"\x00") == "wire.trailing"
    assert reason(net, small_raw + small_raw) == "wire.trailing"
    assert reason(net, b"\xc0" * (MAX_ENVELOPE + 1)) == "wire.oversized"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("data", [
    b"\x91" * 10_000 + b"\xc0",
    b"\x94\xa4i24e\x01" + b"\x91" * 10_000,
    b"\xc6\xff\xff\xff\xff" + b"abc",
    b"\x94\xa4i24e\x01\xc6\xff\xff\xff\xff" + b"abc",
    b"\xdb\xff\xff\xff\xff" + b"abc",
    b"\xdd\xff\xff\xff\xff" + b"abc",
    b"\xdf\xff\xff\xff\xff" + b"abc",
    b"\x94\xa4i24e\x01\xc7\x00\x05\xc4\x40" + b"\x00" * 64,
    b"\x94\xd4\x05\x00\x01\xc4\x00\xc4\x40" + b"\x00" * 64,
    b"\x84\x01\x01\x02\x02\x03\x03\x04\x04",
    b"\x84\xc4\x01a\x01\xc4\x01b\x02\xc4\x01c\x03\xc4\x01d\x04",
    b"\x94\xa4i24e\x01\xc4\x00",
    b"\xc1",
    b"\x94\xa2\xff\xfe\x01\xc4\x00\xc4\x40" + b"\x00" * 64,
])
def test_hostile_envelopes(net: FixedNet, data: bytes) -> None:
    with pytest.raises(WireFormatError):
        net.open(data, "NCB-DE")


def test_signed_part_with_deep_nesting_or_ext(net: FixedNet) -> None:
    for content in (b"\x91" * 10_000 + b"\xc0", b"\x93\xc7\x00\x05\x90\xc4\x00",
                    b"\x93\xc4\x03\x81\x01\x01\x90\xc4\x00", b"\xdd\xff\xff\xff\xff"):
        raw = pack(["i24e", 2, content, b"\x00" * 64])
        assert reason(net, raw) in {"wire.malformed", "wire.truncated", "wire.schema",
                                    "wire.depth"}


@given(st.binary(max_size=600))
def test_random_bytes_are_refused_cleanly(net: FixedNet, data: bytes) -> None:
    with pytest.raises(I24Error):
        net.open(data, "NCB-DE")


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
)


@given(st.lists(msgpack_values, max_size=5), msgpack_values)
def test_random_structures_in_an_envelope_frame(net: FixedNet, signed: list[Any],
                                                sig: Any) -> None:
    for raw in (pack(["i24e", 1, pack(signed), b"\x00" * 64]), pack(["i24e", 1, signed, sig])):
        with pytest.raises(I24Error):
            net.open(raw, "NCB-DE")


HEADER_KEYS = ["v", "id", "kind", "from", "to", "addr", "level", "caveats", "handling", "h3",
               "tlp", "eval", "prec", "created", "expires", "ref", "release", "dir", "kid",
               "nonce"]


@given(field=st.sampled_from(HEADER_KEYS), value=msgpack_values)
def test_any_value_in_any_header_field(net: FixedNet, rich_raw: bytes, field: str,
                                       value: Any) -> None:
    """Validly re-signed by the sender, so only the decoder's own checks stand in the way."""
    header, ek, cm, wraps, ct, _ = split(rich_raw)
    header[field] = value
    try:
        h = env.Header.decode(pack(header))
    except WireFormatError:
        return
    # it decoded: it must describe a header that re-encodes to a decodable header
    assert env.Header.decode(h.encode()) == h
    try:
        net.open(join(header, ek, cm, wraps, ct, signer=net.keys["NCB-FR"]), "NCB-DE")
    except I24Error:
        pass


# -- Header and Body values ------------------------------------------------------------------

headers = st.builds(
    env.Header,
    id=st.binary(min_size=16, max_size=16),
    kind=st.sampled_from(env.KINDS),
    sender=st.sampled_from(AGENCY_IDS),
    recipients=st.sets(st.sampled_from(AGENCY_IDS), min_size=1).map(lambda s: tuple(sorted(s))),
    addressing=st.lists(st.sampled_from([*GROUP_ADDRESSES, *AGENCY_IDS]), min_size=1,
                        unique=True).map(tuple),
    label=st.builds(Label, st.sampled_from(DEFAULT_LEVELS),
                    st.frozensets(st.sampled_from(["EU", "CT", "FIN"]))),
    precedence=st.sampled_from(Precedence),
    created_ms=st.integers(0, 1 << 50),
    expires_ms=st.integers((1 << 50) + 1, 1 << 60),
    directory_serial=st.integers(1, 1 << 40),
    key_id=st.binary(min_size=8, max_size=8),
    nonce=st.binary(min_size=24, max_size=24),
    handling=st.one_of(
        st.frozensets(st.sampled_from(["H0", "H1", "H2"])).map(HandlingCodes.parse),
        st.text(min_size=1, max_size=100).filter(str.strip).map(
            lambda t: HandlingCodes.parse(["H3", "H1"], t))),
    tlp=st.none() | st.sampled_from(TLP),
    evaluation=st.none() | st.builds(Evaluation, st.sampled_from("ABCX"), st.integers(1, 4)),
    ref=st.none() | st.binary(min_size=16, max_size=16),
    release=st.none() | st.binary(max_size=env.MAX_RELEASE),
)


@given(headers)
def test_header_round_trip(h: env.Header) -> None:
    assert env.Header.decode(h.encode()) == h


def base_header(**changes: Any) -> env.Header:
    fields: dict[str, Any] = dict(
        id=b"\x01" * 16, kind="message", sender="NCB-FR", recipients=("NCB-DE",),
        addressing=("NCB-DE",), label=Label("UNCLASSIFIED"), precedence=Precedence.ROUTINE,
        created_ms=NOW, expires_ms=NOW + HOUR, directory_serial=1, key_id=b"\x02" * 8,
        nonce=b"\x03" * 24)
    return env.Header(**(fields | changes))


@pytest.mark.parametrize(("changes", "why"), [
    ({"id": b"\x01" * 15}, "wire.schema"),
    ({"kind": "gossip"}, "wire.kind"),
    ({"recipients": ()}, "wire.no-recipients"),
    ({"recipients": ("NCB-US", "NCB-DE")}, "wire.schema"),
    ({"recipients": ("NCB-DE", "NCB-DE")}, "wire.schema"),
    ({"addressing": ()}, "wire.schema"),
    ({"addressing": ("NCB-DE", "NCB-DE")}, "wire.schema"),
    ({"expires_ms": NOW}, "wire.schema"),
    ({"nonce": b"\x03" * 23}, "wire.schema"),
    ({"key_id": b"\x02" * 7}, "wire.schema"),
    ({"ref": b"\x04" * 8}, "wire.schema"),
    ({"release": b"r" * (env.MAX_RELEASE + 1)}, "wire.schema"),
])
def test_header_validation(changes: dict[str, Any], why: str) -> None:
    with pytest.raises(WireFormatError) as info:
        base_header(**changes)
    assert info.value.reason == why


def test_body_validation() -> None:
    for subject in ("", "s" * 257, None):
        with pytest.raises(WireFormatError) as info:
            env.Body(subject)  # type: ignore[arg-type]
        assert info.value.reason == "wire.body"
    with pytest.raises(WireFormatError):
        env.Body("s", "t" * (env.MAX_TEXT + 1))
    with pytest.raises(WireFormatError) as info:
        env.Body("s", "", {"blob": "x" * MAX_BODY}).encode()
    assert info.value.reason == "wire.oversized"


@pytest.mark.parametrize("body", [
    env.Body("\udcff"),  # a lone surrogate (e.g. from undecodable argv bytes)
    env.Body("s", "", {"k": object()}),
    env.Body("s", "", {"k": 1 << 64}),
])
def test_unencodable_body_is_a_wire_error(net: FixedNet, body: env.Body) -> None:
    with pytest.raises(WireFormatError):
        net.seal("NCB-FR", ["NCB-DE"], body)


def test_body_decode_refuses_extra_and_mistyped(net: FixedNet) -> None:
    for obj in ({"subject": "s", "text": "", "data": {}, "x": 1}, {"subject": "s", "text": ""},
                {"subject": "s", "text": "", "data": []}, {"subject": "", "text": "", "data": {}},
                ["s", "", {}]):
        with pytest.raises(WireFormatError):
            env.Body.decode(pack(obj))


# -- make_header, seal preconditions ---------------------------------------------------------

def test_make_header(net: FixedNet) -> None:
    rng = FixedRandom("mh")
    h = net.header("NCB-FR", ["@EU", "NCB-US", "NCB-US"], rng=rng,
                   label=Label("RESTRICTED", frozenset({"EU"})), now_ms=NOW, ttl_ms=HOUR)
    assert h.recipients == ("EUROPOL", "NCB-DE", "NCB-ES", "NCB-IT", "NCB-US")
    assert h.addressing == ("@EU", "NCB-US")  # a repeated item once
    assert (h.created_ms, h.expires_ms) == (NOW, NOW + HOUR)
    assert h.directory_serial == 1
    assert h.key_id == net.directory.agency("NCB-FR").key_id
    assert (h.id, h.nonce) == (rng.calls[0], rng.calls[1])
    assert h.handling == HandlingCodes() and h.precedence is Precedence.ROUTINE


def test_make_header_refusals(net: FixedNet) -> None:
    with pytest.raises(DirectoryError) as info:
        net.header("NCB-ZA", ["@AFRICA"])
    assert info.value.reason == "addressing.empty"
    with pytest.raises(DirectoryError) as info:
        net.header("NCB-FR", ["@NOPE"])
    assert info.value.reason == "directory.unknown-group"
    with pytest.raises(DirectoryError) as info:
        net.header("NCB-XX", ["NCB-DE"])
    assert info.value.reason == "directory.unknown-agency"
    with pytest.raises(ConfigError) as cinfo:
        net.header("NCB-FR", ["NCB-DE"], label=Label("COSMIC"))
    assert cinfo.value.reason == "label.unknown-level"
    with pytest.raises(ConfigError) as cinfo:
        net.header("NCB-FR", ["NCB-DE"], label=Label("SECRET", frozenset({"NATO"})))
    assert cinfo.value.reason == "label.unknown-caveat"


def test_seal_preconditions(net: FixedNet) -> None:
    h = net.header("NCB-FR", ["NCB-DE", "NCB-XX"])
    with pytest.raises(DirectoryError) as info:
        net.seal_header(h)
    assert info.value.reason == "directory.unknown-agency"
    assert info.value.agencies == ("NCB-XX",)
    h = net.header("NCB-FR", ["NCB-DE"])
    with pytest.raises(CryptoError) as cinfo:
        net.seal_header(h, keys=net.keys["NCB-DE"])
    assert cinfo.value.reason == "seal.sender"


def test_recipient_keys_come_from_the_directory(net: FixedNet) -> None:
    h = net.header("NCB-FR", ["@G7", "NCB-XX"])
    keys = env.recipient_keys(net.directory, h)
    assert set(keys) == set(h.recipients) - {"NCB-XX"}
    assert keys["NCB-DE"] == (net.keys["NCB-DE"].encryption_public,
                              net.keys["NCB-DE"].current_prekey.public)


# -- freshness (property 5) ------------------------------------------------------------------

@pytest.mark.parametrize(("now", "expected"), [
    (NOW, None),
    (NOW - 300_000, None),  # our clock 5 min slow: still fine
    (NOW - 300_001, "time.future"),
    (NOW + HOUR, None),
    (NOW + HOUR + 300_000, None),
    (NOW + HOUR + 300_001, "time.expired"),
])
def test_freshness(now: int, expected: str | None) -> None:
    assert env.check_freshness(base_header(), now, 300_000) == expected


def test_freshness_without_skew() -> None:
    assert env.check_freshness(base_header(), NOW - 1, 0) == "time.future"
    assert env.check_freshness(base_header(), NOW + HOUR + 1, 0) == "time.expired"


def test_other_network_cannot_open(net: FixedNet, small_raw: bytes) -> None:
    """Same agency names, different keys: nothing verifies."""
    other = build_net(authority="other")
    other_keys = {a: agency_keys(a, generation=7) for a in AGENCY_IDS}
    from dataclasses import replace
    agencies = {a: replace(r, sign_key=other_keys[a].verify_key,
                           enc_key=other_keys[a].encryption_public)
                for a, r in other.directory.agencies.items()}
    d = replace(other.directory, agencies=agencies)
    assert reason(net, small_raw, directory=d) == "sig.unknown-key"
