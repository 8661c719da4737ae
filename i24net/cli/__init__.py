"""The ``i24net`` command line: one entry point, one place that maps errors to exit codes.

Every command's exit code comes from the constants below (``EXIT_CODES`` is the table that
``i24net --help`` and README.md print): 0 ok, 1 error, 2 usage, 3 refused, 4 timeout, 5
``exercise run --both`` verdicts differ, 6 unknown agency or group, 7 node not running,
128 + N stopped by signal N.
"""

from __future__ import annotations

import difflib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement

from i24net.core.errors import (
    CryptoError,
    DirectoryError,
    I24Error,
    PolicyError,
    WaitTimeout,
    WireFormatError,
)

EXIT_OK = 0
EXIT_ERROR = 1  # anything else: no network home, a missing store, I/O, a failed step
EXIT_USAGE = 2  # a bad option or argument, an invalid exercise file
EXIT_REFUSED = 3  # the network's rules said no, a check failed, an expectation was not met
EXIT_TIMEOUT = 4  # --wait ran out
EXIT_DIFFERENT = 5  # exercise run --both: the virtual and the live verdicts differ
EXIT_UNKNOWN = 6  # an agency or group that the directory does not list
EXIT_NOT_RUNNING = 7  # the node (or the network) the command needs is not running
EXIT_SIGNAL = 128  # + N: stopped by signal N (130 for Ctrl-C) once every process is stopped

EXIT_CODES: tuple[tuple[str, str], ...] = (
    (str(EXIT_OK), "ok"),
    (str(EXIT_ERROR), "error: no network home, a missing store, I/O, a failed step"),
    (str(EXIT_USAGE), "usage: a bad option or argument, an invalid exercise file"),
    (str(EXIT_REFUSED), "refused by the router, the policy or the notice desk; a failed check"),
    (str(EXIT_TIMEOUT), "timeout: --wait ran out (the message stays queued)"),
    (str(EXIT_DIFFERENT), "exercise run --both: the virtual and live verdicts differ"),
    (str(EXIT_UNKNOWN), "unknown agency or group (the message names the closest)"),
    (str(EXIT_NOT_RUNNING), "not running: the sender's node or the network ('i24net up')"),
    (f"{EXIT_SIGNAL}+N", "stopped by signal N (130: Ctrl-C); what it started is stopped"),
)

CONVENTIONS = (
    "--home DIR (or $I24NET_HOME, default ./.i24net): the network a command acts on; "
    "demo and chaos create theirs in --home DIR, exercise run and bench in a temporary "
    "folder of their own.",
    "--json prints JSON on stdout: one document for a listing, one object per line "
    "(NDJSON) for a stream (audit show, inbox --follow). bench, chaos, demo and exercise "
    "run also write it to a file: --json-out FILE (or --json FILE).",
    "'-' as a file is stdin (envelope inspect/open/check, audit show/verify, --body-file) "
    "or stdout (envelope seal -o).",
)


def epilog() -> str:
    """The exit codes and conventions, as ``i24net --help`` ends."""
    width = max(len(code) for code, _ in EXIT_CODES)
    rows = "\n".join(f"  {code:<{width}}  {text}" for code, text in EXIT_CODES)
    return "\b\nExit codes:\n" + rows + "\n\n" + "\n\n".join(CONVENTIONS)


UNKNOWN_REASONS = frozenset({"directory.unknown-agency", "directory.unknown-group"})
NOT_RUNNING_REASONS = frozenset({"node.not-running", "supervisor.down"})

_REFUSALS = (CryptoError, WireFormatError, PolicyError, DirectoryError)


