"""What happened during a run, in one shape for both runners.

Theory of operation: the virtual runner reads the simulator's history, the live runner
reads the agencies' SQLite stores; both reduce what they saw to ``Observations`` in
*exercise seconds* (0 = the start of the run). Expectations (``expect.py``) and the
report (``result.py``, ``html.py``) read only this, so a drill is judged the same way
whichever way it ran, and neither runner knows how expectations are worded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# origins of a message
INJECT, FLOOD, ATTACKER, LIFECYCLE = "inject", "flood", "attacker", "lifecycle"


@dataclass(slots=True)
class MessageObs:
    """One message some agency (or the attacker) submitted."""

    id: str  # message id, hex
    sender: str
    kind: str
    label: str
    precedence: str  # FLASH | IMMEDIATE | PRIORITY | ROUTINE
    recipients: tuple[str, ...]
    sent: float  # when it was submitted
    name: str = ""  # the exercise name of the inject that sent it, "" for lifecycle traffic
    origin: str = INJECT
    state: str = "queued"  # queued | accepted | delivered | refused | expired
    reason: str = ""  # the router's refusal reason
    decided: float | None = None  # when the router accepted or refused it
    delivered: dict[str, float] = field(default_factory=dict)  # recipient -> inbox time
    refused_by: dict[str, str] = field(default_factory=dict)  # recipient -> its reason
    purged: dict[str, float] = field(default_factory=dict)  # recipient -> body erased at
    ref: str = ""  # the message it refers to, hex

    @property
    def accepted(self) -> bool:
        return self.state != "refused" and self.decided is not None

    def latency(self, recipient: str) -> float | None:
        t = self.delivered.get(recipient)
        return None if t is None else t - self.sent


@dataclass(slots=True)
class NoticeObs:
    """A notice request named by the exercise, and what became of it."""

    name: str
    requester: str
    requested: float
    request_id: str = ""
    decision: str = ""  # published | refused | under-review | "" (no answer yet)
    reason: str = ""
    decided: float | None = None
    number: str = ""
    notice_id: str = ""
    audience: tuple[str, ...] = ()  # the published notice's recipients
    holders: dict[str, float] = field(default_factory=dict)  # agency -> notice received
    cancel_at: float | None = None  # when the cancel inject fired
    cancelled: dict[str, float] = field(default_factory=dict)  # holder -> withdrawn


@dataclass(frozen=True, slots=True)
class DropObs:
    t: float
    agency: str  # who dropped it ("router" or an agency)
    reason: str
    msg_id: str = ""


@dataclass(frozen=True, slots=True)
class InjectObs:
    """An inject as it was played: when, and whether the runner could play it."""

    t: float
    index: int
    action: str
    text: str
    ok: bool = True
    detail: str = ""


# A run settles before it is judged: past its planned end it waits, at most this long, for
# every message it submitted to be final (all receipts in, refused, or expired).
SETTLE_S = 120.0


@dataclass(slots=True)
class Observations:
    duration: float
    agencies: tuple[str, ...] = ()
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "@EU" -> members
    messages: list[MessageObs] = field(default_factory=list)
    notices: dict[str, NoticeObs] = field(default_factory=dict)
    drops: list[DropObs] = field(default_factory=list)
    injects: list[InjectObs] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    flowcheck_ran: bool = False
    compromised: dict[str, float] = field(default_factory=dict)  # agency -> key stolen at
    revoked: dict[str, float] = field(default_factory=dict)  # agency -> revoked at
    # messages the exercise planned but the runner could not submit: (name, planned t, why)
    unsent: list[tuple[str, float, str]] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # ids not final when the run ended
    # agency -> (ids its stolen keys open, {id: why not} for the rest), at the first theft
    exposure: dict[str, tuple[frozenset[str], dict[str, str]]] = field(default_factory=dict)

    def named(self, name: str) -> list[MessageObs]:
        return [msg for msg in self.messages if msg.name == name]

    def expand(self, targets: tuple[str, ...], within: tuple[str, ...]) -> tuple[str, ...]:
        """``targets`` (agencies and @groups) as agencies, kept to ``within``."""
        out: list[str] = []
        for t in targets:
            members = self.groups.get(t, ()) if t.startswith("@") else (t,)
            out += [a for a in members if a in within]
        return tuple(dict.fromkeys(out))
