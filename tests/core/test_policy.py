"""The routing decision (docs/protocol.md 7.2, 7.4): one refusal and one acceptance per reason code,
then property tests over random directories, labels and addressings.

Each scenario is a pair built on the demo network: ``refused`` must produce exactly its
reason code, ``accepted`` is the same scenario made legal and must go through. The last test
checks that the table covers every code in ``REASONS``, so a new code without a test fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netfixtures import (
    DAY,
    HOUR,
    ROUTER,
    SECOND,
    T0,
    Net,
    build,
    demo_directory,
    flip_signature,
    header,
    keys_for,
    kid,
    parsed,
    raw_header,
    record,
    seal_header,
    submit_topic,
    with_agency,
)

from i24net.config.presets import AGREEMENT_ID
from i24net.core import frames as fr
from i24net.core.cooperation import Agreement, Flow, Operation
from i24net.core.directory import AgencyRecord, Directory
from i24net.core.envelope import Envelope
from i24net.core.errors import I24Error, WireFormatError
from i24net.core.frames import parse_frame, verify_delivery
from i24net.core.keys import AgencyKeys
from i24net.core.labels import TLP, ClassificationScale, Handling, HandlingCodes, Label
from i24net.core.policy import (
    MESSAGE_TTL_MS,
    NOTICE_TTL_MS,
    REASONS,
    Decision,
    MemoryHistory,
    PriorMessage,
    Release,
    complete_addressing,
    decide,
)
from i24net.core.router import MemoryRouterStore, RouterMachine

D = demo_directory()
SKEW = D.max_skew_ms
H2 = HandlingCodes(frozenset({Handling.H2}))


@dataclass
class Scenario:
    """Everything ``decide`` takes."""

    raw: bytes
    directory: Directory = D
    now: int = T0
    history: MemoryHistory | None = None
    topic_agency: str | None = None

    def decide(self) -> Decision:
        prior = self.history.prior if self.history else (lambda _id: None)
        return decide(parsed(self.raw), self.directory, self.now, prior=prior,
                      topic_agency=self.topic_agency)


def history(*sources: bytes) -> MemoryHistory:
    hist = MemoryHistory()
    for raw in sources:
        hist.record(parsed(raw))
    return hist


def msg_id(raw: bytes) -> bytes:
    return parsed(raw).header.id


# -- the scenarios, one builder pair per reason code -------------------------------------------

def ok_fr_to_de() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-DE"]))


def sig_invalid() -> Scenario:
    return Scenario(flip_signature(build("NCB-FR", ["NCB-DE"]), byte=17))


def sig_invalid_other_signer() -> Scenario:
    # NCB-DE signs a header that names NCB-FR and NCB-FR's key id
    return Scenario(seal_header(header("NCB-FR", ["NCB-US"]), signer=_as("NCB-DE", "NCB-FR")))


def _as(owner: str, claimed: str) -> AgencyKeys:
    kk = keys_for(owner)
    return AgencyKeys(claimed, kk.signing_seed, kk.encryption_secret)


ROTATED = D.rotate("NCB-FR", keys_for("NCB-FR", 1).public(), T0)


def sig_unknown_key() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-DE"]), directory=ROTATED)  # the old key


def sig_unknown_key_ok() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-DE"], d=ROTATED, signer=keys_for("NCB-FR", 1)),
                    directory=ROTATED)


NCB_XX = record("NCB-XX", region="EUROPE", clearance="CONFIDENTIAL")
WITH_XX = with_agency(D, NCB_XX)


def sender_unknown() -> Scenario:
    return Scenario(seal_header(raw_header("NCB-XX", ["NCB-DE"], ["NCB-DE"])))


def sender_unknown_ok() -> Scenario:
    return Scenario(seal_header(raw_header("NCB-XX", ["NCB-DE"], ["NCB-DE"], serial=2),
                                d=WITH_XX), directory=WITH_XX)


def sender_revoked() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-DE"]), directory=D.revoke("NCB-FR", T0))


def sender_topic() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-DE"]), topic_agency="NCB-DE")


def sender_topic_ok() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-DE"]), topic_agency="NCB-FR")


def time_expired() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-DE"], ttl=HOUR), now=T0 + HOUR + SKEW + 1)


def time_expired_ok() -> Scenario:  # the last moment the skew allowance covers
    return Scenario(build("NCB-FR", ["NCB-DE"], ttl=HOUR), now=T0 + HOUR + SKEW)


def time_future() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-DE"], now=T0 + SKEW + 1), now=T0)


def time_future_ok() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-DE"], now=T0 + SKEW), now=T0)


def time_ttl() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-DE"], ttl=MESSAGE_TTL_MS + 1))


def time_ttl_notice() -> Scenario:
    return Scenario(build("GS-LYON", ["@NCB"], kind="notice", ttl=NOTICE_TTL_MS + 1,
                          lab="OFFICIAL-USE"))


def time_ttl_ok() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-DE"], ttl=MESSAGE_TTL_MS))


def _twins() -> tuple[bytes, bytes]:
    """Two different envelopes that share one message id."""
    h = header("NCB-FR", ["NCB-DE"])
    return seal_header(h), seal_header(dataclasses.replace(h, nonce=bytes(24)))


def replay_id() -> Scenario:
    first, second = _twins()
    assert parsed(first).digest != parsed(second).digest
    return Scenario(second, history=history(first))


def replay_id_ok() -> Scenario:  # a retry of the same bytes is not a replay
    first, _ = _twins()
    return Scenario(first, history=history(first))


def label_unknown_caveat() -> Scenario:
    h = dataclasses.replace(header("NCB-FR", ["NCB-DE"]), label=Label("RESTRICTED",
                                                                        frozenset({"NOFORN"})))
    return Scenario(seal_header(h))


def label_unknown_level() -> Scenario:
    h = dataclasses.replace(header("NCB-FR", ["NCB-DE"]), label=Label("TOP-SECRET"))
    return Scenario(seal_header(h))


def label_ok() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-DE"], lab="RESTRICTED//EU"))


def kind_ncb_notice() -> Scenario:
    return Scenario(build("NCB-FR", ["@NCB"], kind="notice", ttl=DAY))


def kind_europol_diffusion() -> Scenario:
    return Scenario(build("EUROPOL", ["NCB-DE", "GS-LYON"], kind="diffusion"))


def kind_gs_requests_notice() -> Scenario:
    return Scenario(build("GS-LYON", ["GS-LYON"], kind="notice-request"))


def kind_gs_notice_ok() -> Scenario:
    return Scenario(build("GS-LYON", ["@NCB"], kind="notice", ttl=NOTICE_TTL_MS,
                          lab="OFFICIAL-USE"))


def kind_ncb_diffusion_ok() -> Scenario:
    return Scenario(build("NCB-DE", ["NCB-FR", "GS-LYON"], kind="diffusion"))


def kind_recipients() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-DE"], kind="notice-request"))


def kind_recipients_ok() -> Scenario:
    return Scenario(build("NCB-FR", ["GS-LYON"], kind="notice-request"))


def recipient_unknown() -> Scenario:
    h = raw_header("NCB-FR", ["NCB-DE", "NCB-XX"], ["NCB-DE", "NCB-XX"])
    return Scenario(seal_header(h))


def recipient_unknown_ok() -> Scenario:
    h = raw_header("NCB-FR", ["NCB-DE", "NCB-XX"], ["NCB-DE", "NCB-XX"], serial=2)
    return Scenario(seal_header(h, d=WITH_XX), directory=WITH_XX)


DE_REVOKED = D.revoke("NCB-DE", T0)


def recipient_revoked() -> Scenario:
    # a revoked agency named directly stays in the expansion, and is refused by name
    return Scenario(build("NCB-FR", ["NCB-DE", "NCB-US"], d=DE_REVOKED), directory=DE_REVOKED)


def recipient_revoked_ok() -> Scenario:
    # through a group the revoked agency is simply left out
    return Scenario(build("NCB-FR", ["@EU"], d=DE_REVOKED), directory=DE_REVOKED)


def unknown_group() -> Scenario:
    return Scenario(seal_header(raw_header("NCB-FR", ["NCB-DE"], ["@NOPE"])))


def unknown_group_ok() -> Scenario:
    return Scenario(seal_header(raw_header("NCB-FR", ["NCB-DE", "EUROPOL"], ["@EU"])))


def mismatch_adds() -> Scenario:
    h = header("NCB-FR", ["@EU"])
    return Scenario(seal_header(dataclasses.replace(h, recipients=(*h.recipients, "NCB-US"))))


def mismatch_omits() -> Scenario:
    h = header("NCB-FR", ["@EU"])
    return Scenario(seal_header(dataclasses.replace(h, recipients=("EUROPOL",))))


def mismatch_ok() -> Scenario:
    return Scenario(build("NCB-FR", ["@EU"]))


# version 2 puts NCB-US in @EU; version 3 changes nothing that @EU expands to
EU_GROWN = D.next_version(T0, groups={**D.groups, "EU": (*D.groups["EU"], "NCB-US")})
SAME_EXPANSION = D.next_version(T0)


def directory_stale() -> Scenario:
    return Scenario(build("NCB-FR", ["@EU"]), directory=EU_GROWN)


def directory_stale_ok() -> Scenario:
    return Scenario(build("NCB-FR", ["@EU"]), directory=SAME_EXPANSION)


def clearance_sender() -> Scenario:
    return Scenario(build("NCB-ZA", ["NCB-DE"], lab="CONFIDENTIAL"))


def clearance_sender_ok() -> Scenario:
    return Scenario(build("NCB-ZA", ["NCB-DE"], lab="OFFICIAL-USE"))


def clearance_recipient() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-ZA"], lab="CONFIDENTIAL"))


def clearance_recipient_caveat() -> Scenario:  # level is enough, the EU caveat is missing
    return Scenario(build("NCB-FR", ["NCB-US", "NCB-DE"], lab="RESTRICTED//EU"))


def clearance_recipient_ok() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-ZA"], lab="OFFICIAL-USE"))


def tlp_red_group() -> Scenario:
    return Scenario(build("NCB-FR", ["@EU"], tlp=TLP.RED))


def tlp_red_group_ok() -> Scenario:
    return Scenario(build("NCB-FR", ["EUROPOL", "NCB-DE"], tlp=TLP.RED))


def _forward(source_tlp: TLP, to: list[str]) -> Scenario:
    src = build("NCB-FR", ["NCB-DE"], tlp=source_tlp)
    fwd = build("NCB-DE", to, ref=msg_id(src), tlp=source_tlp)
    return Scenario(fwd, history=history(src))


def tlp_red_forward() -> Scenario:
    return _forward(TLP.RED, ["NCB-US"])


def tlp_red_forward_back_ok() -> Scenario:  # back to the source: not a dissemination
    return _forward(TLP.RED, ["NCB-FR"])


def tlp_amber_forward_ok() -> Scenario:
    return _forward(TLP.AMBER, ["NCB-US"])


def no_gs_copy() -> Scenario:
    return Scenario(build("NCB-FR", ["NCB-DE"], kind="diffusion"))


def no_gs_copy_ok() -> Scenario:
    to = complete_addressing("diffusion", ["NCB-DE"], "NCB-FR", D)
    assert to == ["NCB-DE", "GS-LYON"]
    return Scenario(build("NCB-FR", to, kind="diffusion"))


def _onward(src_label: str, src_handling: HandlingCodes, fwd_label: str,
            fwd_handling: HandlingCodes) -> Scenario:
    src = build("NCB-DE", ["NCB-FR"], lab=src_label, handling=src_handling)
    fwd = build("NCB-FR", ["EUROPOL"], lab=fwd_label, handling=fwd_handling, ref=msg_id(src))
    return Scenario(fwd, history=history(src))


H0H1 = HandlingCodes(frozenset({Handling.H0, Handling.H1}))


def label_downgrade() -> Scenario:
    return _onward("CONFIDENTIAL//EU", H0H1, "CONFIDENTIAL", H0H1)


def label_downgrade_ok() -> Scenario:
    return _onward("CONFIDENTIAL//EU", H0H1, "CONFIDENTIAL//EU", H0H1)


def handling_dropped() -> Scenario:
    return _onward("RESTRICTED", H0H1, "RESTRICTED", HandlingCodes(frozenset({Handling.H0})))


def handling_dropped_ok() -> Scenario:
    return _onward("RESTRICTED", H0H1, "RESTRICTED", H0H1)


def _h2_source() -> bytes:
    """NCB-DE's H2 diffusion to @EU, copied to the GS."""
    to = complete_addressing("diffusion", ["@EU"], "NCB-DE", D)
    return build("NCB-DE", to, kind="diffusion", lab="CONFIDENTIAL", handling=H2)


