"""An exercise as typed values: the network, the conditions, the injects, the expectations.

Theory of operation: an exercise file (TOML, see ``docs/exercises.md``) is loaded by
``i24net.exercise.loader`` into the frozen dataclasses below and checked twice: once for
form (types, ranges, known fields) and once against the network it runs on (agencies,
groups, labels, names of earlier messages). After that, a runner (virtual or live) can
trust every value: an agency named in an inject exists, a ``message = "red1"`` in an
expectation names a message some inject sends, every time is a number of seconds.

Each inject and expectation class lists its fields with TOML metadata (``key``, the name
in the file when it differs from the attribute; ``parse``, a converter that raises
``Bad``; ``required``). The loader is driven by that metadata, so adding a field here is
all it takes to accept, validate and document-check it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from i24net.core.cooperation import AGREEMENT_ID
from i24net.core.directory import AGENCY_ID, GROUP_NAME
from i24net.core.envelope import KINDS as MESSAGE_KINDS
from i24net.core.errors import ConfigError, I24Error
from i24net.core.labels import HandlingCodes, Label, Precedence
from i24net.core.units import clock

MODES = ("virtual", "live")
PRESETS = ("demo", "interpol")
REVIEW_MODES = ("auto", "manual")

# A drill lasts hours at most; a week bounds typos such as "duration = 6000000".
MAX_SECONDS = 7 * 24 * 3600.0
# Flood injects send ``repeat`` copies; beyond this the file is a benchmark, not a drill.
MAX_REPEAT = 100_000
# The synthetic network's size: SIENA's 3,000+ authorities with room to spare.
MAX_SYNTHETIC = 20_000
MAX_TEXT = 4096
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}\Z")
_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,3}):(\d{2}(?:\.\d+)?)\Z")


class Bad(Exception):
    """A field's value is wrong; the loader adds the file, the field path and the line."""


class ExerciseError(ConfigError):
    """An exercise file is malformed or does not fit its network; the message names the
    file, the field (``inject[3].at``) and, when known, the line."""

    default_reason = "exercise.invalid"

    def __init__(self, message: str, *, source: str = "", path: str = "",
                 line: int | None = None, reason: str | None = None) -> None:
        parts = [p for p in (source, path) if p]
        text = ": ".join([*parts, message])
        if line:
            text += f" (line {line})"
        super().__init__(text, reason=reason)
        self.source = source
        self.path = path
        self.line = line
        self.detail = message


class NotSupportedLive(I24Error):
    """The exercise uses an action the live runner cannot play yet."""

    default_reason = "exercise.live-unsupported"


# -- converters ---------------------------------------------------------------------------

def seconds(value: Any) -> float:
    """A time: a number of seconds (``90``, ``2.5``) or a clock string ``"mm:ss"`` /
    ``"h:mm:ss"``."""
    if isinstance(value, bool):
        raise Bad("must be seconds or mm:ss")
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        m = _CLOCK.match(value.strip())
        if not m:
            raise Bad("must be seconds or mm:ss")
        hours, minutes, secs = m.groups()
        if float(secs) >= 60 or (hours is not None and int(minutes) >= 60):
            raise Bad("must be seconds or mm:ss (seconds and minutes below 60)")
        out = int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)
    else:
        raise Bad("must be seconds or mm:ss")
    if not 0 <= out <= MAX_SECONDS or out != out:
        raise Bad(f"must be between 0 and {int(MAX_SECONDS)} seconds")
    return out


def within(value: Any) -> float | str:
    """A deadline: seconds, mm:ss, or ``"target"`` (the precedence's service target)."""
    if isinstance(value, str) and value.strip().lower() == "target":
        return "target"
    try:
        return seconds(value)
    except Bad:
        raise Bad("must be seconds, mm:ss or \"target\"") from None


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise Bad(f"must be a string, not {_kind(value)}")
    if len(value) > MAX_TEXT:
        raise Bad(f"must be at most {MAX_TEXT} characters")
    return value


