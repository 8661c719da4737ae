"""Every third-party module imported is declared, so ``make install`` on a fresh machine
installs what the code needs (nothing arrives only as another package's dependency).

The imports are read with ``ast`` (every ``import`` and absolute ``from ... import``, also
inside functions); ``setup.cfg`` is read with configparser. i24net/ may import only what
``install_requires`` declares; tests/ and tools/ may also use the ``test`` and ``dev``
extras, which the Makefile's install step installs.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Distribution name -> the top-level modules it provides, where they differ from the name
#: (lower case, "-" as "_").
IMPORT_NAMES: dict[str, set[str]] = {
    "pynacl": {"nacl"},
    "paho-mqtt": {"paho"},
    "nats-py": {"nats"},
    "pytest-asyncio": {"pytest_asyncio"},
    "pytest-timeout": {"pytest_timeout"},
    "pytest-xdist": {"xdist"},
}

#: Imported but installed by hand, with where that is said.
BY_HAND = {"atheris": "tests/fuzz/atheris_envelope.py (docs/security.md: pip install atheris)"}

#: Declared but never imported: run as programs or loaded by another tool.
NOT_IMPORTED = {
    "pytest-asyncio": "a pytest plugin (asyncio_mode = auto)",
    "pytest-timeout": "a pytest plugin (timeout = 300)",
    "pytest-xdist": "a pytest plugin (make test: -n 2 --dist loadgroup)",
    "ruff": "make lint runs it",
    "mypy": "make lint runs it",
}


def _declared(section: str, key: str) -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [ln.strip() for ln in cfg[section][key].splitlines()]
    names = {re.match(r"[A-Za-z0-9._-]+", ln).group(0).lower()  # type: ignore[union-attr]
             for ln in lines if ln and not ln.startswith("#")}
    return {re.sub(r"[._]", "-", n) for n in names}


def _modules_of(dist: str) -> set[str]:
    return IMPORT_NAMES.get(dist, {dist.replace("-", "_")})


def _imports(folder: Path) -> dict[str, list[str]]:
    """Top-level module -> the files that import it, for every .py file under ``folder``."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return {m: sorted(files) for m, files in found.items()}


def _third_party(found: dict[str, list[str]], local: set[str]) -> dict[str, list[str]]:
    return {m: files for m, files in found.items()
            if m not in sys.stdlib_module_names and m != "i24net" and m not in local}


def _local_names(folder: Path) -> set[str]:
    """Modules the test run imports from the folder itself (``livekit``, ``broker``...)."""
    return {p.stem for p in folder.rglob("*.py")} | {p.name for p in folder.rglob("*")
                                                      if p.is_dir()}


RUNTIME = _declared("options", "install_requires")
EXTRAS = _declared("options.extras_require", "test") | _declared("options.extras_require", "dev")


def test_the_package_imports_only_what_install_requires_declares() -> None:
    provided = {m for d in RUNTIME for m in _modules_of(d)}
    missing = {m: files for m, files in _third_party(_imports(ROOT / "i24net"), set()).items()
               if m not in provided}
    assert not missing, f"imported by i24net/ but not in install_requires: {missing}"


def test_install_requires_lists_nothing_the_package_does_not_import() -> None:
    imported = set(_imports(ROOT / "i24net"))
    unused = sorted(d for d in RUNTIME if not _modules_of(d) & imported)
    assert not unused, f"in install_requires but never imported by i24net/: {unused}"


def test_tests_and_tools_import_only_declared_modules() -> None:
    provided = {m for d in RUNTIME | EXTRAS for m in _modules_of(d)}
    for folder in ("tests", "tools"):
        found = _third_party(_imports(ROOT / folder), _local_names(ROOT / folder))
        missing = {m: files for m, files in found.items()
                   if m not in provided and m not in BY_HAND}
        assert not missing, f"imported by {folder}/ but declared nowhere: {missing}"
    assert BY_HAND.keys() <= set(_imports(ROOT / "tests")), "a stale BY_HAND entry"


def test_every_extra_is_used() -> None:
    imported = set(_imports(ROOT / "tests")) | set(_imports(ROOT / "tools"))
    unused = sorted(d for d in EXTRAS if not _modules_of(d) & imported
                    and d not in NOT_IMPORTED)
    assert not unused, f"declared in the test/dev extras but never used: {unused}"


def test_the_import_names_match_the_installed_distributions() -> None:
    """The map above agrees with each installed distribution's own file list."""
    by_module = importlib.metadata.packages_distributions()
    for dist in sorted(RUNTIME | EXTRAS):
        for module in _modules_of(dist):
            if dist in NOT_IMPORTED:
                continue
            owners = {re.sub(r"[._]", "-", o.lower()) for o in by_module.get(module, [])}
            assert dist in owners, (dist, module, owners)


def test_the_makefile_installs_the_extras_the_tests_need() -> None:
    makefile = (ROOT / "Makefile").read_text()
    installs = re.findall(r"pip install [^\n]*-e '\.\[([^\]]*)\]'", makefile)
    assert installs, "the Makefile installs the package with its extras"
    assert {"test", "dev"} <= set(installs[0].split(","))
    stamp_deps = re.search(r"^\$\(STAMP\):([^\n]*)$", makefile, re.M)
    assert stamp_deps and "setup.cfg" in stamp_deps.group(1), \
        "a change to setup.cfg reinstalls"