def _h2_forward(release: bytes | None, to: tuple[str, ...] = ("NCB-US",)) -> Scenario:
    src = _h2_source()
    fwd = build("NCB-FR", list(to), lab="CONFIDENTIAL", handling=H2, ref=msg_id(src),
                release=release)
    return Scenario(fwd, history=history(src))


def h2_release() -> Scenario:
    return _h2_forward(None)


def h2_release_ok() -> Scenario:
    src = _h2_source()
    rel = Release(msg_id(src), "NCB-DE", ("NCB-US",), T0).sign(keys_for("NCB-DE"))
    fwd = build("NCB-FR", ["NCB-US"], lab="CONFIDENTIAL", handling=H2, ref=msg_id(src),
                release=rel)
    return Scenario(fwd, history=history(src))


def h2_within_audience_ok() -> Scenario:  # to EUROPOL, a recipient of the source
    return _h2_forward(None, to=("EUROPOL",))


def _h2_with(make_release: Callable[[bytes], bytes]) -> Scenario:
    src = _h2_source()
    fwd = build("NCB-FR", ["NCB-US"], lab="CONFIDENTIAL", handling=H2, ref=msg_id(src),
                release=make_release(msg_id(src)))
    return Scenario(fwd, history=history(src))


def release_wrong_signer() -> Scenario:  # NCB-FR forges NCB-DE's release
    return _h2_with(lambda m: Release(m, "NCB-DE", ("NCB-US",), T0).sign(keys_for("NCB-FR")))


