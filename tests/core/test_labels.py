"""labels: classification and dominance, handling, evaluation, precedence, TLP."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from i24net.core.errors import ConfigError
from i24net.core.labels import (
    DEFAULT_LEVELS,
    TLP,
    ClassificationScale,
    Evaluation,
    Handling,
    HandlingCodes,
    Label,
    Precedence,
)

CAVEATS = ("EU", "CT", "FIN")
SCALE = ClassificationScale(DEFAULT_LEVELS, frozenset(CAVEATS))

labels = st.builds(Label, st.sampled_from(DEFAULT_LEVELS),
                   st.frozensets(st.sampled_from(CAVEATS)))
names = st.from_regex(r"\A[A-Z0-9][A-Z0-9_+-]{0,31}\Z")


def config_reason(fn, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        fn(*args)
    return info.value.reason


# -- dominance -------------------------------------------------------------------------------

@pytest.mark.parametrize(("clearance", "label", "expected"), [
    # level only
    ("SECRET", "UNCLASSIFIED", True),
    ("SECRET", "SECRET", True),
    ("CONFIDENTIAL", "SECRET", False),
    ("UNCLASSIFIED", "OFFICIAL-USE", False),
    ("RESTRICTED", "OFFICIAL-USE", True),
    # caveats: the clearance must hold every caveat of the label
    ("SECRET//EU/CT", "SECRET//EU", True),
    ("SECRET//EU", "SECRET//EU/CT", False),
    ("SECRET//EU", "UNCLASSIFIED//EU", True),
    ("SECRET", "UNCLASSIFIED//EU", False),
    ("CONFIDENTIAL//EU/CT/FIN", "CONFIDENTIAL", True),
    ("CONFIDENTIAL//FIN", "CONFIDENTIAL//CT", False),
    # both must hold
    ("CONFIDENTIAL//EU/CT/FIN", "SECRET", False),
    ("SECRET//CT", "RESTRICTED//EU", False),
    ("RESTRICTED//EU", "RESTRICTED//EU", True),
])
def test_dominance_table(clearance: str, label: str, expected: bool) -> None:
    assert SCALE.dominates(Label.parse(clearance), Label.parse(label)) is expected


def test_unknown_levels_never_dominate() -> None:
    top = Label("SECRET", frozenset(CAVEATS))
    assert not SCALE.dominates(Label("TOP-SECRET"), Label("UNCLASSIFIED"))
    assert not SCALE.dominates(top, Label("COSMIC"))
    assert not SCALE.dominates(Label("COSMIC"), Label("COSMIC"))


def test_custom_scale_order_is_the_given_order() -> None:
    scale = ClassificationScale(("LOW", "MID", "HIGH"))
    assert scale.dominates(Label("HIGH"), Label("LOW"))
    assert not scale.dominates(Label("LOW"), Label("MID"))
    assert not scale.dominates(Label("SECRET"), Label("LOW"))


@given(labels)
def test_dominance_is_reflexive(a: Label) -> None:
    assert SCALE.dominates(a, a)


@given(labels, labels)
def test_dominance_is_antisymmetric(a: Label, b: Label) -> None:
    if SCALE.dominates(a, b) and SCALE.dominates(b, a):
        assert (a.level, a.caveats) == (b.level, b.caveats)
        assert a == b


@given(labels, labels, labels)
def test_dominance_is_transitive(a: Label, b: Label, c: Label) -> None:
    if SCALE.dominates(a, b) and SCALE.dominates(b, c):
        assert SCALE.dominates(a, c)


@given(labels, labels)
def test_dominance_is_exactly_level_and_caveats(a: Label, b: Label) -> None:
    expected = (DEFAULT_LEVELS.index(a.level) >= DEFAULT_LEVELS.index(b.level)
                and b.caveats <= a.caveats)
    assert SCALE.dominates(a, b) is expected


# -- Label -----------------------------------------------------------------------------------

@given(names, st.frozensets(names, max_size=5))
def test_marking_round_trip(level: str, caveats: frozenset[str]) -> None:
    label = Label(level, caveats)
    assert Label.parse(label.marking) == label
    assert Label.parse(f"  {label.marking.lower()} ") == label
    assert str(label) == label.marking


def test_marking_format() -> None:
    assert Label("SECRET", frozenset({"EU", "CT"})).marking == "SECRET//CT/EU"
    assert Label("SECRET").marking == "SECRET"
    assert Label.parse("secret//eu/ct") == Label("SECRET", frozenset({"CT", "EU"}))
    assert Label.parse("SECRET//") == Label("SECRET")
    assert Label("SECRET", ["EU", "EU"]).caveats == frozenset({"EU"})  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "secret level", "SECRET//E U", "//EU", "X" * 33,
                                  "SECRET//" + "C" * 33, "ÉLEVÉ", "-LOW"])
def test_invalid_markings(text: str) -> None:
    assert config_reason(Label.parse, text) == "config.label"


def test_label_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Label("SECRET").level = "UNCLASSIFIED"  # type: ignore[misc]


# -- ClassificationScale ---------------------------------------------------------------------

def test_scale_validate() -> None:
    assert SCALE.validate(Label("SECRET", frozenset({"EU"}))) == Label("SECRET",
                                                                        frozenset({"EU"}))
    assert config_reason(SCALE.validate, Label("TOP-SECRET")) == "label.unknown-level"
    assert config_reason(SCALE.validate, Label("SECRET", frozenset({"NATO"}))) \
        == "label.unknown-caveat"
    assert config_reason(SCALE.rank, "COSMIC") == "label.unknown-level"
    assert SCALE.rank("UNCLASSIFIED") == 0 and SCALE.rank("SECRET") == 4


@pytest.mark.parametrize(("levels", "caveats"), [((), ()), (("A", "A"), ()), (("low",), ()),
                                                 (("A",), ("bad caveat",))])
def test_invalid_scales(levels: tuple[str, ...], caveats: tuple[str, ...]) -> None:
    assert config_reason(ClassificationScale, levels, frozenset(caveats)) == "config.label"


def test_colours() -> None:
    assert SCALE.colour("UNCLASSIFIED") == "green"
    assert SCALE.colour("SECRET") == "red"
    assert SCALE.colour("COSMIC") == "white"
    long_scale = ClassificationScale(tuple(f"L{i}" for i in range(9)))
    assert long_scale.colour("L8") == long_scale.colour("L5")


# -- handling codes --------------------------------------------------------------------------

def test_handling_parse_and_names() -> None:
    h = HandlingCodes.parse([" h2", "H0", "h2"])
    assert h.codes == frozenset({Handling.H0, Handling.H2})
    assert h.names() == ["H0", "H2"]
    assert str(h) == "H0,H2"
    assert Handling.H2 in h and Handling.H1 not in h
    assert str(HandlingCodes()) == "-"
    assert all(code.meaning for code in Handling)


def test_h3_needs_its_text() -> None:
    assert config_reason(HandlingCodes.parse, ["H3"]) == "label.h3-text"
    assert config_reason(HandlingCodes.parse, ["H3"], "   ") == "label.h3-text"
    assert config_reason(HandlingCodes.parse, ["H0"], "text without H3") == "label.h3-text"
    assert config_reason(HandlingCodes.parse, ["H3"], "x" * 513) == "label.h3-text"
    h = HandlingCodes.parse(["H3"], "not before 2025-01-01")
    assert str(h) == "H3 (not before 2025-01-01)"


@pytest.mark.parametrize("code", ["H4", "", "h", "HH", "0"])
def test_unknown_handling_code(code: str) -> None:
    assert config_reason(HandlingCodes.parse, [code]) == "label.handling"


# -- evaluation ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "source", "accuracy"),
                         [("B2", "B", 2), (" a1 ", "A", 1), ("x4", "X", 4), ("C3", "C", 3)])
def test_evaluation_parse(text: str, source: str, accuracy: int) -> None:
    e = Evaluation.parse(text)
    assert (e.source, e.accuracy) == (source, accuracy)
    assert str(e) == f"{source}{accuracy}"
    assert Evaluation.parse(str(e)) == e


@pytest.mark.parametrize("text", ["D1", "A5", "A0", "AA", "A", "", "B22", "2B", "B²", "B٢"])
def test_invalid_evaluation(text: str) -> None:
    assert config_reason(Evaluation.parse, text) == "label.evaluation"


# -- precedence ------------------------------------------------------------------------------

def test_precedence_targets_follow_acp_121() -> None:
    assert Precedence.FLASH.target_seconds == 600
    assert Precedence.IMMEDIATE.target_seconds == 1800
    assert Precedence.PRIORITY.target_seconds == 10_800
    assert Precedence.ROUTINE.target_seconds == 21_600


def test_precedence_orders_queues() -> None:
    assert sorted([Precedence.ROUTINE, Precedence.FLASH, Precedence.PRIORITY,
                   Precedence.IMMEDIATE]) == list(Precedence)
    assert Precedence.FLASH < Precedence.ROUTINE
    assert all(p.colour for p in Precedence)


def test_precedence_parse() -> None:
    assert Precedence.parse(" flash ") is Precedence.FLASH
    assert Precedence.parse("Routine") is Precedence.ROUTINE
    for bad in ("URGENT", "", "0"):
        assert config_reason(Precedence.parse, bad) == "label.precedence"


# -- TLP -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "tlp"), [
    ("CLEAR", TLP.CLEAR), ("tlp:green", TLP.GREEN), (" TLP:AMBER ", TLP.AMBER),
    ("amber+strict", TLP.AMBER_STRICT), ("TLP:AMBER+STRICT", TLP.AMBER_STRICT), ("red", TLP.RED),
])
def test_tlp_parse(text: str, tlp: TLP) -> None:
    assert TLP.parse(text) is tlp
    assert TLP.parse(tlp.marking) is tlp


@pytest.mark.parametrize("text", ["WHITE", "AMBER_STRICT", "TLP:", "", "TLP:TLP:RED",
                                  "AMBER STRICT"])
def test_tlp_unknown(text: str) -> None:
    assert config_reason(TLP.parse, text) == "label.tlp"


def test_tlp_markings() -> None:
    assert TLP.AMBER_STRICT.marking == "TLP:AMBER+STRICT"
    assert [t.value for t in TLP] == ["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]
    assert all(t.colour for t in TLP)
