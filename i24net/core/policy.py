"""The routing decision: may this message go, and to whom? (mandatory access control)

Theory of operation: ``decide`` is a pure function of the parsed envelope, the directory,
the time and what the router has already routed (``RoutingHistory``). It verifies the
sender's signature first, then walks the checks in a fixed order and returns the first
refusal as a ``Decision`` with a stable reason code and the agencies at fault, or an
acceptance with the final recipient set and queue priority. It never raises for a bad
message: refusing is its normal output. It never sees a body: the router has no body key.

The checks, in order (each code is in ``REASONS``):
  signature and sender status -> freshness and lifetime -> replay -> labels known ->
  a joint operation named by caveat or group is running and the label within its level ->
  kind allowed for the sender -> recipients known and active -> addressing matches the
  directory's expansion -> sender cleared -> every recipient cleared -> every crossing to
  another organisation covered by a running agreement (its kinds, level, caveats and
  handling codes; a running operation's own caveat is shared by its members) -> TLP:RED
  named only -> onward dissemination honours the source's handling codes (H2 needs a
  signed release).

An accepted decision names the agreement applied to each recipient of another organisation
(``Decision.agreements``); the router puts it in that recipient's routing stamp.

The same function runs in the router (authoritative) and in ``i24net envelope check``; a
node re-checks the parts it can (signature, freshness, its own clearance, replay) so one
mistaken component does not open the system.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from i24net.core import keys as k
from i24net.core.cooperation import WITHDRAWAL_KINDS, covering
from i24net.core.directory import Directory
from i24net.core.envelope import ID_SIZE, Envelope, Header, check_freshness
from i24net.core.errors import CryptoError, I24Error
from i24net.core.labels import TLP, Handling, HandlingCodes, Label
from i24net.core.wire import Fields, fail, pack, unpack

# One table of every refusal reason code the routing core can give. Stable strings: tests,
# exercises, counters and the audit chain depend on them.
REASONS: dict[str, str] = {
    "wire.malformed": "the bytes are not a well-formed envelope",
    "sig.invalid": "the sender's signature does not verify",
    "sig.unknown-key": "signed with a key the directory does not list for the sender",
    "sender.unknown": "the sender is not in the directory",
    "sender.revoked": "the sender is revoked",
    "sender.topic": "the envelope arrived on another agency's submit topic",
    "time.expired": "the message has expired",
    "time.future": "the message was created in the future beyond the allowed clock skew",
    "time.ttl": "the message's lifetime is longer than the kind allows",
    "replay.id": "a different message with this id was already routed",
    "label.unknown": "the label uses a level or caveat this network does not define",
    "kind.not-allowed": "this kind of message may not be sent by this sender",
    "kind.recipients": "this kind of message must be addressed to the notice authority",
    "recipient.unknown": "a recipient is not in the directory",
    "recipient.revoked": "a recipient is revoked",
    "addressing.unknown-group": "the addressing names a group the directory does not define",
    "addressing.mismatch": "the signed recipient list differs from the directory's expansion",
    "clearance.sender": "the sender's clearance does not dominate the label",
    "clearance.recipient": "a recipient's clearance does not dominate the label",
    "tlp.red-group": "a TLP:RED message must name each recipient; groups are not allowed",
    "tlp.red-forward": "a TLP:RED message may not go beyond its original recipients",
    "diffusion.no-gs-copy": "a diffusion must be copied to the General Secretariat",
    "forward.label-downgrade": "an onward message carries a lower label than its source",
    "forward.handling-dropped": "an onward message drops the source's handling codes",
    "handling.h2-release": "onward dissemination of H2 data needs the source's signed release",
    "handling.release-invalid": "the release does not verify or does not cover these recipients",
    "directory.stale": "the message was addressed with an older directory version",
    "operation.closed": "the joint operation named by the caveat or group is closed",
    "operation.expired": "the joint operation named by the caveat or group has ended",
    "operation.level": "the label is above the level of the joint operation",
    "agreement.none": "no agreement lets the sender's organisation send to the recipient's",
    "agreement.expired": "the agreement between the two organisations has ended",
    "agreement.kind": "the agreement does not cover this kind of message",
    "agreement.level": "the label is above the highest level the agreement allows",
    "agreement.caveat": "the label carries a caveat the agreement does not share",
    "agreement.handling": "the message carries a handling code the agreement does not honour",
    # Not from ``decide``: the router's per-sender token bucket (router.RateLimit). Not final:
    # the sender's node keeps the message and retries it later (backpressure).
    "rate.limited": "the sender is over its message rate limit; its node retries later",
}
# Refusals that say "not now" rather than "never": a sender keeps retrying the message.
TRANSIENT_REASONS = frozenset({"rate.limited"})

# Lifetimes: notices live for their 5-year retention; everything else is operational
# traffic whose usefulness (and our replay memory) should be bounded.
NOTICE_TTL_MS = 5 * 365 * 24 * 3600 * 1000
MESSAGE_TTL_MS = 30 * 24 * 3600 * 1000

AUTHORITY_KINDS = frozenset({"notice", "notice-decision", "notice-update", "notice-cancel",
                             "deletion-order"})
REQUEST_KINDS = frozenset({"notice-request", "notice-cancel-request"})
REQUESTER_AGENCY_KINDS = frozenset({"ncb", "europol", "body"})


@dataclass(frozen=True, slots=True)
class Decision:
    """The router's verdict on one message."""

    accepted: bool
    reason: str
    message: str
    recipients: tuple[str, ...] = ()
    priority: int = 3
    agencies: tuple[str, ...] = ()
    msg_id: str = ""
    # recipient -> the agreement that covers its crossing (recipients of other organisations)
    agreements: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def refuse(cls, reason: str, message: str, *, header: Header | None = None,
               agencies: tuple[str, ...] = ()) -> Decision:
        assert reason in REASONS, reason
        return cls(False, reason, message, agencies=tuple(agencies),
                   msg_id=header.id_hex if header else "")


