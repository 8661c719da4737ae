"""Print the mutation score of the last ``mutmut run`` (``make mutants``), per file and overall.

Reads the files listed under ``only_mutate`` in setup.cfg's ``[mutmut]`` section and the
verdicts mutmut keeps beside each mutated copy (``mutants/<path>.meta``). A mutant is killed
when a test failed under it; ``timeout`` and ``no tests`` are counted apart, not as kills.

    python tools/mutation_score.py [--json bench/out/mutants.json] [--survivors]
"""

from __future__ import annotations

import argparse
import configparser
import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parent.parent


def mutated_files(setup_cfg: Path) -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg)
    raw = cfg.get("mutmut", "only_mutate", fallback="")
    return [line.strip() for line in raw.splitlines() if line.strip()]


def verdicts(path: str, mutants_dir: Path) -> dict[str, str] | None:
    meta = mutants_dir / f"{path}.meta"
    if not meta.exists():
        return None
    data = json.loads(meta.read_text())
    return {name: status_by_exit_code[code] for name, code in data["exit_code_by_key"].items()}


def score_line(counts: Counter[str]) -> str:
    total = sum(counts.values())
    killed = counts["killed"] + counts["caught by type check"]
    pct = 100.0 * killed / total if total else 0.0
    extra = [f"{n} {status}" for status, n in sorted(counts.items())
             if status not in ("killed", "caught by type check", "survived", "timeout") and n]
    return (f"{killed}/{total} killed ({pct:.1f}%), {counts['survived']} survived, "
            f"{counts['timeout']} timeout" + "".join(f", {e}" for e in extra))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also write the counts and survivors here")
    ap.add_argument("--survivors", action="store_true", help="list the surviving mutants")
    ap.add_argument("--root", type=Path, default=ROOT, help="the project (holds setup.cfg)")
    args = ap.parse_args(argv)

    files = mutated_files(args.root / "setup.cfg")
    if not files:
        print("no [mutmut] only_mutate list in setup.cfg", file=sys.stderr)
        return 2
    total: Counter[str] = Counter()
    report: dict[str, object] = {"files": {}}
    for path in files:
        v = verdicts(path, args.root / "mutants")
        if v is None:
            print(f"{path}: no results (not mutated yet)")
            continue
        counts = Counter(v.values())
        total.update(counts)
        survivors = sorted(name for name, status in v.items() if status == "survived")
        print(f"{path}: {score_line(counts)}")
        if args.survivors:
            for name in survivors:
                print(f"    {name}")
        report["files"][path] = {"counts": dict(counts), "survivors": survivors}  # type: ignore[index]
    if not total:
        print("no mutation results: run `mutmut run` first", file=sys.stderr)
        return 2
    print(f"mutation score: {score_line(total)}")
    report["counts"] = dict(total)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
