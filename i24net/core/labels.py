"""Security labels: classification, caveats, handling, evaluation, precedence, TLP.

Theory of operation: a network defines an ordered classification scale (lowest first). A
``Label`` is a level on that scale plus a set of caveats (categories such as ``EU`` or
``CT``); an agency's clearance has the same shape. Bell-LaPadula's "no read up" becomes one
relation, ``scale.dominates(clearance, label)``: the clearance's level is at least the
label's and its caveats include every caveat of the label. The router and every node apply
that same relation, so one function decides who may read what.

The other markings travel with a message and constrain what may be done with it (SIENA
handling codes H0-H3), say how far it can be trusted (SIENA evaluation codes), how fast it
must be served (ACP 121/127 precedence), and how far it may be shared (TLP 2.0).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from i24net.core.errors import ConfigError

DEFAULT_LEVELS: tuple[str, ...] = (
    "UNCLASSIFIED",
    "OFFICIAL-USE",
    "RESTRICTED",
    "CONFIDENTIAL",
    "SECRET",
)

_NAME = re.compile(r"^[A-Z0-9][A-Z0-9_+-]{0,31}\Z")  # \Z: "$" also matches before a final "\n"

# Display colours for rich, picked per level rank from the bottom; a longer scale reuses
# the last colour, so every level still renders.
_LEVEL_COLOURS = ("green", "cyan", "yellow", "dark_orange", "red", "magenta")


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"invalid {kind} {name!r}: use 1-32 upper-case letters, digits, '_', '+' or '-'",
            reason="config.label",
        )
    return name


@dataclass(frozen=True, slots=True)
class Label:
    """A classification level and caveats; also the shape of an agency's clearance."""

    level: str
    caveats: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        _check_name("classification level", self.level)
        if not isinstance(self.caveats, frozenset):
            object.__setattr__(self, "caveats", frozenset(self.caveats))
        for c in self.caveats:
            _check_name("caveat", c)

    @property
    def marking(self) -> str:
        """The display marking, e.g. ``CONFIDENTIAL//EU/CT`` (caveats sorted)."""
        if not self.caveats:
            return self.level
        return self.level + "//" + "/".join(sorted(self.caveats))

    @classmethod
    def parse(cls, text: str) -> Label:
        """Parse a display marking such as ``SECRET//EU/CT``."""
        level, _, rest = text.strip().upper().partition("//")
        caveats = frozenset(c for c in rest.split("/") if c) if rest else frozenset()
        return cls(level, caveats)

    def __str__(self) -> str:
        return self.marking


@dataclass(frozen=True, slots=True)
class ClassificationScale:
    """An ordered list of levels (lowest first) and the caveats known to the network."""

    levels: tuple[str, ...] = DEFAULT_LEVELS
    caveats: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.levels:
            raise ConfigError("a classification scale needs at least one level",
                              reason="config.label")
        for name in self.levels:
            _check_name("classification level", name)
        if len(set(self.levels)) != len(self.levels):
            raise ConfigError("classification levels must be unique", reason="config.label")
        if not isinstance(self.caveats, frozenset):
            object.__setattr__(self, "caveats", frozenset(self.caveats))
        for c in self.caveats:
            _check_name("caveat", c)

    def rank(self, level: str) -> int:
        try:
            return self.levels.index(level)
        except ValueError:
            raise ConfigError(
                f"unknown classification level {level!r}; this network uses "
                + ", ".join(self.levels),
                reason="label.unknown-level",
            ) from None

    def validate(self, label: Label) -> Label:
        """Check that the label uses only this network's levels and caveats."""
        self.rank(label.level)
        unknown = label.caveats - self.caveats
        if unknown:
            raise ConfigError(
                f"unknown caveat(s) {', '.join(sorted(unknown))}; this network knows "
                + (", ".join(sorted(self.caveats)) or "none"),
                reason="label.unknown-caveat",
            )
        return label

    def dominates(self, clearance: Label, label: Label) -> bool:
        """True when ``clearance`` may read ``label``: level at least as high, all caveats held.

        An unknown level on either side never dominates (fail closed).
        """
        if clearance.level not in self.levels or label.level not in self.levels:
            return False
        return (
            self.levels.index(clearance.level) >= self.levels.index(label.level)
            and label.caveats <= clearance.caveats
        )

    def colour(self, level: str) -> str:
        """A rich colour name for the level (higher levels are warmer)."""
        if level not in self.levels:
            return "white"
        return _LEVEL_COLOURS[min(self.levels.index(level), len(_LEVEL_COLOURS) - 1)]


class Handling(enum.Enum):
    """SIENA handling codes: restrictions set by the data source that travel with the data."""

    H0 = "H0"  # law-enforcement purposes only
    H1 = "H1"  # not for judicial proceedings without the provider's permission
    H2 = "H2"  # no dissemination without the provider's permission
    H3 = "H3"  # other restrictions, stated in free text

    @property
    def meaning(self) -> str:
        return _HANDLING_MEANINGS[self]


_HANDLING_MEANINGS = {
    Handling.H0: "law-enforcement purposes only",
    Handling.H1: "not to be used in judicial proceedings without the provider's permission",
    Handling.H2: "no dissemination without the provider's permission",
    Handling.H3: "other restrictions (see text)",
}

MAX_H3_TEXT = 512  # a restriction, not a document: long text belongs in the body


