"""Organisations, agreements and joint operations: the directory's terms, their encoding,
the spec that writes them, and the agreement the router stamps."""

from __future__ import annotations

import tomllib
from dataclasses import replace

import pytest
from netfixtures import (
    AUTHORITY_SEED,
    DAY,
    HOUR,
    ROUTER,
    T0,
    Net,
    build,
    demo_directory,
    keys_for,
    record,
    submit_topic,
    with_agency,
)

from i24net.config.presets import AGREEMENT_ID, preset_toml, synthetic_toml
from i24net.core import directory as dirmod
from i24net.core import frames as fr
from i24net.core.cooperation import Agreement, Flow, Operation, covering
from i24net.core.directory import Directory
from i24net.core.errors import ConfigError, DirectoryError
from i24net.core.labels import HandlingCodes, Label
from i24net.core.netspec import build_directory, parse_spec, parse_until
from i24net.core.router import MemoryRouterStore, RouterMachine

D = demo_directory()
ANCHOR = D.authority_key


def trident(members: tuple[str, ...] = ("EUROPOL", "NCB-DE", "NCB-FR"),
            until: int = T0 + DAY) -> Operation:
    return Operation("TRIDENT", "Joint operation against a trafficking network", "NCB-FR",
                     members, until, "CONFIDENTIAL", created_ms=T0)


# -- the directory's terms --------------------------------------------------------------------

def test_the_demo_preset_puts_europol_in_its_own_organisation_under_an_agreement() -> None:
    assert D.agencies["EUROPOL"].org == "EUROPOL"
    assert {a.org for a in D.agencies.values() if a.id != "EUROPOL"} == {"INTERPOL"}
    agr = D.agreements[AGREEMENT_ID]
    assert agr.parties == ("INTERPOL", "EUROPOL")
    to_europol, from_europol = agr.flow("INTERPOL", "EUROPOL"), agr.flow("EUROPOL", "INTERPOL")
    assert to_europol is not None and from_europol is not None
    assert "notice" in to_europol.kinds and "notice-request" not in from_europol.kinds
    assert to_europol.handling == {"H0", "H1", "H2"}
    assert D.agreements_between("EUROPOL", "INTERPOL") == [agr]


def test_agreements_and_operations_survive_signing_and_loading() -> None:
    d = D.create_operation(trident(), T0)
    signed = d.sign(AUTHORITY_SEED)
    back = dirmod.load(signed, ANCHOR)
    assert back.agencies == d.agencies
    assert back.operations["TRIDENT"] == trident()
    assert back.agreements == D.agreements
    assert back.digest == d.digest


def test_an_operation_grants_its_caveat_and_group_to_its_members_only() -> None:
    d = D.create_operation(trident(), T0)
    assert "TRIDENT" in d.scale.caveats
    holders = {a for a, rec in d.agencies.items() if "TRIDENT" in rec.clearance.caveats}
    assert holders == {"EUROPOL", "NCB-DE", "NCB-FR"}
    assert d.expand(["@TRIDENT"], "NCB-FR") == ("EUROPOL", "NCB-DE")
    assert "@TRIDENT" in d.groups_of("NCB-DE") and "@TRIDENT" not in d.groups_of("NCB-US")
    assert "TRIDENT" in d.group_names()
    assert d.serial == D.serial + 1


def test_removing_a_member_takes_its_caveat_and_its_place_in_the_group() -> None:
    d = D.create_operation(trident(), T0).change_operation("TRIDENT", T0 + 1,
                                                            remove=["NCB-DE"], add=["NCB-US"])
    op = d.operations["TRIDENT"]
    assert op.members == ("EUROPOL", "NCB-FR", "NCB-US") and op.removed == ("NCB-DE",)
    assert "TRIDENT" not in d.agencies["NCB-DE"].clearance.caveats
    assert "TRIDENT" in d.agencies["NCB-US"].clearance.caveats
    assert d.expand(["@TRIDENT"], "NCB-FR") == ("EUROPOL", "NCB-US")
    # taken back on: no longer listed as removed
    again = d.change_operation("TRIDENT", T0 + 2, add=["NCB-DE"])
    assert again.operations["TRIDENT"].removed == ()


