"""The exercise loader: valid files load, every malformed one is one error naming the field
and its line, and no input whatsoever makes it raise anything else (fuzzed)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from i24net.cli import cli
from i24net.exercise import ExerciseError, load, loads
from i24net.exercise import model as m

from .support import MINIMAL, example_files


def _line(text: str, needle: str) -> int:
    for n, line in enumerate(text.splitlines(), 1):
        if line == needle:
            return n
    raise AssertionError(f"{needle!r} not in the text")


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_every_example_loads(path: Path) -> None:
    ex = load(path)
    assert ex.name and ex.injects and ex.expectations
    assert all(e.line > 0 for e in ex.expectations)


def test_minimal_loads_with_typed_values() -> None:
    ex = loads(MINIMAL, source="minimal.toml")
    assert (ex.name, ex.seed, ex.duration, ex.mode) == ("minimal", 3, 600.0, "virtual")
    send, request, cancel = ex.injects
    assert isinstance(send, m.Send) and send.to == ("NCB-DE",) and send.at == 5.0
    assert isinstance(request, m.NoticeRequest) and request.at == 60.0
    assert isinstance(cancel, m.Cancel) and cancel.notice == "red1"
    assert ex.conditions.links[0].agency == "NCB-ZA"
    assert [e.kind for e in ex.expectations] == ["delivered", "cancelled-everywhere"]
    assert send.line == _line(MINIMAL, "[[inject]]")


@pytest.mark.parametrize(("old", "new", "field", "words"), [
    ('at = "1:00"', 'at = "1:70"', "inject[2].at", "seconds or mm:ss"),
    ('at = "1:00"', "at = true", "inject[2].at", "seconds or mm:ss"),
    ('at = "1:00"', 'at = "soon"', "inject[2].at", "seconds or mm:ss"),
    ('at = "1:00"', "at = -3", "inject[2].at", "between 0"),
    ('from = "NCB-FR"\n\n[[inject]]\nat = "5:00"', 'from = "NCB-XX"\n\n[[inject]]\nat = "5:00"',
     "inject[2].from", "unknown agency NCB-XX"),
    ('to = ["NCB-DE"]', 'to = ["@NOPE"]', "inject[1].to", "unknown group @NOPE"),
    ('to = ["NCB-DE"]', "to = []", "inject[1].to", "non-empty list"),
    ('label = "RESTRICTED"', 'label = "TOPSECRET"', "inject[1].label", "unknown level"),
    ('label = "RESTRICTED"', 'label = "RESTRICTED//XX"', "inject[1].label",
     "unknown caveat"),
    ('label = "RESTRICTED"', 'lable = "RESTRICTED"', "inject[1].lable", "did you mean label"),
    ('action = "send"', 'action = "sned"', "inject[1].action", "did you mean send"),
    ('action = "cancel"\nnotice = "red1"', 'action = "cancel"\nnotice = "red2"',
     "inject[3].notice", "earlier notice-request"),
    ('message = "m1"', 'message = "m9"', "expect[1].message", "'m9' is not the name"),
    ('kind = "delivered"', 'kind = "delivred"', "expect[1].kind", "did you mean delivered"),
    ("within = 30", 'within = "later"', "expect[1].within", "\"target\""),
    ("within = 120", "within = [1]", "expect[2].within", "seconds or mm:ss"),
    ('preset = "demo"', 'preset = "nato"', "network.preset", "one of demo, interpol"),
    ('preset = "demo"', 'preset = "demo"\nsynthetic = 10', "network", "exactly one"),
    ("seed = 3", 'seed = "x"', "exercise.seed", "whole number"),
    ('duration = "10:00"', 'duration = "0:03"', "exercise.duration", "before inject"),
    ('name = "minimal"', "name = 5", "exercise.name", "must be a string"),
    ('agency = "NCB-ZA"', 'agency = "NCB-ZA"\ngroup = "@EU"', "conditions.link[1]",
     "exactly one of agency, group or between"),
    ("latency_ms = 300", "latency_ms = -1", "conditions.link[1].latency_ms", "non-negative"),
    ("latency_ms = 30", "latency_ms = \"fast\"", "conditions.latency_ms", "milliseconds"),
    ('[network]', '[netwrok]', "netwrok", "did you mean [network]"),
])
def test_malformed_field_is_named_with_its_line(old: str, new: str, field: str,
                                                words: str) -> None:
    assert old in MINIMAL
    text = MINIMAL.replace(old, new, 1)
    with pytest.raises(ExerciseError) as info:
        loads(text, source="x.toml")
    err = info.value
    assert err.path == field, err.message
    assert words in err.message
    assert err.message.startswith(f"x.toml: {field}: ")
    assert "\n" not in err.message
    key = field.rsplit(".", 1)[-1] if "." in field else None
    if err.line is not None and key and not key.endswith("]"):
        assert re.match(rf"\s*{re.escape(key)}\s*=", text.splitlines()[err.line - 1]), \
            (err.line, text.splitlines()[err.line - 1])


def test_missing_required_field_points_at_its_table() -> None:
    text = MINIMAL.replace('from = "NCB-FR"\nto = ["NCB-DE"]\n', 'to = ["NCB-DE"]\n', 1)
    with pytest.raises(ExerciseError) as info:
        loads(text, source="x.toml")
    assert info.value.path == "inject[1].from"
    assert "missing" in info.value.message
    assert info.value.line == _line(text, "[[inject]]")


def test_syntax_error_gives_line_and_column() -> None:
    text = MINIMAL.replace('seed = 3', 'seed = = 3', 1)
    with pytest.raises(ExerciseError) as info:
        loads(text, source="x.toml")
    assert info.value.line == 3
    assert "TOML syntax" in info.value.message and "column" in info.value.message


def test_review_needs_manual_review() -> None:
    text = MINIMAL.replace('action = "cancel"\nnotice = "red1"',
                           'action = "review"\nnotice = "red1"\ndecision = "approve"')
    text = text.replace('kind = "cancelled-everywhere"\nnotice = "red1"\nwithin = 120\n',
                        'kind = "flowcheck-clean"\n')
    with pytest.raises(ExerciseError, match='review = \\"manual\\"'):
        loads(text)
    assert loads(text.replace('preset = "demo"', 'preset = "demo"\nreview = "manual"'))


def test_live_file_refuses_what_live_cannot_play() -> None:
    text = MINIMAL.replace('seed = 3', 'seed = 3\nmode = "live"')
    loads(text)  # an agency's link rule runs live (through its fault proxy)
    loads(text.replace('agency = "NCB-ZA"\n', 'between = ["NCB-ZA", "NCB-FR"]\n'))  # a filter
    with pytest.raises(ExerciseError, match=r"conditions\.broker_queue_limit: not supported "
                       "live: the embedded broker"):
        loads(text.replace("latency_ms = 30\n", "latency_ms = 30\nbroker_queue_limit = 10\n"))
    text = text.replace('action = "cancel"', 'action = "skew"\nagency = "NCB-JP"\n'
                        'seconds = 600\n[[inject]]\nat = "5:00"\naction = "cancel"')
    with pytest.raises(ExerciseError, match="not supported live: skew: a live run has one"):
        loads(text)


def test_spec_path_is_relative_to_the_exercise(tmp_path: Path) -> None:
    from i24net.config.presets import preset_toml

    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "small.toml").write_text(preset_toml("demo"))
    ex_file = tmp_path / "drill.toml"
    ex_file.write_text(MINIMAL.replace('preset = "demo"', 'spec = "nets/small.toml"'))
    assert load(ex_file).network.spec == tmp_path / "nets" / "small.toml"
    ex_file.write_text(MINIMAL.replace('preset = "demo"', 'spec = "nets/none.toml"'))
    with pytest.raises(ExerciseError, match=r"network\.spec: no such file"):
        load(ex_file)


def test_unreadable_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(ExerciseError, match="no such file"):
        load(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[exercise]\nname = "\xff"\n')
    with pytest.raises(ExerciseError, match="not UTF-8") as info:
        load(bad)
    assert info.value.line == 2


def test_cli_validate(tmp_path: Path, minimal: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(cli, ["exercise", "validate", str(minimal)])
    assert ok.exit_code == 0
    assert ok.stdout.strip() == "ok: minimal, 3 injects, 2 expectations"
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace('at = "1:00"', 'at = "1:70"'))
    res = runner.invoke(cli, ["exercise", "validate", str(bad)])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    line = _line(MINIMAL, 'at = "1:00"')
    assert lines[0] == f"ERROR: {bad}: inject[2].at: must be seconds or mm:ss (seconds and " \
        f"minutes below 60) (line {line})"
    assert "Traceback" not in res.output


def test_documentation_lists_every_field() -> None:
    """Exercises written from the documentation alone must be possible: every TOML key the
    loader accepts is named in docs/exercises.md."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "exercises.md").read_text()
    classes = [*m.INJECTS.values(), *m.EXPECTATIONS.values(), m.LinkRule, m.FilterRule,
               m.Conditions, m.RouterCost]
    for cls in classes:
        for _, key, _, _ in m.toml_fields(cls):
            assert f"`{key}`" in doc, f"{cls.__name__}.{key} is not documented"
    for action in m.INJECTS:
        assert f"`{action}`" in doc
    for kind in m.EXPECTATIONS:
        assert f"`{kind}`" in doc


