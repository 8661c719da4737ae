"""Run one exercise over several seeds and print the spread of what it measures.

    .venv/bin/python examples/exercises/sweep_seeds.py examples/exercises/red_notice_lifecycle.toml 10

A single run says whether the drill passed with one draw of jitter and loss; a sweep says
how much margin there is: the worst time-to-withdraw over ten seeds, how often an
expectation fails. Uses only the public API (``docs/exercises.md``, section 11).
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import replace

from i24net import exercise


def main(path: str, seeds: int) -> int:
    ex = exercise.load(path)
    measured: dict[str, list[float]] = {}
    failures: dict[str, int] = {}
    for seed in range(1, seeds + 1):
        result = exercise.run(replace(ex, seed=seed), mode="virtual")
        for o in result.outcomes:
            key = f"#{o.index} {o.description}"
            failures[key] = failures.get(key, 0) + (not o.passed)
            if o.measured is not None:
                measured.setdefault(key, []).append(o.measured)
        print(f"seed {seed}: {'passed' if result.passed else 'FAILED'}")
    print(f"\n{ex.name}: {seeds} seeds")
    for key, fails in failures.items():
        values = measured.get(key, [])
        spread = (f"median {statistics.median(values):.3f} s, worst {max(values):.3f} s"
                  if values else "")
        print(f"  {key}: failed {fails}/{seeds}  {spread}")
    return 0 if not any(failures.values()) else 3


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else 5))