def test_closing_takes_the_caveat_from_everyone_and_empties_the_group() -> None:
    d = D.create_operation(trident(), T0).close_operation("TRIDENT", T0 + 5)
    op = d.operations["TRIDENT"]
    assert (op.status, op.closed_ms, op.state(T0)) == ("closed", T0 + 5, "closed")
    assert not any("TRIDENT" in rec.clearance.caveats for rec in d.agencies.values())
    assert "TRIDENT" in d.scale.caveats  # labels that name it stay readable as labels
    assert d.expand(["@TRIDENT"], "NCB-FR") == ()
    back = dirmod.load(d.sign(AUTHORITY_SEED), ANCHOR)
    assert (back.operations, back.agencies, back.digest) == (d.operations, d.agencies, d.digest)


@pytest.mark.parametrize(("change", "reason"), [
    (lambda d: d.create_operation(trident(), T0), "directory.operation"),  # twice
    (lambda d: d.create_operation(replace(trident(), name="EU"), T0), "directory.operation"),
    (lambda d: d.change_operation("TRIDENT", T0, remove=["NCB-FR"]), "directory.operation"),
    (lambda d: d.change_operation("TRIDENT", T0, remove=["NCB-US"]), "directory.operation"),
    (lambda d: d.change_operation("NOPE", T0, add=["NCB-US"]), "directory.operation"),
    (lambda d: d.change_operation("TRIDENT", T0, add=["NCB-XX"]),
     "directory.unknown-agency"),
    (lambda d: d.close_operation("TRIDENT", T0).close_operation("TRIDENT", T0),
     "directory.operation"),
    (lambda d: d.close_operation("TRIDENT", T0).change_operation("TRIDENT", T0, add=["NCB-US"]),
     "directory.operation"),
    (lambda d: d.end_agreement("NO-SUCH", T0, T0), "directory.agreement"),
    (lambda d: d.revoke("NCB-US", T0).change_operation("TRIDENT", T0, add=["NCB-US"]),
     "directory.revoked"),
    (lambda d: d.change_operation("TRIDENT", T0, lead="NCB-US"), "directory.operation"),
    (lambda d: d.change_operation("TRIDENT", T0, level="ULTRA"), "directory.operation"),
    (lambda d: d.change_operation("TRIDENT", T0, until_ms=T0 - 1), "directory.operation"),
    (lambda d: d.revoke("NCB-DE", T0).change_operation("TRIDENT", T0, lead="NCB-DE"),
     "directory.revoked"),
])
def test_operation_and_agreement_changes_refuse_what_makes_no_sense(change, reason) -> None:
    d = D.create_operation(trident(), T0)
    with pytest.raises(DirectoryError) as info:
        change(d)
    assert info.value.reason == reason


@pytest.mark.parametrize("bad", [
    lambda op: replace(op, name="lower"),
    lambda op: replace(op, removed=("NCB-DE",)),  # a member and removed
    lambda op: replace(op, closed_ms=5),  # closed at some time but still active
    lambda op: replace(op, status="closed"),  # closed, no closing time
    lambda op: replace(op, lead="NCB-US"),  # a lead who is not a member
])
def test_malformed_operations_are_refused(bad) -> None:
    with pytest.raises(DirectoryError) as info:
        bad(trident())
    assert info.value.reason == "directory.operation"


def test_the_lead_can_be_handed_on_and_the_end_moved() -> None:
    d = D.create_operation(trident(), T0).change_operation(
        "TRIDENT", T0 + 1, add=["NCB-US"], lead="NCB-US", until_ms=T0 + 2 * DAY,
        level="RESTRICTED")
    op = d.operations["TRIDENT"]
    assert (op.lead, op.until_ms, op.level) == ("NCB-US", T0 + 2 * DAY, "RESTRICTED")
    assert d.change_operation("TRIDENT", T0 + 2, remove=["NCB-FR"]).operations[
        "TRIDENT"].members == ("EUROPOL", "NCB-DE", "NCB-US")


def test_a_directory_whose_caveat_grants_disagree_with_its_operations_is_refused() -> None:
    d = D.create_operation(trident(), T0)
    us = d.agencies["NCB-US"]
    with pytest.raises(DirectoryError) as info:
        d.next_version(T0 + 1, agencies={**d.agencies, "NCB-US": replace(
            us, clearance=Label(us.clearance.level, us.clearance.caveats | {"TRIDENT"}))})
    assert info.value.reason == "directory.operation"
    assert "NCB-US" in info.value.message


