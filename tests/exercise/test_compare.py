"""``--both``: the verdicts of a virtual and a live run compared expectation by expectation."""

from __future__ import annotations

from dataclasses import replace

from i24net.exercise import loads, run
from i24net.exercise.compare import compare, same_verdicts
from i24net.exercise.expect import Outcome

from .support import MINIMAL


def flipped(result, index):  # type: ignore[no-untyped-def]
    out = replace(result)
    out.outcomes = [replace(o, passed=not o.passed) if o.index == index else o
                    for o in result.outcomes]
    return out


def test_equal_verdicts_agree_and_a_flipped_one_fails() -> None:
    ex = loads(MINIMAL, source="minimal.toml")
    a = run(ex, "virtual")
    rows = compare(a, run(ex, "virtual"))
    assert rows and all(r.agree for r in rows) and same_verdicts(rows)
    first = a.outcomes[0].index
    rows = compare(a, flipped(a, first))
    assert not same_verdicts(rows)
    assert [r.index for r in rows if not r.agree] == [first]


def test_a_timing_dependent_expectation_may_differ() -> None:
    ex = loads(MINIMAL, source="minimal.toml")
    a = run(ex, "virtual")
    first = a.exercise.expectations[0]
    marked = replace(ex, expectations=(replace(first, timing=True),
                                       *ex.expectations[1:]))
    b = replace(a, exercise=marked)
    rows = compare(b, flipped(b, first.index))
    assert same_verdicts(rows) and not rows[0].agree and rows[0].timing


def test_an_outcome_only_one_mode_has_is_listed_not_compared() -> None:
    ex = loads(MINIMAL, source="minimal.toml")
    a = run(ex, "virtual")
    live = replace(a)
    live.outcomes = [*a.outcomes, Outcome(len(a.outcomes), "history", "outside history",
                                          False, "x")]
    rows = compare(a, live)
    extra = [r for r in rows if r.kind == "history"]
    assert extra and extra[0].virtual is None and same_verdicts(rows)
