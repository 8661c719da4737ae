"""``i24net audit verify / show``: check and read a daemon's audit log (a hash chain)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from i24net.cli import check_agency, cli, console, home_option
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


# -- data protection ------------------------------------------------------------------------


def _dpo_record(h: Home, agency: str) -> dict[str, Any]:
    """What ``agency`` holds and held, from its node store and its audit log: for each item
    its purpose (kind), handling codes and label, until when it is kept, every hand-over to
    the agency's application, every onward message that refers to it, and the audit lines
    about it (received, deleted, purged). Reads only; the node may be running."""
    from i24net.core.envelope import Envelope
    from i24net.shell.runtime import node_store_path
    from i24net.store import SqliteNodeStore

    retention = dict(h.spec().retention)
    path = node_store_path(h, agency)
    if not path.exists():
        raise ConfigError(f"{agency} has no store yet at {path}: start its node "
                          f"('i24net up' or 'i24net node {agency}')", reason="config.store")
    audit_file = h.logs_dir / f"audit-{agency}.jsonl"
    lines: dict[str, list[dict[str, object]]] = {}
    if audit_file.exists():
        for raw in read_lines(audit_file):
            try:
                e = au.parse_line(raw)
            except WireFormatError:
                continue  # 'audit verify' says where the log is damaged; this lists the rest
            if e.msg_id:
                lines.setdefault(e.msg_id, []).append(
                    {"at_ms": e.at_ms, "event": e.event, "reason": e.reason})
    with SqliteNodeStore(path, readonly=True) as store:
        items = store.inbox_list(limit=None)
        handed: dict[bytes, list[int]] = {}
        after = 0
        while batch := store.handovers(after=after, limit=5000):
            for ho in batch:
                handed.setdefault(ho.msg_id, []).append(ho.received_ms)
            after = batch[-1].seq
        onward: dict[bytes, list[dict[str, object]]] = {}
        for entry in store.outbox_list(limit=None):
            try:
                ref = Envelope.parse(entry.raw).header.ref
            except WireFormatError:
                continue
            if ref is not None:
                onward.setdefault(ref, []).append(
                    {"id": entry.msg_id.hex(), "kind": entry.kind, "to": list(entry.recipients),
                     "at_ms": entry.created_ms, "state": entry.state})
    rows: list[dict[str, Any]] = []
    for i in sorted(items, key=lambda i: i.received_ms):
        rows.append({
            "id": i.msg_id.hex(), "kind": i.kind, "from": i.sender, "label": i.label,
            "handling": i.handling.split(",") if i.handling else [],
            "agreement": i.agreement or None,
            "received_ms": i.received_ms, "retained_until_ms": i.retained_until(retention),
            "renewed_until_ms": i.keep_until_ms or None, "state": i.state,
            "erased_ms": i.erased_ms or None, "handovers": handed.get(i.msg_id, []),
            "disseminated": onward.get(i.msg_id, []), "audit": lines.get(i.msg_id.hex(), [])})
    return {"agency": agency, "retention_days": {k: v / 86_400_000
                                                 for k, v in sorted(retention.items())},
            "held": sum(1 for r in rows if not r["erased_ms"]),
            "erased": sum(1 for r in rows if r["erased_ms"]), "items": rows}


def _period(seconds: float) -> str:
    """A retention period as network.toml would say it: whole days, else a duration."""
    from i24net.core.units import duration

    days = seconds / 86_400
    return f"{days:g} d" if days >= 1 and days == int(days) else duration(seconds)


@audit.command("dpo")
@click.argument("agency")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@home_option
def audit_dpo(agency: str, as_json: bool, home: str | None) -> None:
    """The data-protection record of AGENCY: every item it holds or held, its purpose (the
    kind) and handling codes, the agreement it crossed organisations under (as the router
    stamped it), until when it is kept under network.toml's [retention] (or a
    renewal), when its body was erased (a deletion order, or the end of its retention),
    every hand-over to the agency's application and every onward message that refers to it.
    """
    h = Home.resolve(home)
    check_agency(h.directory(), agency, "AGENCY")
    record = _dpo_record(h, agency)
    if as_json:
        click.echo(json.dumps(record))
        return
    items = record["items"]
    rules = ", ".join(f"{k} {_period(v * 86_400)}" for k, v in
                      record["retention_days"].items()) \
        or "none (kept for as long as the store keeps them)"
    t = Table(title=f"{agency}: {record['held']} held, {record['erased']} erased; "
                    f"retention: {rules}")
    for col in ("message", "kind", "from", "label", "handling", "agreement", "received",
                "kept until", "state", "erased", "hand-overs", "onward"):
        t.add_column(col, overflow="fold")
    for r in items:
        until = r["retained_until_ms"]
        t.add_row(r["id"][:12], r["kind"], escape(r["from"]), escape(r["label"]),
                  ",".join(r["handling"]) or "-", escape(r["agreement"] or "-"),
                  _time(r["received_ms"]),
                  _time(until) if until else "-", r["state"],
                  _time(r["erased_ms"]) if r["erased_ms"] else "-", str(len(r["handovers"])),
                  ", ".join(f"{o['kind']} to {len(o['to'])}" for o in r["disseminated"])
                  or "-")
    console.print(t)


@audit.command("renew")
@click.argument("agency")
@click.argument("msg_id", metavar="ID")
@click.option("--for", "period", required=True, metavar="PERIOD",
              help="How long to keep it from now: e.g. 90d, 12h.")
@home_option
def audit_renew(agency: str, msg_id: str, period: str, home: str | None) -> None:
    """Keep an item AGENCY holds beyond its retention (ID: its id or a unique prefix): its
    body is kept at least PERIOD from now; 'audit dpo' shows the renewal."""
    from i24net.config.home import now_ms
    from i24net.core.netspec import parse_period
    from i24net.shell.runtime import node_store_path
    from i24net.store import SqliteNodeStore

    h = Home.resolve(home)
    check_agency(h.directory(), agency, "AGENCY")
    try:
        keep = parse_period(period, "--for")
    except ConfigError as exc:
        raise click.BadParameter(exc.message.removeprefix("--for: "),
                                 param_hint="--for") from None
    prefix = msg_id.strip().lower()
    path = node_store_path(h, agency)
    if not path.exists():
        raise ConfigError(f"{agency} has no store yet at {path}", reason="config.store")
    with SqliteNodeStore(path) as store:
        found = [i for i in store.inbox_list(limit=None) if i.msg_id.hex().startswith(prefix)]
        if len(found) != 1 or not prefix:
            raise click.BadParameter(f"{len(found) or 'none'} of {agency}'s items match "
                                     f"{msg_id!r}", param_hint="ID")
        until = now_ms() + keep
        if not store.inbox_renew(found[0].msg_id, until):
            raise I24Error(f"{found[0].msg_id.hex()[:12]} was erased on "
                           f"{_time(found[0].erased_ms)}: there is nothing left to keep",
                           reason="retention.erased")
    console.print(f"kept {found[0].msg_id.hex()[:12]} until {_time(until)} UTC")