@pytest.mark.parametrize("bad", [
    lambda a: replace(a, parties=("INTERPOL", "INTERPOL")),
    lambda a: replace(a, parties=("INTERPOL", "NOBODY")),
    lambda a: replace(a, flows=a.flows + a.flows[:1]),
    lambda a: replace(a, flows=()),
    lambda a: replace(a, id="lower-case"),
    lambda a: replace(a, flows=(replace(a.flows[0], max_level="ULTRA"),)),
    lambda a: replace(a, flows=(replace(a.flows[0], kinds=frozenset({"gossip"})),)),
    lambda a: replace(a, flows=(replace(a.flows[0], caveats=frozenset({"NATO"})),)),
])
def test_malformed_agreements_are_refused(bad) -> None:
    with pytest.raises(DirectoryError):
        D.next_version(T0, agreements={AGREEMENT_ID: bad(D.agreements[AGREEMENT_ID])})


# -- covering -----------------------------------------------------------------------------

def test_covering_prefers_a_running_agreement_and_names_the_first_term_missed() -> None:
    scale = D.scale
    lab, none = Label("RESTRICTED"), HandlingCodes()
    old = Agreement("OLD", "old", ("INTERPOL", "EUROPOL"), T0 - 1,
                    (Flow("INTERPOL", "EUROPOL", frozenset({"message"}), "SECRET"),))
    narrow = Agreement("NARROW", "narrow", ("INTERPOL", "EUROPOL"), T0 + DAY,
                       (Flow("INTERPOL", "EUROPOL", frozenset({"alert"}), "SECRET"),))
    wide = Agreement("WIDE", "wide", ("INTERPOL", "EUROPOL"), T0 + DAY,
                     (Flow("INTERPOL", "EUROPOL", frozenset({"message"}), "SECRET"),))
    args = (scale, "INTERPOL", "EUROPOL", "message", lab, none, T0)
    assert covering([old], *args)[0] == "agreement.expired"
    assert covering([old, narrow], *args)[0] == "agreement.kind"
    assert covering([old, narrow, wide], *args) == ("ok", "WIDE")
    assert covering([], *args)[0] == "agreement.none"
    # what withdraws data sent under an ended agreement still passes under it
    cancel = Agreement("OLD", "old", ("INTERPOL", "EUROPOL"), T0 - 1, (Flow(
        "INTERPOL", "EUROPOL", frozenset({"notice-cancel", "message"}), "SECRET"),))
    assert covering([cancel], scale, "INTERPOL", "EUROPOL", "notice-cancel", lab, none,
                    T0, withdrawing=True) == ("ok", "OLD")
    assert covering([cancel], scale, "INTERPOL", "EUROPOL", "notice-cancel", lab, none,
                    T0)[0] == "agreement.expired"  # not known to withdraw what it was sent
    assert covering([cancel], *args)[0] == "agreement.expired"
    # a flow the other way does not help
    assert covering([wide], scale, "EUROPOL", "INTERPOL", "message", lab, none,
                    T0)[0] == "agreement.none"


# -- a withdrawal outlives the agreement, for those it was sent to ---------------------------

def test_a_deletion_order_after_the_agreement_ended_reaches_only_those_sent_the_message(
        ) -> None:
    from i24net.core.envelope import Envelope
    from i24net.core.policy import Decision, MemoryHistory, decide

    src = Envelope.parse(build("NCB-FR", ["EUROPOL", "NCB-DE"]))
    other = Envelope.parse(build("NCB-FR", ["NCB-DE"]))
    history = MemoryHistory()
    history.record(src)
    history.record(other)
    ended = D.end_agreement(AGREEMENT_ID, T0 - 1, D.issued_ms + 1)

    def order(ref: bytes) -> Decision:  # the GS may order any deletion
        env = Envelope.parse(build("GS-LYON", ["EUROPOL"], kind="deletion-order", ref=ref,
                                   d=ended))
        return decide(env, ended, T0, prior=history.prior)

    ok = order(src.header.id)
    assert ok.accepted, ok
    assert ok.agreements == {"EUROPOL": AGREEMENT_ID}
    assert order(other.header.id).reason == "agreement.expired"  # Europol never got it
    fresh = Envelope.parse(build("NCB-FR", ["EUROPOL"], d=ended))
    assert decide(fresh, ended, T0).reason == "agreement.expired"


