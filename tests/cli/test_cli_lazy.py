"""The top-level commands load their modules on first use: the table in ``i24net.cli``
names, for every command, the module that defines it, and a command that is used loads
neither the soak, the bench nor the exercise engine unless it is one of them."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click

from i24net.cli import COMMAND_MODULES, cli


def test_the_table_names_every_command_and_where_it_is_defined() -> None:
    for module in set(COMMAND_MODULES.values()):
        importlib.import_module(f"i24net.cli.{module}")
    assert set(cli.commands) == set(COMMAND_MODULES)
    for name, command in cli.commands.items():
        assert command.callback is not None
        assert command.callback.__module__ == f"i24net.cli.{COMMAND_MODULES[name]}", name


def test_help_lists_every_command() -> None:
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMAND_MODULES)
    assert all(cli.get_command(ctx, name) is not None for name in COMMAND_MODULES)
    assert cli.get_command(ctx, "no-such-command") is None


def test_a_command_loads_only_what_it_needs() -> None:
    probe = ("import sys, click; from i24net.cli import cli; "
             "cli.get_command(click.Context(cli), 'publish'); "
             "print(sorted(m for m in ('i24net.ops.chaos', 'i24net.bench', 'i24net.exercise',"
             " 'i24net.cli.chaos', 'i24net.cli.publish') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
