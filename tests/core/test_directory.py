"""directory: signed versions, rollback and fork refusal, rotation, revocation, addressing."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest
from fixednet import (
    AGENCY_IDS,
    GROUP_ADDRESSES,
    GROUPS,
    NOW,
    REGIONS,
    FixedNet,
    agency_keys,
    build_net,
    record,
    secret,
)
from hypothesis import given
from hypothesis import strategies as st

from i24net.core import keys as k
from i24net.core.directory import MAX_DIRECTORY, AgencyRecord, Directory, load, peek_serial
from i24net.core.errors import CryptoError, DirectoryError, I24Error, WireFormatError
from i24net.core.labels import Label
from i24net.core.wire import pack


def resign(net: FixedNet, doc: bytes, seed: bytes | None = None) -> bytes:
    return pack([doc, k.sign(seed or net.authority_seed, k.DOMAIN_DIRECTORY, doc)])


def edit_doc(net: FixedNet, **changes: object) -> bytes:
    """The directory document with top-level fields changed (None deletes), re-signed."""
    doc = msgpack.unpackb(net.directory.encode(), raw=False)
    for key, value in changes.items():
        if value is None:
            del doc[key]
        else:
            doc[key] = value
    return resign(net, pack(doc))


def reason(exc_type: type[I24Error], fn, *args, **kw) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(exc_type) as info:
        fn(*args, **kw)
    return info.value.reason


# -- signing and loading ---------------------------------------------------------------------

def test_sign_load_round_trip(net: FixedNet) -> None:
    d = load(net.signed, net.anchor)
    assert d == net.directory
    assert d.encode() == net.directory.encode()
    assert d.digest == net.directory.digest
    assert Directory.decode_doc(net.directory.encode()) == net.directory


def test_signed_file_is_doc_and_detached_signature(net: FixedNet) -> None:
    doc, sig = msgpack.unpackb(net.signed)
    assert doc == net.directory.encode()
    k.verify(net.anchor, k.DOMAIN_DIRECTORY, doc, sig, what="test")
    assert net.signed == net.directory.sign(net.authority_seed)  # Ed25519 is deterministic


def test_encoding_is_canonical(net: FixedNet) -> None:
    shuffled = replace(net.directory,
                       agencies=dict(reversed(list(net.directory.agencies.items()))),
                       groups={g: tuple(reversed(m)) for g, m in reversed(GROUPS.items())})
    assert shuffled.encode() == net.directory.encode()


def test_tampered_document_is_refused(net: FixedNet) -> None:
    doc, sig = msgpack.unpackb(net.signed)
    for i in range(0, len(doc) * 8, 61):
        bad = bytearray(doc)
        bad[i // 8] ^= 1 << (i % 8)
        assert reason(CryptoError, load, pack([bytes(bad), sig]), net.anchor) == "sig.invalid"


def test_wrong_anchor_is_refused(net: FixedNet) -> None:
    other = build_net(authority="someone-else")
    assert reason(CryptoError, load, net.signed, other.anchor) == "sig.invalid"
    assert reason(CryptoError, load, other.signed, net.anchor) == "sig.invalid"


def test_directory_must_name_its_anchor(net: FixedNet) -> None:
    """Signed by key B but naming key A as its authority: refused even though B verifies."""
    other = build_net(authority="someone-else")
    doc = net.directory.encode()
    signed = resign(net, doc, seed=other.authority_seed)
    assert reason(DirectoryError, load, signed, other.anchor) == "directory.authority"


def test_signature_over_another_domain_is_refused(net: FixedNet) -> None:
    doc = net.directory.encode()
    for domain in (k.DOMAIN_ENVELOPE, k.DOMAIN_STAMP, b""):
        signed = pack([doc, k.sign(net.authority_seed, domain, doc)])
        assert reason(CryptoError, load, signed, net.anchor) == "sig.invalid"


# -- versions: rollback and fork -------------------------------------------------------------

def test_newer_and_same_version_load(net: FixedNet) -> None:
    v2 = net.directory.revoke("NCB-ZA", NOW + 1)
    assert load(v2.sign(net.authority_seed), net.anchor, held=net.directory) == v2
    assert load(net.signed, net.anchor, held=net.directory) == net.directory  # reload


def test_rollback_is_refused(net: FixedNet) -> None:
    v2 = net.directory.revoke("NCB-ZA", NOW + 1)
    v3 = v2.rotate("NCB-FR", agency_keys("NCB-FR", 1).public(), NOW + 2)
    for older in (net.directory, v2):
        assert reason(DirectoryError, load, older.sign(net.authority_seed), net.anchor,
                      held=v3) == "directory.rollback"


def test_fork_is_refused(net: FixedNet) -> None:
    a = net.directory.revoke("NCB-ZA", NOW + 1)
    b = net.directory.revoke("NCB-MA", NOW + 1)
    assert a.serial == b.serial
    assert reason(DirectoryError, load, b.sign(net.authority_seed), net.anchor,
                  held=a) == "directory.fork"
    # even a change of issue time alone is a different directory
    c = replace(a, issued_ms=a.issued_ms + 1)
    assert reason(DirectoryError, load, c.sign(net.authority_seed), net.anchor,
                  held=a) == "directory.fork"


def test_peek_serial(net: FixedNet) -> None:
    assert peek_serial(net.signed) == 1
    assert peek_serial(net.directory.revoke("NCB-ZA", NOW).sign(net.authority_seed)) == 2
    assert reason(WireFormatError, peek_serial, pack([b"\xc0", b""])) == "wire.schema"
    assert reason(WireFormatError, peek_serial, pack(["x", b""])) == "wire.schema"


# -- rotate and revoke -----------------------------------------------------------------------

def test_rotate_bumps_serial_and_key_version(net: FixedNet) -> None:
    new = agency_keys("NCB-FR", 1)
    d = net.directory.rotate("NCB-FR", new.public(), NOW + 5)
    assert d.serial == 2 and d.issued_ms == NOW + 5
    rec = d.agency("NCB-FR")
    assert rec.key_version == 2
    assert (rec.sign_key, rec.enc_key) == (new.verify_key, new.encryption_public)
    assert rec.key_id == k.key_id(new.verify_key) != net.directory.agency("NCB-FR").key_id
    assert all(d.agencies[a] == net.directory.agencies[a] for a in AGENCY_IDS if a != "NCB-FR")
    assert net.directory.agency("NCB-FR").key_version == 1  # the old version is untouched
    assert reason(DirectoryError, net.directory.rotate, "NCB-XX", new.public(),
                  NOW) == "directory.unknown-agency"


def test_revoke_bumps_serial(net: FixedNet) -> None:
    d = net.directory.revoke("NCB-FR", NOW + 5)
    assert d.serial == 2 and not d.agency("NCB-FR").active
    assert d.agency("NCB-FR").status == "revoked"
    assert net.directory.agency("NCB-FR").active
    assert reason(DirectoryError, d.revoke, "NCB-FR", NOW) == "directory.revoked"
    assert reason(DirectoryError, d.revoke, "NCB-XX", NOW) == "directory.unknown-agency"
    assert load(d.sign(net.authority_seed), net.anchor).agency("NCB-FR").status == "revoked"


def test_revoked_agencies_drop_out_of_every_group(net: FixedNet) -> None:
    before = {g: net.directory.expand([g], "GS-LYON") for g in GROUP_ADDRESSES}  # warm caches
    assert "NCB-FR" in before["@ALL"] and "NCB-FR" in before["@EU"]
    d = net.directory.revoke("NCB-FR", NOW)
    for g in ("@ALL", "@NCB", "@EUROPE", "@EU", "@G7", "@CT-CELL"):
        assert "NCB-FR" not in d.expand([g], "GS-LYON"), g
    assert d.expand(["@ALL"], "GS-LYON") == tuple(x for x in before["@ALL"] if x != "NCB-FR")
    # a directly named revoked agency stays: the router refuses it with a reason
    assert d.expand(["NCB-FR"], "GS-LYON") == ("NCB-FR",)
    assert d.authorities("directory-authority") == ["GS-LYON"]
    assert d.revoke("GS-LYON", NOW).authorities("notice-authority") == []


def test_replace_never_inherits_cached_expansions(net: FixedNet) -> None:
    d = build_net().directory
    assert "NCB-FR" in d.expand(["@EU"], "GS-LYON")  # cached on d
    revoked = replace(d.agency("NCB-FR"), status="revoked")
    d2 = replace(d, serial=2, agencies={**d.agencies, "NCB-FR": revoked})
    assert "NCB-FR" not in d2.expand(["@EU"], "GS-LYON")
    assert "NCB-FR" not in d2.expand(["@ALL"], "GS-LYON")


# -- addressing ------------------------------------------------------------------------------

def test_derived_and_explicit_groups(net: FixedNet) -> None:
    d = net.directory
    assert d.expand(["@ALL"], "NCB-FR") == tuple(sorted(set(AGENCY_IDS) - {"NCB-FR"}))
    assert d.expand(["@NCB"], "GS-LYON") == tuple(sorted(a for a in AGENCY_IDS
                                                        if a.startswith("NCB-")))
    assert d.expand(["@AMERICAS"], "GS-LYON") == ("NCB-BR", "NCB-US")
    assert d.expand(["@EU"], "NCB-FR") == ("EUROPOL", "NCB-DE", "NCB-ES", "NCB-IT")
    assert d.expand(["@MENA", "@AFRICA", "NCB-JP"], "GS-LYON") == ("NCB-JP", "NCB-MA",
                                                                   "NCB-ZA")
    assert d.expand(["@G7", "@EU", "NCB-DE"], "NCB-US") == (
        "EUROPOL", "NCB-DE", "NCB-ES", "NCB-FR", "NCB-IT", "NCB-JP")


def test_expand_excludes_the_sender_from_groups_only(net: FixedNet) -> None:
    assert "NCB-FR" not in net.directory.expand(["@EU", "@ALL"], "NCB-FR")
    assert net.directory.expand(["NCB-FR"], "NCB-FR") == ("NCB-FR",)
    assert net.directory.expand(["@AFRICA"], "NCB-ZA") == ()


@pytest.mark.parametrize("name", ["@NOPE", "@", "@eu", "@NCB-FR", "@ALL-X"])
def test_unknown_group(net: FixedNet, name: str) -> None:
    assert reason(DirectoryError, net.directory.expand, [name], "NCB-FR") \
        == "directory.unknown-group"


def test_group_lookups(net: FixedNet) -> None:
    d = net.directory
    assert d.group_names() == ["ALL", "NCB", *REGIONS, *sorted(GROUPS)]
    assert d.groups_of("NCB-FR") == ["@ALL", "@NCB", "@EUROPE", "@CT-CELL", "@EU", "@G7"]
    assert d.groups_of("EUROPOL") == ["@ALL", "@EUROPE", "@EU"]
    assert d.regions() == list(REGIONS)
    assert reason(DirectoryError, d.agency, "NCB-XX") == "directory.unknown-agency"


addresses = st.lists(st.sampled_from([*GROUP_ADDRESSES, *AGENCY_IDS, "NCB-XX", "LEA-NL"]),
                     min_size=1, max_size=6)


@given(addressing=addresses, sender=st.sampled_from(AGENCY_IDS),
       revoked=st.frozensets(st.sampled_from(AGENCY_IDS), max_size=4))
def test_expand_properties(net: FixedNet, addressing: list[str], sender: str,
                           revoked: frozenset[str]) -> None:
    d = net.directory
    for r in sorted(revoked):
        d = d.revoke(r, NOW)
    got = d.expand(addressing, sender)
    active = {a for a, rec in d.agencies.items() if rec.active}
    named = {a for a in addressing if not a.startswith("@")}
    assert list(got) == sorted(set(got))
    assert set(got) <= active | named
    assert named <= set(got)
    if not named:
        assert sender not in got
    assert not (set(got) & (revoked - named))
    if "@ALL" in addressing:
        assert active - {sender} <= set(got)


# -- validation of a directory's content -----------------------------------------------------

def test_directory_validation(net: FixedNet) -> None:
    d = net.directory
    assert reason(DirectoryError, replace, d, serial=0) == "directory.serial"
    for bad in ({"ALL": ("NCB-FR",)}, {"EUROPE": ("NCB-FR",)}, {"bad name": ("NCB-FR",)},
                {"X": ("NCB-XX",)}, {"EU\n": ("NCB-FR",)}):
        assert reason(DirectoryError, replace, d, groups=bad) == "directory.group"
    fr = d.agency("NCB-FR")
    assert reason(DirectoryError, replace, d, agencies={"NCB-DE": fr}) == "directory.agency-id"
    secret_agent = replace(fr, clearance=Label("COSMIC"))
    assert reason(DirectoryError, replace, d, agencies={"NCB-FR": secret_agent}) \
        == "directory.clearance"
    nato = replace(fr, clearance=Label("SECRET", frozenset({"NATO"})))
    assert reason(DirectoryError, replace, d, agencies={"NCB-FR": nato}) \
        == "directory.clearance"


@pytest.mark.parametrize(("field", "value", "why"), [
    ("id", "ncb-fr", "directory.agency-id"), ("id", "NCB-FR\n", "directory.agency-id"),
    ("id", "N" * 33, "directory.agency-id"), ("id", "NCB--FR", "directory.agency-id"),
    ("kind", "spy", "directory.kind"), ("roles", frozenset({"king"}), "directory.role"),
    ("status", "suspended", "directory.status"), ("sign_key", b"\x00" * 31, "directory.key"),
    ("enc_key", b"", "directory.key"),
])
def test_agency_record_validation(field: str, value: object, why: str) -> None:
    good = record("NCB-FR", "ncb", "EUROPE", "SECRET", (), (), keys=agency_keys("NCB-FR"))
    assert reason(DirectoryError, replace, good, **{field: value}) == why


def test_record_round_trip() -> None:
    rec = record("NCB-FR", "ncb", "EUROPE", "SECRET", ("EU", "CT"), ("notice-requester",),
                 keys=agency_keys("NCB-FR"))
    assert AgencyRecord.from_wire(rec.to_wire()) == rec


# -- hostile and malformed documents ---------------------------------------------------------

@pytest.mark.parametrize(("changes", "why"), [
    ({"v": 2}, "wire.version"),
    ({"v": 4}, "wire.version"),
    ({"extra": 1}, "wire.schema"),
    ({"serial": None}, "wire.schema"),
    ({"serial": 0}, "wire.schema"),
    ({"serial": "1"}, "wire.schema"),
    ({"serial": True}, "wire.schema"),
    ({"agencies": {}}, "wire.schema"),
    ({"groups": []}, "wire.schema"),
    ({"groups": {"EU": "NCB-FR"}}, "wire.schema"),
    ({"groups": {"EU": ["NCB-FR", "NCB-FR"]}}, "wire.schema"),
    ({"levels": ["A", "A"]}, "wire.schema"),
    ({"levels": ["low"]}, "directory.invalid"),
    ({"levels": []}, "directory.invalid"),
    ({"authority_key": b"\x00" * 31}, "wire.schema"),
    ({"max_skew_ms": 86_400_001}, "wire.schema"),
    ({"network": ""}, "wire.schema"),
    ({"groups": {"ALL": ["NCB-FR"]}}, "directory.group"),
    ({"router_keys": [b"\x00" * 31]}, "wire.schema"),
    ({"router_keys": None}, "wire.schema"),
])
def test_malformed_documents(net: FixedNet, changes: dict[str, object], why: str) -> None:
    with pytest.raises(I24Error) as info:
        load(edit_doc(net, **changes), net.anchor)
    assert info.value.reason == why


def test_duplicate_agency_and_extra_agency_field(net: FixedNet) -> None:
    doc = msgpack.unpackb(net.directory.encode(), raw=False)
    assert reason(WireFormatError, load,
                  edit_doc(net, agencies=doc["agencies"] + doc["agencies"][:1]),
                  net.anchor) == "wire.schema"
    doc["agencies"][0]["smuggled"] = "x"
    assert reason(WireFormatError, load, edit_doc(net, agencies=doc["agencies"]),
                  net.anchor) == "wire.schema"


@pytest.mark.parametrize("outer", [[], ["doc", b"sig"], [b"doc"], [b"doc", b"sig", b"x"],
                                   {"doc": b""}, b"doc", [b"doc", None]])
def test_malformed_signed_wrapper(net: FixedNet, outer: object) -> None:
    assert reason(WireFormatError, load, pack(outer), net.anchor) == "wire.schema"


def test_signature_of_wrong_size(net: FixedNet) -> None:
    assert reason(WireFormatError, load, pack([net.directory.encode(), b"\x00" * 63]),
                  net.anchor) == "wire.schema"


def test_every_truncation_of_a_signed_directory(net: FixedNet) -> None:
    signed = net.signed
    for n in range(len(signed)):
        assert reason(WireFormatError, load, signed[:n], net.anchor) == "wire.truncated"
    doc = net.directory.encode()
    for n in range(len(doc)):
        assert reason(WireFormatError, Directory.decode_doc, doc[:n]) == "wire.truncated"


@pytest.mark.timeout(20)
def test_hostile_inputs_to_load_and_decode_doc(net: FixedNet) -> None:
    cases = [
        b"\x91" * 10_000 + b"\xc0",
        b"\xc6\xff\xff\xff\xff" + b"abc",
        b"\xdb\xff\xff\xff\xff" + b"abc",
        b"\xdd\xff\xff\xff\xff" + b"abc",
        b"\xdf\xff\xff\xff\xff" + b"abc",
        b"\xc7\x00\x05",
        b"\x81\xc4\x01v\x01",
        net.signed + b"\x00",
        b"\x00" * (MAX_DIRECTORY + 257),
    ]
    for data in cases:
        for fn in (lambda b: load(b, net.anchor), Directory.decode_doc):
            with pytest.raises(WireFormatError):
                fn(data)


@given(st.binary(max_size=400))
def test_random_bytes(net: FixedNet, data: bytes) -> None:
    for fn in (lambda b: load(b, net.anchor), Directory.decode_doc):
        try:
            fn(data)
        except I24Error:
            pass


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
)
DOC_KEYS = list(msgpack.unpackb(build_net().directory.encode(), raw=False))
AGENCY_KEYS = list(record("NCB-FR", "ncb", "EUROPE", "SECRET", (), (),
                          keys=agency_keys("NCB-FR")).to_wire())


@given(data=st.data())
def test_mutated_documents_decode_or_fail_cleanly(net: FixedNet, data: st.DataObject) -> None:
    """A valid document with one field replaced by anything: a directory or an I24Error."""
    doc = msgpack.unpackb(net.directory.encode(), raw=False)
    if data.draw(st.booleans()):
        doc[data.draw(st.sampled_from(DOC_KEYS))] = data.draw(msgpack_values)
    else:
        i = data.draw(st.integers(0, len(doc["agencies"]) - 1))
        doc["agencies"][i][data.draw(st.sampled_from(AGENCY_KEYS))] = data.draw(msgpack_values)
    raw = pack(doc)
    try:
        Directory.decode_doc(raw)
    except I24Error:
        pass
    try:
        load(resign(net, raw), net.anchor)
    except I24Error:
        pass


def test_decode_doc_with_content_errors_is_a_directory_error(net: FixedNet) -> None:
    doc = msgpack.unpackb(net.directory.encode(), raw=False)
    doc["caveats"] = ["EU"]  # an agency holds CT: its clearance no longer fits the scale
    with pytest.raises(DirectoryError):
        Directory.decode_doc(pack(doc))


def test_fixture_keys_differ_per_agency() -> None:
    assert len({secret(f"sign-{a}") for a in AGENCY_IDS}) == len(AGENCY_IDS)