class _Console(Console):
    """A rich console that does not cut what it writes to a pipe or a file.

    On a terminal it is rich's console. Written elsewhere (``| grep``, ``> file``, a test),
    with no ``COLUMNS`` set, text lines are not wrapped and a table is printed at its
    natural width instead of being squeezed into 80 columns (notice numbers, ids and
    subjects stay whole)."""

    _wide_lock = threading.Lock()

    def _piped(self) -> bool:
        return not self.is_terminal and not os.environ.get("COLUMNS")

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if not self._piped() or kwargs.get("width") is not None:
            super().print(*objects, **kwargs)
            return
        kwargs.setdefault("soft_wrap", True)
        with self._wide_lock:
            saved = self._width
            try:
                self._width = 80
                wide = self.options.update_width(10_000)
                need = max([80, *(Measurement.get(self, wide, o).maximum for o in objects
                                  if not isinstance(o, str))])
                self._width = need
                super().print(*objects, **kwargs)
            finally:
                self._width = saved


console = _Console(highlight=False)
err_console = _Console(stderr=True, highlight=False)


class UnknownName(DirectoryError):
    """An agency or group the directory does not list; the message names the closest."""


class NotRunning(I24Error):
    """The node a command needs (the sender's) is not running."""

    default_reason = "node.not-running"


def exit_code_for(exc: I24Error) -> int:
    if isinstance(exc, WaitTimeout):
        return EXIT_TIMEOUT
    if exc.reason in NOT_RUNNING_REASONS:
        return EXIT_NOT_RUNNING
    if isinstance(exc, DirectoryError) and exc.reason in UNKNOWN_REASONS:
        return EXIT_UNKNOWN
    if isinstance(exc, _REFUSALS):
        return EXIT_REFUSED
    return EXIT_ERROR


# -- names: "did you mean" ------------------------------------------------------------------


def closest(name: str, choices: Iterable[str]) -> list[str]:
    """The names in ``choices`` that ``name`` most likely meant (a typo, another case, a
    short form such as FR for NCB-FR), best first; empty when none is close."""
    by_key = {c.casefold(): c for c in choices}
    key = name.strip().casefold()
    if key in by_key:
        return [by_key[key]]
    scored = {c: difflib.SequenceMatcher(None, key, c).ratio() for c in by_key}
    close = [c for c, r in scored.items() if r >= 0.75]
    close += [c for c in by_key if len(key) >= 2 and c not in close
              and (c.endswith("-" + key) or c.startswith(key))]
    close.sort(key=lambda c: -scored[c])
    return [by_key[c] for c in close[:3]]


def _suggestion(name: str, choices: Iterable[str], listing: str) -> str:
    found = closest(name, choices)
    if not found:
        return f" ({listing})"
    return "; did you mean " + (found[0] if len(found) == 1 else
                                ", ".join(found[:-1]) + " or " + found[-1]) + "?"


def check_agency(d: Any, agency: str, option: str | None = None) -> str:
    """``agency`` if the directory lists it, else ``UnknownName`` (exit 6) with the closest
    ids: ``unknown agency NCB-FX (--to); did you mean NCB-FR?``."""
    if agency in d.agencies:
        return agency
    where = f" ({option})" if option else ""
    raise UnknownName(f"unknown agency {agency}{where}"
                      + _suggestion(agency, d.agencies, "'i24net directory show' lists them"),
                      reason="directory.unknown-agency", agency=agency)


def check_agencies(d: Any, agencies: Iterable[str], option: str | None = None) -> list[str]:
    return [check_agency(d, a, option) for a in agencies]


def check_addressing(d: Any, addressing: Iterable[str], option: str = "--to") -> None:
    """Every agency and @GROUP of ``addressing`` is in the directory, or ``UnknownName``."""
    groups = ["@" + g for g in d.group_names()]
    for item in addressing:
        if item.startswith("@"):
            if item not in groups:
                raise UnknownName(f"unknown group {item} ({option})" + _suggestion(
                    item, groups, "groups: " + ", ".join(groups)),
                    reason="directory.unknown-group")
        else:
            check_agency(d, item, option)


# -- what runs ------------------------------------------------------------------------------


