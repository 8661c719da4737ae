"""Virtual against live: the same file's verdicts, expectation by expectation.

A file run in both modes must reach the same verdict on every expectation; a difference is a
failure of its own (the two runners judge the same observations differently, or the live
network behaves otherwise than the model), unless the file marks that expectation
``timing = true`` (a latency target, say, that a real network meets or misses by
milliseconds). Outcomes only one mode has (the live run's outside ``history`` check) are
listed but not compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from i24net.exercise.result import Result


@dataclass(frozen=True, slots=True)
class Comparison:
    index: int
    kind: str
    description: str
    virtual: bool | None  # None: this mode has no such outcome
    live: bool | None
    timing: bool = False

    @property
    def agree(self) -> bool:
        return self.virtual is None or self.live is None or self.virtual == self.live

    @property
    def counts(self) -> bool:
        """A difference that fails the comparison."""
        return not self.agree and not self.timing

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "description": self.description,
                "virtual": self.virtual, "live": self.live, "timing": self.timing,
                "agree": self.agree}


def compare(virtual: Result, live: Result) -> list[Comparison]:
    """One row per outcome of either run, expectations first, in file order."""
    expectations = {(e.index, e.kind): e for e in virtual.exercise.expectations}
    v = {(o.index, o.kind): o for o in virtual.outcomes}
    lv = {(o.index, o.kind): o for o in live.outcomes}
    rows = []
    for key in sorted(set(v) | set(lv), key=lambda k: (k not in expectations, k)):
        o = v.get(key) or lv[key]
        e = expectations.get(key)
        rows.append(Comparison(key[0], o.kind, o.description,
                               v[key].passed if key in v else None,
                               lv[key].passed if key in lv else None,
                               bool(e is not None and e.timing)))
    return rows


def same_verdicts(rows: list[Comparison]) -> bool:
    return not any(r.counts for r in rows)
