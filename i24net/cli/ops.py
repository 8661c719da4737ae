"""``i24net up / status / stop / start / down``: run a whole local network."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import click
from rich.table import Table

from i24net.cli import (
    EXIT_ERROR,
    EXIT_SIGNAL,
    check_agencies,
    cli,
    console,
    err_console,
    home_hint,
    home_option,
    plain_text,
)
from i24net.config.home import Home
from i24net.config.machine import exported, share_of
from i24net.core.errors import ConfigError
from i24net.ops.supervisor import StartError, Supervisor, agency_status


def _agency_list(text: str | None, option: str) -> list[str]:
    if not text:
        return []
    return [a.strip() for a in text.split(",") if a.strip()]


class _Interrupted(KeyboardInterrupt):
    """SIGTERM while starting: unwind like Ctrl-C, so everything started is stopped."""


@cli.command()
@click.option("--engine", type=click.Choice(["embedded", "mosquitto", "nats"]), default=None,
              help="Broker engine (default from network.toml); nats runs each member of a "
              "local cluster as its own process (broker-1, broker-2, ...).")
@click.option("--isolate", "isolate_text", default=None, metavar="A,B,...",
              help="Give these agencies a process of their own (i24net node), e.g. to "
              "SIGKILL a real process in a drill; the rest share node hosts.")
@click.option("--process-per-agency", is_flag=True,
              help="One process per agency (every agency isolated); costs ~50 MiB each.")
@click.option("--hosts", type=click.IntRange(1, 64), default=None,
              help="Node hosts to spread the agencies over (default: as many as the "
              "machine has cores and the network needs, at most 16 processes in all).")
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="Seconds each stage (broker, routers, agencies) may take to be ready.")
@home_option
def up(engine: str | None, isolate_text: str | None, process_per_agency: bool,
       hosts: int | None, timeout: float, home: str | None) -> None:
    """Start the broker, the router(s) and every agency; return when all are ready.

    The agencies run on node hosts, many per process, each with its own broker connection,
    store, audit chain and keys. With [router] shards = K in network.toml, K routers
    (router-1 .. router-K) run, each serving its shard and taking over the shard of one
    that dies. All or nothing: on any failure, timeout, Ctrl-C or SIGTERM everything
    started is stopped and the failing component named with the tail of its log.
    """
    h = Home.resolve(home)
    sup = Supervisor(h)
    isolate = _agency_list(isolate_text, "--isolate")
    running = sup.running()
    brokers_here = sup.brokers_here(engine)
    if running and (any(n in running for n in brokers_here) or not brokers_here):
        started = sup.up(engine, isolate=isolate, per_process=process_per_agency,
                         hosts=hosts, timeout=timeout)
        if not started:
            console.print(f"network at {h.path} is already up ({len(running)} processes); "
                          "'i24net status' shows them, 'i24net down' stops them")
            return
        console.print(f"restarted {', '.join(started)}")
        return
    total = len(share_of(h).agencies)
    count = {"agencies": 0}
    t0 = time.monotonic()

    def on_term(signum: int, frame: Any) -> None:
        raise _Interrupted()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with console.status("starting the broker...") as status:
            def ready(name: str) -> None:
                what = "broker" if name.startswith("broker") else \
                    "router" if name.startswith("router") else name
                status.update(f"{what} ready; agencies {count['agencies']}/{total}")
                if name.startswith("broker"):
                    status.update("broker ready; starting the router...")

            def agency(name: str) -> None:
                count["agencies"] += 1
                status.update(f"broker and router ready; agencies ready "
                              f"{count['agencies']}/{total}")

            started = sup.up(engine, on_ready=ready, on_agency=agency, isolate=isolate,
                             per_process=process_per_agency, hosts=hosts, timeout=timeout)
    except _Interrupted:
        console.print("[red]interrupted[/]: stopped everything 'up' had started")
        raise SystemExit(EXIT_SIGNAL + signal.SIGINT) from None
    except StartError as exc:
        err_console.print(f"[bold red]ERROR:[/] {plain_text(exc.message)} [dim]({exc.reason})[/]",
                          soft_wrap=True)
        for line in exc.tail:
            err_console.print(f"  [dim]|[/] {plain_text(line)}", soft_wrap=True)
        err_console.print("everything 'up' had started is stopped")
        raise SystemExit(EXIT_ERROR) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    procs = sup.load()
    hosts_up = [n for n in started if sup.is_host(n)]
    own = [n for n in started if n in procs and not sup.is_infra(n) and not sup.is_host(n)]
    brokers, routers = len(brokers_here), len(sup.routers())
    console.print(f"[green]up[/] in {time.monotonic() - t0:.1f} s: {total} agencies on "
                  f"{len(hosts_up)} node host(s)"
                  f"{f' and {len(own)} own process(es)' if own else ''}, "
                  f"{brokers} broker process(es), {routers} router(s); logs in {h.logs_dir}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--counts/--no-counts", default=True, show_default=True,
              help="Read each agency's inbox and outbox figures from its store.")
@home_option
def status(as_json: bool, counts: bool, home: str | None) -> None:
    """Show every process and every agency (up or down, in which process) with its inbox,
    outbox and lag. Exits 1 when something is down."""
    h = Home.resolve(home)
    h.require()
    sup = Supervisor(h)
    procs = sup.load()
    d = h.directory()
    states = sup.agency_states()
    infra = [n for n in procs if sup.is_infra(n)] or [*sup.brokers_here(), *sup.routers()]
    here = set(share_of(h).agencies)
    away = {a: m.name for m in exported(h).values() for a in m.agencies}
    routers = sup.router_states()  # a router is up only while connected and subscribed
    rows: list[dict[str, object]] = []
    for name in sorted(infra):
        p = procs.get(name)
        entry: dict[str, object] = {"name": name, "up": bool(p and p.alive),
                                    "pid": p.pid if p else None}
        if name in routers:
            entry["up"], detail = routers[name]
            if detail:
                entry["detail"] = detail
                entry["state"] = "disconnected" if p and p.alive else "down"
        rows.append(entry)
    hosts = []
    for name, p in sorted(procs.items()):
        if p.agencies:
            hosts.append({"name": name, "up": p.alive, "pid": p.pid,
                          "agencies": len(p.agencies)})
    agencies: list[dict[str, object]] = []
    for a in sorted(d.agencies):
        if a in here:
            state, where, detail = states.get(a, ("down", "", "not placed (run 'i24net up')"))
        else:  # exported to a machine, or (on a machine's export) another machine's
            state, where = "elsewhere", ""
            detail = f"runs on machine {away[a]}" if a in away else "runs on another machine"
        p = procs.get(where)
        row: dict[str, object] = {"name": a, "up": state == "up", "state": state,
                                  "host": where or None, "pid": p.pid if p else None,
                                  "status": d.agencies[a].status}
        if detail:
            row["detail"] = detail
        if counts and a in here:
            row.update(agency_status(h, a))
        agencies.append(row)
    active = [r for r in agencies if r["status"] == "active" and r["state"] != "elsewhere"]
    all_up = all(r["up"] for r in rows) and all(r["up"] for r in active)
    if as_json:
        click.echo(json.dumps({"home": str(h.path), "up": all_up,
                               "processes": [*rows, *agencies], "hosts": hosts,
                               "agencies_up": sum(1 for r in active if r["up"]),
                               "agencies_total": len(active)}, indent=2))
    else:
        t = Table(title=f"{d.network} at {h.path}")
        for col in ("process", "state", "host", "pid", "inbox", "new", "outbox", "lag s"):
            t.add_column(col, justify="right" if col not in ("process", "state", "host")
                         else "left")
        for r in [*rows, *agencies]:
            state = "[green]up[/]" if r["up"] else "[dim]elsewhere[/]" \
                if r.get("state") == "elsewhere" else f"[red]{r.get('state', 'down')}[/]"
            if r.get("detail"):
                state += f" ({r['detail']})"
            t.add_row(str(r["name"]), state, str(r.get("host") or ""), str(r["pid"] or "-"),
                      str(r.get("inbox", "")), str(r.get("inbox_new", "")),
                      str(r.get("outbox_active", "")),
                      "" if r.get("lag_s") is None else str(r.get("lag_s")))
        console.print(t)
        up_n = sum(1 for r in active if r["up"])
        console.print(f"{up_n}/{len(active)} agencies up in {len(hosts)} process(es)")
    if not all_up:
        raise SystemExit(EXIT_ERROR)


@cli.command()
@click.argument("agencies", nargs=-1, required=True)
@click.option("--kill", is_flag=True,
              help="Stop as a crash would: the broker connection dropped without "
              "DISCONNECT and nothing flushed (an agency with its own process is SIGKILLed).")
@home_option
def stop(agencies: tuple[str, ...], kill: bool, home: str | None) -> None:
    """Stop AGENCIES inside their processes; the rest of the network goes on.

    Messages to a stopped agency wait at the broker (its session persists) and in their
    senders' outboxes; 'i24net start' brings it back.
    """
    h = Home.resolve(home)
    check_agencies(h.directory(), agencies)
    stopped = Supervisor(h).stop_agencies(agencies, kill=kill)
    not_running = sorted(set(agencies) - set(stopped))
    how = "killed" if kill else "stopped"
    if stopped:
        console.print(f"{how} {', '.join(stopped)}")
    if not_running:
        console.print(f"not running: {', '.join(not_running)}")


@cli.command()
@click.argument("agencies", nargs=-1, required=True)
@home_option
def start(agencies: tuple[str, ...], home: str | None) -> None:
    """Start AGENCIES again inside their processes (after 'i24net stop' or a failure).
    Exits 1 if one does not come up."""
    h = Home.resolve(home)
    check_agencies(h.directory(), agencies)
    sup = Supervisor(h)
    if not sup.running():
        raise ConfigError(f"the network is not up: 'i24net up{home_hint(h)}' starts it",
                          reason="supervisor.down")
    states = sup.start_agencies(agencies)
    bad = {a: s for a, s in states.items() if s != "up"}
    for a, s in sorted(states.items()):
        console.print(f"{a}: {'[green]up[/]' if s == 'up' else f'[red]{s}[/]'}")
    if bad:
        raise SystemExit(EXIT_ERROR)


@cli.command()
@home_option
def down(home: str | None) -> None:
    """Stop every process of the network (nodes, then routers, then brokers)."""
    h = Home.resolve(home)
    t0 = time.monotonic()
    stopped = Supervisor(h).down()
    console.print(f"stopped {len(stopped)} process(es) in {time.monotonic() - t0:.1f} s"
                  if stopped else "nothing was running")
