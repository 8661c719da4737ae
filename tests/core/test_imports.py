"""The core is sans-IO: no event loop, network, database, terminal, clock or randomness.

``i24net/core`` takes the clock and the random source as
arguments (README.md, Layout). This test reads every core module's imports with ``ast`` (nothing
is executed),
including imports nested in functions and ``if TYPE_CHECKING`` blocks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "i24net" / "core"
MODULES = sorted(CORE.glob("*.py"))

# I/O, concurrency, terminal, clock and randomness; the last few are the shells' libraries.
FORBIDDEN = {
    "asyncio", "aiomqtt", "sqlite3", "rich", "socket", "time", "random", "os",
    "secrets", "uuid", "subprocess", "threading", "selectors", "ssl", "paho", "amqtt", "click",
}
# calls that read the clock or the system's randomness even through an allowed module
FORBIDDEN_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"),
                   ("date", "today"), ("nacl.utils", "random"), ("utils", "random")}


def imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: inside the package
                base = "i24net.core" + (f".{base}" if base else "")
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "__import__":
            out.append((node.lineno, "__import__"))
    return out


def test_there_are_core_modules() -> None:
    names = {m.stem for m in MODULES}
    assert {"wire", "keys", "labels", "directory", "netspec", "envelope", "errors"} <= names


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_core_module_imports(module: Path) -> None:
    tree = ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
    bad = []
    for line, name in imported_names(tree):
        top = name.split(".")[0]
        if top in FORBIDDEN or name in ("__import__", "importlib", "nacl.utils"):
            bad.append(f"line {line}: {name}")
        elif top == "i24net" and not (name == "i24net.core" or name.startswith("i24net.core.")):
            bad.append(f"line {line}: {name} (the core must not import the shells)")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value)
            if (owner, node.func.attr) in FORBIDDEN_CALLS:
                bad.append(f"line {node.lineno}: {owner}.{node.func.attr}() reads the "
                           "clock or the system's randomness")
    assert not bad, f"{module.name} is not sans-IO:\n" + "\n".join(bad)


def test_the_check_catches_violations() -> None:
    source = ("import os\nfrom time import monotonic\ndef f():\n    import asyncio\n"
              "from nacl import utils\nimport i24net.config.home\nfrom . import wire\n")
    names = [n for _, n in imported_names(ast.parse(source))]
    assert {"os", "time", "asyncio", "nacl.utils", "i24net.config.home", "i24net.core.wire"} <= set(names)