@dataclass(frozen=True, slots=True)
class PriorMessage:
    """What the router remembers of a message it routed (header facts only)."""

    id: bytes
    sender: str
    recipients: frozenset[str]
    label: Label
    handling: HandlingCodes
    tlp: TLP | None
    digest: bytes

    @classmethod
    def of(cls, env: Envelope) -> PriorMessage:
        h = env.header
        return cls(h.id, h.sender, frozenset(h.recipients), h.label, h.handling, h.tlp,
                   env.digest)


@dataclass
class MemoryHistory:
    """A ``RoutingHistory`` in memory (the router daemon backs it with SQLite)."""

    messages: dict[bytes, PriorMessage] = field(default_factory=dict)

    def prior(self, msg_id: bytes) -> PriorMessage | None:
        return self.messages.get(msg_id)

    def record(self, env: Envelope) -> None:
        self.messages[env.header.id] = PriorMessage.of(env)


PriorLookup = Callable[[bytes], PriorMessage | None]


# -- releases ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Release:
    """The source's signed permission to disseminate an H2 message to named agencies."""

    msg_id: bytes
    source: str
    allowed: tuple[str, ...]
    issued_ms: int

    def encode(self) -> bytes:
        return pack({"id": self.msg_id, "source": self.source,
                     "allowed": sorted(self.allowed), "issued": self.issued_ms})

    def sign(self, source_keys: k.AgencyKeys) -> bytes:
        doc = self.encode()
        return pack([doc, source_keys.sign(k.DOMAIN_RELEASE, doc)])

    @classmethod
    def load(cls, signed: bytes, directory: Directory) -> Release:
        """Verify a signed release against its source's key in the directory."""
        outer = unpack(signed, what="release", max_size=4096, max_items=4)
        if not (isinstance(outer, list) and len(outer) == 2 and isinstance(outer[0], bytes)
                and isinstance(outer[1], bytes)):
            fail("release", "expected [document, signature]")
        doc, sig = outer
        f = Fields(unpack(doc, what="release", max_size=4096, max_items=256), "release")
        rel = cls(f.blob("id", size=ID_SIZE), f.text("source", max_len=32),
                  tuple(f.text_list("allowed", max_items=256, max_len=32)),
                  f.integer("issued"))
        f.done()
        src = directory.agency(rel.source)
        if not src.active:
            raise CryptoError(f"release signed by revoked {rel.source}",
                              reason="sender.revoked")
        k.verify(src.sign_key, k.DOMAIN_RELEASE, doc, sig, what="release", agency=rel.source)
        return rel


# -- the decision -----------------------------------------------------------------------