def name(value: Any) -> str:
    s = text(value)
    if not NAME.match(s):
        raise Bad(f"{s!r} is not a valid name: a letter, then letters, digits, '_', "
                  "'.' or '-' (at most 64)")
    return s


def agency(value: Any) -> str:
    s = text(value)
    if not AGENCY_ID.match(s) or len(s) > 32:
        raise Bad(f"{s!r} is not an agency id (e.g. NCB-FR)")
    return s


def target(value: Any) -> str:
    """An agency id or a group ``@NAME``."""
    s = text(value)
    if s.startswith("@"):
        if not GROUP_NAME.match(s[1:]):
            raise Bad(f"{s!r} is not a group (e.g. @EU)")
        return s
    return agency(s)


def targets(value: Any) -> tuple[str, ...]:
    """One target or a list of them, e.g. ``"@EU"`` or ``["NCB-FR", "@G7-LIAISON"]``."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise Bad("must be an agency, a @group or a non-empty list of them")
    out = []
    for v in items:
        if not isinstance(v, str):
            raise Bad(f"must list agencies or @groups, not {_kind(v)}")
        out.append(target(v))
    return tuple(dict.fromkeys(out))


def agencies(value: Any) -> tuple[str, ...]:
    """Like ``targets``: groups are allowed and expanded against the network later."""
    return targets(value)


def group_name(value: Any) -> str:
    """A joint operation's name (its group and caveat), e.g. ``TRIDENT``."""
    s = text(value)
    if not GROUP_NAME.match(s):
        raise Bad(f"{s!r} is not an operation name: upper-case letters, digits and '-' "
                  "(at most 32), e.g. TRIDENT")
    return s


def agreement_id(value: Any) -> str:
    s = text(value)
    if not AGREEMENT_ID.match(s):
        raise Bad(f"{s!r} is not an agreement id (e.g. INTERPOL-EUROPOL)")
    return s


def who(value: Any) -> str:
    """``"router"``, ``"broker"`` or an agency id."""
    s = text(value)
    if s in ("router", "broker"):
        return s
    try:
        return agency(s)
    except Bad:
        raise Bad(f"{s!r} is neither \"router\", \"broker\" nor an agency id") from None


def kind(value: Any) -> str:
    s = text(value)
    if s not in MESSAGE_KINDS:
        raise Bad(f"unknown kind {s!r}; one of {', '.join(MESSAGE_KINDS)}")
    return s


def label(value: Any) -> str:
    s = text(value)
    try:
        return Label.parse(s).marking
    except I24Error as exc:
        raise Bad(exc.message) from None


def precedence(value: Any) -> str:
    s = text(value)
    try:
        return Precedence.parse(s).name
    except I24Error:
        raise Bad(f"unknown precedence {s!r}; use FLASH, IMMEDIATE, PRIORITY or "
                  "ROUTINE") from None


