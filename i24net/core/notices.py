"""Notices: the INTERPOL notice lifecycle, held as data.

Theory of operation. A notice starts as a *request* from an NCB (or another authorised body):
"request being processed". The General Secretariat's task force reviews it against Article 3
of INTERPOL's Constitution (no intervention in matters of a political, military, religious or
racial character) and against the rules of its colour, then either publishes it (it gets a
number such as ``A-123/11-2026`` and is sent to the holders) or refuses it with a reason
code. A published notice can be updated, cancelled (withdrawn from every holder), renewed,
and expires five years after publication unless renewed.

As in h11's ``_state.py`` the legal moves are data, not code: ``TRANSITIONS`` maps
state -> event -> new state, and ``apply`` refuses anything not in it with a ``StateError``
that names the event, the notice and the state. ``apply`` is a pure function from one
``Notice`` value to the next; the few guards that need the notice's content (Article 3 on
approval and on update, "not yet due" on expiry) live next to it, so no caller can publish a
flagged request by skipping the registry.

``NoticeRegistry`` is the GS's register around that machine: it numbers published notices
(one sequence per calendar year, UTC), admits only the notice authority to review, update,
renew and cancel, and remembers which agencies hold each notice, so a cancellation reaches
every holder; ``snapshot`` and ``restore`` turn it into values and back, so a store outside
the core can keep it across restarts. ``NoticeHolding`` is the other side: a receiving
NCB's view of one notice, with its own total transition table, so that duplicated,
re-ordered or late notice messages are applied idempotently (a cancellation that
overtakes the publication is remembered, and the late publication is cancelled on arrival).

Sans-IO: no clock, no randomness; every time is an ``int`` of milliseconds since the epoch
passed in by the caller. ``datetime`` is used only to turn such a number into a month and year.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from i24net.core.errors import ConfigError, StateError, WireFormatError

# Five years of retention, as the brief defines it (365-day years, no leap days): simple to
# state, and the same figure on the GS and on every node.
RETENTION_MS = 5 * 365 * 24 * 3600 * 1000

MAX_FIELD = 256  # a name, a category, a warrant reference: never a document
MAX_REASON = 64  # a reason code such as "article3.political"
MAX_ACTOR = 64
_REQUEST_ID = re.compile(r"^(?:[0-9a-f]{2}){1,32}$")  # lower-case hex, 1-32 bytes
_REASON = re.compile(r"^[a-z0-9][a-z0-9.+_-]*$")
NOTICE_NUMBER = re.compile(r"^A-([1-9][0-9]*)/(0[1-9]|1[0-2])-([0-9]{4})$")


# -- colours ------------------------------------------------------------------------------


class NoticeColour(enum.Enum):
    """The notice colours; ``purpose`` says what each one asks of the police who hold it."""

    RED = "RED"
    YELLOW = "YELLOW"
    BLUE = "BLUE"
    BLACK = "BLACK"
    GREEN = "GREEN"
    ORANGE = "ORANGE"
    PURPLE = "PURPLE"
    SILVER = "SILVER"
    UN_SPECIAL = "UN-SPECIAL"

    @property
    def purpose(self) -> str:
        return _PURPOSES[self]

    @classmethod
    def parse(cls, text: str) -> NoticeColour:
        """Case-insensitive; ``UN-SPECIAL`` may also be written ``UN_SPECIAL``."""
        t = text.strip().upper().replace("_", "-")
        for member in cls:
            if member.value == t:
                return member
        raise ConfigError(
            f"unknown notice colour {text!r}; use one of "
            + ", ".join(m.value for m in cls),
            reason="notice.colour",
        )


_PURPOSES = {
    NoticeColour.RED: "seek the location and arrest of a wanted person with a view to "
    "extradition, surrender or similar lawful action",
    NoticeColour.YELLOW: "help locate a missing person, often a minor, or identify a person "
    "unable to identify themselves",
    NoticeColour.BLUE: "collect additional information about a person's identity, location "
    "or activities in relation to a crime",
    NoticeColour.BLACK: "seek information on unidentified bodies",
    NoticeColour.GREEN: "warn about a person's criminal activities where that person is "
    "considered a possible threat to public safety",
    NoticeColour.ORANGE: "warn of an event, a person, an object or a process representing a "
    "serious and imminent threat to public safety",
    NoticeColour.PURPLE: "seek or provide information on modi operandi, objects, devices and "
    "concealment methods used by criminals",
    NoticeColour.SILVER: "seek information on assets linked to a person's criminal "
    "activities, such as fraud, corruption or drug trafficking",
    NoticeColour.UN_SPECIAL: "inform police that an individual or entity is subject to UN "
    "Security Council sanctions",
}


# -- states, events and the transition table ---------------------------------------------


class NoticeState(enum.Enum):
    REQUESTED = "requested"  # "request being processed": drafted, not yet with the task force
    UNDER_REVIEW = "under-review"  # with the GS task force (Article 3 and colour rules)
    PUBLISHED = "published"  # in force, numbered, sent to the holders
    REFUSED = "refused"  # the review said no; ``reason`` says why
    UPDATED = "updated"  # published and since updated; still in force
    CANCELLED = "cancelled"  # withdrawn: before review by its requester, or after by the GS
    EXPIRED = "expired"  # five years passed without renewal


class NoticeEvent(enum.Enum):
    SUBMIT_FOR_REVIEW = "submit-for-review"
    APPROVE = "approve"
    REFUSE = "refuse"
    UPDATE = "update"
    CANCEL = "cancel"
    EXPIRE = "expire"
    RENEW = "renew"


_S, _E = NoticeState, NoticeEvent

TRANSITIONS: dict[NoticeState, dict[NoticeEvent, NoticeState]] = {
    _S.REQUESTED: {
        _E.SUBMIT_FOR_REVIEW: _S.UNDER_REVIEW,
        _E.CANCEL: _S.CANCELLED,  # withdrawn by its requester before review
    },
    _S.UNDER_REVIEW: {
        _E.APPROVE: _S.PUBLISHED,
        _E.REFUSE: _S.REFUSED,
        _E.CANCEL: _S.CANCELLED,  # withdrawn by its requester during review
    },
    _S.PUBLISHED: {
        _E.UPDATE: _S.UPDATED,
        _E.CANCEL: _S.CANCELLED,
        _E.EXPIRE: _S.EXPIRED,
        _E.RENEW: _S.PUBLISHED,  # same state, five more years
    },
    _S.UPDATED: {
        _E.UPDATE: _S.UPDATED,
        _E.CANCEL: _S.CANCELLED,
        _E.EXPIRE: _S.EXPIRED,
        _E.RENEW: _S.UPDATED,
    },
    _S.REFUSED: {},
    _S.CANCELLED: {},
    _S.EXPIRED: {},
}

TERMINAL_STATES = frozenset(s for s, moves in TRANSITIONS.items() if not moves)
IN_FORCE_STATES = frozenset({NoticeState.PUBLISHED, NoticeState.UPDATED})


# -- Article 3 and the colour rules -------------------------------------------------------

# The declared offence category of a request: a small closed vocabulary, so the screen is a
# table lookup and not a guess over free text. The last block is what Article 3 excludes.
OFFENCE_CATEGORIES: Mapping[str, str] = {
    "homicide": "murder, manslaughter and other unlawful killing",
    "assault": "serious violence against the person, kidnapping, hostage-taking",
    "sexual-offences": "rape, sexual assault, sexual exploitation",
    "crimes-against-children": "child sexual abuse material, child abduction",
    "trafficking-in-persons": "recruitment or transport of people for exploitation",
    "migrant-smuggling": "facilitating illegal border crossing for profit",
    "drug-trafficking": "production and trafficking of controlled drugs",
    "firearms-trafficking": "illicit manufacture and trafficking of firearms",
    "terrorism": "terrorist offences (not excluded by Article 3 as such)",
    "organised-crime": "participation in a criminal organisation",
    "fraud": "fraud, forgery, counterfeiting",
    "corruption": "bribery, embezzlement of public funds",
    "money-laundering": "laundering the proceeds of crime",
    "cybercrime": "intrusion, ransomware, online fraud",
    "theft": "theft, robbery, burglary, handling stolen goods",
    "cultural-property": "theft and trafficking of cultural property",
    "environmental-crime": "wildlife, timber, pollution and fisheries crime",
    "international-crimes": "genocide, crimes against humanity, war crimes",
    # Of a political, military, religious or racial character: Article 3 forbids them.
    "political": "an offence of a predominantly political character",
    "treason": "offences against the security of the State (political in principle)",
    "espionage": "espionage (political in principle)",
    "military": "an offence of a purely military character",
    "desertion": "desertion, insubordination and other breaches of military discipline",
    "religious": "an offence of a religious character",
    "blasphemy": "blasphemy, apostasy, proselytism",
    "racial": "an offence defined by membership of an ethnic or racial group",
}

# Category -> refusal reason. Anything here can be refused, never published.
ARTICLE3_REASONS: Mapping[str, str] = {
    "political": "article3.political",
    "treason": "article3.political",
    "espionage": "article3.political",
    "military": "article3.military",
    "desertion": "article3.military",
    "religious": "article3.religious",
    "blasphemy": "article3.religious",
    "racial": "article3.racial",
}

REASON_UNKNOWN_CATEGORY = "notice.unknown-category"
REASON_INCOMPLETE = "notice.incomplete"
REASON_REFUSED = "notice.refused"

REQUEST_FIELDS = ("subject", "offence", "warrant")

# Per colour: (field, what a person must supply). "subject" is the notice's subject in that
# colour's sense: the wanted person, the missing person, a modus operandi, a threat...
REQUIREMENTS: Mapping[NoticeColour, tuple[tuple[str, str], ...]] = {
    c: (("subject", "a subject"),) for c in NoticeColour
} | {
    NoticeColour.RED: (
        ("subject", "the wanted person's name"),
        ("offence", "an offence category"),
        ("warrant", "an arrest-warrant (or judicial decision) reference"),
    ),
    NoticeColour.YELLOW: (("subject", "the missing person's name"),),
}


def normalise_category(category: str) -> str:
    return category.strip().lower()


def article3_screen(category: str) -> str | None:
    """The refusal reason for a declared offence category, or None if it may proceed.

    ``article3.political`` / ``.military`` / ``.religious`` / ``.racial`` for an excluded
    category; ``notice.unknown-category`` for anything outside ``OFFENCE_CATEGORIES``.
    """
    c = normalise_category(category)
    if c not in OFFENCE_CATEGORIES:
        return REASON_UNKNOWN_CATEGORY
    return ARTICLE3_REASONS.get(c)


def validate_request(colour: NoticeColour, fields: Mapping[str, str]) -> list[str]:
    """What the request still lacks for its colour (empty when complete)."""
    return [
        f"a {colour.value} notice needs {what} (field {key!r})"
        for key, what in REQUIREMENTS[colour]
        if not str(fields.get(key, "")).strip()
    ]


def screen_request(colour: NoticeColour, fields: Mapping[str, str]) -> str | None:
    """The first reason the request must be refused, or None: completeness, then Article 3.

    A declared offence category is screened whatever the colour; a request without one
    (allowed outside RED) has nothing for the Article 3 table to match.
    """
    if validate_request(colour, fields):
        return REASON_INCOMPLETE
    offence = str(fields.get("offence", "")).strip()
    return article3_screen(offence) if offence else None


# -- the notice value ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One event in a notice's life: when, what, and which agency did it."""

    at_ms: int
    event: NoticeEvent
    actor: str


