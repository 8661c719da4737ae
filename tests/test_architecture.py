"""The layer rules of docs/architecture.md, and no reach-ins into another module's private
names. The allowed imports are read from the ``layers`` block of that document."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "i24net"
DOC = ROOT / "docs" / "architecture.md"

# Names from the standard library or a third party that begin with one underscore by their
# own convention; using them is not a reach into an i24net module.
FOREIGN_PRIVATE = {
    "_asdict", "_replace", "_fields", "_make", "_field_defaults",  # namedtuple's public API
    "_exit",  # os._exit
    "_value_", "_name_", "_missing_", "_generate_next_value_",  # enum's hooks
}
# Libraries' private members that tests pin, because i24net relies on how they behave:
# amqtt's Broker._authenticate and ._matches (the embedded broker overrides their
# neighbours), aiomqtt's Client._queue and ._disconnected (what MqttTransport drains).
PINNED_PRIVATE = {"_authenticate", "_matches", "_queue", "_disconnected"}


def layers() -> dict[str, set[str]]:
    block = re.search(r"```layers\n(.*?)```", DOC.read_text(), re.S)
    assert block, "docs/architecture.md has no ```layers block"
    rules: dict[str, set[str]] = {}
    for line in block.group(1).splitlines():
        name, _, allowed = line.partition(":")
        rules[name.strip()] = {a.strip() for a in allowed.split(",") if a.strip()}
    return rules


def _i24net_imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module \
                and node.module.split(".")[0] == "i24net":
            out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names
                    if a.name.split(".")[0] == "i24net"]
    return out


def _package_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def test_every_package_is_in_the_layer_table() -> None:
    rules = layers()
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(rules), "docs/architecture.md must list exactly the packages"
    loose = sorted(p.name for p in PACKAGE.glob("*.py")
                   if p.name not in ("__init__.py", "__main__.py"))
    assert not loose, f"modules outside a layer: {loose}"


def test_no_package_imports_above_or_beside_its_layer() -> None:
    rules = layers()
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _package_of(path)
        if me == "__main__":
            continue
        for line, module, names in _i24net_imports(ast.parse(path.read_text())):
            parts = module.split(".")
            targets = [parts[1]] if len(parts) > 1 else names
            for target in targets:
                if target != me and target not in rules[me]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports i24net.{target}")
    assert not wrong, "\n".join(wrong)


def _defined_private(tree: ast.AST) -> set[str]:
    """Every underscore name a module defines itself: functions, classes, assignments,
    attributes it sets, parameters and names it imports under an alias of its own."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                and _own_instance(node.value):  # setting another object's is no definition
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[-1])
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_")}


def _own_instance(value: ast.expr) -> bool:
    """``self._x``, ``cls._x`` and ``super()._x``: a class using what it or its base class
    defines (the base's protected members), not a reach into another object."""
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) \
        and value.func.id == "super"


def module_under_test(path: Path) -> Path | None:
    """The module a test file tests by its name: ``tests/<package>/test_<module>.py`` tests
    ``i24net/<package>/<module>.py``; ``None`` for any other test file."""
    try:
        rel = path.relative_to(ROOT / "tests")
    except ValueError:
        return None
    if len(rel.parts) != 2 or not rel.name.startswith("test_"):
        return None
    module = PACKAGE / rel.parts[0] / rel.name.removeprefix("test_")
    return module if module.exists() else None


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def reach_ins(paths: list[Path], root: Path = ROOT) -> list[str]:
    """``obj._name`` where the file does not define ``_name`` itself, and ``from i24net.x
    import _name``. A test file may use the private names of the one module it tests
    (``module_under_test``): white-box tests of that module's helpers."""
    found = []
    for path in paths:
        tree = ast.parse(path.read_text())
        own = _defined_private(tree) | FOREIGN_PRIVATE
        tested = module_under_test(path)
        if tested is not None:
            own |= _defined_private(ast.parse(tested.read_text())) | PINNED_PRIVATE
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                    and not node.attr.startswith("__") and node.attr not in own \
                    and not _own_instance(node.value):
                found.append(f"{path.relative_to(root)}:{node.lineno} ._{node.attr[1:]}")
            elif isinstance(node, ast.ImportFrom) and node.module \
                    and node.module.split(".")[0] == "i24net" \
                    and (tested is None or node.module != _module_name(tested)):
                found += [f"{path.relative_to(root)}:{node.lineno} imports {a.name}"
                          for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_reaches_into_another_modules_private_names() -> None:
    found = reach_ins(sorted(PACKAGE.rglob("*.py")))
    assert not found, "\n".join(found)


def test_no_test_reaches_into_a_module_it_does_not_test() -> None:
    found = reach_ins(sorted((ROOT / "tests").rglob("*.py")))
    assert not found, "\n".join(found)


def test_a_test_may_use_the_private_names_of_its_own_module_only() -> None:
    tests = ROOT / "tests"
    assert module_under_test(tests / "broker" / "test_embedded.py") == \
        PACKAGE / "broker" / "embedded.py"
    assert module_under_test(tests / "attacks" / "test_attack_flood.py") is None
    assert module_under_test(tests / "test_architecture.py") is None


def test_the_reach_in_check_finds_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from i24net.core.node import _hidden\n"
                   "class A(B):\n    def f(self, machine):\n"
                   "        return self._own, machine._gap_due\n")
    assert reach_ins([bad], tmp_path) == ["bad.py:1 imports _hidden", "bad.py:4 ._gap_due"]


def _event_kinds() -> set[str]:
    from i24net.core import events

    return {cls.kind for cls in vars(events).values()
            if isinstance(cls, type) and isinstance(getattr(cls, "kind", None), str)}


def test_no_code_dispatches_on_an_event_kind_string() -> None:
    """Events are dispatched on their type (``match`` / ``isinstance``); their ``kind`` is
    only the name they carry in the audit log. Comparing ``x.kind`` with an event's name,
    or matching on it, is the string switch the types replaced."""
    kinds = _event_kinds()
    assert {"delivered", "accepted", "refused"} <= kinds
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) \
                    and node.left.attr == "kind":
                for right in node.comparators:
                    values = right.elts if isinstance(right, (ast.Tuple, ast.Set, ast.List)) \
                        else [right]
                    if any(isinstance(v, ast.Constant) and v.value in kinds for v in values):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.Match) and isinstance(node.subject, ast.Attribute) \
                    and node.subject.attr == "kind":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} match on .kind")
    assert not found, "\n".join(found)