def decide(
    env: Envelope,
    directory: Directory,
    now_ms: int,
    *,
    prior: PriorLookup = lambda _id: None,
    topic_agency: str | None = None,
) -> Decision:
    """Decide on ``env``; see the module docstring for the order of checks.

    ``prior`` looks up messages already routed (for replays and forwards); ``topic_agency``
    is the agency whose submit topic carried the bytes, when known.
    """
    h = env.header
    try:
        env.verify(directory)
    except I24Error as exc:
        code = exc.reason if exc.reason in REASONS else "sig.invalid"
        return Decision.refuse(code, exc.message, header=h, agencies=(h.sender,))
    if topic_agency is not None and topic_agency != h.sender:
        return Decision.refuse("sender.topic", f"{topic_agency} submitted a message signed by "
                               f"{h.sender}", header=h, agencies=(topic_agency,))

    stale = check_freshness(h, now_ms, directory.max_skew_ms)
    if stale:
        return Decision.refuse(stale, REASONS[stale], header=h)
    max_ttl = NOTICE_TTL_MS if h.kind in ("notice", "notice-update") else MESSAGE_TTL_MS
    if h.expires_ms - h.created_ms > max_ttl:
        return Decision.refuse("time.ttl", f"{h.kind} may live at most "
                               f"{max_ttl // 86_400_000} days", header=h)

    seen = prior(h.id)
    if seen is not None and seen.digest != env.digest:
        return Decision.refuse("replay.id", f"message id {h.id_hex[:12]} was already used "
                               f"by a different message from {seen.sender}", header=h,
                               agencies=(h.sender,))

    scale = directory.scale
    if h.label.level not in scale.levels or not h.label.caveats <= scale.caveats:
        return Decision.refuse("label.unknown", f"label {h.label.marking} is not defined "
                               f"in network {directory.network}", header=h)

    refusal = _operation_rule(h, directory, now_ms)
    if refusal:
        return refusal

    sender = directory.agency(h.sender)
    refusal = _kind_rule(h, directory, sender.kind, sender.roles, prior)
    if refusal:
        return refusal

    unknown = tuple(r for r in h.recipients if r not in directory.agencies)
    if unknown:
        return Decision.refuse("recipient.unknown", "not in directory version "
                               f"{directory.serial}: {', '.join(unknown)}", header=h,
                               agencies=unknown)
    revoked = tuple(r for r in h.recipients if not directory.agencies[r].active)
    if revoked:
        return Decision.refuse("recipient.revoked", f"revoked: {', '.join(revoked)}",
                               header=h, agencies=revoked)
    try:
        expected = directory.expand(h.addressing, h.sender)
    except I24Error as exc:
        return Decision.refuse("addressing.unknown-group", exc.message, header=h)
    if expected != h.recipients:
        extra = tuple(sorted(set(h.recipients) - set(expected)))
        missing = tuple(sorted(set(expected) - set(h.recipients)))
        code = "addressing.mismatch" if h.directory_serial == directory.serial \
            else "directory.stale"
        detail = (f"signed list adds {', '.join(extra) or 'nobody'} and omits "
                  f"{', '.join(missing) or 'nobody'} compared with "
                  f"{', '.join(h.addressing)} in directory version {directory.serial}")
        return Decision.refuse(code, detail, header=h, agencies=extra + missing)

    if not scale.dominates(sender.clearance, h.label):
        return Decision.refuse("clearance.sender", f"{h.sender} is cleared to "
                               f"{sender.clearance.marking}, below {h.label.marking}",
                               header=h, agencies=(h.sender,))
    uncleared = tuple(r for r in h.recipients
                      if not scale.dominates(directory.agencies[r].clearance, h.label))
    if uncleared:
        shown = ", ".join(f"{r} ({directory.agencies[r].clearance.marking})"
                          for r in uncleared[:10])
        more = f" and {len(uncleared) - 10} more" if len(uncleared) > 10 else ""
        return Decision.refuse("clearance.recipient", f"not cleared for {h.label.marking}: "
                               f"{shown}{more}", header=h, agencies=uncleared)

    withdrawn = prior(h.ref) if h.ref is not None and h.kind in WITHDRAWAL_KINDS else None
    crossing = _agreement_rule(h, directory, sender.org, now_ms,
                               frozenset() if withdrawn is None else withdrawn.recipients)
    if isinstance(crossing, Decision):
        return crossing

    if h.tlp is TLP.RED and any(a.startswith("@") for a in h.addressing):
        return Decision.refuse("tlp.red-group", REASONS["tlp.red-group"], header=h)

    refusal = _forward_rule(env, directory, prior)
    if refusal:
        return refusal
    return Decision(True, "ok", f"accepted for {len(h.recipients)} recipient(s)",
                    recipients=h.recipients, priority=int(h.precedence), msg_id=h.id_hex,
                    agreements=crossing)