def release_own() -> Scenario:  # NCB-FR releases NCB-DE's data itself
    return _h2_with(lambda m: Release(m, "NCB-FR", ("NCB-US",), T0).sign(keys_for("NCB-FR")))


def release_not_covering() -> Scenario:
    return _h2_with(lambda m: Release(m, "NCB-DE", ("NCB-JP",), T0).sign(keys_for("NCB-DE")))


def release_other_message() -> Scenario:
    return _h2_with(lambda m: Release(bytes(16), "NCB-DE", ("NCB-US",), T0)
                    .sign(keys_for("NCB-DE")))


def release_garbage() -> Scenario:
    return _h2_with(lambda m: b"\x92\xc4\x01x\xc4\x01y")


# code -> (refused scenarios, accepted counterparts)
# -- organisations, agreements and joint operations ---------------------------------------------

def _with_police(*agreements: Agreement) -> Directory:
    """The demo directory with FR-OFAST, a French police unit of its own organisation."""
    d = with_agency(D, record("FR-OFAST", kind="lea", clearance="CONFIDENTIAL",
                              org="FR-POLICE"))
    return d.next_version(d.issued_ms + 1, agreements={**d.agreements,
                                                       **{a.id: a for a in agreements}})


def _police_agreement(until: int = T0 + DAY) -> Agreement:
    return Agreement("INTERPOL-FR-POLICE", "NCB Paris and the French police", (
        "INTERPOL", "FR-POLICE"), until, (Flow("INTERPOL", "FR-POLICE", frozenset({"message"}),
                                              "CONFIDENTIAL"),))


