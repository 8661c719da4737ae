"""What the node and router machines report: one frozen dataclass per event.

Theory of operation: every input of a machine (``handle``, ``submit``, ``handle_timer``, a
notice desk action) returns the events it caused, and a driver - a daemon, the simulator,
the CLI - acts on them by type::

    match ev:
        case Received(): ...
        case ReceiptIn(): ...

Each side has a base class with the fields every event of that side carries (``NodeEvent``,
``RouterEvent``); a subclass names one event and adds what only it has (a delivery's
latency, a drop's digest, a summary's counts). Drivers that want every event of a family
match the family's base: ``ItemChanged`` (an item this node holds was cancelled, deleted or
updated).

``kind`` is a class attribute and has exactly one use: the name written to audit logs and
log lines. It is the name the audit chain has always recorded (``audit verify``, the audit
viewers and the tests read it), so it never changes; nothing dispatches on it. Two events of
the same side never share a name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

# -- node events --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """Something a node did or saw, worth logging, counting and auditing.

    ``msg_id`` is the message concerned (hex, empty when none), ``peer`` the other agency
    (the sender of a delivery, the recipient of a receipt...), ``reason`` a reason code,
    ``detail`` free text for people, ``precedence`` the message's (3, ROUTINE, when none).
    """

    kind: ClassVar[str]
    msg_id: str = ""
    peer: str = ""
    reason: str = ""
    detail: str = ""
    precedence: int = 3

    def audit_details(self) -> AuditDetails:
        """The details of this event's audit entry: the other agency, as for every node
        event (subclasses add their own)."""
        return {"peer": self.peer}


@dataclass(frozen=True, slots=True)
class Submitted(NodeEvent):
    """A message was sealed and put in the outbox (``peer``: its first recipients,
    ``detail``: its subject). Durable before this is returned."""

    kind: ClassVar[str] = "submit"


@dataclass(frozen=True, slots=True)
class SubmissionAccepted(NodeEvent):
    """The router's report: it accepted a message this node sent."""

    kind: ClassVar[str] = "accepted"


@dataclass(frozen=True, slots=True)
class SubmissionRefused(NodeEvent):
    """The router's report: it refused a message this node sent (``reason``); final."""

    kind: ClassVar[str] = "refused"


@dataclass(frozen=True, slots=True)
class SubmissionDeferred(NodeEvent):
    """The router's report: "not now" (a transient reason such as ``rate.limited``); the
    message keeps its retry schedule."""

    kind: ClassVar[str] = "deferred"


@dataclass(frozen=True, slots=True)
class ReceiptIn(NodeEvent):
    """A recipient's receipt for a message this node sent: ``peer`` is the recipient,
    ``detail`` the receipt's status (delivered, read, refused), ``reason`` its reason."""

    kind: ClassVar[str] = "receipt"


@dataclass(frozen=True, slots=True)
class Delivered(NodeEvent):
    """Every recipient of a message this node sent has receipted it; final."""

    kind: ClassVar[str] = "delivered"


@dataclass(frozen=True, slots=True)
class Received(NodeEvent):
    """A delivery passed every check and is in the inbox (``peer``: its sender, ``detail``:
    its subject, ``latency_ms``: from its creation to now, by the two clocks)."""

    kind: ClassVar[str] = "received"
    latency_ms: int = -1


@dataclass(frozen=True, slots=True)
class DuplicateDelivery(NodeEvent):
    """A delivery of a message already in the inbox: not delivered again, its receipt sent
    again."""

    kind: ClassVar[str] = "duplicate"


@dataclass(frozen=True, slots=True)
class RefusedIn(NodeEvent):
    """This node refused a signed delivery (``reason``) and told the sender with a signed
    refusal receipt."""

    kind: ClassVar[str] = "refused-in"


@dataclass(frozen=True, slots=True)
class Dropped(NodeEvent):
    """A frame on the inbox (or a directory) that failed its checks, dropped unanswered."""

    kind: ClassVar[str] = "drop"


@dataclass(frozen=True, slots=True)
class Retried(NodeEvent):
    """An outbox entry was sent again (``detail``: which attempt). Logged, not audited."""

    kind: ClassVar[str] = "retry"


@dataclass(frozen=True, slots=True)
class Expired(NodeEvent):
    """An outbox entry reached its expiry before every receipt arrived; final."""

    kind: ClassVar[str] = "expired"


