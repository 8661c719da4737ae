"""``i24net audit verify / show``: check and read a daemon's audit log (a hash chain)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from i24net.cli import cli, console, home_option
from i24net.config.home import ROUTER_ACCOUNT, Home
from i24net.core import audit as au
from i24net.core.errors import ConfigError, I24Error, WireFormatError

_EVENT_STYLES = {"accept": "green", "deliver": "green", "receipt": "green",
                 "refuse": "red", "drop": "red", "drop-summary": "red", "checkpoint": "cyan"}


def _reason(e: au.AuditEntry) -> str:
    """The reason column; a router's ``drop-summary`` (drops not recorded one by one) shows
    how many it stands for and why."""
    if e.event != "drop-summary":
        return escape(e.reason)
    d = e.details_map()
    reasons, counts = d.get("reasons"), d.get("counts")
    parts = ([f"{r} x{n}" for r, n in zip(reasons, counts, strict=False)]
             if isinstance(reasons, list) and isinstance(counts, list) else [])
    return escape(f"{d.get('count', '?')} dropped from {d.get('source', '?')}"
                  + (f": {', '.join(parts[:4])}" if parts else "")
                  + (", ..." if len(parts) > 4 else ""))


def read_lines(path: str | Path) -> Iterator[bytes]:
    """The file's lines, each read with a bound, so a hostile file cannot fill memory: a
    line longer than the limit comes back cut (the parser refuses it as oversized) and the
    rest of it is skipped, so the line numbers after it stay right. "-" reads stdin."""
    limit = au.MAX_LINE + 3
    with (contextlib.nullcontext(sys.stdin.buffer) if str(path) == "-"
          else open(path, "rb")) as fh:
        while line := fh.readline(limit):
            if len(line) == limit and not line.endswith(b"\n"):
                while (rest := fh.readline(limit)) and not rest.endswith(b"\n"):
                    pass
            yield line


def _raise(exc: I24Error) -> None:
    # The error handler prints messages as rich markup; log content must not be taken as such.
    raise type(exc)(escape(exc.message), reason=exc.reason)


def _keys(key_opts: tuple[str, ...], home: str | None,
          needed: bool) -> dict[str, bytes | tuple[bytes, ...]] | None:
    """Public keys of checkpoint signers: from ``--key`` or else the network's directory."""
    if key_opts:
        out: dict[str, bytes | tuple[bytes, ...]] = {}
        for item in key_opts:
            agency, sep, value = item.partition("=")
            try:
                key = bytes.fromhex(value)
            except ValueError:
                key = b""
            if not sep or not agency or len(key) != 32:
                raise click.UsageError(f"--key expects AGENCY=<64 hex digits>, got {item!r}")
            out[agency] = key
        return out
    if home is None and not needed:
        return None  # checkpoint entries are then hash-checked, not signature-checked
    d = Home.resolve(home).directory()
    found: dict[str, bytes | tuple[bytes, ...]] = {a.id: a.sign_key for a in d.agencies.values()}
    if d.router_keys:  # the router signs as its broker account, or simply as "router"
        found[ROUTER_ACCOUNT] = found["router"] = d.router_keys
    return found


def _time(ms: int) -> str:
    # Seconds are enough on screen: the index orders entries; --json has the milliseconds.
    return datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@cli.group()
def audit() -> None:
    """Verify and show audit logs: hash chains of the decisions a daemon took."""


@audit.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--checkpoint", "checkpoint_file", type=click.Path(exists=True, dir_okay=False),
              help="A signed checkpoint kept outside the log; also catches entries removed "
                   "from the end.")
@click.option("--key", "key_opts", multiple=True, metavar="AGENCY=HEX",
              help="Public signing key of a checkpoint signer (repeatable). Default: the "
                   "network directory, when --home or --checkpoint is given.")
@home_option
def audit_verify(file: str, checkpoint_file: str | None, key_opts: tuple[str, ...],
                 home: str | None) -> None:
    """Check FILE's hash chain ('-': stdin). Exit 0 if valid, 3 at the first bad line."""
    anchor = None
    if checkpoint_file:
        lines = list(read_lines(checkpoint_file))
        if len(lines) != 1:
            raise ConfigError(f"{checkpoint_file} must hold exactly one checkpoint line",
                              reason="config.checkpoint")
        try:
            anchor = au.Checkpoint.parse_line(lines[0])
        except WireFormatError as exc:
            _raise(WireFormatError(f"{checkpoint_file}: {exc.message}", reason=exc.reason))
    keys = _keys(key_opts, home, needed=anchor is not None)
    report = au.verify_lines(read_lines(file), keys=keys, anchor=anchor)
    problem = report.error(file)
    if problem is not None:
        _raise(problem)
    console.print(f"valid: {report.entries} entries, head {report.head.hex()[:16]}",
                  soft_wrap=True, markup=False)
    if report.checkpoints:
        checked = (f"{report.checkpoints_verified} signature(s) verified" if keys is not None
                   else "signatures not checked (give --key or --home)")
        console.print(f"  {report.checkpoints} checkpoint(s), {checked}", soft_wrap=True,
                      markup=False)
    if report.anchored:
        console.print(f"  reaches the checkpoint in {checkpoint_file}", soft_wrap=True,
                      markup=False)
    else:
        console.print("  [dim]note: entries removed from the end are only detected with "
                      "--checkpoint[/]", soft_wrap=True)


@audit.command("show")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON lines (NDJSON): one object per entry, one entry per line.")
@click.option("--tail", type=click.IntRange(min=1), default=None, metavar="N",
              help="Only the last N entries.")
def audit_show(file: str, as_json: bool, tail: int | None) -> None:
    """List FILE's entries ('-': stdin) as a table or as JSON lines.

    Each line is parsed strictly, but the chain is not checked: run 'audit verify' for that.
    With --json each entry is one JSON object on a line of its own (NDJSON), as the log
    itself is kept, so 'jq' or 'grep' can read it entry by entry.
    """
    selected: deque[tuple[int, bytes]] = deque(maxlen=tail)
    selected.extend(enumerate(read_lines(file), 1))
    entries = []
    for lineno, raw in selected:
        try:
            entries.append(au.parse_line(raw))
        except WireFormatError as exc:
            _raise(WireFormatError(f"{file} line {lineno}: {exc.message}", reason=exc.reason))
    if as_json:
        for e in entries:
            click.echo(json.dumps(e.to_json()))
        return
    if not entries:
        console.print(f"{escape(file)}: no entries")
        return
    t = Table(title=f"audit log {escape(Path(file).name)}")
    t.add_column("#", justify="right")
    t.add_column("time (UTC)", no_wrap=True)
    t.add_column("actor", overflow="fold")
    t.add_column("event", overflow="fold")
    t.add_column("msg id", no_wrap=True)
    t.add_column("reason", overflow="fold")
    for e in entries:
        style = _EVENT_STYLES.get(e.event, "")
        t.add_row(str(e.index), _time(e.at_ms), escape(e.actor),
                  f"[{style}]{escape(e.event)}[/]" if style else escape(e.event),
                  e.msg_id[:12], _reason(e))
    console.print(t)