def agreement_none() -> Scenario:
    d = _with_police()
    return Scenario(build("NCB-FR", ["FR-OFAST"], d=d), directory=d)


def agreement_none_ok() -> Scenario:
    d = _with_police(_police_agreement())
    return Scenario(build("NCB-FR", ["FR-OFAST"], d=d), directory=d)


def agreement_none_one_way() -> Scenario:  # the agreement has no flow back to INTERPOL
    d = _with_police(_police_agreement())
    return Scenario(build("FR-OFAST", ["NCB-FR"], d=d), directory=d)


def agreement_expired() -> Scenario:
    d = D.end_agreement(AGREEMENT_ID, T0 - SECOND, D.issued_ms + 1)
    return Scenario(build("NCB-FR", ["EUROPOL"], d=d), directory=d)


def agreement_expired_ok() -> Scenario:  # the last moment before the end
    d = D.end_agreement(AGREEMENT_ID, T0 + 1, D.issued_ms + 1)
    return Scenario(build("NCB-FR", ["EUROPOL"], d=d), directory=d)


def agreement_kind() -> Scenario:  # Europol does not request notices under the agreement
    return Scenario(build("EUROPOL", ["GS-LYON"], kind="notice-request"))


def agreement_kind_ok() -> Scenario:
    return Scenario(build("EUROPOL", ["GS-LYON"]))


def agreement_level() -> Scenario:
    return Scenario(build("GS-LYON", ["EUROPOL"], lab="SECRET"))


def agreement_level_ok() -> Scenario:
    return Scenario(build("GS-LYON", ["EUROPOL"], lab="CONFIDENTIAL"))


def _narrow() -> Directory:
    """The demo directory whose INTERPOL-EUROPOL agreement shares no caveat."""
    agr = D.agreements[AGREEMENT_ID]
    flows = tuple(replace(fl, caveats=frozenset()) for fl in agr.flows)
    return D.next_version(D.issued_ms + 1,
                          agreements={AGREEMENT_ID: replace(agr, flows=flows)})


def agreement_caveat() -> Scenario:
    d = _narrow()
    return Scenario(build("NCB-FR", ["EUROPOL"], lab="RESTRICTED//EU", d=d), directory=d)


def agreement_caveat_ok() -> Scenario:
    d = _narrow()
    return Scenario(build("NCB-FR", ["EUROPOL"], d=d), directory=d)


H3 = HandlingCodes(frozenset({Handling.H3}), "not for use in court proceedings")


def agreement_handling() -> Scenario:
    return Scenario(build("NCB-FR", ["EUROPOL", "NCB-DE"], handling=H3))


def agreement_handling_ok() -> Scenario:
    return Scenario(build("NCB-FR", ["EUROPOL", "NCB-DE"], handling=H2))


def _trident(level: str = "CONFIDENTIAL") -> Directory:
    op = Operation("TRIDENT", "Joint operation against a trafficking network", "NCB-FR",
                   ("EUROPOL", "NCB-DE", "NCB-FR"), T0 + DAY, level, created_ms=T0 - HOUR)
    return D.create_operation(op, D.issued_ms + 1)


def operation_closed() -> Scenario:
    d = _trident().close_operation("TRIDENT", D.issued_ms + 2)
    return Scenario(build("NCB-FR", ["NCB-DE"], lab="RESTRICTED//TRIDENT", d=_trident()),
                    directory=d)