def crossing_refusal(directory: Directory, sender: str, recipient: str, kind: str,
                     label: Label, handling: HandlingCodes, now_ms: int, *,
                     withdrawing: bool = False) -> str | None:
    """The reason code the agreement check (check 19) gives a message of ``kind`` /
    ``label`` / ``handling`` from ``sender`` to ``recipient``, or None when both belong to
    one organisation or an agreement covers it: what a sender's tools use to leave out of
    an audience the agencies the router would refuse the whole message for.
    ``withdrawing``: a withdrawal of a message ``recipient`` was sent."""
    src, dst = directory.agencies.get(sender), directory.agencies.get(recipient)
    if src is None or dst is None:
        return "recipient.unknown"
    if src.org == dst.org:
        return None
    code, _ = _crossing(directory, src.org, dst.org, kind, label, handling, now_ms,
                        withdrawing)
    return None if code == "ok" else code


def _crossing(directory: Directory, source: str, target: str, kind: str, label: Label,
              handling: HandlingCodes, now_ms: int, withdrawing: bool) -> tuple[str, str]:
    """``covering`` between two organisations of ``directory``. The caveat of a joint
    operation is shared among its members, whatever their organisation (the operation
    rule and the clearance checks hold it to them), so it is not an agreement's to share."""
    lab = Label(label.level, label.caveats - directory.operations.keys()) \
        if directory.operations else label
    return covering(directory.agreements_between(source, target), directory.scale, source,
                    target, kind, lab, handling, now_ms, withdrawing=withdrawing)


def _operation_rule(h: Header, directory: Directory, now_ms: int) -> Decision | None:
    """A message under a joint operation's caveat, or addressed to its group, needs the
    operation running and the label within the operation's level."""
    if not directory.operations:
        return None
    named = h.label.caveats | {a[1:] for a in h.addressing if a.startswith("@")}
    for name in sorted(named & directory.operations.keys()):
        op = directory.operations[name]
        state = op.state(now_ms)
        if state != "active":
            return Decision.refuse(f"operation.{state}", f"operation {name} is {state}; "
                                   "nothing more is routed under it", header=h)
        if directory.scale.rank(h.label.level) > directory.scale.rank(op.level):
            return Decision.refuse("operation.level", f"operation {name} runs at "
                                   f"{op.level}; this message is {h.label.level}", header=h)
    return None


def _agreement_rule(h: Header, directory: Directory, org: str, now_ms: int,
                    holders: frozenset[str]) -> Decision | dict[str, str]:
    """Every recipient of another organisation than the sender's must be reached under a
    running agreement: recipient -> agreement id, or the refusal (for every recipient the
    first failing crossing refuses). ``holders``: the recipients of the message a
    withdrawal names (as routed), whom it still reaches under an agreement that ended."""
    applied: dict[str, str] = {}
    verdicts: dict[tuple[str, bool], tuple[str, str]] = {}
    for r in h.recipients:
        target = directory.agencies[r].org
        if target == org:
            continue
        key = (target, r in holders)
        verdict = verdicts.get(key)
        if verdict is None:
            verdict = verdicts[key] = _crossing(directory, org, target, h.kind, h.label,
                                                h.handling, now_ms, key[1])
        if verdict[0] == "ok":
            applied[r] = verdict[1]
    for (target, withdrawing), (code, detail) in sorted(verdicts.items()):
        if code != "ok":
            blocked = tuple(r for r in h.recipients if directory.agencies[r].org == target
                            and (r in holders) == withdrawing)
            return Decision.refuse(code, f"{h.sender} ({org}) to {', '.join(blocked[:10])}"
                                   f"{' and more' if len(blocked) > 10 else ''} "
                                   f"({target}): {detail}", header=h, agencies=blocked)
    return applied


def _source_deletion(h: Header, src: PriorMessage | None) -> bool:
    """A ``deletion-order`` from the source of the message it names (``src``, as routed),
    to some of that message's own recipients: data protection lets the source withdraw what
    it sent, as the notice authority may withdraw any diffusion."""
    return src is not None and src.sender == h.sender and set(h.recipients) <= src.recipients