def home_hint(home: Any) -> str:
    """`` --home DIR`` when the command was given ``--home`` on its command line (so a
    suggested command acts on the same network), else nothing."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or "home" not in ctx.params or ctx.params["home"] is None:
        return ""
    source = ctx.get_parameter_source("home")
    if source is not click.core.ParameterSource.COMMANDLINE:
        return ""
    import shlex

    return f" --home {shlex.quote(str(home.path))}"


def require_running(h: Any, agency: str, *, queue: bool = False,
                    timeout: float = 5.0) -> str:
    """The state of ``agency``'s node (``up`` or ``starting``), or ``NotRunning`` (exit 7)
    saying how to start it. Running means: a process answers on the agency's control
    socket (a node host or ``i24net node``) and reports the agency up or starting, or
    takes the connection but is too busy to answer in time.
    With ``queue`` nothing is raised: the state is returned (``down``, ``stopped``...).
    ``timeout``: how long a process that took the connection has to answer."""
    from i24net.ops.client import node_state
    from i24net.ops.supervisor import Supervisor

    state, detail = node_state(h, agency, timeout=timeout)
    if state in ("up", "starting", "busy") or queue:  # busy: there, and will send
        return state
    from i24net.config.machine import machine_of

    machine = machine_of(h)
    if machine is not None and agency not in machine.agencies:
        raise NotRunning(f"{agency} does not run on machine {machine.name}: this home is its "
                         f"export and holds the keys of {', '.join(machine.agencies) or 'no agency'}"
                         " only (machine.toml)", agency=agency)
    sup = Supervisor(h)
    where = sup.where(agency)
    hint = home_hint(h)
    if where is not None and where.alive:
        how = f"`i24net start {agency}{hint}`"
    else:
        how = f"`i24net up{hint}`"
    if state != "down":
        why = f" ({state}{': ' + detail if detail else ''})"
    else:
        why = "" if detail == "control.unreachable" else f" (its control socket: {detail})"
    raise NotRunning(f"node {agency} is not running{why}; start it with {how}, or give "
                     "--queue to leave the message in its outbox until it runs",
                     agency=agency)


def refuse_running_home(path: Path) -> None:
    """``demo --home DIR`` and ``chaos --home DIR`` create a fresh network in DIR: refuse
    when a network there is running (its processes would be orphaned, its keys replaced)."""
    from i24net.config.home import Home
    from i24net.ops.supervisor import Supervisor

    h = Home(path)
    if h.spec_file.exists() and Supervisor(h).running():
        raise click.ClickException(
            f"the network at {path} is running: run 'i24net down --home {path}' first, or "
            "give another --home (this command creates a fresh network there)")


# -- JSON and files -------------------------------------------------------------------------


def human_to_stderr(ctx: click.Context) -> None:
    """From now on until the command ends, what the command prints for people goes to
    stderr: stdout carries JSON only."""
    if not console.stderr:
        console.stderr = True
        ctx.call_on_close(lambda: setattr(console, "stderr", False))


def json_report_option(what: str = "the report") -> Callable[[Any], Any]:
    """``--json [FILE]`` and ``--json-out FILE`` for commands that make a report (bench,
    chaos, demo, exercise run). ``--json`` alone or ``--json -`` prints the JSON on stdout
    and moves the human output to stderr, as every other command's ``--json`` does;
    ``--json FILE`` (kept for existing scripts) and ``--json-out FILE`` write FILE. The
    value reaches the command as ``json_path`` ("-" for stdout)."""
    key = "i24net.json_out"

    def on_json(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        out = ctx.meta.get(key)
        if value is not None and out is not None:
            raise click.UsageError("give --json or --json-out, not both")
        value = value if value is not None else out
        if value == "-":
            human_to_stderr(ctx)
        return value

    def on_out(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is None:
            return
        if ctx.params.get("json_path") is not None:
            raise click.UsageError("give --json or --json-out, not both")
        ctx.meta[key] = value
        if value == "-":
            human_to_stderr(ctx)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option(
            "--json-out", metavar="FILE", default=None, expose_value=False, callback=on_out,
            type=click.Path(dir_okay=False, allow_dash=True),
            help=f"Write {what} as JSON to FILE ('-': stdout).")(fn)
        return click.option(
            "--json", "json_path", is_flag=False, flag_value="-", default=None,
            metavar="[FILE]", callback=on_json, type=click.Path(dir_okay=False, allow_dash=True),
            help=f"Print {what} as JSON on stdout (the rest goes to stderr); --json FILE "
            "writes FILE, as --json-out FILE does.")(fn)

    return decorate


def write_json_report(path: str | Path, text: str) -> None:
    """``text`` (JSON) to stdout when ``path`` is "-", else to the file ``path``."""
    if str(path) == "-":
        click.echo(text.rstrip("\n"))
    else:
        Path(path).write_text(text)


def read_input(path: str | Path) -> bytes:
    """The bytes of ``path``, or of stdin when it is "-"."""
    if str(path) == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def plain_text(text: str) -> str:
    """``text`` as one line of literal output. Messages quote untrusted input (agency ids,
    field names from a hostile file): unescaped, rich swallows "[...]" as a style tag or
    raises MarkupError on a stray "[/]", and a newline or ESC would forge more output."""
    return escape("".join(c if c.isprintable() else ascii(c)[1:-1] for c in text))


class I24Group(click.Group):
    """A click group that turns any ``I24Error`` into ``ERROR: <message>`` and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except I24Error as exc:
            err_console.print(f"[bold red]ERROR:[/] {plain_text(exc.message)} "
                              f"[dim]({plain_text(exc.reason)})[/]", soft_wrap=True, markup=True)
            ctx.exit(exit_code_for(exc))
        except OSError as exc:  # e.g. "-o missing/dir/file": a message, not a traceback
            what = f"{exc.filename}: " if exc.filename else ""
            err_console.print(f"[bold red]ERROR:[/] {plain_text(what + (exc.strerror or str(exc)))}"
                              " [dim](io)[/]", soft_wrap=True, markup=True)
            ctx.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            ctx.exit(EXIT_SIGNAL + signal.SIGINT)
        finally:  # a --json that moved the human output to stderr ends with the command,
            console.stderr = False  # also when its options failed to parse


