"""``i24net notice request / list / review / cancel`` and ``i24net diffusion list /
non-compliant``.

An NCB's commands (``notice request``, ``notice cancel`` by the owner) queue a message in the
NCB's outbox, as ``publish`` does. The notice authority's commands work on its durable
register (``state/notices-<GS>.sqlite``) through the same ``NoticeDesk`` code the GS daemon
runs, and queue the resulting messages (notice, decision, cancellation, deletion order) in
the GS node's outbox with ``next_ms=0``: the running GS daemon sends them on its next tick.
The daemon and the CLI share both SQLite files (WAL); the CLI holds the register's write lock
only while the desk changes it in memory, and seals after the commit.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NoReturn

import click
from rich.markup import escape
from rich.table import Table

from i24net.cli import (
    EXIT_REFUSED,
    check_agency,
    cli,
    console,
    err_console,
    home_option,
    plain_text,
    require_running,
)
from i24net.config.home import Home, now_ms
from i24net.core.directory import Directory
from i24net.core.envelope import Body, Header, make_header
from i24net.core.errors import ConfigError, StateError, WaitTimeout, WireFormatError
from i24net.core.events import (
    DeletionOrdered,
    NodeEvent,
    NoticeCancelled,
    NoticePublished,
    NoticeRefused,
    Submitted,
)
from i24net.core.labels import Label, Precedence
from i24net.core.lifecycle import REASON_CANCELLED, NoticeDesk
from i24net.core.node import NodeMachine
from i24net.core.notices import (
    NOTICE_NUMBER,
    Notice,
    NoticeColour,
    NoticeState,
    explain,
    request,
    screen_request,
    validate_request,
)
from i24net.shell.runtime import node_store_path
from i24net.store import SqliteNodeStore
from i24net.store.notices import SqliteNoticeStore, notice_store_path

AUTHORITY_ROLE = "notice-authority"
DEFAULT_LEVEL = "OFFICIAL-USE"  # notices go to every NCB: the lowest level in common use
_CODE = re.compile(r"^[a-z0-9][a-z0-9.+_-]{0,63}$")  # the register's reason-code shape


# -- shared helpers -----------------------------------------------------------------------


def _refused(message: str, reason: str, outcome: dict[str, Any] | None = None) -> NoReturn:
    """Print ``ERROR: message (reason)`` and exit 3: the network's rules said no.
    ``outcome`` (a command's --json object) records the refusal first."""
    if outcome is not None:
        outcome.update(state="refused", reason=reason)
    err_console.print(f"[bold red]ERROR:[/] {plain_text(message)} [dim]({plain_text(reason)})[/]",
                      soft_wrap=True)
    raise click.exceptions.Exit(EXIT_REFUSED)


def _authorities(d: Directory) -> list[str]:
    found = d.authorities(AUTHORITY_ROLE)
    if not found:
        raise ConfigError(f"no agency of network {d.network} holds the role {AUTHORITY_ROLE}",
                          reason="config.roles")
    return found


def _is_authority(d: Directory, agency: str) -> bool:
    return AUTHORITY_ROLE in d.agency(agency).roles


def _require_authority(d: Directory, agency: str, action: str) -> None:
    check_agency(d, agency, "--as")
    if not _is_authority(d, agency):
        _refused(f"{agency} may not {action}: only the notice authority "
                 f"({', '.join(d.authorities(AUTHORITY_ROLE)) or 'none listed'}) may",
                 "notice.not-authority")


def _code(value: str, option: str) -> str:
    """A reason as the register keeps it: "Insufficient data" -> ``insufficient-data``."""
    code = "-".join(value.strip().lower().split())
    if not _CODE.match(code):
        raise click.BadParameter(f"{value!r} is not a reason code; use lower-case letters, "
                                 "digits and . + _ - (e.g. notice.insufficient-data)",
                                 param_hint=option)
    return code


def _label(d: Directory, level: str | None, caveats: tuple[str, ...]) -> Label:
    if level is None:
        level = DEFAULT_LEVEL if DEFAULT_LEVEL in d.scale.levels else d.scale.levels[0]
    return d.scale.validate(Label(level.upper(), frozenset(c.upper() for c in caveats)))


def _fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _release(h: Home, agency: str, store: SqliteNodeStore, events: list[NodeEvent]) -> None:
    """Due now: the node daemon (woken here) sends every message just queued."""
    from i24net.ops.client import wake

    queued = False
    for ev in events:
        if isinstance(ev, Submitted):
            entry = store.outbox_get(bytes.fromhex(ev.msg_id))
            if entry is not None:
                store.outbox_put(replace(entry, next_ms=0))
                queued = True
    if queued and not wake(h, agency):
        err_console.print(f"[yellow]note:[/] {agency}'s node is not running: what it queued "
                          f"goes when it starts ('i24net up' or 'i24net start {agency}')",
                          soft_wrap=True)


def _queue(h: Home, header: Header, body: Body) -> SqliteNodeStore:
    """Seal into the sender's outbox (durable when this returns); returns the open store."""
    store = SqliteNodeStore(node_store_path(h, header.sender))
    machine = NodeMachine(header.sender, h.keys(header.sender), h.directory(), store,
                          random_bytes=os.urandom)
    _, ev = machine.submit(header, body, now_ms())
    _release(h, header.sender, store, [ev])
    return store


@contextmanager
def _desk(h: Home, agency: str, action: str) -> Iterator[tuple[NoticeDesk, NodeMachine,
                                                               SqliteNodeStore]]:
    """The GS's desk over its register, and a node machine over its node store."""
    d = h.directory()
    _require_authority(d, agency, action)
    with SqliteNoticeStore(notice_store_path(h, agency)) as ns, \
            SqliteNodeStore(node_store_path(h, agency)) as store:
        machine = NodeMachine(agency, h.keys(agency), d, store, random_bytes=os.urandom)
        yield NoticeDesk(agency, ns, auto_review=False), machine, store


def _resolve(desk: NoticeDesk, text: str, param: str, diffusion: bool = False) -> Any:
    try:
        return desk.resolve_diffusion(text) if diffusion else desk.resolve(text)
    except StateError as exc:
        raise click.BadParameter(exc.message, param_hint=param) from None


_STANDING = {
    NoticeState.REQUESTED: "is still being screened",
    NoticeState.UNDER_REVIEW: "is under review",
    NoticeState.PUBLISHED: "is already published",
    NoticeState.UPDATED: "is already published (and updated)",
    NoticeState.REFUSED: "was refused",
    NoticeState.CANCELLED: "is already cancelled",
    NoticeState.EXPIRED: "has expired",
}
_ALLOWED = {
    "approve": "only a request under review can be approved",
    "refuse": "only a request under review can be refused",
    "cancel": "only a notice in force, or a request not decided yet, can be cancelled",
}


def _in_words(notice: Notice, verb: str) -> str:
    """Why ``verb`` cannot apply to ``notice``, for a person: "cannot approve notice
    A-1/12-2026: it is already published; only a request under review can be approved"."""
    what = f"notice {notice.number}" if notice.number else f"request {notice.request_id[:12]}"
    standing = _STANDING.get(notice.state, f"is {notice.state.value}")
    if notice.reason and notice.state in (NoticeState.REFUSED, NoticeState.CANCELLED):
        standing += f" ({notice.reason})"
    return f"cannot {verb} {what}: it {standing}; {_ALLOWED[verb]}"


def _run(h: Home, m: NodeMachine, store: SqliteNodeStore, action: Any,
         explain_for: tuple[NoticeDesk, str, str] | None = None) -> list[NodeEvent]:
    """Run a desk action; a refusal by the rules exits 3, what it queued is sent now.
    ``explain_for`` (desk, request id, verb) puts a move the notice's state does not allow
    in words."""
    try:
        events: list[NodeEvent] = action()
    except StateError as exc:
        if exc.reason == "notice.illegal-transition" and explain_for is not None:
            desk, rid, verb = explain_for
            _refused(_in_words(desk.registry.get(rid), verb), exc.reason)
        _refused(exc.message, exc.reason)
    except WireFormatError as exc:  # a reason code the register will not keep
        raise click.UsageError(exc.message) from None
    _release(h, m.agency, store, events)
    return events


def _event_json(ev: NodeEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"event": ev.kind, "msg_id": ev.msg_id}
    out.update({k: v for k, v in (("peer", ev.peer), ("reason", ev.reason),
                                  ("detail", ev.detail)) if v})
    return out


def _report(events: list[NodeEvent], as_json: bool = False) -> None:
    """What a desk action did: a line per event, or (``--json``) one array of events."""
    if as_json:
        click.echo(json.dumps([_event_json(ev) for ev in events]))
        return
    for ev in events:
        match ev:
            case Submitted():
                console.print(f"  queued {escape(ev.detail)} [dim]({ev.msg_id[:12]} to "
                              f"{escape(ev.peer)})[/]", soft_wrap=True)
            case NoticePublished():
                console.print(f"[green]published[/] notice {ev.detail} "
                              f"(message {ev.msg_id[:12]})")
            case NoticeRefused():
                console.print(f"[yellow]refused[/] request {ev.msg_id[:12]} ({ev.reason})")
            case NoticeCancelled():
                console.print(f"[yellow]cancelled[/] {escape(ev.detail)} ({ev.reason})")
            case DeletionOrdered():
                console.print(f"[yellow]deletion ordered[/] for diffusion {ev.msg_id[:12]} "
                              f"({ev.reason}, {ev.detail})")


as_option = click.option("--as", "agency", required=True, metavar="AGENCY",
                         help="The agency acting.")
queue_option = click.option(
    "--queue", is_flag=True, help="Queue it even when the agency's node is not running: it "
    "waits in the outbox and goes when the node starts.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


# -- notice -------------------------------------------------------------------------------


@cli.group()
def notice() -> None:
    """Request, review and cancel notices (Red, Yellow, Blue ... UN-Special).

    An NCB requests a notice; the notice authority (the GS) screens it against Article 3
    and its colour's rules, then publishes it to every cleared agency or refuses it.

    The GS daemon decides at once unless it runs with manual review: start the network
    with I24NET_MANUAL_REVIEW=1 in the environment ('I24NET_MANUAL_REVIEW=1 i24net up';
    every node host inherits it) or the GS node alone with 'i24net node GS-LYON
    --manual-review'. Screened requests then wait, under review, for 'notice review'.
    """


@notice.command("request")
@as_option
@click.option("--colour", "--color", "colour", required=True, metavar="COLOUR",
              help="RED, YELLOW, BLUE, BLACK, GREEN, ORANGE, PURPLE, SILVER or UN-SPECIAL.")
@click.option("--subject", required=True, help="The subject, e.g. the wanted person.")
@click.option("--offence", default="", metavar="CATEGORY",
              help="Offence category, e.g. homicide, fraud (required for RED).")
@click.option("--warrant", default="", metavar="REF",
              help="Arrest-warrant or judicial decision reference (required for RED).")
@click.option("--classification", "level", default=None, metavar="LEVEL",
              help=f"Classification of the request and of the notice (default {DEFAULT_LEVEL}).")
@click.option("--caveat", "caveats", multiple=True, metavar="X", help="Caveat (repeatable).")
@click.option("--precedence", default="ROUTINE", show_default=True,
              type=click.Choice([p.name for p in Precedence], case_sensitive=False))
@click.option("--wait", "wait_s", type=float, default=None, metavar="SECONDS",
              help="Wait for the GS's decision: exit 0 published, 3 refused, 4 timeout.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the request id.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: request, colour, subject, requester, authority, "
              "state (queued, delivered, under-review, published, refused), number, reason, "
              "screening.")
@queue_option
@home_option
def notice_request(agency: str, colour: str, subject: str, offence: str, warrant: str,
                   level: str | None, caveats: tuple[str, ...], precedence: str,
                   wait_s: float | None, quiet: bool, as_json: bool, queue: bool,
                   home: str | None) -> None:
    """Ask the notice authority to publish a notice; prints the request id.

    AGENCY's node sends it: it must be running (exit 7 otherwise, nothing queued) unless
    --queue.
    """
    if quiet and as_json:
        raise click.UsageError("give -q or --json, not both")
    h = Home.resolve(home)
    d = h.directory()
    check_agency(d, agency, "--as")
    c = NoticeColour.parse(colour)
    fields = {"subject": subject, "offence": offence, "warrant": warrant}
    missing = validate_request(c, fields)
    if missing:
        raise click.UsageError("; ".join(missing))
    authority = _authorities(d)[0]
    header = make_header(d, sender=agency, addressing=[authority], kind="notice-request",
                         label=_label(d, level, caveats), now_ms=now_ms(),
                         ttl_ms=int(h.spec().default_ttl_hours * 3600_000),
                         random_bytes=os.urandom, precedence=Precedence.parse(precedence))
    body = Body(f"{c.value} notice request: {subject}"[:256],
                f"Request for a {c.value} notice: {c.purpose}.",
                {"colour": c.value, **{k: v.strip() for k, v in fields.items()}})
    require_running(h, agency, queue=queue)
    store = _queue(h, header, body)
    flag = screen_request(c, fields)
    outcome: dict[str, Any] = {
        "request": header.id_hex, "colour": c.value, "subject": subject, "requester": agency,
        "authority": authority, "state": "queued", "number": None, "reason": None,
        "screening": flag or None}
    try:
        if quiet:
            click.echo(header.id_hex)
        elif not as_json:
            console.print(f"request {header.id_hex}: {c.value} notice for {escape(repr(subject))} "
                          f"queued in {agency}'s outbox for {authority}", soft_wrap=True)
            if flag:
                draft = request(request_id=header.id_hex, requester=agency, colour=c,
                                fields=fields, now_ms=0)
                err_console.print(f"[yellow]note:[/] {authority} will refuse it: "
                                  f"{plain_text(explain(draft, flag))} ({flag})", soft_wrap=True)
        if wait_s is not None:
            _wait_decision(store, header, authority, wait_s, quiet or as_json, outcome)
    finally:
        store.close()
        if as_json:
            click.echo(json.dumps(outcome))


def _wait_decision(store: SqliteNodeStore, header: Header, authority: str, wait_s: float,
                   quiet: bool, outcome: dict[str, Any]) -> None:
    """Until the authority's decision on the request ``header``; ``outcome`` (the --json
    object) follows what is heard."""
    deadline = time.monotonic() + wait_s
    said: set[str] = set()

    def say(key: str, text: str) -> None:
        if key not in said:
            said.add(key)
            outcome["state"] = key
            if not quiet:
                console.print(text, soft_wrap=True)

    while time.monotonic() < deadline:
        entry = store.outbox_get(header.id)
        if entry is not None and entry.state == "refused":
            _refused(f"the router refused the request: {entry.reason}", entry.reason, outcome)
        if entry is not None and authority in entry.receipts:
            say("delivered", f"delivered to {authority}")
        for item in store.inbox_list(limit=None, kinds=["notice-decision"],
                                     since_ms=header.created_ms - 60_000):
            if item.ref != header.id:
                continue
            decision = str(item.data.get("decision", ""))
            if decision == "published":
                outcome["number"] = str(item.data.get("number", "")) or None
                say("published", f"[green]published[/] as notice {item.data.get('number')}")
                return
            if decision == "refused":
                _refused(f"{authority} refused the request: {item.text}",
                         str(item.data.get("reason", "notice.refused")), outcome)
            if decision == "under-review":
                say("under-review", f"under review at {authority}")
        time.sleep(0.1)
    state = ("under review" if "under-review" in said else
             "delivered, no decision yet" if "delivered" in said else "not delivered yet")
    raise WaitTimeout(f"no decision within {wait_s:g}s ({state}); the request stays queued "
                      f"and the decision will arrive in the inbox ('i24net inbox "
                      f"{header.sender}')", reason="timeout")


@notice.command("list")
@click.option("--as", "agency", default=None, metavar="AGENCY",
              help="The notice authority (default), or an agency to list the notices it "
              "holds.")
@json_option
@home_option
def notice_list(agency: str | None, as_json: bool, home: str | None) -> None:
    """The notice register: request, colour, number, state, requester, subject.

    For an agency that is not the notice authority: the notices it holds.
    """
    h = Home.resolve(home)
    d = h.directory()
    agency = check_agency(d, agency, "--as") if agency else _authorities(d)[0]
    if not _is_authority(d, agency):
        _list_holdings(h, agency, as_json)
        return
    path = notice_store_path(h, agency)
    entries = []
    if path.exists():
        with SqliteNoticeStore(path, readonly=True) as ns:
            entries = list(ns.load().entries)
    if as_json:
        click.echo(json.dumps([{**e.notice.summary(), "holders": sorted(e.holders),
                                "notice_id": e.notice_id.hex() if e.notice_id else None,
                                "label": e.carriage.label.marking,
                                "precedence": e.carriage.precedence.name}
                               for e in entries], indent=2))
        return
    t = Table(title=f"{agency} notice register ({len(entries)})")
    for col in ("request", "colour", "number", "state", "requester", "subject", "detail"):
        t.add_column(col)
    for e in entries:
        n = e.notice
        detail = (n.reason if n.reason else
                  f"{len(e.holders)} holder(s), expires {_fmt_ms(n.expires_ms)}" if n.in_force
                  else "")
        t.add_row(n.request_id[:12], n.colour.value, n.number or "-", n.state.value,
                  n.requester, escape(n.subject), escape(detail))
    console.print(t)


def _list_holdings(h: Home, agency: str, as_json: bool) -> None:
    path = node_store_path(h, agency)
    items = []
    if path.exists():
        with SqliteNodeStore(path, readonly=True) as store:
            items = store.inbox_list(limit=None, kinds=["notice"])
    rows: list[dict[str, Any]] = [{"id": i.msg_id.hex(), "number": str(i.data.get("number", "")),
             "colour": str(i.data.get("colour", "")), "subject": str(i.data.get("subject", "")),
             "request": str(i.data.get("request", "")), "from": i.sender, "label": i.label,
             "state": i.state, "received_ms": i.received_ms} for i in items]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    t = Table(title=f"notices held by {agency} ({len(rows)})")
    for col in ("number", "colour", "subject", "state", "received", "message"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["number"], r["colour"], escape(r["subject"]), r["state"],
                  _fmt_ms(r["received_ms"]), r["id"][:12])
    console.print(t)


@notice.command("review")
@as_option
@click.argument("request_id", metavar="ID")
@click.option("--approve", is_flag=True, help="Publish the notice to every cleared agency.")
@click.option("--refuse", "refuse_reason", default=None, metavar="REASON",
              help="Refuse it with a reason code, e.g. notice.insufficient-data.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the events of the decision as one JSON array.")
@home_option
def notice_review(agency: str, request_id: str, approve: bool, refuse_reason: str | None,
                  as_json: bool, home: str | None) -> None:
    """Decide on a request under review (ID: its request id or a unique prefix).

    --approve publishes it (the same code as automatic review) and tells the requester;
    --refuse tells the requester why. A request flagged under Article 3 can only be
    refused (exit 3).
    """
    if approve == (refuse_reason is not None):
        raise click.UsageError("give exactly one of --approve or --refuse REASON")
    h = Home.resolve(home)
    reason = _code(refuse_reason, "--refuse") if refuse_reason is not None else ""
    with _desk(h, agency, "review notice requests") as (desk, m, store):
        rid = _resolve(desk, request_id, "ID")
        events = _run(h, m, store, lambda: desk.approve(m, rid, now_ms()) if approve
                      else desk.refuse(m, rid, now_ms(), reason),
                      (desk, rid, "approve" if approve else "refuse"))
    _report(events, as_json)


@notice.command("cancel")
@as_option
@click.argument("target", metavar="NUMBER|ID")
@click.option("--reason", default=REASON_CANCELLED, show_default=True, metavar="REASON",
              help="Reason code, e.g. notice.arrested.")
@click.option("--classification", "level", default=None, metavar="LEVEL",
              help=f"Owner only: classification of the cancellation request (default "
              f"{DEFAULT_LEVEL}).")
@click.option("--wait", "wait_s", type=float, default=None, metavar="SECONDS",
              help="Owner only: wait for the authority's answer: exit 0 cancelled, 3 "
              "refused, 4 timeout.")
@click.option("--json", "as_json", is_flag=True,
              help="The authority: the events as one JSON array. The owner: one JSON object "
              "(request, target, authority, state: queued, delivered, cancelled, refused; "
              "reason).")
@queue_option
@home_option
def notice_cancel(agency: str, target: str, reason: str, level: str | None,
                  wait_s: float | None, as_json: bool, queue: bool, home: str | None) -> None:
    """Cancel a notice by NUMBER or withdraw a request by ID (or a unique prefix).

    NUMBER looks like A-12/05-2026.

    As the notice authority: cancels it now and sends a notice-cancel to every holder.
    As the notice's owner (the agency that requested it): sends a notice-cancel-request
    to the authority, whose desk cancels it (or answers with the reason it will not). Any
    other agency is refused at once (exit 3, notice.not-owner): its own store shows it did
    not request the notice. The owner's node must be running (exit 7) unless --queue.
    """
    h = Home.resolve(home)
    d = h.directory()
    check_agency(d, agency, "--as")
    code = _code(reason, "--reason")
    if _is_authority(d, agency):
        with _desk(h, agency, "cancel notices") as (desk, m, store):
            rid = _resolve(desk, target, "NUMBER|ID")
            events = _run(h, m, store, lambda: desk.cancel(m, rid, now_ms(), code),
                          (desk, rid, "cancel"))
        _report(events, as_json)
        return
    authority = _authorities(d)[0]
    number, ref = "", None
    if NOTICE_NUMBER.match(target.strip()):
        number = target.strip()
    else:
        ref = _own_reference(h, agency, target)
    rid = _check_owner(h, agency, authority, number, ref)
    require_running(h, agency, queue=queue)
    header = make_header(d, sender=agency, addressing=[authority],
                         kind="notice-cancel-request", label=_label(d, level, ()),
                         now_ms=now_ms(), ttl_ms=int(h.spec().default_ttl_hours * 3600_000),
                         random_bytes=os.urandom, ref=ref)
    what = number or f"request {ref.hex()[:12] if ref else ''}"
    body = Body(f"Cancellation request: {what}"[:256],
                f"{agency} asks {authority} to cancel {what} ({code}).",
                {"number": number, "reason": code})
    store = _queue(h, header, body)
    outcome: dict[str, Any] = {"request": header.id_hex,
                               "target": number or (ref.hex() if ref else ""),
                               "authority": authority, "state": "queued", "reason": None}
    try:
        if not as_json:
            console.print(f"queued notice-cancel-request {header.id_hex} for {what} to "
                          f"{authority}; {authority}'s desk cancels it and tells every holder")
        if wait_s is not None:
            _wait_cancel(store, header, authority, rid, number, wait_s, as_json, outcome)
    finally:
        store.close()
        if as_json:
            click.echo(json.dumps(outcome))


def _check_owner(h: Home, agency: str, authority: str, number: str,
                 ref: bytes | None) -> bytes | None:
    """The id of the request behind the notice that ``agency`` asks to cancel, from its own
    store; exit 3 (``notice.not-owner``) when that store shows the request is not its own.
    ``None`` when the store does not know the notice: the authority's desk decides."""
    path = node_store_path(h, agency)
    if not path.exists():
        return None
    with SqliteNodeStore(path, readonly=True) as store:
        own = {e.msg_id for e in store.outbox_list(limit=None) if e.kind == "notice-request"}
        if ref is not None and ref in own:
            return ref
        rid: bytes | None = None
        label = number or (ref.hex()[:12] if ref else "")
        for i in store.inbox_list(limit=None, kinds=["notice", "notice-decision"]):
            request_hex = str(i.data.get("request", ""))
            if i.kind == "notice-decision" and i.ref is not None and i.ref in own:
                request_hex = i.ref.hex()
            held = (ref is not None and i.msg_id == ref and i.kind == "notice") or \
                (bool(number) and str(i.data.get("number", "")) == number)
            if held and request_hex:
                try:
                    rid = bytes.fromhex(request_hex)
                except ValueError:
                    continue
                label = str(i.data.get("number", "")) or label
                if rid in own:
                    return rid
        if rid is None:
            return None
    _refused(f"{agency} did not request notice {label} (request {rid.hex()[:12]} is not in "
             f"its outbox): only the agency that requested it, or the notice authority "
             f"{authority}, may cancel it", "notice.not-owner")


def _wait_cancel(store: SqliteNodeStore, header: Header, authority: str, rid: bytes | None,
                 number: str, wait_s: float, quiet: bool, outcome: dict[str, Any]) -> None:
    """Until the authority's answer to the cancellation request ``header`` arrives;
    ``outcome`` (the --json object) follows what is heard."""
    deadline = time.monotonic() + wait_s
    delivered = False

    while time.monotonic() < deadline:
        entry = store.outbox_get(header.id)
        if entry is not None and entry.state == "refused":
            _refused(f"the router refused the cancellation request: {entry.reason}",
                     entry.reason, outcome)
        if entry is not None and authority in entry.receipts and not delivered:
            outcome["state"] = "delivered"
            if not quiet:
                console.print(f"delivered to {authority}")
            delivered = True
        for item in store.inbox_list(limit=None, kinds=["notice-decision", "notice-cancel"],
                                     since_ms=header.created_ms - 60_000):
            decision = str(item.data.get("decision", ""))
            if item.ref == header.id and decision == "cancel-refused":
                _refused(f"{authority} refused the cancellation: {item.text}",
                         str(item.data.get("reason", "notice.refused")), outcome)
            about = (rid is not None and str(item.data.get("request", "")) == rid.hex()) or \
                (bool(number) and str(item.data.get("number", "")) == number)
            if about and (item.kind == "notice-cancel" or decision in ("cancelled",
                                                                       "withdrawn")):
                outcome["state"] = "cancelled"
                if not quiet:
                    console.print(f"[yellow]cancelled[/] {escape(number or item.subject)}",
                                  soft_wrap=True)
                return
        time.sleep(0.1)
    raise WaitTimeout(f"no answer from {authority} within {wait_s:g}s "
                      f"({'delivered' if delivered else 'not delivered yet'}); the answer "
                      f"will arrive in the inbox ('i24net inbox {header.sender}')",
                      reason="timeout")


def _own_reference(h: Home, agency: str, text: str) -> bytes:
    """The id, from ``agency``'s own store, of its request or of a notice it holds."""
    prefix = text.strip().lower()
    if not prefix or any(ch not in "0123456789abcdef" for ch in prefix):
        raise click.BadParameter(f"{text!r} is neither a notice number (A-<n>/<MM>-<YYYY>) "
                                 "nor a message id", param_hint="NUMBER|ID")
    found: set[bytes] = set()
    path = node_store_path(h, agency)
    if path.exists():
        with SqliteNodeStore(path, readonly=True) as store:
            found |= {e.msg_id for e in store.outbox_list(limit=None)
                      if e.kind == "notice-request" and e.msg_id.hex().startswith(prefix)}
            found |= {i.msg_id for i in store.inbox_list(limit=None, kinds=["notice"])
                      if i.msg_id.hex().startswith(prefix)}
    if len(found) != 1:
        raise click.BadParameter(
            f"{len(found) or 'none'} of {agency}'s notice requests or held notices match "
            f"{prefix}" + ("; give more digits" if found else ""), param_hint="NUMBER|ID")
    return found.pop()


# -- diffusion ----------------------------------------------------------------------------


@cli.group()
def diffusion() -> None:
    """Diffusions recorded by the General Secretariat, and deletion orders."""


@diffusion.command("list")
@click.option("--as", "agency", default=None, metavar="AGENCY",
              help="The notice authority (default).")
@json_option
@home_option
def diffusion_list(agency: str | None, as_json: bool, home: str | None) -> None:
    """The diffusion copies the GS recorded: id, sender, recipients, label, deletion."""
    h = Home.resolve(home)
    d = h.directory()
    agency = agency or _authorities(d)[0]
    _require_authority(d, agency, "list recorded diffusions")
    path = notice_store_path(h, agency)
    records = []
    if path.exists():
        with SqliteNoticeStore(path, readonly=True) as ns:
            records = list(ns.load().diffusions)
    if as_json:
        click.echo(json.dumps([{"id": r.diffusion_id.hex(), "sender": r.sender,
                                "recipients": list(r.recipients),
                                "label": r.carriage.label.marking,
                                "received_ms": r.received_ms,
                                "deletion_reason": r.deletion_reason or None,
                                "deletion_id": r.deletion_id.hex() if r.deletion_id else None}
                               for r in records], indent=2))
        return
    t = Table(title=f"diffusions recorded by {agency} ({len(records)})")
    for col in ("id", "received", "sender", "recipients", "label", "deletion"):
        t.add_column(col)
    for r in records:
        t.add_row(r.diffusion_id.hex()[:12], _fmt_ms(r.received_ms), r.sender,
                  ", ".join(r.recipients), r.carriage.label.marking,
                  f"ordered ({r.deletion_reason})" if r.ordered else "-")
    console.print(t)


@diffusion.command("non-compliant")
@as_option
@click.argument("diffusion_id", metavar="ID")
@click.option("--reason", required=True, metavar="REASON",
              help="Reason code, e.g. diffusion.article3.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the events (the deletion orders queued) as one JSON array.")
@home_option
def diffusion_non_compliant(agency: str, diffusion_id: str, reason: str, as_json: bool,
                            home: str | None) -> None:
    """Find a recorded diffusion non-compliant: order its recipients (and its sender) to
    delete it. ID: the diffusion's id or a unique prefix ('i24net diffusion list')."""
    h = Home.resolve(home)
    code = _code(reason, "--reason")
    with _desk(h, agency, "order the deletion of diffusions") as (desk, m, store):
        did = _resolve(desk, diffusion_id, "ID", diffusion=True)
        events = _run(h, m, store, lambda: desk.order_deletion(m, did, now_ms(), code))
    _report(events, as_json)