def operation_closed_group() -> Scenario:  # the group of a closed operation is not a route
    d = _trident().close_operation("TRIDENT", D.issued_ms + 2)
    return Scenario(build("NCB-FR", ["@TRIDENT"], d=_trident()), directory=d)


def operation_ok() -> Scenario:  # EUROPOL shares the operation's caveat with INTERPOL's
    d = _trident()
    return Scenario(build("NCB-FR", ["@TRIDENT"], lab="RESTRICTED//TRIDENT", d=d),
                    directory=d)


def operation_expired() -> Scenario:
    d = _trident()
    return Scenario(build("NCB-FR", ["@TRIDENT"], lab="RESTRICTED//TRIDENT", d=d,
                          now=T0 + DAY), directory=d, now=T0 + DAY)


def operation_expired_ok() -> Scenario:
    d = _trident()
    return Scenario(build("NCB-FR", ["@TRIDENT"], lab="RESTRICTED//TRIDENT", d=d,
                          now=T0 + DAY - 1), directory=d, now=T0 + DAY - 1)


def operation_level() -> Scenario:
    d = _trident("RESTRICTED")
    return Scenario(build("NCB-FR", ["NCB-DE"], lab="CONFIDENTIAL//TRIDENT", d=d),
                    directory=d)


def operation_level_ok() -> Scenario:
    d = _trident("RESTRICTED")
    return Scenario(build("NCB-FR", ["NCB-DE"], lab="RESTRICTED//TRIDENT", d=d), directory=d)


CASES: dict[str, tuple[list[Callable[[], Scenario]], list[Callable[[], Scenario]]]] = {
    "sig.invalid": ([sig_invalid, sig_invalid_other_signer], [ok_fr_to_de]),
    "sig.unknown-key": ([sig_unknown_key], [sig_unknown_key_ok]),
    "sender.unknown": ([sender_unknown], [sender_unknown_ok]),
    "sender.revoked": ([sender_revoked], [ok_fr_to_de]),
    "sender.topic": ([sender_topic], [sender_topic_ok]),
    "time.expired": ([time_expired], [time_expired_ok]),
    "time.future": ([time_future], [time_future_ok]),
    "time.ttl": ([time_ttl, time_ttl_notice], [time_ttl_ok, kind_gs_notice_ok]),
    "replay.id": ([replay_id], [replay_id_ok]),
    "label.unknown": ([label_unknown_caveat, label_unknown_level], [label_ok]),
    "kind.not-allowed": ([kind_ncb_notice, kind_europol_diffusion, kind_gs_requests_notice],
                         [kind_gs_notice_ok, kind_ncb_diffusion_ok, kind_recipients_ok]),
    "kind.recipients": ([kind_recipients], [kind_recipients_ok]),
    "recipient.unknown": ([recipient_unknown], [recipient_unknown_ok]),
    "recipient.revoked": ([recipient_revoked], [recipient_revoked_ok]),
    "addressing.unknown-group": ([unknown_group], [unknown_group_ok]),
    "addressing.mismatch": ([mismatch_adds, mismatch_omits], [mismatch_ok]),
    "directory.stale": ([directory_stale], [directory_stale_ok]),
    "clearance.sender": ([clearance_sender], [clearance_sender_ok]),
    "clearance.recipient": ([clearance_recipient, clearance_recipient_caveat],
                            [clearance_recipient_ok]),
    "tlp.red-group": ([tlp_red_group], [tlp_red_group_ok]),
    "tlp.red-forward": ([tlp_red_forward], [tlp_red_forward_back_ok, tlp_amber_forward_ok]),
    "diffusion.no-gs-copy": ([no_gs_copy], [no_gs_copy_ok]),
    "forward.label-downgrade": ([label_downgrade], [label_downgrade_ok]),
    "forward.handling-dropped": ([handling_dropped], [handling_dropped_ok]),
    "handling.h2-release": ([h2_release], [h2_release_ok, h2_within_audience_ok]),
    "handling.release-invalid": ([release_wrong_signer, release_own, release_not_covering,
                                  release_other_message, release_garbage], [h2_release_ok]),
    "agreement.none": ([agreement_none, agreement_none_one_way], [agreement_none_ok]),
    "agreement.expired": ([agreement_expired], [agreement_expired_ok]),
    "agreement.kind": ([agreement_kind], [agreement_kind_ok]),
    "agreement.level": ([agreement_level], [agreement_level_ok]),
    "agreement.caveat": ([agreement_caveat], [agreement_caveat_ok]),
    "agreement.handling": ([agreement_handling], [agreement_handling_ok]),
    "operation.closed": ([operation_closed, operation_closed_group], [operation_ok]),
    "operation.expired": ([operation_expired], [operation_expired_ok]),
    "operation.level": ([operation_level], [operation_level_ok]),
}

