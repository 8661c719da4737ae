"""Make targets write their results to paths git ignores, never over a tracked file.

Each target's commands are read with ``make -n`` (printed, not run; the install step left
out), and every file they are told to write (``--json``, ``--json-out``, ``--history``,
``--table``, ``--markdown``; a ``--json`` file's ``.md`` table next to it) must be ignored
by git and untracked. ``make bench`` is the exception: it refreshes the committed reference table
``bench/results.md`` on purpose (bench/README.md).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("test-cluster", "chaos", "bench-scale", "mutants", "exercises")
OUTPUT_FLAGS = ("--json", "--json-out", "--history", "--table", "--markdown")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _commands(target: str, *assignments: str) -> str:
    done = subprocess.run(["make", "-n", "-o", "install", "-o", ".venv/.installed", target,
                           *assignments], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.replace("\\\n", " ")


def _outputs(commands: str) -> list[str]:
    found = []
    for flag, path in re.findall(rf"({'|'.join(OUTPUT_FLAGS)}) (\S+)", commands):
        found.append(path)
        if flag == "--json" and "i24net bench" in commands and path.endswith(".json"):
            found.append(path[:-5] + ".md")  # bench writes its table next to the JSON
    return found


def _ignored(path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0


def _tracked(path: str) -> bool:
    return bool(subprocess.run(["git", "ls-files", "--", path], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip())


@pytest.mark.parametrize("target", TARGETS)
def test_a_target_writes_only_ignored_files(target: str) -> None:
    outputs = _outputs(_commands(target))
    assert outputs, f"make {target} names no output file"
    for path in outputs:
        assert not _tracked(path), f"make {target} overwrites the tracked {path}"
        assert _ignored(path), f"make {target} writes {path}, which git does not ignore"


def test_the_cluster_soak_writes_where_it_is_told(tmp_path: Path) -> None:
    default = _commands("test-cluster")
    assert "--json bench/out/cluster-chaos.json" in default
    assert "--history bench/out/cluster-chaos-history.jsonl" in default
    chosen = _commands("test-cluster", f"CLUSTER_JSON={tmp_path}/soak.json")
    assert f"--json {tmp_path}/soak.json" in chosen
    assert f"--history {tmp_path}/soak-history.jsonl" in chosen
    assert _tracked("bench/cluster-chaos.json"), "the reference result stays committed"


def test_the_check_sees_a_tracked_output() -> None:
    assert _outputs("i24net bench --json bench/results.json") == \
        ["bench/results.json", "bench/results.md"]
    assert _tracked("bench/results.md") and not _ignored("bench/results.md")
