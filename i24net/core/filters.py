"""Matching a message's clear header against a gateway rule: one definition for the
simulator's link filters (``i24net.sim.network``) and the live fault proxy's gateway filters
(``i24net.ops.faultproxy``), so a drill's filter means the same in both modes
(docs/exercises.md, section 5).

A rule's criteria are ``None`` (anything) or a set the header's value must be in.
``recipients`` matches, going ``up`` (an envelope on its way to the router), when any
signed recipient is in it; going ``down`` (a delivery), when the delivery's own recipient
(``dest``) is. ``addressing`` matches an item the sender wrote (``@EU``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from i24net.core.envelope import Header

DIRECTIONS = ("up", "down", "both")


@dataclass(frozen=True, slots=True)
class HeaderView:
    """What a filter may see of a message: its clear header fields."""

    msg_id: str
    sender: str
    recipients: tuple[str, ...]
    addressing: tuple[str, ...]
    label: str
    caveats: frozenset[str]
    precedence: str
    kind: str

    @classmethod
    def of(cls, h: Header) -> HeaderView:
        return cls(h.id_hex, h.sender, tuple(h.recipients), tuple(h.addressing),
                   h.label.marking, frozenset(h.label.caveats), h.precedence.name, h.kind)


class Criteria(Protocol):
    @property
    def direction(self) -> str: ...
    @property
    def precedences(self) -> frozenset[str] | None: ...
    @property
    def labels(self) -> frozenset[str] | None: ...
    @property
    def caveat(self) -> str | None: ...
    @property
    def kinds(self) -> frozenset[str] | None: ...
    @property
    def senders(self) -> frozenset[str] | None: ...
    @property
    def recipients(self) -> frozenset[str] | None: ...
    @property
    def addressing(self) -> frozenset[str] | None: ...


def matches(rule: Criteria, h: HeaderView, direction: str, dest: str | None) -> bool:
    """Whether a message with header ``h``, crossing a link ``direction`` (``up`` or
    ``down``; ``dest``: the recipient of a delivery), meets every criterion of ``rule``."""
    if rule.direction != "both" and rule.direction != direction:
        return False
    if rule.precedences is not None and h.precedence not in rule.precedences:
        return False
    if rule.labels is not None and h.label not in rule.labels:
        return False
    if rule.caveat is not None and rule.caveat not in h.caveats:
        return False
    if rule.kinds is not None and h.kind not in rule.kinds:
        return False
    if rule.senders is not None and h.sender not in rule.senders:
        return False
    if rule.recipients is not None:
        if dest is not None:
            if dest not in rule.recipients:
                return False
        elif not any(r in rule.recipients for r in h.recipients):
            return False
    return not (rule.addressing is not None
                and not any(a in rule.addressing for a in h.addressing))