# Reason codes that ``decide`` cannot produce, and where they come from instead.
NOT_FROM_DECIDE = {
    # decide takes an already parsed Envelope; bytes that do not parse never reach it. The
    # router drops them on Envelope.parse with a wire.* reason (see test_router_drops_...).
    "wire.malformed",
    # the router's per-sender token bucket, not a property of one message: refused and
    # accepted cases in tests/attacks/test_attack_flood.py
    "rate.limited",
}

REFUSED = [(code, f) for code, (refs, _) in CASES.items() for f in refs]
ACCEPTED = [(code, f) for code, (_, oks) in CASES.items() for f in oks]


@pytest.mark.parametrize(("code", "scenario"), REFUSED,
                         ids=[f"{c}-{f.__name__}" for c, f in REFUSED])
def test_refused_with_exactly_this_code(code: str, scenario: Callable[[], Scenario]) -> None:
    sc = scenario()
    d = sc.decide()
    assert not d.accepted
    assert d.reason == code, d
    assert d.recipients == ()
    assert d.message
    assert d.msg_id == parsed(sc.raw).header.id_hex


@pytest.mark.parametrize(("code", "scenario"), ACCEPTED,
                         ids=[f"{c}-{f.__name__}" for c, f in ACCEPTED])
def test_accepted_counterpart(code: str, scenario: Callable[[], Scenario]) -> None:
    sc = scenario()
    d = sc.decide()
    assert d.accepted, d
    assert d.reason == "ok"
    h = parsed(sc.raw).header
    assert d.recipients == h.recipients == sc.directory.expand(h.addressing, h.sender)
    assert d.priority == int(h.precedence)


def test_every_reason_code_has_a_refused_and_an_accepted_case() -> None:
    covered = {code for code, (refs, oks) in CASES.items() if refs and oks}
    assert covered | NOT_FROM_DECIDE == set(REASONS)
    assert not covered & NOT_FROM_DECIDE


def test_router_drops_bytes_that_do_not_parse_as_wire_malformed() -> None:
    # "wire.malformed" is the router's code for unparseable envelope bytes: 0xc1 is a
    # msgpack marker that is never used, right after a valid envelope magic.
    net = Net()
    junk = b"\x94\xa4i24e\x01\xc1\xc1"
    events = net.router.handle(submit_topic("NCB-FR"), junk, T0)
    assert [(e.kind, e.reason) for e in events] == [("drop", "wire.malformed")]
    assert net.router.counters == {"drop.wire.malformed": 1}
    # the sender is told, in a signed report that names no message id but the bytes' digest
    ((topic, frame, _),) = net.router.pop(T0)
    rep = fr.verify_report(fr.parse_frame(frame), net.directory)
    assert topic.endswith("/inbox/NCB-FR")
    assert (rep.msg_id, rep.digest, rep.sender, rep.accepted, rep.reason, rep.recipients) == (
        fr.NO_MESSAGE_ID, hashlib.sha256(junk).digest(), "NCB-FR", False, "wire.malformed", ())


# -- details the table does not show ----------------------------------------------------------

def test_clearance_recipient_names_the_uncleared_agency() -> None:
    d = clearance_recipient().decide()
    assert d.agencies == ("NCB-ZA",)
    assert "NCB-ZA" in d.message and "OFFICIAL-USE" in d.message


def test_clearance_recipient_lists_only_the_uncleared_among_several() -> None:
    d = clearance_recipient_caveat().decide()
    assert d.agencies == ("NCB-US",)


def test_mismatch_names_added_and_omitted_agencies() -> None:
    assert mismatch_adds().decide().agencies == ("NCB-US",)
    assert mismatch_omits().decide().agencies == ("NCB-DE",)


def test_sender_faults_name_the_sender() -> None:
    assert sender_revoked().decide().agencies == ("NCB-FR",)
    assert sig_invalid().decide().agencies == ("NCB-FR",)
    assert sender_topic().decide().agencies == ("NCB-DE",)
    assert clearance_sender().decide().agencies == ("NCB-ZA",)
    assert kind_ncb_notice().decide().agencies == ("NCB-FR",)


def test_kind_recipients_names_the_wrong_recipient() -> None:
    d = kind_recipients().decide()
    assert d.agencies == ("NCB-DE",)
    assert "GS-LYON" in d.message


def test_h2_refusal_names_the_new_recipients_and_the_source() -> None:
    d = h2_release().decide()
    assert d.agencies == ("NCB-US",)
    assert "NCB-DE" in d.message


def test_a_release_for_more_agencies_than_needed_still_covers() -> None:
    src = _h2_source()
    rel = Release(msg_id(src), "NCB-DE", ("NCB-US", "NCB-JP"), T0).sign(keys_for("NCB-DE"))
    fwd = build("NCB-FR", ["NCB-US"], lab="CONFIDENTIAL", handling=H2, ref=msg_id(src),
                release=rel)
    assert Scenario(fwd, history=history(src)).decide().accepted