def _kind_rule(h: Header, directory: Directory, sender_kind: str,
               roles: frozenset[str], prior: PriorLookup) -> Decision | None:
    if h.kind in AUTHORITY_KINDS and "notice-authority" not in roles:
        if h.kind == "deletion-order":
            if h.ref is not None and _source_deletion(h, prior(h.ref)):
                return None
            return Decision.refuse(
                "kind.not-allowed", f"only a notice authority, or the source of a message "
                f"addressing its own recipients, may order a deletion; {h.sender} is "
                f"neither for {h.ref.hex()[:12] if h.ref else 'a message it does not name'}",
                header=h, agencies=(h.sender,))
        return Decision.refuse("kind.not-allowed", f"only a notice authority may send a "
                               f"{h.kind}; {h.sender} is not one (send a notice-request)",
                               header=h, agencies=(h.sender,))
    if h.kind in REQUEST_KINDS:
        if sender_kind not in REQUESTER_AGENCY_KINDS and "notice-requester" not in roles:
            return Decision.refuse("kind.not-allowed", f"{h.sender} may not request notices",
                                   header=h, agencies=(h.sender,))
        authorities = set(directory.authorities("notice-authority"))
        outside = tuple(r for r in h.recipients if r not in authorities)
        if outside:
            return Decision.refuse("kind.recipients", f"a {h.kind} goes to the notice "
                                   f"authority ({', '.join(sorted(authorities))}), not to "
                                   f"{', '.join(outside)}", header=h, agencies=outside)
    if h.kind == "diffusion":
        if sender_kind != "ncb":
            return Decision.refuse("kind.not-allowed", f"diffusions are sent by NCBs; "
                                   f"{h.sender} is a {sender_kind}", header=h,
                                   agencies=(h.sender,))
        gs = set(directory.authorities("notice-authority"))
        if gs and not gs & set(h.recipients):
            return Decision.refuse("diffusion.no-gs-copy", f"add {sorted(gs)[0]} to the "
                                   "recipients of a diffusion", header=h)
    return None


def _forward_rule(env: Envelope, directory: Directory, prior: PriorLookup) -> Decision | None:
    """Onward dissemination: a message that refers to an earlier one from another source."""
    h = env.header
    if h.ref is None:
        return None
    src = prior(h.ref)
    if src is None or src.sender == h.sender:
        return None  # a reference to something we never routed, or to one's own message
    scale = directory.scale
    if not scale.dominates(h.label, src.label):
        return Decision.refuse("forward.label-downgrade", f"source is {src.label.marking}, "
                               f"this message is {h.label.marking}", header=h)
    if not src.handling.codes <= h.handling.codes:
        return Decision.refuse("forward.handling-dropped", f"source carries {src.handling}; "
                               f"this message carries {h.handling}", header=h)
    beyond = tuple(r for r in h.recipients if r not in src.recipients and r != src.sender)
    if not beyond:
        return None  # among the source's own audience: not a dissemination
    if src.tlp is TLP.RED:
        return Decision.refuse("tlp.red-forward", f"TLP:RED from {src.sender} may not reach "
                               f"{', '.join(beyond)}", header=h, agencies=beyond)
    if Handling.H2 in src.handling:
        if h.release is None:
            return Decision.refuse("handling.h2-release", f"{src.sender} marked the source H2; "
                                   f"ask {src.sender} for a release covering "
                                   f"{', '.join(beyond)}", header=h, agencies=beyond)
        try:
            rel = Release.load(h.release, directory)
        except I24Error as exc:
            return Decision.refuse("handling.release-invalid", exc.message, header=h)
        if rel.msg_id != src.id or rel.source != src.sender or not set(beyond) <= set(
                rel.allowed):
            return Decision.refuse("handling.release-invalid", "the release is for another "
                                   "message or does not name every new recipient",
                                   header=h, agencies=beyond)
    return None


def reader_clearance(directory: Directory, reader: str, label: Label) -> str | None:
    """The clearance check made before a message's body is shown to ``reader`` (a node's
    re-check on delivery, docs/protocol.md 8.5; ``i24net envelope open``): the reason code
    ``clearance.recipient`` when ``reader``'s clearance in ``directory`` does not dominate
    ``label`` (or ``reader`` is not listed), else None. ``decide`` makes the same check for
    every recipient (check 18)."""
    rec = directory.agencies.get(reader)
    if rec is None or not directory.scale.dominates(rec.clearance, label):
        return "clearance.recipient"
    return None


def reason_table() -> list[tuple[str, str]]:
    return sorted(REASONS.items())


def complete_addressing(kind: str, addressing: list[str], sender: str,
                        directory: Directory) -> list[str]:
    """The addressing a sender's tools should sign: a diffusion gains its GS copy."""
    if kind != "diffusion":
        return addressing
    gs = directory.authorities("notice-authority")
    if not gs or gs[0] == sender:
        return addressing
    if gs[0] in directory.expand(addressing, sender):
        return addressing
    return [*addressing, gs[0]]