@dataclass(frozen=True, slots=True)
class SequenceGap(NodeEvent):
    """A gap in a router's delivery stream: the missing numbers were asked for again, or
    (``reason`` ``gap.abandoned``) let go after ``MAX_GAP_REQUESTS`` requests."""

    kind: ClassVar[str] = "gap"


@dataclass(frozen=True, slots=True)
class KeyChanged(NodeEvent):
    """The node's keys changed: a new sending key, erased prekeys, keys loaded again."""

    kind: ClassVar[str] = "key"


@dataclass(frozen=True, slots=True)
class Violation(NodeEvent):
    """A compliance violation the notice authority found (e.g. ``copy.unreadable``)."""

    kind: ClassVar[str] = "violation"


@dataclass(frozen=True, slots=True)
class DirectoryInstalled(NodeEvent):
    """The node's shell installed a newer signed directory (``detail``: its version)."""

    kind: ClassVar[str] = "directory"


@dataclass(frozen=True, slots=True)
class ItemChanged(NodeEvent):
    """A withdrawal event was applied to an item this node holds (``msg_id``: the item,
    ``peer``: who withdrew it). ``state`` is the inbox state the item now has."""

    state: ClassVar[str]


@dataclass(frozen=True, slots=True)
class ItemCancelled(ItemChanged):
    """A notice this node holds was cancelled (``notice-cancel``)."""

    kind: ClassVar[str] = "cancelled"
    state: ClassVar[str] = "cancelled"


@dataclass(frozen=True, slots=True)
class ItemDeleted(ItemChanged):
    """A diffusion this node holds must be deleted (``deletion-order``)."""

    kind: ClassVar[str] = "deleted"
    state: ClassVar[str] = "deleted"


@dataclass(frozen=True, slots=True)
class Purged(NodeEvent):
    """The body of an item this node held was erased at the end of its retention period
    (``reason``: ``retention.expired``; ``peer``: its sender, ``detail``: its kind and how
    long it was kept). Only the item's id, sender, kind and dates remain, for de-duplication
    and the data-protection record."""

    kind: ClassVar[str] = "purged"

    def audit_details(self) -> AuditDetails:
        # the data-protection record: what went, and how long it was kept
        return {**NodeEvent.audit_details(self), "detail": self.detail}


@dataclass(frozen=True, slots=True)
class ItemUpdated(ItemChanged):
    """A notice this node holds was updated (``notice-update``); it stays in force."""

    kind: ClassVar[str] = "updated"
    state: ClassVar[str] = "updated"


# The notice desk (the notice authority's node only; ``i24net.core.lifecycle``).


@dataclass(frozen=True, slots=True)
class NoticePublished(NodeEvent):
    """A notice was numbered and sent (``msg_id``: the notice message, ``peer``: the
    requester, ``detail``: its number)."""

    kind: ClassVar[str] = "notice-published"


@dataclass(frozen=True, slots=True)
class NoticeRefused(NodeEvent):
    """A notice request was refused (``msg_id``: the request, ``reason``: why)."""

    kind: ClassVar[str] = "notice-refused"


@dataclass(frozen=True, slots=True)
class NoticeUnderReview(NodeEvent):
    """A clean notice request waits for the task force (no automatic review)."""

    kind: ClassVar[str] = "notice-review"


@dataclass(frozen=True, slots=True)
class NoticeDuplicate(NodeEvent):
    """A notice request already in the register arrived again (a restored inbox)."""

    kind: ClassVar[str] = "notice-duplicate"


@dataclass(frozen=True, slots=True)
class NoticeCancelled(NodeEvent):
    """A notice was cancelled, or a request withdrawn (``peer``: by whom, ``detail``: which
    and how many holders were told)."""

    kind: ClassVar[str] = "notice-cancelled"


@dataclass(frozen=True, slots=True)
class NoticeCancelRefused(NodeEvent):
    """A cancellation request was refused (``reason``); its sender was told."""

    kind: ClassVar[str] = "notice-cancel-refused"


@dataclass(frozen=True, slots=True)
class DeletionOrdered(NodeEvent):
    """The notice authority ordered a non-compliant diffusion deleted (``msg_id``: the
    diffusion, ``peer``: its sender)."""

    kind: ClassVar[str] = "deletion-ordered"