def test_release_from_a_revoked_source_is_invalid() -> None:
    sc = h2_release_ok()
    sc.directory = D.revoke("NCB-DE", T0)
    d = sc.decide()
    assert d.reason == "handling.release-invalid"


def test_a_reference_to_an_unknown_message_is_not_a_forward() -> None:
    raw = build("NCB-FR", ["NCB-US"], handling=H2, ref=bytes(16))
    assert Scenario(raw, history=MemoryHistory()).decide().accepted


def test_signature_is_checked_before_anything_else() -> None:
    # a bad signature on an otherwise hopeless message still reports sig.invalid
    raw = flip_signature(build("NCB-FR", ["NCB-ZA"], lab="CONFIDENTIAL", ttl=HOUR))
    assert Scenario(raw, now=T0 + 10 * DAY, topic_agency="NCB-DE").decide().reason \
        == "sig.invalid"


def test_every_bit_of_the_signed_part_is_covered() -> None:
    raw = build("NCB-FR", ["NCB-DE"])
    env = parsed(raw)
    start = raw.index(env.signed)
    for pos in range(start, start + len(env.signed), 7):
        bad = bytearray(raw)
        bad[pos] ^= 0x04
        try:
            tampered = Envelope.parse(bytes(bad))
        except WireFormatError:  # it no longer parses: the router drops it
            continue
        assert decide(tampered, D, T0).reason in ("sig.invalid", "sig.unknown-key",
                                                  "sender.unknown"), pos


def test_decision_refuse_rejects_unknown_codes() -> None:
    with pytest.raises(AssertionError):
        Decision.refuse("no.such-code", "x")


def test_prior_of_records_header_facts() -> None:
    raw = build("NCB-FR", ["@EU"], tlp=TLP.AMBER, handling=H2)
    env = parsed(raw)
    p = PriorMessage.of(env)
    assert (p.id, p.sender, p.recipients, p.tlp, p.digest) == (
        env.header.id, "NCB-FR", frozenset({"EUROPOL", "NCB-DE"}), TLP.AMBER, env.digest)


# -- properties over random networks -----------------------------------------------------------

POOL = tuple(f"AG-{i}" for i in range(8))
LEVEL_POOL = ("UNCLASSIFIED", "OFFICIAL-USE", "RESTRICTED", "CONFIDENTIAL", "SECRET")
CAVEAT_POOL = ("EU", "CT", "FIN", "NOFORN")
REGION_POOL = ("NORTH", "SOUTH", "EAST")
GROUP_POOL = ("G1", "G2", "G3")
PROP_KINDS = ("message",) * 8 + ("alert", "diffusion", "notice", "notice-request")
for _a in POOL:  # generate every pool key once, up front
    keys_for(_a)


# Strategies over integers only (hypothesis caches those), indexing fixed tuples: building a
# fresh sampled_from per draw costs more than the routing decision under test.
def pick(draw: st.DrawFn, items: tuple[str, ...] | list[str]) -> str:
    return items[draw(st.integers(0, len(items) - 1))]


def subset(draw: st.DrawFn, items: tuple[str, ...] | list[str] | frozenset[str],
           max_size: int = 8) -> frozenset[str]:
    ordered = sorted(items)
    if not ordered:
        return frozenset()
    mask = draw(st.integers(0, (1 << len(ordered)) - 1))
    return frozenset([x for i, x in enumerate(ordered) if mask >> i & 1][:max_size])


@st.composite
def networks(draw: st.DrawFn) -> Directory:
    levels = LEVEL_POOL[:draw(st.integers(1, len(LEVEL_POOL)))]
    caveats = subset(draw, CAVEAT_POOL[:3])
    scale = ClassificationScale(levels, caveats)
    ids = sorted(subset(draw, POOL) | {pick(draw, POOL), pick(draw, POOL)})
    agencies = {}
    for a in ids:
        kk = keys_for(a)
        agencies[a] = AgencyRecord(
            a, a, pick(draw, ("gs", "ncb", "ncb", "europol", "lea", "body")),
            pick(draw, REGION_POOL), Label(pick(draw, levels), subset(draw, caveats)),
            subset(draw, ("notice-authority", "notice-requester"), max_size=1),
            kk.verify_key, kk.encryption_public,
            pick(draw, ("active", "active", "active", "revoked")),
            prekey=kk.public().prekey, prekey_sig=kk.public().prekey_sig)
    groups = {g: tuple(sorted(subset(draw, ids))) for g in subset(draw, GROUP_POOL)}
    return Directory(network="prop", serial=draw(st.integers(1, 3)), issued_ms=T0,
                     scale=scale, agencies=agencies, groups=groups,
                     authority_key=bytes(32))