# -- fuzzing ----------------------------------------------------------------------------------

_VALUES = st.one_of(
    st.integers(-10**20, 10**20).map(str), st.floats(allow_nan=True).map(
        lambda f: repr(f).replace("inf", "inf").replace("nan", "nan")),
    st.text(max_size=20).map(lambda s: '"' + s.replace("\\", "").replace('"', "") + '"'),
    st.sampled_from(["true", "false", "[]", "{}", '["@EU"]', '"1:00"', '"99:99"', '"target"',
                     '"NCB-FR"', '"@ALL"', "[1, 2]", '{a = 1}', '"FLASH"', '"H2"', "1e400",
                     '"send"', '"delivered"', '"red1"', "0", "-1", "3.5"]))
_LINES = MINIMAL.splitlines()
_KEYS = sorted({line.split("=")[0].strip() for line in _LINES if "=" in line}
               | {"every", "repeat", "release", "who", "agencies", "by", "reason", "to_group",
                  "precedence", "action", "kind", "except", "probability", "end", "start"})


# Three times the profile's examples (HYPOTHESIS_PROFILE=thorough for a deep search).
_FUZZ = settings(max_examples=max(150, settings.default.max_examples * 3), deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


def _must_be_ours(text: str) -> None:
    try:
        loads(text, source="fuzz.toml")
    except ExerciseError as exc:
        assert exc.message.startswith("fuzz.toml: ")
        assert "\n" not in exc.message or "TOML syntax" in exc.message


@_FUZZ
@given(st.text(max_size=400))
def test_fuzz_random_text(text: str) -> None:
    _must_be_ours(text)


@_FUZZ
@given(st.lists(st.tuples(st.sampled_from(["tables", "keys"]),
                          st.sampled_from(["[exercise]", "[network]", "[conditions]",
                                           "[[inject]]", "[[expect]]", "[[conditions.link]]",
                                           "[[conditions.filter]]", "[conditions.router]",
                                           "[inject]", "[[exercise]]"]),
                          st.sampled_from(_KEYS), _VALUES), max_size=25))
def test_fuzz_toml_ish_documents(parts: list[tuple[str, str, str, str]]) -> None:
    lines = []
    for what, header, key, value in parts:
        lines.append(header if what == "tables" else f"{key} = {value}")
    _must_be_ours("\n".join(lines) + "\n")


@_FUZZ
@given(st.lists(st.tuples(st.integers(0, len(_LINES) - 1),
                          st.sampled_from(["delete", "value", "key", "dup", "swap"]),
                          _VALUES, st.sampled_from(_KEYS), st.integers(0, len(_LINES) - 1)),
                min_size=1, max_size=4))
def test_fuzz_mutations_of_a_valid_file(edits: list[tuple[int, str, str, str, int]]) -> None:
    lines = list(_LINES)
    for i, op, value, key, j in edits:
        i %= len(lines) or 1
        j %= len(lines) or 1
        if not lines:
            break
        if op == "delete":
            del lines[i]
        elif op == "value" and "=" in lines[i]:
            lines[i] = lines[i].split("=")[0] + "= " + value
        elif op == "key" and "=" in lines[i]:
            lines[i] = f"{key} =" + lines[i].split("=", 1)[1]
        elif op == "dup":
            lines.insert(j, lines[i])
        elif op == "swap":
            lines[i], lines[j] = lines[j], lines[i]
    text = "\n".join(lines) + "\n"
    try:
        tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError, ValueError):
        pass  # the loader must turn these into ExerciseError too: checked below
    _must_be_ours(text)


