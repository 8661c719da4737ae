"""The example scripts and the package tour run and succeed."""

from __future__ import annotations

import runpy
import sys
import textwrap
from pathlib import Path

import pytest

import i24net.sim

SCRIPTS = Path(__file__).resolve().parents[2] / "examples" / "scripts"


@pytest.mark.parametrize("name, args", [("red_notice_lifecycle.py", []),
                                        ("stolen_key_drill.py", []),
                                        ("stolen_key_drill.py", ["--rotate"])])
def test_example_script(name: str, args: list[str], monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", [name, *args])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(SCRIPTS / name), run_name="__main__")
    out = capsys.readouterr().out
    assert done.value.code == 0, out
    assert "0 violation(s)" in out


def test_the_package_tour_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = i24net.sim.__doc__ or ""
    code = textwrap.dedent(doc.split("A tour::")[1].split("Conventions:")[0])
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(code, "i24net.sim tour", "exec"), scope)  # our own docstring
    assert (tmp_path / "run.json").stat().st_size > 1000
