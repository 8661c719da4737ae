"""Every document a comment, docstring or document names is in the repository.

Read: the package, the tests, the tools and examples, docs/, the READMEs, the Makefile and
setup.cfg. Checked: every path to a Markdown file (``docs/protocol.md``,
``brokers/README.md``...) names a tracked file; every bare name of a docs/ file
(``protocol.md``) is one; and a section number written after a docs/ file's name
(``docs/protocol.md 8.8``, ``protocol.md 4.5``, ``docs/home.md section 1``, ``7.2, 7.4``,
``1.3 and 11``, ``4.1-4.5``) is a heading of that file. Paths a program writes (under
``bench/out/``, or a results table named on the command line) are outputs, not references.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NUMBER = r"\d+(?:\.\d+)*"
SECTIONS = re.compile(
    rf"\b(?:docs/)?(?P<doc>[a-z-]+)\.md(?:,? (?:section|§) ?| )"
    rf"(?P<list>{NUMBER}(?:(?:, | and |-)(?!docs/){NUMBER})*)\b")
PATH = re.compile(r"(?<![\w./-])((?:[\w-]+/)+[\w.-]+\.md)\b")
BARE = re.compile(r"(?<![\w/.-])([a-z][a-z-]*\.md)\b")
HEADING = re.compile(rf"^#+ (?P<n>{NUMBER})\.? ", re.M)
OUTPUTS = ("bench/out/",)
#: Files of other projects, named with their repository.
ELSEWHERE = {"site/mqtt.md": "rabbitmq/rabbitmq-website (brokers/rabbitmq/README.md)"}


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    return out


def _sources() -> list[Path]:
    keep = (".py", ".md", ".toml", ".cfg", ".txt", ".sh")
    return [ROOT / f for f in _tracked()
            if (f.endswith(keep) or Path(f).name == "Makefile")
            and not f.startswith(("tests/data/", "mutants/"))
            and (ROOT / f).exists()]


def _docs() -> dict[str, set[str]]:
    """docs/ file name (without .md) -> its section numbers."""
    return {p.stem: {m["n"] for m in HEADING.finditer(p.read_text())}
            for p in sorted((ROOT / "docs").glob("*.md"))}


def _numbers(listed: str) -> list[str]:
    return re.findall(NUMBER, listed)


def test_every_markdown_path_named_is_in_the_repository() -> None:
    tracked = set(_tracked())
    missing = []
    for path in _sources():
        for m in PATH.finditer(path.read_text(errors="replace")):
            name = m.group(1)
            if name.startswith(OUTPUTS) or name in ELSEWHERE:
                continue
            candidates = {name, str((path.parent / name).resolve().relative_to(ROOT))
                          if (path.parent / name).resolve().is_relative_to(ROOT) else name}
            if not candidates & tracked:
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, "\n".join(missing)


def test_every_docs_file_named_alone_exists() -> None:
    docs = _docs()
    known = {f"{d}.md" for d in docs} | {"README.md", "results.md"}
    unknown = []
    for path in _sources():
        for m in BARE.finditer(path.read_text(errors="replace")):
            if m.group(1) not in known:
                unknown.append(f"{path.relative_to(ROOT)}: {m.group(1)}")
    assert not unknown, "\n".join(sorted(set(unknown)))


def test_every_section_named_after_a_docs_file_is_one_of_its_headings() -> None:
    docs = _docs()
    bad = []
    for path in _sources():
        for m in SECTIONS.finditer(path.read_text(errors="replace")):
            doc = m["doc"]
            if doc not in docs:
                continue  # a file outside docs/ (bench/results.md 2 ...): no sections here
            for n in _numbers(m["list"]):
                if n not in docs[doc]:
                    bad.append(f"{path.relative_to(ROOT)}: {m.group(0)!r} ({doc}.md has no {n})")
    assert not bad, "\n".join(bad)


def test_no_comment_cites_a_document_outside_the_repository() -> None:
    cites = []
    for path in _sources():
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if re.search(r"\bDESIGN\b|STYLE\.md", line):
                cites.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not cites, "\n".join(cites)


def test_the_patterns_find_what_they_should() -> None:
    text = ("see docs/protocol.md 8.8 and protocol.md 7.2, 7.4; docs/home.md section 1; "
            "docs/security.md 4.1-4.5, docs/protocol.md 1.3 and 11")
    found = [(m["doc"], _numbers(m["list"])) for m in SECTIONS.finditer(text)]
    assert found == [("protocol", ["8.8"]), ("protocol", ["7.2", "7.4"]), ("home", ["1"]),
                     ("security", ["4.1", "4.5"]), ("protocol", ["1.3", "11"])]
    assert "8.8" in _docs()["protocol"] and "3" in _docs()["security"]
    nowhere = "docs/nowhere" + ".md"  # split, or this file would name a missing document
    assert [m.group(1) for m in PATH.finditer(f"({nowhere}) and brokers/README.md")] \
        == [nowhere, "brokers/README.md"]
