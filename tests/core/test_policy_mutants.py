"""Routing-policy details that ``test_policy``'s one-refusal-one-acceptance table leaves open.

Each test pins down behaviour that ``make mutants`` showed could change unnoticed: the
agencies named in each refusal (they go to the audit chain and the counters), limits
accepted exactly at the bound, the queue priority and message id of an acceptance, rules
that turn on a role rather than a kind, and ``Release.load``'s own refusals of a malformed
or oversized release (``decide`` folds them all into ``handling.release-invalid``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from netfixtures import T0, build, demo_directory, keys_for, parsed, record, with_agency
from test_policy import (
    H2,
    NOTICE_TTL_MS,
    Scenario,
    history,
    kind_europol_diffusion,
    kind_gs_requests_notice,
    msg_id,
    recipient_revoked,
    recipient_unknown,
    release_not_covering,
    replay_id,
    tlp_red_forward,
)

from i24net.core import keys as k
from i24net.core.errors import CryptoError, DirectoryError, WireFormatError
from i24net.core.labels import Precedence
from i24net.core.policy import (
    MESSAGE_TTL_MS,
    REASONS,
    Decision,
    Release,
    complete_addressing,
    decide,
    reason_table,
)
from i24net.core.wire import pack

D = demo_directory()


# -- who is at fault ------------------------------------------------------------------------

@pytest.mark.parametrize(("scenario", "code", "agencies"), [
    (replay_id, "replay.id", ("NCB-FR",)),
    (kind_gs_requests_notice, "kind.not-allowed", ("GS-LYON",)),
    (kind_europol_diffusion, "kind.not-allowed", ("EUROPOL",)),
    (recipient_unknown, "recipient.unknown", ("NCB-XX",)),
    (recipient_revoked, "recipient.revoked", ("NCB-DE",)),
    (tlp_red_forward, "tlp.red-forward", ("NCB-US",)),
    (release_not_covering, "handling.release-invalid", ("NCB-US",)),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_each_refusal_names_the_agencies_at_fault(scenario: Callable[[], Scenario], code: str,
                                                  agencies: tuple[str, ...]) -> None:
    d = scenario().decide()
    assert (d.reason, d.agencies) == (code, agencies)


# -- acceptances ----------------------------------------------------------------------------

@pytest.mark.parametrize("precedence", list(Precedence), ids=lambda p: p.name)
def test_acceptance_carries_the_precedence_and_the_message_id(precedence: Precedence) -> None:
    raw = build("NCB-FR", ["NCB-DE"], precedence=precedence)
    d = Scenario(raw).decide()
    assert d.accepted
    assert d.priority == int(precedence)
    assert d.msg_id == parsed(raw).header.id_hex


def test_the_reason_table_lists_every_code_in_order() -> None:
    table = reason_table()
    assert table == sorted(table) and dict(table) == REASONS


def test_refusal_without_a_header_has_no_message_id() -> None:
    d = Decision.refuse("rate.limited", "slow down")
    assert (d.accepted, d.msg_id, d.agencies) == (False, "", ())


def test_a_notice_update_lives_as_long_as_a_notice() -> None:
    raw = build("GS-LYON", ["@NCB"], kind="notice-update", ttl=NOTICE_TTL_MS,
                lab="OFFICIAL-USE")
    assert NOTICE_TTL_MS > MESSAGE_TTL_MS
    assert Scenario(raw).decide().accepted
    raw = build("GS-LYON", ["@NCB"], kind="notice-update", ttl=NOTICE_TTL_MS + 1,
                lab="OFFICIAL-USE")
    assert Scenario(raw).decide().reason == "time.ttl"


def test_a_label_with_every_caveat_the_network_defines_is_known() -> None:
    every = "//" + "/".join(sorted(D.scale.caveats))
    d2 = with_agency(D, record("NCB-XX", clearance="SECRET" + every))
    raw = build("GS-LYON", ["NCB-XX"], d=d2, lab="RESTRICTED" + every)
    assert Scenario(raw, directory=d2).decide().accepted


def test_the_notice_requester_role_lets_another_kind_request_notices() -> None:
    requester = record("LEA-X", kind="lea", roles=("notice-requester",))
    plain = record("LEA-Y", kind="lea")
    d2 = with_agency(with_agency(D, requester), plain)
    ok = build("LEA-X", ["GS-LYON"], d=d2, kind="notice-request")
    assert Scenario(ok, directory=d2).decide().accepted
    refused = build("LEA-Y", ["GS-LYON"], d=d2, kind="notice-request")
    d = Scenario(refused, directory=d2).decide()
    assert (d.reason, d.agencies) == ("kind.not-allowed", ("LEA-Y",))


def test_a_signature_of_the_wrong_size_is_refused_not_raised() -> None:
    # Envelope.parse refuses such bytes; decide still refuses a hand-built Envelope cleanly.
    env = parsed(build("NCB-FR", ["NCB-DE"]))
    bad = dataclasses.replace(env, signature=env.signature[:-1])
    d = decide(bad, D, T0)
    assert (d.reason, d.agencies) == ("sig.invalid", ("NCB-FR",))


# -- complete_addressing --------------------------------------------------------------------

def test_the_authority_own_diffusion_gains_no_copy_to_itself() -> None:
    assert complete_addressing("diffusion", ["NCB-DE"], "GS-LYON", D) == ["NCB-DE"]


def test_without_a_notice_authority_a_diffusion_is_left_as_addressed() -> None:
    gs = D.agencies["GS-LYON"]
    no_gs = D.next_version(T0, agencies={**D.agencies,
                                         "GS-LYON": dataclasses.replace(gs, roles=frozenset())})
    assert no_gs.authorities("notice-authority") == []
    assert complete_addressing("diffusion", ["NCB-DE"], "NCB-FR", no_gs) == ["NCB-DE"]


# -- Release.load ---------------------------------------------------------------------------

SOURCE = "NCB-DE"
MSG = bytes(range(16))


def signed_doc(doc: object, signer: str = SOURCE) -> bytes:
    body = pack(doc)
    return pack([body, keys_for(signer).sign(k.DOMAIN_RELEASE, body)])


def release_doc(**changes: object) -> dict[str, object]:
    return {"id": MSG, "source": SOURCE, "allowed": ["NCB-US"], "issued": T0, **changes}


def test_a_well_formed_release_loads() -> None:
    rel = Release.load(signed_doc(release_doc()), D)
    assert rel == Release(MSG, SOURCE, ("NCB-US",), T0)


@pytest.mark.parametrize("outer", [
    [b"doc"],
    [b"doc", b"sig", b"more"],
    "not a list",
    [7, b"sig"],
], ids=["one-item", "three-items", "text", "int-document"])
def test_a_release_that_is_not_document_and_signature_is_malformed(outer: object) -> None:
    with pytest.raises(WireFormatError) as info:
        Release.load(pack(outer), D)
    assert info.value.reason == "wire.schema"


def test_a_release_whose_signature_is_not_binary_is_malformed() -> None:
    doc = pack(release_doc())
    with pytest.raises(WireFormatError) as info:
        Release.load(pack([doc, "s" * k.SIG_SIZE]), D)
    assert info.value.reason == "wire.schema"


def test_a_release_of_more_than_four_items_fails_in_the_decoder() -> None:
    with pytest.raises(WireFormatError) as info:
        Release.load(pack([b"a", b"b", b"c", b"d", b"e"]), D)
    assert info.value.reason == "wire.malformed"


def _sized_release(size: int) -> bytes:
    """A validly signed release of exactly ``size`` bytes (32-character allowed names)."""
    allowed = [f"A{i:031d}" for i in range(200)]
    while len(signed_doc(release_doc(allowed=allowed))) > size - 40:
        allowed.pop()
    for n in range(1, 33):  # two more names, as long as it takes to land on ``size``
        for m in range(1, 33):
            raw = signed_doc(release_doc(allowed=[*allowed, "B" * n, "C" * m]))
            if len(raw) == size:
                return raw
    raise AssertionError(f"no release of {size} bytes")


def test_a_release_at_the_size_limit_loads_and_one_byte_more_does_not() -> None:
    assert len(Release.load(_sized_release(4096), D).allowed) > 100
    with pytest.raises(WireFormatError) as info:
        Release.load(_sized_release(4097), D)
    assert info.value.reason == "wire.oversized"


@pytest.mark.parametrize(("changes", "reason"), [
    ({"id": MSG[:15]}, "wire.schema"),
    ({"id": MSG + b"x"}, "wire.schema"),
    ({"source": "N" * 33}, "wire.schema"),
    ({"allowed": ["N" * 33]}, "wire.schema"),
    ({"allowed": [f"{i}" for i in range(257)]}, "wire.malformed"),  # over the decoder's 256
    ({"extra": 1}, "wire.schema"),
])
def test_release_fields_out_of_bounds_are_malformed(changes: dict[str, object],
                                                    reason: str) -> None:
    with pytest.raises(WireFormatError) as info:
        Release.load(signed_doc(release_doc(**changes)), D)
    assert info.value.reason == reason


def test_release_fields_at_their_bounds_load() -> None:
    d2 = with_agency(D, record("N" * 32))
    names = [f"{i:032d}" for i in range(100)]
    rel = Release.load(signed_doc(release_doc(source="N" * 32, allowed=names), "N" * 32), d2)
    assert (rel.source, rel.allowed) == ("N" * 32, tuple(names))


def test_a_release_by_a_revoked_source_says_so() -> None:
    with pytest.raises(CryptoError) as info:
        Release.load(signed_doc(release_doc()), D.revoke(SOURCE, T0))
    assert info.value.reason == "sender.revoked"
    assert SOURCE in info.value.message


def test_a_release_by_an_unknown_source_is_a_directory_error() -> None:
    with pytest.raises(DirectoryError):
        Release.load(signed_doc(release_doc(source="NCB-XX"), "NCB-XX"), D)


def test_a_forged_release_names_the_claimed_source() -> None:
    with pytest.raises(CryptoError) as info:
        Release.load(signed_doc(release_doc(), signer="NCB-FR"), D)
    assert (info.value.reason, info.value.agency) == ("sig.invalid", SOURCE)


@pytest.mark.parametrize("release", [
    pack([b"doc"]),
    pack([b"doc", b"sig", b"more"]),
    pack([pack(release_doc()), "s" * k.SIG_SIZE]),
    signed_doc(release_doc(source="N" * 33)),
], ids=["one-item", "three-items", "text-signature", "long-source"])
def test_decide_refuses_a_malformed_release_as_release_invalid(release: bytes) -> None:
    src = build("NCB-DE", ["@EU", "GS-LYON"], kind="diffusion", lab="CONFIDENTIAL",
                handling=H2)
    fwd = build("NCB-FR", ["NCB-US"], lab="CONFIDENTIAL", handling=H2, ref=msg_id(src),
                release=release)
    assert Scenario(fwd, history=history(src)).decide().reason == "handling.release-invalid"


# -- the clearance.recipient message stays bounded ------------------------------------------

def _uncleared(n: int) -> tuple[str, str]:
    """(message, reason) for NCB-FR sending RESTRICTED to ``n`` agencies cleared lower."""
    low = [f"LOW-{i:02d}" for i in range(n)]
    d2 = D
    for agency in low:
        d2 = with_agency(d2, record(agency, clearance="OFFICIAL-USE"))
    d = Scenario(build("NCB-FR", low, d=d2), directory=d2).decide()
    assert d.agencies == tuple(low)
    return d.message, d.reason


def test_the_uncleared_list_shows_at_most_ten_and_counts_the_rest() -> None:
    shown = ", ".join(f"LOW-{i:02d} (OFFICIAL-USE)" for i in range(10))
    assert _uncleared(10) == (f"not cleared for RESTRICTED: {shown}", "clearance.recipient")
    assert _uncleared(11) == (f"not cleared for RESTRICTED: {shown} and 1 more",
                              "clearance.recipient")
    assert _uncleared(13)[0].endswith(f"{shown} and 3 more")