@dataclass(frozen=True, slots=True)
class HandlingCodes:
    """A set of handling codes; H3 must carry its free-text restriction."""

    codes: frozenset[Handling] = field(default_factory=frozenset)
    h3_text: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.codes, frozenset):
            object.__setattr__(self, "codes", frozenset(self.codes))
        if Handling.H3 in self.codes and not self.h3_text.strip():
            raise ConfigError("handling code H3 needs its restriction text",
                              reason="label.h3-text")
        if Handling.H3 not in self.codes and self.h3_text:
            raise ConfigError("restriction text given without handling code H3",
                              reason="label.h3-text")
        if len(self.h3_text) > MAX_H3_TEXT:
            raise ConfigError(f"H3 restriction text is longer than {MAX_H3_TEXT} characters",
                              reason="label.h3-text")

    @classmethod
    def parse(cls, values: Iterable[str], h3_text: str = "") -> HandlingCodes:
        codes = set()
        for v in values:
            try:
                codes.add(Handling(v.strip().upper()))
            except ValueError:
                raise ConfigError(f"unknown handling code {v!r}; use H0, H1, H2 or H3",
                                  reason="label.handling") from None
        return cls(frozenset(codes), h3_text)

    def names(self) -> list[str]:
        return sorted(c.value for c in self.codes)

    def __contains__(self, code: object) -> bool:
        return code in self.codes

    def __str__(self) -> str:
        text = ",".join(self.names()) or "-"
        return f"{text} ({self.h3_text})" if self.h3_text else text


SOURCE_RELIABILITY = {
    "A": "no doubt about the source's reliability",
    "B": "source from whom information received has in most instances proved reliable",
    "C": "source from whom information received has in most instances proved unreliable",
    "X": "reliability cannot be assessed",
}
INFORMATION_ACCURACY = {
    1: "known to be true without reservation",
    2: "known personally to the source but not to the official passing it on",
    3: "not known personally to the source but corroborated",
    4: "cannot be judged",
}


@dataclass(frozen=True, slots=True)
class Evaluation:
    """SIENA evaluation: source reliability A/B/C/X and information accuracy 1-4 (e.g. B2)."""

    source: str
    accuracy: int

    def __post_init__(self) -> None:
        if self.source not in SOURCE_RELIABILITY:
            raise ConfigError(f"source reliability must be one of A, B, C, X, not {self.source!r}",
                              reason="label.evaluation")
        if self.accuracy not in INFORMATION_ACCURACY:
            raise ConfigError(f"information accuracy must be 1-4, not {self.accuracy!r}",
                              reason="label.evaluation")

    @classmethod
    def parse(cls, text: str) -> Evaluation:
        t = text.strip().upper()
        # not str.isdigit(): it accepts "²" (int() then raises) and "٢" (non-canonical)
        if len(t) != 2 or t[1] not in "0123456789":
            raise ConfigError(f"evaluation code must look like B2, not {text!r}",
                              reason="label.evaluation")
        return cls(t[0], int(t[1]))

    def __str__(self) -> str:
        return f"{self.source}{self.accuracy}"


class Precedence(enum.IntEnum):
    """ACP 121/127 precedence: speed of service, not importance. Lower value goes first."""

    FLASH = 0
    IMMEDIATE = 1
    PRIORITY = 2
    ROUTINE = 3

    @property
    def target_seconds(self) -> int:
        """The handling target: 10 min, 30 min, 3 h, 6 h."""
        return _PRECEDENCE_TARGETS[self]

    @property
    def colour(self) -> str:
        return _PRECEDENCE_COLOURS[self]

    @classmethod
    def parse(cls, text: str) -> Precedence:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ConfigError(
                f"unknown precedence {text!r}; use FLASH, IMMEDIATE, PRIORITY or ROUTINE",
                reason="label.precedence",
            ) from None


_PRECEDENCE_TARGETS = {
    Precedence.FLASH: 10 * 60,
    Precedence.IMMEDIATE: 30 * 60,
    Precedence.PRIORITY: 3 * 3600,
    Precedence.ROUTINE: 6 * 3600,
}
_PRECEDENCE_COLOURS = {
    Precedence.FLASH: "bold red",
    Precedence.IMMEDIATE: "dark_orange",
    Precedence.PRIORITY: "yellow",
    Precedence.ROUTINE: "white",
}


class TLP(enum.Enum):
    """Traffic Light Protocol 2.0: how far the recipients may share."""

    CLEAR = "CLEAR"
    GREEN = "GREEN"
    AMBER = "AMBER"
    AMBER_STRICT = "AMBER+STRICT"
    RED = "RED"

    @property
    def marking(self) -> str:
        return f"TLP:{self.value}"

    @property
    def colour(self) -> str:
        return _TLP_COLOURS[self]

    @classmethod
    def parse(cls, text: str) -> TLP:
        t = text.strip().upper()
        t = t[4:] if t.startswith("TLP:") else t
        for member in cls:
            if member.value == t:
                return member
        raise ConfigError(
            f"unknown TLP marking {text!r}; use CLEAR, GREEN, AMBER, AMBER+STRICT or RED",
            reason="label.tlp",
        )


_TLP_COLOURS = {
    TLP.CLEAR: "white",
    TLP.GREEN: "green",
    TLP.AMBER: "dark_orange",
    TLP.AMBER_STRICT: "dark_orange",
    TLP.RED: "red",
}