@st.composite
def messages(draw: st.DrawFn) -> tuple[Directory, bytes, set[str]]:
    """A random directory and an envelope a sender (honest or not) might submit in it."""
    d = draw(networks())
    ids = sorted(d.agencies)
    active = [a for a in ids if d.agencies[a].active]
    sender = pick(draw, active if active and draw(st.integers(0, 9)) else ids)
    # mostly a label the sender may use, so the recipient checks are reached; sometimes
    # anything on the scale, sometimes a level or caveat the network does not define
    mode = pick(draw, ("sender",) * 5 + ("scale", "scale", "outside"))
    if mode == "sender":
        mine = d.agencies[sender].clearance
        levels = d.scale.levels[:d.scale.levels.index(mine.level) + 1]
        caveats: frozenset[str] | tuple[str, ...] = mine.caveats
    elif mode == "scale":
        levels, caveats = d.scale.levels, d.scale.caveats
    else:
        levels, caveats = (*d.scale.levels, "SECRET"), CAVEAT_POOL
    lab = Label(pick(draw, levels), subset(draw, caveats, max_size=2))
    # ids (one unknown), derived and defined groups; now and then a group nobody defined
    targets = (*ids, "@ALL", "@NCB", *(f"@{g}" for g in (*REGION_POOL, *d.groups)))
    if not draw(st.integers(0, 9)):
        targets = (*targets, "AG-9", *(f"@{g}" for g in GROUP_POOL))
    addressing = sorted({pick(draw, targets) for _ in range(draw(st.integers(1, 3)))})
    try:
        expected = set(d.expand(addressing, sender))
    except I24Error:  # an unknown group: the signed list can only be made up
        expected = set()
    recipients = set(expected)
    tweak = pick(draw, ("none", "none", "none", "add", "drop"))
    if tweak == "add":
        recipients.add(pick(draw, (*ids, "AG-9")))
    elif tweak == "drop" and len(recipients) > 1:
        recipients.discard(pick(draw, sorted(recipients)))
    if not recipients:
        recipients = {pick(draw, ids)}
    h = raw_header(sender, recipients, addressing, lab=lab, kind=pick(draw, PROP_KINDS),
                   serial=d.serial if draw(st.booleans()) else 1,
                   tlp=(None, None, None, TLP.AMBER, TLP.RED)[draw(st.integers(0, 4))])
    return d, seal_header(h, d=d), recipients


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_property_accept_only_within_clearance_and_expansion(
        case: tuple[Directory, bytes, set[str]]) -> None:
    d, raw, _ = case
    env = parsed(raw)
    h = env.header
    decision = decide(env, d, T0)
    known = [r for r in h.recipients if r in d.agencies]
    uncleared = [r for r in known if not d.scale.dominates(d.agencies[r].clearance, h.label)]
    if uncleared:
        assert not decision.accepted, (decision, uncleared)
    if not decision.accepted:
        assert decision.reason in REASONS
        assert decision.recipients == ()
        return
    # accepted: exactly the directory's expansion, all known, active and cleared
    assert decision.recipients == h.recipients == d.expand(h.addressing, h.sender)
    sender = d.agencies[h.sender]
    assert sender.active
    assert d.scale.dominates(sender.clearance, h.label)
    for r in decision.recipients:
        rec = d.agencies[r]
        assert rec.active, r
        assert d.scale.dominates(rec.clearance, h.label), r
    assert h.sender not in decision.recipients or h.sender in h.addressing


@settings(max_examples=150, deadline=None)
@given(messages())
def test_property_the_router_delivers_exactly_the_accepted_recipients(
        case: tuple[Directory, bytes, set[str]]) -> None:
    """Through the router machine: deliveries go to decision.recipients and nobody else."""
    d, raw, _ = case
    d = dataclasses.replace(d, router_keys=(ROUTER.verify_key,), _expansions={})
    sender = parsed(raw).header.sender
    decision = decide(parsed(raw), d, T0)
    router = RouterMachine(d, ROUTER, MemoryRouterStore())
    router.handle(f"{d.prefix}/submit/{sender}", raw, T0)
    out = router.pop(T0, limit=1000)
    reached = set()
    for topic, frame, _ in out:
        agency = topic.rsplit("/", 1)[1]
        f = parse_frame(frame)
        if f.magic == "i24d":
            verify_delivery(f, d, agency)
            reached.add(agency)
        else:
            assert agency == sender
    assert reached == set(decision.recipients)


def test_demo_directory_has_the_expected_shape() -> None:
    assert sorted(D.agencies) == sorted(["GS-LYON", "EUROPOL", "NCB-FR", "NCB-DE", "NCB-US",
                                         "NCB-BR", "NCB-JP", "NCB-ZA"])
    assert D.expand(["@EU"], "NCB-FR") == ("EUROPOL", "NCB-DE")
    assert D.authorities("notice-authority") == ["GS-LYON"]
    assert kid(keys_for("NCB-FR")) == D.agencies["NCB-FR"].key_id
