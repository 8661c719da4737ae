"""The ``i24net`` command line: one entry point, one place that maps errors to exit codes.

Exit codes: 0 ok, 1 other error, 2 usage, 3 refused or failed verification, 4 timeout.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from i24net.core.errors import (
    CryptoError,
    DirectoryError,
    I24Error,
    PolicyError,
    WaitTimeout,
    WireFormatError,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REFUSED, EXIT_TIMEOUT = 0, 1, 2, 3, 4

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

_REFUSALS = (CryptoError, WireFormatError, PolicyError, DirectoryError)


def exit_code_for(exc: I24Error) -> int:
    if isinstance(exc, WaitTimeout):
        return EXIT_TIMEOUT
    if isinstance(exc, _REFUSALS):
        return EXIT_REFUSED
    return EXIT_ERROR


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
            ctx.exit(130)


home_option = click.option(
    "--home", "home", envvar="I24NET_HOME", default=None, metavar="DIR",
    help="Network home folder (default $I24NET_HOME or ./.i24net).")


@click.group(cls=I24Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="i24net")
def cli() -> None:
    """i24net: a secure message-passing network simulator in the style of INTERPOL's I-24/7.

    One node daemon per agency exchanges signed, end-to-end encrypted notices, diffusions
    and alerts over an MQTT broker; a routing core enforces classification labels and
    recipient lists. Start with 'i24net init --preset demo' or 'make demo'.
    """


def _register() -> None:
    from i24net.cli import (  # noqa: F401  (attach)
        audit,
        bench,
        chaos,
        daemons,
        demo,
        envelope,
        exercise,
        network,
        notice,
        ops,
    )


_register()


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="i24net")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
