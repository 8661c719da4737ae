"""Fixtures for the CLI tests: a demo network home in a temporary folder, and a runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from i24net.cli import cli, console

Run = Callable[..., Result]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Run:
    """``run("directory", "show", ...)``: invoke the CLI in-process; stdout and stderr apart."""
    monkeypatch.delenv("I24NET_HOME", raising=False)
    # A test worker can inherit COLUMNS (readline sets it in pytest's own process) and
    # rich reads it once, when the console is made: output here is piped, uncut.
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(console, "_width", None)
    runner = CliRunner()

    def invoke(*args: str | Path) -> Result:
        return runner.invoke(cli, [str(a) for a in args])

    return invoke


@pytest.fixture
def home(tmp_path: Path, run: Run) -> Path:
    """A fresh demo network (8 agencies, directory version 1)."""
    path = tmp_path / "home"
    result = run("init", "--preset", "demo", "--home", path)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def sharded(tmp_path: Path, run: Run) -> Path:
    """A demo home with two router shards, so both router key names exist."""
    path = tmp_path / "sharded"
    result = run("init", "--preset", "demo", "--routers", "2", "--home", path)
    assert result.exit_code == 0, result.output
    return path