def _schema(message: str) -> WireFormatError:
    return WireFormatError(f"notice: {message}", reason="notice.schema")


def _check_text(name: str, value: object, max_len: int, *, allow_empty: bool) -> None:
    if not isinstance(value, str) or len(value) > max_len or (not value and not allow_empty):
        raise _schema(f"{name} must be text of {0 if allow_empty else 1}-{max_len} characters")


def _check_ms(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
        raise _schema(f"{name} must be a time in milliseconds since the epoch")


@dataclass(frozen=True, slots=True)
class Notice:
    """A notice (or request for one) at one point of its life. Never mutated: ``apply``
    returns the next value.

    ``number`` is set on publication; ``expires_ms`` is publication (or last renewal) plus
    ``RETENTION_MS``; ``updates`` counts updates (it is the version holders compare);
    ``reason`` holds the refusal or cancellation reason code.
    """

    request_id: str  # lower-case hex, normally the id of the request message
    requester: str  # the requesting agency, e.g. NCB-FR
    colour: NoticeColour
    subject: str = ""
    offence: str = ""  # a key of OFFENCE_CATEGORIES (may be empty outside RED)
    warrant: str = ""  # arrest-warrant reference (RED)
    state: NoticeState = NoticeState.REQUESTED
    number: str | None = None
    created_ms: int = 0
    published_ms: int | None = None
    expires_ms: int | None = None
    updates: int = 0
    reason: str = ""
    history: tuple[HistoryEntry, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not _REQUEST_ID.match(self.request_id):
            raise _schema(f"request id {self.request_id!r} must be lower-case hex, 1-32 bytes")
        _check_text("requester", self.requester, MAX_ACTOR, allow_empty=False)
        if not isinstance(self.colour, NoticeColour) or not isinstance(self.state, NoticeState):
            raise _schema("colour and state must be NoticeColour and NoticeState members")
        for name in REQUEST_FIELDS:
            _check_text(name, getattr(self, name), MAX_FIELD, allow_empty=True)
        _check_text("reason", self.reason, MAX_REASON, allow_empty=True)
        _check_ms("created_ms", self.created_ms)
        _check_ms("published_ms", self.published_ms, optional=True)
        _check_ms("expires_ms", self.expires_ms, optional=True)
        _check_ms("updates", self.updates)  # a count, but the same non-negative int shape
        if self.number is not None and not NOTICE_NUMBER.match(self.number):
            raise _schema(f"notice number {self.number!r} is not of the form A-<n>/<MM>-<YYYY>")
        published = (self.number, self.published_ms, self.expires_ms)
        ever_published = self.state in IN_FORCE_STATES or self.state is NoticeState.EXPIRED
        if ever_published and None in published:
            raise StateError(f"a {self.state.value} notice needs a number, a publication and "
                             "an expiry time", reason="notice.invalid-state")
        never_published = self.state in (NoticeState.REQUESTED, NoticeState.UNDER_REVIEW,
                                         NoticeState.REFUSED)
        if never_published and published != (None, None, None):
            raise StateError(f"a {self.state.value} notice cannot have a number yet",
                             reason="notice.invalid-state")

    # -- views ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """How messages name it: the number once published, else the request id."""
        return self.number if self.number else f"request {self.request_id}"

    @property
    def in_force(self) -> bool:
        return self.state in IN_FORCE_STATES

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def fields(self) -> dict[str, str]:
        return {"subject": self.subject, "offence": self.offence, "warrant": self.warrant}

    @property
    def problems(self) -> list[str]:
        return validate_request(self.colour, self.fields)

    def screen(self) -> str | None:
        """The reason this notice may not be published as it stands, or None."""
        return screen_request(self.colour, self.fields)

    def summary(self) -> dict[str, object]:
        """A JSON-friendly view, for the CLI and reports."""
        return {
            "request_id": self.request_id, "requester": self.requester,
            "colour": self.colour.value, "state": self.state.value, "number": self.number,
            "subject": self.subject, "offence": self.offence, "warrant": self.warrant,
            "created_ms": self.created_ms, "published_ms": self.published_ms,
            "expires_ms": self.expires_ms, "updates": self.updates, "reason": self.reason,
            "history": [[h.at_ms, h.event.value, h.actor] for h in self.history],
        }


def _clean_fields(fields: Mapping[str, str]) -> dict[str, str]:
    unknown = set(fields) - set(REQUEST_FIELDS)
    if unknown:
        raise _schema(f"unknown field(s) {', '.join(sorted(map(repr, unknown)))}; "
                      f"a request has {', '.join(REQUEST_FIELDS)}")
    out = {}
    for key in REQUEST_FIELDS:
        value = fields.get(key, "")
        if not isinstance(value, str):
            raise _schema(f"field {key!r} must be text")
        out[key] = value.strip()
    out["offence"] = normalise_category(out["offence"])
    return out


def request(*, request_id: str, requester: str, colour: NoticeColour,
            fields: Mapping[str, str], now_ms: int) -> Notice:
    """A new request, as drafted. An incomplete or Article 3 request is still recorded (so
    it can be refused with a reason); only malformed fields raise ``WireFormatError``."""
    f = _clean_fields(fields)
    return Notice(request_id=request_id, requester=requester, colour=colour,
                  subject=f["subject"], offence=f["offence"], warrant=f["warrant"],
                  created_ms=now_ms)


def illegal(notice: Notice, event: NoticeEvent) -> StateError:
    """The error for an event the table does not allow (h11's LocalProtocolError shape)."""
    return StateError(
        f"can't handle event {event.name} for notice {notice.name} when "
        f"state={notice.state.name}",
        reason="notice.illegal-transition", agency=notice.requester,
    )


def _check_reason(reason: str) -> None:
    if reason and (len(reason) > MAX_REASON or not _REASON.match(reason)):
        raise _schema(f"reason {reason!r} must be a code such as 'article3.political'")


def apply(notice: Notice, event: NoticeEvent, *, actor: str, now_ms: int,
          number: str | None = None, reason: str = "",
          changes: Mapping[str, str] | None = None) -> Notice:
    """The notice after ``event``, or ``StateError`` if the table or a guard forbids it.

    ``number`` is required by APPROVE (the registry assigns it); ``reason`` is kept by REFUSE
    and CANCEL; ``changes`` (subject / offence / warrant) is what UPDATE changes. APPROVE and
    UPDATE re-run the Article 3 screen and refuse to produce a flagged notice in force.
    """
    target = TRANSITIONS[notice.state].get(event)
    if target is None:
        raise illegal(notice, event)
    _check_text("actor", actor, MAX_ACTOR, allow_empty=False)
    _check_ms("now_ms", now_ms)
    _check_reason(reason)
    if changes and event is not NoticeEvent.UPDATE:
        raise StateError(f"{event.name} takes no field changes", reason="notice.changes")
    changed: dict[str, Any] = {}  # the fields this event sets, beside state and history
    if event is NoticeEvent.APPROVE:
        flag = notice.screen()
        if flag:
            raise StateError(f"notice {notice.name} cannot be approved: {_explain(notice, flag)}"
                             "; it can only be refused", reason=flag, agency=notice.requester)
        if number is None:
            raise StateError("approving a notice needs the number the registry assigned",
                             reason="notice.number-missing")
        changed = {"number": number, "published_ms": now_ms,
                   "expires_ms": now_ms + RETENTION_MS, "reason": ""}
    elif event is NoticeEvent.REFUSE:
        changed = {"reason": reason or notice.screen() or REASON_REFUSED}
    elif event is NoticeEvent.UPDATE:
        merged = _clean_fields({**notice.fields, **(changes or {})})
        flag = screen_request(notice.colour, merged)
        if flag:
            raise StateError(f"update of notice {notice.name} refused: "
                             f"{_explain(notice, flag, merged)}", reason=flag,
                             agency=notice.requester)
        changed = {"updates": notice.updates + 1, **merged}
    elif event is NoticeEvent.CANCEL:
        changed = {"reason": reason}
    elif event is NoticeEvent.EXPIRE:
        assert notice.expires_ms is not None  # in force implies an expiry (__post_init__)
        if now_ms < notice.expires_ms:
            raise StateError(f"notice {notice.name} is not due to expire before "
                             f"{notice.expires_ms} ms", reason="notice.not-due")
    elif event is NoticeEvent.RENEW:
        changed = {"expires_ms": now_ms + RETENTION_MS}
    return replace(notice, state=target,
                   history=(*notice.history, HistoryEntry(now_ms, event, actor)),
                   **changed)


def _explain(notice: Notice, flag: str, fields: Mapping[str, str] | None = None) -> str:
    f = fields if fields is not None else notice.fields
    if flag == REASON_INCOMPLETE:
        return "; ".join(validate_request(notice.colour, f))
    if flag == REASON_UNKNOWN_CATEGORY:
        return f"offence category {f['offence']!r} is not a known category"
    character = flag.partition(".")[2]
    return (f"offence category {f['offence']!r} is of a {character} character "
            "(Article 3 of INTERPOL's Constitution)")


def explain(notice: Notice, flag: str) -> str:
    """Why ``flag`` (a reason ``Notice.screen`` returned) applies to ``notice``, for people."""
    return _explain(notice, flag)


# -- notice numbers -----------------------------------------------------------------------


def month_year(ms: int) -> tuple[int, int]:
    """Calendar month and year (UTC) of a time in milliseconds since the epoch."""
    d = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return d.month, d.year


def format_number(sequence: int, month: int, year: int) -> str:
    """``A-<n>/<MM>-<YYYY>``: the n-th notice published in that year, and its month."""
    return f"A-{sequence}/{month:02d}-{year:04d}"


def parse_number(number: str) -> tuple[int, int, int]:
    """(sequence, month, year) of a notice number, or ``WireFormatError``."""
    m = NOTICE_NUMBER.match(number)
    if not m:
        raise _schema(f"notice number {number!r} is not of the form A-<n>/<MM>-<YYYY>")
    return int(m[1]), int(m[2]), int(m[3])


# -- the General Secretariat's register ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """Everything a ``NoticeRegistry`` holds, as values: what a store saves and restores.

    ``holders`` maps a request id to the agencies its notice was sent to (absent: none);
    ``sequence`` maps a year to the last notice number used in it.
    """

    authority: str
    notices: tuple[Notice, ...] = ()
    holders: Mapping[str, frozenset[str]] = field(default_factory=dict)
    sequence: Mapping[int, int] = field(default_factory=dict)


class NoticeRegistry:
    """The GS's register of notices: requests, reviews, numbers, holders. Plain Python.

    ``authority`` is the agency holding the role notice-authority; only it may review,
    update, renew or cancel a published notice. A requester may withdraw its own request
    until it is decided.
    """

    __slots__ = ("_by_number", "_holders", "_notices", "_sequence", "authority")

    def __init__(self, authority: str) -> None:
        _check_text("authority", authority, MAX_ACTOR, allow_empty=False)
        self.authority = authority
        self._notices: dict[str, Notice] = {}
        self._holders: dict[str, frozenset[str]] = {}
        self._by_number: dict[str, str] = {}
        self._sequence: dict[int, int] = {}  # year -> last sequence number used

    # -- persistence ----------------------------------------------------------------------

    def snapshot(self) -> RegistrySnapshot:
        """The register as values (a store writes these; ``restore`` reads them back)."""
        return RegistrySnapshot(self.authority, tuple(self._notices.values()),
                                dict(self._holders), dict(self._sequence))

    @classmethod
    def restore(cls, snapshot: RegistrySnapshot) -> NoticeRegistry:
        """A register holding exactly ``snapshot``; ``StateError`` if it contradicts itself.

        Refused: a request id twice, a number twice, holders of an unknown request, or a
        year's sequence below a number already issued in it (numbering would repeat).
        """
        reg = cls(snapshot.authority)
        for n in snapshot.notices:
            if n.request_id in reg._notices:
                raise _inconsistent(f"request {n.request_id} appears twice")
            reg._notices[n.request_id] = n
            if n.number is not None:
                if n.number in reg._by_number:
                    raise _inconsistent(f"notice number {n.number} is issued twice")
                reg._by_number[n.number] = n.request_id
        for rid, agencies in snapshot.holders.items():
            if rid not in reg._notices:
                raise _inconsistent(f"holders are recorded for unknown request {rid}")
            if agencies:
                reg._holders[rid] = frozenset(agencies)
        reg._sequence = {int(y): int(s) for y, s in snapshot.sequence.items()}
        for number in reg._by_number:
            seq, _, year = parse_number(number)
            if reg._sequence.get(year, 0) < seq:
                raise _inconsistent(f"notice {number} was issued but the {year} sequence "
                                    f"stands at {reg._sequence.get(year, 0)}")
        return reg

    # -- lookups --------------------------------------------------------------------------

    def get(self, request_id: str) -> Notice:
        try:
            return self._notices[request_id]
        except KeyError:
            raise StateError(f"no notice or request {request_id} in the register",
                             reason="notice.unknown") from None

    def by_number(self, number: str) -> Notice:
        if number not in self._by_number:
            raise StateError(f"no notice {number} in the register", reason="notice.unknown")
        return self._notices[self._by_number[number]]

    def holders(self, request_id: str) -> frozenset[str]:
        """The agencies the notice was sent to (who must hear of an update or cancellation)."""
        self.get(request_id)
        return self._holders.get(request_id, frozenset())

    def in_force(self) -> list[Notice]:
        return [n for n in self._notices.values() if n.in_force]

    def __iter__(self) -> Iterator[Notice]:
        return iter(list(self._notices.values()))

    def __len__(self) -> int:
        return len(self._notices)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._notices

    def next_expiry(self) -> int | None:
        """When ``expire_due`` next has work (for the driver's timer), or None."""
        due = [n.expires_ms for n in self._notices.values()
               if n.in_force and n.expires_ms is not None]
        return min(due) if due else None

    # -- actions --------------------------------------------------------------------------

    def _authority_only(self, actor: str, action: str, notice: Notice) -> None:
        if actor != self.authority:
            raise StateError(
                f"{actor} may not {action} notice {notice.name}: only the notice authority "
                f"{self.authority} may", reason="notice.not-authority", agency=actor)

    def _store(self, notice: Notice) -> Notice:
        self._notices[notice.request_id] = notice
        return notice

    def request(self, *, request_id: str, requester: str, colour: NoticeColour,
                fields: Mapping[str, str], now_ms: int) -> Notice:
        """Record a new request ("request being processed")."""
        if request_id in self._notices:
            raise StateError(f"request {request_id} is already in the register",
                             reason="notice.duplicate", agency=requester)
        return self._store(request(request_id=request_id, requester=requester, colour=colour,
                                   fields=fields, now_ms=now_ms))

    def submit_for_review(self, request_id: str, *, actor: str, now_ms: int) -> Notice:
        """Hand the request to the task force (its requester or the authority may)."""
        n = self.get(request_id)
        if actor not in (n.requester, self.authority):
            self._authority_only(actor, "submit", n)
        return self._store(apply(n, NoticeEvent.SUBMIT_FOR_REVIEW, actor=actor, now_ms=now_ms))

    def review(self, request_id: str, *, approve: bool, actor: str, now_ms: int,
               reason: str = "") -> Notice:
        """The task force's decision. Screens first: a flagged request can only be refused.

        A request still in REQUESTED is submitted for review in the same step (both events
        go into its history). Approval publishes it with the next number of the year.
        """
        n = self.get(request_id)
        self._authority_only(actor, "review", n)
        if n.state is NoticeState.REQUESTED:
            n = apply(n, NoticeEvent.SUBMIT_FOR_REVIEW, actor=actor, now_ms=now_ms)
        if not approve:
            return self._store(apply(n, NoticeEvent.REFUSE, actor=actor, now_ms=now_ms,
                                     reason=reason))
        month, year = month_year(now_ms)
        sequence = self._sequence.get(year, 0) + 1
        number = format_number(sequence, month, year)
        published = apply(n, NoticeEvent.APPROVE, actor=actor, now_ms=now_ms, number=number)
        self._sequence[year] = sequence  # only once the approval has gone through
        self._by_number[number] = request_id
        return self._store(published)

    def record_sent(self, request_id: str, agencies: Iterable[str]) -> frozenset[str]:
        """Note that the notice was sent to ``agencies``; returns all holders so far."""
        n = self.get(request_id)
        if not n.in_force:
            raise StateError(f"notice {n.name} is {n.state.value}, not in force: it cannot be "
                             "sent", reason="notice.not-in-force")
        held = self._holders.get(request_id, frozenset()) | frozenset(agencies)
        self._holders[request_id] = held
        return held

    def update(self, request_id: str, changes: Mapping[str, str], *, actor: str,
               now_ms: int) -> tuple[Notice, frozenset[str]]:
        """Update a notice in force; returns it and the holders to tell."""
        n = self.get(request_id)
        self._authority_only(actor, "update", n)
        out = self._store(apply(n, NoticeEvent.UPDATE, actor=actor, now_ms=now_ms,
                                changes=changes))
        return out, self._holders.get(request_id, frozenset())

    def renew(self, request_id: str, *, actor: str,
              now_ms: int) -> tuple[Notice, frozenset[str]]:
        """Five more years from ``now_ms``; returns the notice and the holders to tell."""
        n = self.get(request_id)
        self._authority_only(actor, "renew", n)
        out = self._store(apply(n, NoticeEvent.RENEW, actor=actor, now_ms=now_ms))
        return out, self._holders.get(request_id, frozenset())

    def cancel(self, request_id: str, *, actor: str, now_ms: int,
               reason: str = "") -> tuple[Notice, frozenset[str]]:
        """Cancel a notice (authority) or withdraw an undecided request (its requester).

        Returns the cancelled notice and every agency that holds it and must be told.
        """
        n = self.get(request_id)
        undecided = n.state in (NoticeState.REQUESTED, NoticeState.UNDER_REVIEW)
        if not (undecided and actor == n.requester):
            self._authority_only(actor, "cancel", n)
        out = self._store(apply(n, NoticeEvent.CANCEL, actor=actor, now_ms=now_ms,
                                reason=reason))
        return out, self._holders.get(request_id, frozenset())

    def expire_due(self, now_ms: int) -> list[Notice]:
        """Expire every notice in force whose retention ended at or before ``now_ms``.

        Holders expire their copies on their own clocks (``NoticeHolding.expire_if_due``),
        so nobody needs to be told. Oldest expiry first.
        """
        due = sorted((n for n in self._notices.values()
                      if n.in_force and n.expires_ms is not None and n.expires_ms <= now_ms),
                     key=lambda n: (n.expires_ms or 0, n.request_id))
        return [self._store(apply(n, NoticeEvent.EXPIRE, actor=self.authority, now_ms=now_ms))
                for n in due]


def _inconsistent(message: str) -> StateError:
    return StateError(f"the saved notice register is inconsistent: {message}",
                      reason="notice.register-inconsistent")


# -- the holder's side --------------------------------------------------------------------


class HoldingState(enum.Enum):
    """A receiving agency's view of one notice."""

    NOT_HELD = "not-held"  # nothing received yet
    IN_FORCE = "in-force"
    UPDATED = "updated"  # in force, and updated since publication
    CANCELLED = "cancelled"  # also reached when the cancellation overtook the publication
    EXPIRED = "expired"


class HoldingEvent(enum.Enum):
    PUBLISH = "publish"  # a "notice" message arrived
    UPDATE = "update"  # a "notice-update" arrived (it carries the whole current notice)
    CANCEL = "cancel"  # a "notice-cancel" arrived
    EXPIRE = "expire"  # the local clock passed ``expires_ms``


_H, _HE = HoldingState, HoldingEvent

# Total: every (state, event) pair has an entry, so a holder never fails on a duplicate or an
# out-of-order message. CANCELLED absorbs everything: a publication that arrives after its own
# cancellation is cancelled on arrival. EXPIRED absorbs all but CANCEL (recorded as such).
HOLDING_TRANSITIONS: dict[HoldingState, dict[HoldingEvent, HoldingState]] = {
    _H.NOT_HELD: {_HE.PUBLISH: _H.IN_FORCE, _HE.UPDATE: _H.UPDATED,
                  _HE.CANCEL: _H.CANCELLED, _HE.EXPIRE: _H.NOT_HELD},
    _H.IN_FORCE: {_HE.PUBLISH: _H.IN_FORCE, _HE.UPDATE: _H.UPDATED,
                  _HE.CANCEL: _H.CANCELLED, _HE.EXPIRE: _H.EXPIRED},
    _H.UPDATED: {_HE.PUBLISH: _H.UPDATED, _HE.UPDATE: _H.UPDATED,
                 _HE.CANCEL: _H.CANCELLED, _HE.EXPIRE: _H.EXPIRED},
    _H.CANCELLED: {e: _H.CANCELLED for e in HoldingEvent},
    _H.EXPIRED: {_HE.PUBLISH: _H.EXPIRED, _HE.UPDATE: _H.EXPIRED,
                 _HE.CANCEL: _H.CANCELLED, _HE.EXPIRE: _H.EXPIRED},
}


@dataclass(frozen=True, slots=True)
class NoticeHolding:
    """One notice as a holder sees it. ``receive`` is idempotent and order-tolerant.

    ``version`` is the highest update count seen and ``expires_ms`` the latest expiry seen
    (a renewal moves it later), so a stale update never rolls either back. Known limit: a
    renewal that arrives after the holder's clock expired the notice does not revive it;
    the GS renews well ahead of expiry.
    """

    request_id: str
    state: HoldingState = HoldingState.NOT_HELD
    number: str | None = None
    version: int = 0
    expires_ms: int | None = None

    @property
    def in_force(self) -> bool:
        return self.state in (HoldingState.IN_FORCE, HoldingState.UPDATED)

    def receive(self, event: HoldingEvent, *, number: str | None = None, version: int = 0,
                expires_ms: int | None = None) -> NoticeHolding:
        """The holding after an incoming notice event (never raises for order or repeats)."""
        target = HOLDING_TRANSITIONS[self.state][event]
        if target in (HoldingState.IN_FORCE, HoldingState.UPDATED) \
                and event in (HoldingEvent.PUBLISH, HoldingEvent.UPDATE):
            exp = self.expires_ms
            if expires_ms is not None:
                exp = expires_ms if exp is None else max(exp, expires_ms)
            return replace(self, state=target, number=self.number or number,
                           version=max(self.version, version), expires_ms=exp)
        return replace(self, state=target, number=self.number or number)

    def expire_if_due(self, now_ms: int) -> NoticeHolding:
        if self.in_force and self.expires_ms is not None and self.expires_ms <= now_ms:
            return self.receive(HoldingEvent.EXPIRE)
        return self