def handling(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise Bad("must be a list of handling codes, e.g. [\"H2\"]")
    try:
        return tuple(HandlingCodes.parse(items, "see text" if "H3" in
                                         [v.strip().upper() for v in items] else "").names())
    except I24Error as exc:
        raise Bad(exc.message) from None


def colour(value: Any) -> str:
    from i24net.core.notices import NoticeColour

    s = text(value)
    try:
        return NoticeColour.parse(s).value
    except I24Error as exc:
        raise Bad(exc.message) from None


def table(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise Bad(f"must be a table, not {_kind(value)}")
    for k, v in value.items():
        if not isinstance(v, str | int | float | bool):
            raise Bad(f"{k}: values must be strings, numbers or booleans")
    return dict(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Bad(f"must be true or false, not {_kind(value)}")
    return value


def count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Bad(f"must be a whole number, not {_kind(value)}")
    if not 1 <= value <= MAX_REPEAT:
        raise Bad(f"must be 1-{MAX_REPEAT}")
    return value


def probability(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Bad(f"must be a number between 0 and 1, not {_kind(value)}")
    if not 0.0 <= value <= 1.0:
        raise Bad("must be between 0 and 1")
    return float(value)


def millis(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Bad(f"must be a number of milliseconds, not {_kind(value)}")
    if not 0 <= value <= MAX_SECONDS * 1000:
        raise Bad("must be a non-negative number of milliseconds (at most a week)")
    return float(value)


def hours(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Bad(f"must be a number of hours, not {_kind(value)}")
    if not 0 < value <= 24 * 30:
        raise Bad("must be more than 0 and at most 720 hours (30 days)")
    return float(value)


def signed_seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Bad(f"must be a number of seconds (negative: behind), not {_kind(value)}")
    if not -MAX_SECONDS <= value <= MAX_SECONDS:
        raise Bad("must be within a week either way")
    return float(value)


def reason(value: Any) -> str:
    s = text(value)
    if not re.match(r"^[a-z0-9][a-z0-9.+_-]{0,63}\Z", s):
        raise Bad(f"{s!r} is not a reason code (e.g. clearance.recipient)")
    return s


def one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        s = text(value)
        if s not in choices:
            raise Bad(f"must be one of {', '.join(choices)}, not {s!r}")
        return s
    parse.__doc__ = " | ".join(choices)
    return parse


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def spec(key: str | None = None, parse: Callable[[Any], Any] = text, *,
         required: bool = False, doc: str = "") -> dict[str, Any]:
    """Field metadata for the loader: the TOML key, the converter, whether it is needed."""
    return {"key": key, "parse": parse, "required": required, "doc": doc}


def toml_fields(cls: type) -> list[tuple[str, str, dict[str, Any], Any]]:
    """(attribute, TOML key, metadata, default) for every loadable field of ``cls``."""
    out = []
    for f in fields(cls):
        meta = f.metadata.get("toml")
        if meta is None:
            continue
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        out.append((f.name, meta["key"] or f.name, meta, default))
    return out


def _f(default: Any = MISSING, *, key: str | None = None,
       parse: Callable[[Any], Any] = text, required: bool = False, doc: str = "") -> Any:
    if not callable(parse):  # a field shadowing its converter in a class body
        raise TypeError(f"parse must be callable, not {parse!r}")
    meta = {"toml": spec(key, parse, required=required, doc=doc)}
    if default is MISSING:
        return field(default=None, metadata=meta)
    return field(default=default, metadata=meta)


# -- the network and its conditions ---------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkSource:
    """Where the network comes from: a preset, a ``network.toml`` or a synthetic size."""

    preset: str | None = None
    spec: Path | None = None
    synthetic: int | None = None
    review: str = "auto"  # auto | manual: does the GS publish clean requests by itself?
    # [network.retention]: kind -> period, in place of the network's own [retention] rules
    # for those kinds (a drill shortens a year to seconds)
    retention: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        if self.preset:
            return f"preset {self.preset}"
        if self.spec:
            return f"spec {self.spec}"
        return f"synthetic {self.synthetic}"

    def toml_text(self, seed: int = 0) -> str:
        """The network.toml text this source stands for. A synthetic network is drawn with
        ``seed`` (0 by default, not the exercise's seed: changing the exercise's seed changes
        the timings, not the agencies)."""
        from i24net.config.presets import preset_toml, synthetic_toml

        if self.preset:
            text = preset_toml(self.preset)
        elif self.spec:
            text = self.spec.read_text()
        else:
            assert self.synthetic is not None
            text = synthetic_toml(self.synthetic, seed=seed)
        if not self.retention:
            return text
        import tomlkit

        doc = tomlkit.parse(text)
        table = doc.get("retention")
        if table is None:
            table = tomlkit.table()
            doc["retention"] = table
        for kind, period in self.retention:
            table[kind] = period
        return tomlkit.dumps(doc)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkRule:
    """Latency, jitter and loss on some links: one agency's, a group's, or one pair's."""

    index: int = 0
    line: int = 0
    agency: str | None = _f(None, parse=agency, doc="one agency's link to the broker")
    group: str | None = _f(None, parse=target, doc="every member's link (e.g. @EU)")
    between: tuple[str, ...] = _f((), parse=targets,
                                  doc="two agencies: traffic from one to the other")
    latency_ms: float | None = _f(None, parse=millis, doc="one-way latency")
    jitter_ms: float | None = _f(None, parse=millis, doc="uniform jitter, +/-")
    loss: float | None = _f(None, parse=probability, doc="probability a frame is lost")
    start: float = _f(0.0, parse=seconds, doc="from this time")
    end: float | None = _f(None, parse=seconds, doc="until this time (default: the end)")


FILTER_ACTIONS = ("delay", "drop")
DIRECTIONS = ("up", "down", "both")


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterRule:
    """A label-aware condition: delay or drop the messages that match every criterion.

    Filters look at the clear header of message-carrying frames (an envelope on its way up
    to the router, a delivery on its way down), never at the body; reports and receipts
    pass untouched (use a link rule for those)."""

    index: int = 0
    line: int = 0
    action: str = _f(parse=one_of(*FILTER_ACTIONS), required=True, doc="delay | drop")
    delay_ms: float = _f(0.0, parse=millis, doc="added delay for action = delay")
    jitter_ms: float = _f(0.0, parse=millis, doc="+/- on the added delay")
    probability: float = _f(1.0, parse=probability, doc="drop: share of matching frames")
    direction: str = _f("both", parse=one_of(*DIRECTIONS), doc="up | down | both")
    sender: str | None = _f(None, parse=target, doc="match: sent by this agency (or group)")
    to: str | None = _f(None, parse=target, doc="match: a recipient is this agency / group")
    to_group: str | None = _f(None, parse=target, doc="match: addressed to this @group")
    kind: str | None = _f(None, parse=kind, doc="match: message kind")
    precedence: str | None = _f(None, parse=precedence, doc="match: precedence")
    label: str | None = _f(None, parse=label, doc="match: exact marking")
    caveat: str | None = _f(None, parse=text, doc="match: the label carries this caveat")
    start: float = _f(0.0, parse=seconds, doc="from this time")
    end: float | None = _f(None, parse=seconds, doc="until this time (default: the end)")


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterCost:
    """The router's service time per job (ms); unset values keep the simulator's."""

    envelope_ms: float | None = _f(None, parse=millis, doc="decide on one envelope")
    control_ms: float | None = _f(None, parse=millis, doc="one receipt or gap request")
    stamp_ms: float | None = _f(None, parse=millis, doc="stamp one delivery")
    relay_ms: float | None = _f(None, parse=millis, doc="relay a report or receipt")


def queue_limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Bad("must be a whole number of frames (0 or more)")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Conditions:
    latency_ms: float = _f(20.0, parse=millis, doc="default one-way latency per link")
    jitter_ms: float = _f(5.0, parse=millis, doc="default jitter, +/-")
    loss: float = _f(0.0, parse=probability, doc="default frame loss probability")
    broker_queue_limit: int | None = _f(None, parse=queue_limit,
                                        doc="frames kept per offline session")
    router: RouterCost | None = None
    links: tuple[LinkRule, ...] = ()
    filters: tuple[FilterRule, ...] = ()


# -- injects --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Inject:
    """Something that happens at ``at`` seconds into the exercise."""

    action: ClassVar[str] = ""
    live: ClassVar[bool] = False  # can the live runner play it?
    # why a live run cannot give it its virtual meaning, when that is not just "not yet"
    why_not_live: ClassVar[str] = ""
    at: float = _f(parse=seconds, required=True, doc="seconds, or mm:ss")
    note: str = _f("", doc="free text shown in the report's timeline")
    index: int = 0
    line: int = 0

    def describe(self) -> str:
        return self.action


@dataclass(frozen=True, slots=True, kw_only=True)
class Send(Inject):
    action: ClassVar[str] = "send"
    live: ClassVar[bool] = True
    name: str = _f("", parse=name, doc="a name expectations refer to")
    sender: str = _f(key="from", parse=agency, required=True, doc="sending agency")
    to: tuple[str, ...] = _f(key="to", parse=targets, required=True,
                             doc="agencies and @groups")
    kind: str = _f("message", parse=kind, doc="message kind")
    label: str = _f("UNCLASSIFIED", parse=label, doc="e.g. CONFIDENTIAL//EU")
    precedence: str = _f("ROUTINE", parse=precedence, doc="FLASH ... ROUTINE")
    handling: tuple[str, ...] = _f((), parse=handling, doc="e.g. [\"H2\"]")
    subject: str = _f("", doc="body subject (default from the name)")
    text: str = _f("", doc="body text")
    data: Mapping[str, Any] = _f(None, parse=table, doc="structured body fields")
    ttl_hours: float = _f(72.0, parse=hours, doc="lifetime in hours")
    repeat: int = _f(1, parse=count, doc="send this many copies (a flood)")
    every: float = _f(0.0, parse=seconds, doc="spacing between copies")

    def describe(self) -> str:
        n = f" x{self.repeat}" if self.repeat > 1 else ""
        return (f"{self.sender} sends {self.precedence} {self.kind}{n} "
                f"{self.label} to {', '.join(self.to)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class NoticeRequest(Inject):
    action: ClassVar[str] = "notice-request"
    live: ClassVar[bool] = True
    name: str = _f("", parse=name, doc="a name review, cancel and expectations use")
    sender: str = _f(key="from", parse=agency, required=True, doc="requesting agency")
    colour: str = _f("RED", parse=colour, doc="notice colour")
    person: str = _f("John DOE", doc="the notice's subject")
    offence: str = _f("homicide", doc="offence; a political one is refused (Article 3)")
    warrant: str = _f("WARRANT-1", doc="warrant reference")
    label: str = _f("OFFICIAL-USE", parse=label, doc="label of the request")
    precedence: str = _f("IMMEDIATE", parse=precedence)
    subject: str = _f("", doc="message subject (default from colour and person)")
    text: str = _f("", doc="message text")

    def describe(self) -> str:
        return f"{self.sender} requests a {self.colour} notice on {self.person}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Review(Inject):
    action: ClassVar[str] = "review"
    live: ClassVar[bool] = True
    notice: str = _f(parse=name, required=True, doc="name of a notice-request")
    decision: str = _f(parse=one_of("approve", "refuse"), required=True)
    reason: str = _f("notice.refused", parse=reason, doc="reason code of a refusal")

    def describe(self) -> str:
        return f"the GS task force decides to {self.decision} {self.notice}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel(Inject):
    action: ClassVar[str] = "cancel"
    live: ClassVar[bool] = True
    notice: str = _f(parse=name, required=True, doc="name of a notice-request")
    by: str | None = _f(None, parse=agency, doc="the requester (default) or the GS")
    reason: str = _f("notice.cancelled", parse=reason)
    text: str = _f("", doc="message text")

    def describe(self) -> str:
        return f"{self.by or 'the requester'} cancels notice {self.notice}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Forward(Inject):
    action: ClassVar[str] = "forward"
    live: ClassVar[bool] = True
    # ``message`` before ``name``: in a class body the field ``name`` shadows the converter.
    message: str = _f(parse=name, required=True, doc="name of the message forwarded")
    name: str = _f("", parse=name)
    sender: str = _f(key="from", parse=agency, required=True, doc="a recipient of it")
    to: tuple[str, ...] = _f(parse=targets, required=True)
    release: bool = _f(False, parse=boolean, doc="with the source's signed release")
    label: str | None = _f(None, parse=label, doc="default: the original's")
    handling: tuple[str, ...] | None = _f(None, parse=handling, doc="default: the original's")
    precedence: str | None = _f(None, parse=precedence, doc="default: the original's")
    subject: str = _f("")
    text: str = _f("")

    def describe(self) -> str:
        rel = " with release" if self.release else ""
        return f"{self.sender} forwards {self.message} to {', '.join(self.to)}{rel}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition(Inject):
    action: ClassVar[str] = "partition"
    live: ClassVar[bool] = True
    agencies: tuple[str, ...] = _f(parse=agencies, required=True,
                                   doc="cut off from the broker")

    def describe(self) -> str:
        return f"partition {', '.join(self.agencies)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Heal(Inject):
    action: ClassVar[str] = "heal"
    live: ClassVar[bool] = True
    agencies: tuple[str, ...] = _f((), parse=agencies, doc="default: every partition")

    def describe(self) -> str:
        return f"heal {', '.join(self.agencies) or 'every partition'}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Crash(Inject):
    action: ClassVar[str] = "crash"
    live: ClassVar[bool] = True
    who: str = _f(parse=who, required=True, doc="router, broker or an agency")

    def describe(self) -> str:
        return f"crash {self.who}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Restart(Inject):
    action: ClassVar[str] = "restart"
    live: ClassVar[bool] = True
    who: str = _f(parse=who, required=True, doc="router, broker or an agency")

    def describe(self) -> str:
        return f"restart {self.who}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Compromise(Inject):
    action: ClassVar[str] = "compromise"
    live: ClassVar[bool] = True
    name: str = _f("", parse=name, doc="names the attacker's messages")
    agency: str = _f(parse=agency, required=True, doc="whose key is stolen")
    to: tuple[str, ...] = _f(("@ALL",), parse=targets, doc="the attacker's recipients")
    kind: str = _f("message", parse=kind)
    label: str = _f("UNCLASSIFIED", parse=label)
    precedence: str = _f("FLASH", parse=precedence)
    subject: str = _f("URGENT: release the detainee", doc="the forgery's subject")
    count: int = _f(1, parse=count, doc="how many messages the attacker sends")
    every: float = _f(60.0, parse=seconds, doc="spacing between them")

    def describe(self) -> str:
        return (f"{self.agency}'s key is stolen: {self.count} forged message(s) every "
                f"{self.every:g}s")


@dataclass(frozen=True, slots=True, kw_only=True)
class Revoke(Inject):
    action: ClassVar[str] = "revoke"
    live: ClassVar[bool] = True
    agency: str = _f(parse=agency, required=True)

    def describe(self) -> str:
        return f"the GS revokes {self.agency}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rotate(Inject):
    action: ClassVar[str] = "rotate"
    live: ClassVar[bool] = True
    agency: str = _f(parse=agency, required=True)

    def describe(self) -> str:
        return f"{self.agency} rotates its keys"


@dataclass(frozen=True, slots=True, kw_only=True)
class RotatePrekeys(Inject):
    action: ClassVar[str] = "rotate-prekeys"
    live: ClassVar[bool] = True
    agencies: tuple[str, ...] = _f((), parse=agencies, doc="default: every active agency")

    def describe(self) -> str:
        return f"new prekeys for {', '.join(self.agencies) or 'every agency'}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Skew(Inject):
    action: ClassVar[str] = "skew"
    why_not_live: ClassVar[str] = (
        "a live run has one clock, the machine's: the runner stamps every message it sends "
        "for an agency with it and the router and each node check it against it, so one "
        "agency's clock cannot run ahead or behind; run the file --virtual (or live without "
        "the skew)")
    agency: str = _f(parse=agency, required=True)
    seconds: float = _f(parse=signed_seconds, required=True, doc="clock offset")

    def describe(self) -> str:
        return f"{self.agency}'s clock is off by {self.seconds:+g}s"


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationCreate(Inject):
    action: ClassVar[str] = "operation-create"
    live: ClassVar[bool] = True
    operation: str = _f(parse=group_name, required=True,
                        doc="its name: the group @NAME and the caveat NAME")
    lead: str = _f(parse=agency, required=True, doc="the agency leading it")
    members: tuple[str, ...] = _f(parse=agencies, required=True,
                                  doc="its members (the lead is one of them)")
    until: float | None = _f(None, parse=seconds,
                             doc="when it ends, seconds into the exercise (default: 30 "
                                 "days after it is created)")
    level: str | None = _f(None, parse=text, doc="its highest level (default: the lead's "
                                                 "clearance)")
    title: str = _f("", doc="what it is about")

    def describe(self) -> str:
        return (f"{self.lead} opens joint operation {self.operation} with "
                f"{', '.join(self.members)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationAdd(Inject):
    action: ClassVar[str] = "operation-add"
    live: ClassVar[bool] = True
    operation: str = _f(parse=group_name, required=True)
    agencies: tuple[str, ...] = _f(parse=agencies, required=True, doc="who joins")

    def describe(self) -> str:
        return f"{', '.join(self.agencies)} join operation {self.operation}"


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationRemove(Inject):
    action: ClassVar[str] = "operation-remove"
    live: ClassVar[bool] = True
    operation: str = _f(parse=group_name, required=True)
    agencies: tuple[str, ...] = _f(parse=agencies, required=True, doc="who leaves")

    def describe(self) -> str:
        return f"{', '.join(self.agencies)} removed from operation {self.operation}"


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationClose(Inject):
    action: ClassVar[str] = "operation-close"
    live: ClassVar[bool] = True
    operation: str = _f(parse=group_name, required=True)

    def describe(self) -> str:
        return f"operation {self.operation} is closed"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgreementExpire(Inject):
    action: ClassVar[str] = "agreement-expire"
    live: ClassVar[bool] = True
    agreement: str = _f(parse=agreement_id, required=True, doc="the agreement's id")

    def describe(self) -> str:
        return f"agreement {self.agreement} expires"


# The injects that issue a directory version changing an operation or an agreement.
COOPERATION_INJECTS = (OperationCreate, OperationAdd, OperationRemove, OperationClose,
                       AgreementExpire)

INJECTS: dict[str, type[Inject]] = {c.action: c for c in (
    Send, NoticeRequest, Review, Cancel, Forward, Partition, Heal, Crash, Restart,
    Compromise, Revoke, Rotate, RotatePrekeys, Skew, *COOPERATION_INJECTS)}


# -- expectations ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Expectation:
    kind: ClassVar[str] = ""
    title: str = _f("", doc="what the report calls it (default generated)")
    timing: bool = _f(False, parse=boolean,
                      doc="its verdict depends on timings, so virtual and live may differ "
                          "(--both then reports the difference without failing)")
    index: int = 0
    line: int = 0

    def describe(self) -> str:
        return self.title or self.kind


def _within(w: float | str | None) -> str:
    if w is None:
        return ""
    return " within the service target" if w == "target" else f" within {clock(float(w), exact=True)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivered(Expectation):
    kind: ClassVar[str] = "delivered"
    message: str = _f(parse=name, required=True, doc="name of a message")
    to: tuple[str, ...] = _f((), parse=targets, doc="default: every recipient")
    within: float | str | None = _f(None, parse=within, doc="seconds, mm:ss or \"target\"")

    def describe(self) -> str:
        return self.title or (f"{self.message} delivered to "
                              f"{', '.join(self.to) or 'every recipient'}{_within(self.within)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused(Expectation):
    kind: ClassVar[str] = "refused"
    message: str = _f(parse=name, required=True)
    reason: str | None = _f(None, parse=reason, doc="the reason code, e.g. article3.political")

    def describe(self) -> str:
        return self.title or f"{self.message} refused" + (f" ({self.reason})"
                                                          if self.reason else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Dropped(Expectation):
    kind: ClassVar[str] = "dropped"
    message: str = _f(parse=name, required=True)
    to: tuple[str, ...] = _f((), parse=targets, doc="default: every recipient")

    def describe(self) -> str:
        return self.title or (f"{self.message} never reached "
                              f"{', '.join(self.to) or 'any recipient'}")


@dataclass(frozen=True, slots=True, kw_only=True)
class NoLoss(Expectation):
    kind: ClassVar[str] = "no-loss"
    within: float | str | None = _f(None, parse=within, doc="default: by the end")
    ignore: tuple[str, ...] = _f((), key="except", parse=lambda v: tuple(
        name(x) for x in ([v] if isinstance(v, str) else _list(v))),
        doc="names of messages left out (e.g. ones a filter drops)")

    def describe(self) -> str:
        return self.title or f"no message lost{_within(self.within)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelledEverywhere(Expectation):
    kind: ClassVar[str] = "cancelled-everywhere"
    notice: str = _f(parse=name, required=True, doc="name of a notice-request")
    within: float | None = _f(None, parse=seconds, doc="time-to-withdraw from the cancel")

    def describe(self) -> str:
        return self.title or f"notice {self.notice} cancelled at every holder" + \
            _within(self.within)


@dataclass(frozen=True, slots=True, kw_only=True)
class Published(Expectation):
    kind: ClassVar[str] = "published"
    notice: str = _f(parse=name, required=True)
    within: float | None = _f(None, parse=seconds, doc="from the request to the last holder")

    def describe(self) -> str:
        return self.title or f"notice {self.notice} published to every cleared agency" + \
            _within(self.within)


@dataclass(frozen=True, slots=True, kw_only=True)
class NothingAfterRevocation(Expectation):
    kind: ClassVar[str] = "nothing-accepted-from-stolen-key-after-revocation"
    agency: str = _f(parse=agency, required=True)

    def describe(self) -> str:
        return self.title or f"nothing from {self.agency}'s stolen key accepted after " \
            "its revocation"


def _names(value: Any) -> tuple[str, ...]:
    return tuple(name(x) for x in ([value] if isinstance(value, str) else _list(value)))


@dataclass(frozen=True, slots=True, kw_only=True)
class UnreadableToThief(Expectation):
    kind: ClassVar[str] = "unreadable-to-thief"
    agency: str = _f(parse=agency, required=True, doc="whose keys a compromise inject steals")
    messages: tuple[str, ...] = _f(parse=_names, required=True,
                                   doc="names of messages the stolen keys must not open")
    readable: tuple[str, ...] = _f((), parse=_names,
                                   doc="names of messages they do open (the window)")

    def describe(self) -> str:
        return self.title or (f"{self.agency}'s stolen keys open none of "
                              f"{', '.join(self.messages)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Purged(Expectation):
    kind: ClassVar[str] = "purged"
    message: str = _f(parse=name, required=True)
    to: tuple[str, ...] = _f((), parse=targets, doc="default: every recipient that got it")

    def describe(self) -> str:
        return self.title or (f"{self.message} erased at the end of its retention by "
                              f"{', '.join(self.to) or 'every recipient'}")


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowcheckClean(Expectation):
    kind: ClassVar[str] = "flowcheck-clean"

    def describe(self) -> str:
        return self.title or "information-flow check: no violation"


EXPECTATIONS: dict[str, type[Expectation]] = {c.kind: c for c in (
    Delivered, Refused, Dropped, NoLoss, CancelledEverywhere, Published,
    NothingAfterRevocation, UnreadableToThief, Purged, FlowcheckClean)}


def _list(v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise Bad(f"must be a list, not {_kind(v)}")
    return v


# -- the exercise ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Exercise:
    name: str
    description: str = ""
    seed: int = 1
    mode: str = "virtual"
    duration: float = 0.0
    network: NetworkSource
    conditions: Conditions = field(default_factory=Conditions)
    injects: tuple[Inject, ...] = ()
    expectations: tuple[Expectation, ...] = ()
    source: str = ""  # the file it came from, for messages

    def named(self) -> dict[str, Inject]:
        """Every named inject by name."""
        return {n: i for i in self.injects if (n := getattr(i, "name", ""))}

    def unsupported_live(self) -> list[Inject]:
        return [i for i in self.injects if not i.live]
