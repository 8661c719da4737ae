"""``i24net operation ...`` and ``i24net agreement ...``: joint operations and the agreements
between organisations, each change issued as a new directory version (docs/operations.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from i24net.cli import I24Group, check_agencies, check_agency, cli, console, home_option
from i24net.cli.network import agreement_json, operation_json, publish_version
from i24net.config.home import Home, now_ms
from i24net.core.cooperation import Operation
from i24net.core.directory import GROUP_NAME, Directory
from i24net.core.errors import ConfigError, I24Error
from i24net.core.labels import Label
from i24net.core.netspec import parse_period, parse_until


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def parse_end(text: str, now: int, option: str = "--until") -> int:
    """An end given as a date (``2027-03-31``: the end of that day, UTC), a date and time
    (``2027-03-31T18:00:00Z``) or a period from now (``30d``, ``12h``)."""
    try:
        return now + parse_period(text, option)
    except ConfigError:
        pass
    try:
        end = parse_until(text, option)
    except ConfigError:
        raise ConfigError(f"{option}: {text!r} is neither a date (2027-03-31, "
                          "2027-03-31T18:00:00Z) nor a period from now (30d, 12h)",
                          reason="config.field") from None
    if end <= now:
        raise ConfigError(f"{option}: {_when(end)} has already passed", reason="config.field")
    return end


def _members(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def _issued(h: Home, d: Directory, what: str) -> None:
    console.print(f"{what}; directory is now version {d.serial}")
    publish_version(h, d)


# -- operations ---------------------------------------------------------------------------

@cli.group(cls=I24Group)
def operation() -> None:
    """Joint operations: a task force with a lead, members, an end and a level.

    The operation's NAME is both a group (@NAME: its members) and a caveat granted to its
    members while it runs: label its traffic with it ('i24net publish --classification
    CONFIDENTIAL --caveat TRIDENT') or address its group (--to @TRIDENT).
    Every change issues a new directory version, published to a running network; a
    removed member, and everyone once the operation is closed or past its end, receives
    nothing more under it.
    """


@operation.command("create")
@click.argument("name")
@click.option("--lead", required=True, metavar="AGENCY", help="The agency leading it.")
@click.option("--members", required=True, metavar="A,B,...",
              help="Its members, comma-separated (the lead is one of them).")
@click.option("--until", "until", required=True, metavar="DATE",
              help="When it ends: 2027-03-31 (end of that day, UTC), 2027-03-31T18:00:00Z, "
              "or a period from now (90d).")
@click.option("--level", default=None, metavar="LEVEL",
              help="The highest level of its traffic (default: the lead's clearance).")
@click.option("--title", default=None, help="What it is about (default: NAME).")
@home_option
def operation_create(name: str, lead: str, members: str, until: str, level: str | None,
                     title: str | None, home: str | None) -> None:
    """Create joint operation NAME: grant its caveat and group to its members."""
    h = Home.resolve(home)
    d = h.directory()
    if not GROUP_NAME.match(name):
        raise ConfigError(f"operation name {name!r}: upper-case letters, digits and '-', "
                          "at most 32 (e.g. TRIDENT)", reason="config.field")
    check_agency(d, lead, "--lead")
    listed = check_agencies(d, _members(members), "--members")
    now = now_ms()
    end = parse_end(until, now)
    lvl = level or d.agency(lead).clearance.level
    if lvl not in d.scale.levels:
        raise ConfigError(f"--level: unknown level {lvl}; levels: "
                          f"{', '.join(d.scale.levels)}", reason="config.field")
    op = Operation(name, title or name, lead, tuple(sorted({lead, *listed})), end, lvl,
                   created_ms=now)
    nd = h.amend(lambda cur, t: cur.create_operation(op, t))
    _issued(h, nd, f"operation {name} created: lead {lead}, {len(op.members)} members, "
            f"{lvl}, until {_when(end)}")


@operation.command("add")
@click.argument("name")
@click.argument("agencies", nargs=-1, required=True)
@home_option
def operation_add(name: str, agencies: tuple[str, ...], home: str | None) -> None:
    """Add AGENCIES to operation NAME (they receive its traffic from the new version on)."""
    _change_members(home, name, agencies, joining=True)


@operation.command("remove")
@click.argument("name")
@click.argument("agencies", nargs=-1, required=True)
@home_option
def operation_remove(name: str, agencies: tuple[str, ...], home: str | None) -> None:
    """Remove AGENCIES from operation NAME: they lose its caveat and its group, so the
    router refuses to send them anything under it."""
    _change_members(home, name, agencies, joining=False)


def _change_members(home: str | None, name: str, agencies: tuple[str, ...], *,
                    joining: bool) -> None:
    h = Home.resolve(home)
    listed = check_agencies(h.directory(), agencies)
    nd = h.amend(lambda d, t: d.change_operation(name, t, add=listed if joining else (),
                                                 remove=() if joining else listed))
    _issued(h, nd, f"{'added' if joining else 'removed'} {', '.join(listed)} "
            f"{'to' if joining else 'from'} operation {name}")


@operation.command("set")
@click.argument("name")
@click.option("--lead", default=None, metavar="AGENCY",
              help="Hand the lead on to AGENCY (it joins if it is not a member).")
@click.option("--until", "until", default=None, metavar="DATE",
              help="A new end: a date, a date and time, or a period from now.")
@click.option("--level", default=None, metavar="LEVEL", help="A new highest level.")
@home_option
def operation_set(name: str, lead: str | None, until: str | None, level: str | None,
                  home: str | None) -> None:
    """Change operation NAME's lead, end or level (a new directory version)."""
    h = Home.resolve(home)
    d = h.directory()
    if lead is None and until is None and level is None:
        raise ConfigError("nothing to change: give --lead, --until or --level",
                          reason="config.field")
    if lead is not None:
        check_agency(d, lead, "--lead")
    end = None if until is None else parse_end(until, now_ms())
    joining = [lead] if lead is not None and lead not in d.operation(name).members else []
    nd = h.amend(lambda cur, t: cur.change_operation(name, t, add=joining, lead=lead,
                                                     until_ms=end, level=level))
    op = nd.operations[name]
    _issued(h, nd, f"operation {name}: lead {op.lead}, {op.level}, until {_when(op.until_ms)}")


@operation.command("close")
@click.argument("name")
@home_option
def operation_close(name: str, home: str | None) -> None:
    """Close operation NAME: no one holds its caveat any more and the router refuses
    anything under it or addressed to @NAME. What members received stays in their inboxes
    under their retention rules."""
    h = Home.resolve(home)
    nd = h.amend(lambda d, t: d.close_operation(name, t))
    _issued(h, nd, f"operation {name} closed")


@operation.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@home_option
def operation_list(as_json: bool, home: str | None) -> None:
    """List the joint operations: lead, members, level, end and state."""
    d = Home.resolve(home).directory()
    now = now_ms()
    ops = [d.operations[n] for n in sorted(d.operations)]
    if as_json:
        click.echo(json.dumps([operation_json(op, now) for op in ops], indent=2))
        return
    if not ops:
        console.print("no joint operations; create one with 'i24net operation create NAME "
                      "--lead AGENCY --members A,B --until DATE'")
        return
    t = Table(title=f"joint operations (directory version {d.serial})")
    for col in ("name", "state", "lead", "members", "level", "until", "removed"):
        t.add_column(col)
    for op in ops:
        state = op.state(now)
        colour = {"active": "green", "expired": "yellow", "closed": "red"}[state]
        t.add_row(op.name, f"[{colour}]{state}[/]", op.lead, ", ".join(op.members),
                  op.level, _when(op.until_ms), ", ".join(op.removed))
    console.print(t)


@operation.command("show")
@click.argument("name")
@click.option("--agency", default=None, metavar="AGENCY",
              help="Also show the operation's traffic in AGENCY's inbox, as threads.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@home_option
def operation_show(name: str, agency: str | None, as_json: bool, home: str | None) -> None:
    """Show operation NAME, and with --agency its traffic held by that agency: each
    message under the operation's caveat, replies and forwards under what they answer."""
    h = Home.resolve(home)
    d = h.directory()
    op = d.operation(name)
    now = now_ms()
    items: list[Any] = []
    if agency is not None:
        from i24net.ops.client import open_store

        check_agency(d, agency, "--agency")
        store = open_store(h, agency, readonly=True)
        items = [i for i in reversed(store.inbox_list(limit=1_000_000))
                 if name in Label.parse(i.label).caveats]
    threads = _threads(items)
    if as_json:
        out = operation_json(op, now)
        if agency is not None:
            out["agency"] = agency
            out["threads"] = [[_brief(i, depth) for i, depth in th] for th in threads]
        click.echo(json.dumps(out, indent=2))
        return
    state = op.state(now)
    console.print(f"[bold]operation {escape(op.name)}[/]: {escape(op.title)}\n"
                  f"  state {state}, lead {op.lead}, level {op.level}, until "
                  f"{_when(op.until_ms)}\n  members: {', '.join(op.members) or '-'}"
                  + (f"\n  removed: {', '.join(op.removed)}" if op.removed else ""))
    if agency is None:
        return
    console.print(f"\n{agency} holds {len(items)} message(s) under {name}, in "
                  f"{len(threads)} thread(s)")
    for th in threads:
        console.print("")
        for i, depth in th:
            console.print(f"{'  ' * depth}{_when(i.received_ms)}  {i.sender} {i.kind} "
                          f"{i.label} {i.subject!r} [{i.state}] {i.msg_id.hex()[:12]}",
                          markup=False)


def _brief(i: Any, depth: int) -> dict[str, Any]:
    return {"id": i.msg_id.hex(), "from": i.sender, "kind": i.kind, "label": i.label,
            "subject": i.subject, "received_ms": i.received_ms, "state": i.state,
            "ref": i.ref.hex() if i.ref else None, "depth": depth}


def _threads(items: list[Any]) -> list[list[tuple[Any, int]]]:
    """Items (oldest first) as threads: each root followed by what refers to it, depth-first;
    a reply to something not held starts a thread of its own."""
    by_id = {i.msg_id: i for i in items}
    children: dict[bytes, list[Any]] = {}
    roots = []
    for i in items:
        if i.ref is not None and i.ref in by_id and i.ref != i.msg_id:
            children.setdefault(i.ref, []).append(i)
        else:
            roots.append(i)
    out = []
    for root in roots:
        thread: list[tuple[Any, int]] = []
        stack = [(root, 0)]
        seen: set[bytes] = set()
        while stack:
            item, depth = stack.pop()
            if item.msg_id in seen:
                continue
            seen.add(item.msg_id)
            thread.append((item, depth))
            stack += [(c, depth + 1) for c in reversed(children.get(item.msg_id, []))]
        out.append(thread)
    return out


# -- agreements -------------------------------------------------------------------------

@cli.group(cls=I24Group)
def agreement() -> None:
    """Agreements between organisations: what may pass between them, each way, and until
    when. They are written in network.toml ([[agreement]]) and issued with 'i24net
    directory issue'; traffic inside one organisation needs none."""


@agreement.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@home_option
def agreement_list(as_json: bool, home: str | None) -> None:
    """List the agreements: parties, end, and per direction the kinds, highest level,
    caveats and handling codes that may pass."""
    d = Home.resolve(home).directory()
    now = now_ms()
    agrs = [d.agreements[a] for a in sorted(d.agreements)]
    if as_json:
        click.echo(json.dumps([agreement_json(a, now) for a in agrs], indent=2))
        return
    orgs = sorted(d.organisations())
    console.print(f"organisations: {', '.join(orgs)}")
    if not agrs:
        console.print("no agreements: nothing may pass between organisations")
        return
    t = Table(title=f"agreements (directory version {d.serial})")
    for col in ("id", "state", "until", "from", "to", "kinds", "max level", "caveats",
                "handling"):
        t.add_column(col)
    for a in agrs:
        state = "[green]active[/]" if a.active(now) else "[red]expired[/]"
        for n, f in enumerate(a.flows):
            t.add_row(a.id if n == 0 else "", state if n == 0 else "",
                      _when(a.until_ms) if n == 0 else "", f.source, f.target,
                      ", ".join(sorted(f.kinds)), f.max_level, ", ".join(sorted(f.caveats)),
                      ", ".join(sorted(f.handling)) or "-")
    console.print(t)


@agreement.command("end")
@click.argument("agreement_id", metavar="ID")
@click.option("--at", "at", default=None, metavar="DATE",
              help="When it ends (a date, a date and time, or a period from now; default "
              "now).")
@home_option
def agreement_end(agreement_id: str, at: str | None, home: str | None) -> None:
    """End agreement ID (now, or --at a later time): from then on the router refuses what
    it covered with agreement.expired. network.toml keeps its own 'until': edit it there
    too, or the next 'directory issue' restores it."""
    h = Home.resolve(home)
    now = now_ms()
    end = now if at is None else parse_end(at, now, "--at")
    try:
        nd = h.amend(lambda d, t: d.end_agreement(agreement_id, end, t))
    except I24Error as exc:
        raise type(exc)(escape(exc.message), reason=exc.reason) from None
    _issued(h, nd, f"agreement {agreement_id} ends {_when(end)}")