@dataclass(frozen=True, slots=True)
class DeskError(NodeEvent):
    """The notice desk could not act on a delivered item (its store busy or damaged); the
    item stays in the inbox."""

    kind: ClassVar[str] = "desk-error"


# -- router events ------------------------------------------------------------------------

AuditDetails = dict[str, str | int | list[str | int]]


@dataclass(frozen=True, slots=True)
class RouterEvent:
    """Something the router did or saw, worth logging, counting and auditing.

    ``msg_id`` is the message concerned (hex, empty when none), ``sender`` its sender (or
    the agency whose topic a frame came on), ``reason`` a reason code, ``recipients`` the
    agencies concerned, ``detail`` free text for people, ``precedence`` the message's.
    """

    kind: ClassVar[str]
    msg_id: str = ""
    sender: str = ""
    reason: str = ""
    recipients: tuple[str, ...] = ()
    detail: str = ""
    precedence: int = 3

    def audit_details(self) -> AuditDetails:
        """The details of this event's audit entry: sender, recipients (the first 32) and
        their number, as for every event (subclasses add their own)."""
        return {"from": self.sender, "to": list(self.recipients[:32]),
                "n": len(self.recipients)}


@dataclass(frozen=True, slots=True)
class Accepted(RouterEvent):
    """An envelope was accepted: delivered to ``recipients``, the sender told."""

    kind: ClassVar[str] = "accept"


@dataclass(frozen=True, slots=True)
class Refused(RouterEvent):
    """An envelope was refused (``reason``; ``recipients``: the agencies at fault); the
    sender told with a signed report."""

    kind: ClassVar[str] = "refuse"


@dataclass(frozen=True, slots=True)
class DuplicateSubmission(RouterEvent):
    """A retry of a message already accepted: re-delivered to ``recipients`` (those
    without a receipt), the receipts already held forwarded again."""

    kind: ClassVar[str] = "duplicate"


@dataclass(frozen=True, slots=True)
class ReceiptForwarded(RouterEvent):
    """A recipient's receipt was verified and forwarded to the message's sender (``reason``:
    the receipt's status, ``recipients``: the recipient)."""

    kind: ClassVar[str] = "receipt"


@dataclass(frozen=True, slots=True)
class Resent(RouterEvent):
    """A gap request was answered from the delivery log (``sender``: who asked)."""

    kind: ClassVar[str] = "resend"


@dataclass(frozen=True, slots=True)
class Forwarded(RouterEvent):
    """A receipt or gap request for another router shard was passed on to it."""

    kind: ClassVar[str] = "forward"


@dataclass(frozen=True, slots=True)
class FrameDropped(RouterEvent):
    """A frame dropped (bytes that do not decode, a topic not served here, a receipt or
    gap request that does not verify, a bad directory): ``digest`` is the SHA-256 (hex) of
    the bytes, ``source`` what the audit bound counts it under."""

    kind: ClassVar[str] = "drop"
    digest: str = ""
    source: str = ""

    @property
    def count(self) -> int:
        """The frames this event stands for: one (a ``DropSummary`` stands for many)."""
        return 1

    def audit_details(self) -> AuditDetails:
        out = RouterEvent.audit_details(self)
        if self.digest:
            out["digest"] = self.digest
        if self.source:
            out["source"] = self.source
        return out


@dataclass(frozen=True, slots=True)
class DropSummary(RouterEvent):
    """The drops from one ``source`` in one audit-bound window that were not recorded one
    by one: ``count`` of them, per reason in ``reasons`` (sorted), first and last at
    ``since_ms`` and ``until_ms``."""

    kind: ClassVar[str] = "drop-summary"
    source: str = ""
    count: int = 0
    reasons: tuple[tuple[str, int], ...] = ()
    since_ms: int = 0
    until_ms: int = 0

    def audit_details(self) -> AuditDetails:
        out = RouterEvent.audit_details(self)
        if self.source:
            out["source"] = self.source
        out["count"] = self.count
        out["reasons"] = [r for r, _ in self.reasons[:64]]
        out["counts"] = [n for _, n in self.reasons[:64]]
        out["since_ms"], out["until_ms"] = self.since_ms, self.until_ms
        return out


@dataclass(frozen=True, slots=True)
class DirectoryAdopted(RouterEvent):
    """The router's shell adopted a newer signed directory (``detail``: old -> new)."""

    kind: ClassVar[str] = "directory"