# -- the router stamps the agreement it applied ------------------------------------------------

def _stamps(raw: bytes, sender: str) -> dict[str, fr.Stamp]:
    router = RouterMachine(D, ROUTER, MemoryRouterStore())
    events = router.handle(submit_topic(sender), raw, T0)
    assert [e.kind for e in events] == ["accept"], events
    out = {}
    for topic, frame, _ in router.pop(T0):
        agency = topic.rpartition("/")[2]
        parsed = fr.parse_frame(frame)
        if parsed.magic == fr.DELIVERY:
            out[agency] = fr.verify_delivery(parsed, D, agency)
    return out


def test_a_stamp_names_the_agreement_under_which_the_message_crossed() -> None:
    stamps = _stamps(build("NCB-FR", ["EUROPOL", "NCB-DE"]), "NCB-FR")
    assert stamps["EUROPOL"].agreement == AGREEMENT_ID
    assert stamps["NCB-DE"].agreement == ""  # same organisation: no agreement needed
    assert _stamps(build("EUROPOL", ["NCB-FR"]), "EUROPOL")["NCB-FR"].agreement == AGREEMENT_ID


def test_the_recipient_keeps_the_agreement_its_message_crossed_under() -> None:
    net = Net()
    msg = net.send("NCB-FR", ["EUROPOL", "NCB-DE"])
    net.settle()
    assert net.store("EUROPOL").inbox[msg].agreement == AGREEMENT_ID
    assert net.store("NCB-DE").inbox[msg].agreement == ""


def _police(*agreements: Agreement) -> Directory:
    """The demo network with FR-OFAST, a French police unit: an organisation of its own."""
    d = with_agency(D, record("FR-OFAST", kind="lea", clearance="CONFIDENTIAL",
                              org="FR-POLICE"))
    return d.next_version(d.issued_ms + 1, agreements={**d.agreements,
                                                       **{a.id: a for a in agreements}})


def test_an_ncb_reaches_a_national_lea_of_another_organisation_only_under_an_agreement(
        ) -> None:
    agreement = Agreement("INTERPOL-FR-POLICE", "NCB Paris and the French police",
                          ("INTERPOL", "FR-POLICE"), T0 + DAY,
                          (Flow("INTERPOL", "FR-POLICE", frozenset({"message"}), "RESTRICTED"),))
    without = Net(directory=_police())
    refused = without.send("NCB-FR", ["FR-OFAST"])
    without.settle()
    entry = without.store("NCB-FR").outbox_get(refused)
    assert entry is not None and (entry.state, entry.reason) == ("refused", "agreement.none")
    assert refused not in without.inbox("FR-OFAST")

    within = Net(directory=_police(agreement))
    sent = within.send("NCB-FR", ["FR-OFAST"])
    within.settle()
    assert within.store("FR-OFAST").inbox[sent].agreement == "INTERPOL-FR-POLICE"


def test_a_stamp_with_an_agreement_survives_its_encoding() -> None:
    st = fr.Stamp(b"\x01" * 16, b"\x02" * 32, "NCB-FR", ("EUROPOL",), {"EUROPOL": 3}, T0, 1,
                  b"\x03" * 8, agreement=AGREEMENT_ID)
    frame = fr.make_delivery(st, b"envelope", keys_for("i24-router"))
    assert fr.Stamp.from_doc(fr.parse_frame(frame).doc) == st


# -- the spec -------------------------------------------------------------------------------

SPEC_HEAD = """
[network]
name = "t"
levels = ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET"]
caveats = ["EU"]

[[agency]]
id = "GS-LYON"
kind = "gs"
region = "EUROPE"
clearance = "SECRET"
roles = ["directory-authority", "notice-authority"]

[[agency]]
id = "NCB-FR"
kind = "ncb"
region = "EUROPE"
clearance = "CONFIDENTIAL"

[[agency]]
id = "FR-OFAST"
kind = "lea"
org = "FR-POLICE"
region = "EUROPE"
clearance = "CONFIDENTIAL"

[[agency]]
id = "EUROPOL"
kind = "europol"
region = "EUROPE"
clearance = "SECRET"
"""