# Which module of this package defines each top-level command. A module is imported when
# one of its commands runs (or for --help and completion, which list them all), so a node
# host or a one-line publish does not load the soak, the bench and the exercise engine.
# tests/cli/test_cli_lazy.py checks this table against what the modules register.
COMMAND_MODULES: dict[str, str] = {
    "audit": "audit", "bench": "bench", "chaos": "chaos", "check": "chaos",
    "broker": "daemons", "router": "daemons", "node": "daemons", "host": "daemons",
    "publish": "daemons", "inbox": "daemons", "outbox": "daemons", "demo": "demo",
    "envelope": "envelope", "exercise": "exercise", "init": "network", "export": "network",
    "directory": "network", "notice": "notice", "diffusion": "notice", "up": "ops",
    "status": "ops", "stop": "ops", "start": "ops", "down": "ops",
    "operation": "cooperation", "agreement": "cooperation",
}


class _LazyCommands(I24Group):
    """The top-level group: each command's module is imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMAND_MODULES) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(f"i24net.cli.{COMMAND_MODULES[cmd_name]}")
        return super().get_command(ctx, cmd_name)


home_option = click.option(
    "--home", "home", envvar="I24NET_HOME", default=None, metavar="DIR",
    help="Network home folder (default $I24NET_HOME or ./.i24net).")


@click.group(cls=_LazyCommands, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=epilog())
@click.version_option(package_name="i24net")
def cli() -> None:
    """i24net: a secure message-passing network simulator in the style of INTERPOL's I-24/7.

    One node daemon per agency exchanges signed, end-to-end encrypted notices, diffusions
    and alerts over an MQTT broker; a routing core enforces classification labels and
    recipient lists. Start with 'i24net init --preset demo' or 'make demo'.
    """


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="i24net")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
