"""``i24net up / status / down``: run a whole local network as separate processes."""

from __future__ import annotations

import json

import click
from rich.table import Table

from i24net.cli import cli, console, home_option
from i24net.home import Home
from i24net.supervisor import Supervisor, agency_status


@cli.command()
@click.option("--engine", type=click.Choice(["embedded", "mosquitto", "nats"]), default=None,
              help="Broker engine (default from network.toml); nats runs each member of a "
              "local cluster as its own process (broker-1, broker-2, ...).")
@home_option
def up(engine: str | None, home: str | None) -> None:
    """Start the broker, the router and one node per agency; return when all are ready.

    With [router] shards = K in network.toml, K routers (router-1 .. router-K) run, each
    serving its shard and taking over the shard of one that dies.
    """
    h = Home.resolve(home)
    sup = Supervisor(h)
    running = sup.running()
    if running and any(n in running for n in sup.brokers(engine)):
        started = sup.up(engine)
        if not started:
            console.print(f"network at {h.path} is already up ({len(running)} processes); "
                          "'i24net status' shows them, 'i24net down' stops them")
            return
        console.print(f"restarted {', '.join(started)}")
        return
    with console.status("starting the network...") as status:
        started = sup.up(engine, on_ready=lambda n: status.update(f"{n} ready"))
    infra = sum(1 for n in started if sup.is_infra(n))
    brokers, routers = len(sup.brokers(engine)), len(sup.routers())
    console.print(f"[green]up[/]: {brokers} broker process(es), {routers} router(s) and "
                  f"{len(started) - infra} node(s); logs in {h.logs_dir}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@home_option
def status(as_json: bool, home: str | None) -> None:
    """Show each process (up or down) and each agency's inbox, outbox and lag."""
    h = Home.resolve(home)
    h.require()
    procs = Supervisor(h).load()
    d = h.directory()
    rows = []
    for name in ["broker", "router", *sorted(d.agencies)]:
        p = procs.get(name)
        row: dict[str, object] = {"name": name, "up": bool(p and p.alive),
                                  "pid": p.pid if p else None}
        if name in d.agencies:
            row.update(agency_status(h, name))
            row["status"] = d.agencies[name].status
        rows.append(row)
    if as_json:
        click.echo(json.dumps({"home": str(h.path), "processes": rows}, indent=2))
        return
    t = Table(title=f"{d.network} at {h.path}")
    for col in ("process", "state", "pid", "inbox", "new", "outbox", "lag s"):
        t.add_column(col, justify="right" if col not in ("process", "state") else "left")
    for r in rows:
        state = "[green]up[/]" if r["up"] else "[red]down[/]"
        t.add_row(str(r["name"]), state, str(r["pid"] or "-"), str(r.get("inbox", "")),
                  str(r.get("inbox_new", "")), str(r.get("outbox_active", "")),
                  "" if r.get("lag_s") is None else str(r.get("lag_s")))
    console.print(t)


@cli.command()
@home_option
def down(home: str | None) -> None:
    """Stop every process of the network (nodes, then router, then broker)."""
    h = Home.resolve(home)
    stopped = Supervisor(h).down()
    console.print(f"stopped {len(stopped)} process(es)" if stopped else "nothing was running")