AGREEMENT = """
[[agreement]]
id = "FR-POLICE-INTERPOL"
parties = ["INTERPOL", "FR-POLICE"]
until = 2030-06-30

[[agreement.flow]]
from = "INTERPOL"
to = "FR-POLICE"
kinds = ["message", "alert"]
max_level = "RESTRICTED"
handling = ["H0"]
"""


def test_the_spec_reads_organisations_and_agreements() -> None:
    spec = parse_spec(tomllib.loads(SPEC_HEAD + AGREEMENT))
    orgs = {a.id: a.org for a in spec.agencies}
    assert orgs == {"GS-LYON": "INTERPOL", "NCB-FR": "INTERPOL", "FR-OFAST": "FR-POLICE",
                    "EUROPOL": "EUROPOL"}  # europol's by its kind, the rest by default
    agr = spec.agreements["FR-POLICE-INTERPOL"]
    assert agr.title == "FR-POLICE-INTERPOL"
    assert agr.until_ms == parse_until("2030-07-01T00:00:00Z", "x")
    (flow,) = agr.flows
    assert (flow.source, flow.target, flow.max_level, flow.handling) == (
        "INTERPOL", "FR-POLICE", "RESTRICTED", {"H0"})


@pytest.mark.parametrize(("change", "where"), [
    (('parties = ["INTERPOL", "FR-POLICE"]', 'parties = ["INTERPOL", "NOBODY"]'),
     "agreement[0].parties"),
    (('kinds = ["message", "alert"]', 'kinds = ["gossip"]'), "agreement[0].flow[0].kinds"),
    (('max_level = "RESTRICTED"', 'max_level = "ULTRA"'), "agreement[0].flow[0].max_level"),
    (('handling = ["H0"]', 'handling = ["H9"]'), "agreement[0].flow[0].handling"),
    (('to = "FR-POLICE"', 'to = "EUROPOL"'), "agreement[0].flow[0]"),
    (("until = 2030-06-30", 'until = "next year"'), "agreement[0].until"),
    (('id = "FR-POLICE-INTERPOL"', 'id = "fr"'), "agreement[0].id"),
])
def test_spec_errors_name_the_agreement_field(change: tuple[str, str], where: str) -> None:
    text = SPEC_HEAD + AGREEMENT.replace(*change)
    with pytest.raises(ConfigError) as info:
        parse_spec(tomllib.loads(text))
    assert info.value.message.startswith(where), info.value.message


def test_parse_until_takes_dates_and_times() -> None:
    assert parse_until("2031-12-31", "x") == parse_until("2032-01-01T00:00:00Z", "x")
    assert parse_until("2031-12-31T12:00:00+01:00", "x") == parse_until(
        "2031-12-31T11:00:00Z", "x")
    with pytest.raises(ConfigError):
        parse_until(12, "x")


def test_a_reissued_directory_keeps_the_operations_of_the_one_before() -> None:
    spec = parse_spec(tomllib.loads(preset_toml("demo")))
    pubs = {a.id: keys_for(a.id).public() for a in spec.agencies}
    held = D.create_operation(trident(), T0).change_operation("TRIDENT", T0 + 1,
                                                               remove=["NCB-DE"])
    new = build_directory(spec, pubs, authority_key=ANCHOR, serial=held.serial + 1,
                          issued_ms=T0 + HOUR, previous=held, router_keys=D.router_keys)
    assert new.operations == held.operations
    assert {a for a, r in new.agencies.items() if "TRIDENT" in r.clearance.caveats} == {
        "EUROPOL", "NCB-FR"}


@pytest.mark.parametrize("text", [preset_toml("interpol"), synthetic_toml(50)])
def test_every_preset_carries_the_interpol_europol_agreement(text: str) -> None:
    spec = parse_spec(tomllib.loads(text))
    assert AGREEMENT_ID in spec.agreements
    assert {a.org for a in spec.agencies if a.kind == "europol"} == {"EUROPOL"}