@pytest.mark.parametrize("path", example_files()[:3], ids=lambda p: p.name)
@settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_mutations_of_the_examples(path: Path, data: st.DataObject) -> None:
    lines = path.read_text().splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    if "=" in lines[i]:
        lines[i] = lines[i].split("=")[0] + "= " + data.draw(_VALUES)
    else:
        del lines[i]
    _must_be_ours("\n".join(lines) + "\n")


# -- joint operations and agreements -----------------------------------------------------------

JOINT = (Path(__file__).resolve().parents[2] / "examples" / "exercises" /
         "joint_operation.toml").read_text()


@pytest.mark.parametrize(("old", "new", "field", "words"), [
    ('agreement = "INTERPOL-EUROPOL"', 'agreement = "INTERPOL-NATO"',
     "inject[10].agreement", "no agreement INTERPOL-NATO"),
    ('operation = "TRIDENT"\ntitle', 'operation = "EU"\ntitle', "inject[1].operation",
     "already a group"),
    ('operation = "TRIDENT"\ntitle', 'operation = "trident"\ntitle', "inject[1].operation",
     "not an operation name"),
    ('lead = "NCB-FR"', 'lead = "NCB-XX"', "inject[1].lead", "unknown agency NCB-XX"),
    ('level = "CONFIDENTIAL"', 'level = "COSMIC"', "inject[1].level", "unknown level"),
    ("until = 55", "until = 0.5", "inject[1].until", "ends after it is created"),
    ('action = "operation-remove"\noperation = "TRIDENT"',
     'action = "operation-remove"\noperation = "NEPTUNE"', "inject[7].operation",
     "no earlier operation-create"),
])
def test_operation_and_agreement_injects_are_checked(old: str, new: str, field: str,
                                                    words: str) -> None:
    assert old in JOINT
    with pytest.raises(ExerciseError) as info:
        loads(JOINT.replace(old, new, 1), source="x.toml")
    assert info.value.path == field, info.value.message
    assert words in info.value.message


def test_an_operation_caveat_is_known_only_from_its_creation_on() -> None:
    early = JOINT.replace("at = 1\naction = \"operation-create\"",
                          "at = 5\naction = \"operation-create\"", 1)
    with pytest.raises(ExerciseError) as info:
        loads(early, source="x.toml")
    assert "unknown caveat TRIDENT" in info.value.message
    assert "operation-create" in info.value.message
