"""``i24net chaos``: a live soak under kills and partitions, then a loss checker."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
from rich.progress import Progress
from rich.table import Table

from i24net.chaos import PLANS, Soak, prepare
from i24net.cli import EXIT_REFUSED, cli, console


@cli.command()
@click.option("--messages", type=int, default=2000, show_default=True,
              help="Messages to send.")
@click.option("--nodes", type=int, default=10, show_default=True,
              help="Agencies (nodes) of a synthetic network.")
@click.option("--preset", type=click.Choice(["interpol"]), default=None,
              help="Run among every agency of this built-in network instead (interpol: "
              "198 agencies), most of them on node hosts.")
@click.option("--engine", type=click.Choice(["mosquitto", "embedded", "nats"]),
              default="mosquitto", show_default=True,
              help="nats: a local 3-member NATS cluster, one process per member.")
@click.option("--routers", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Router shards (one router process each; a survivor takes over the "
              "shard of a router that dies).")
@click.option("--plan", type=click.Choice(PLANS), default="random", show_default=True,
              help="random: kill routers, brokers and nodes and freeze nodes at random; "
              "cluster: SIGKILL one cluster member and one router mid-stream, keep them "
              "down while messages flow, then bring them back (plus node kills).")
@click.option("--duration", type=float, default=60.0, show_default=True, metavar="S",
              help="Seconds over which messages are fed and faults injected.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--settle", type=float, default=300.0, show_default=True, metavar="S",
              help="At most this long to wait for every outbox to settle afterwards.")
@click.option("--home", "home", default=None, metavar="DIR",
              help="Where to create the network (default: a temporary folder).")
@click.option("--json", "json_file", type=click.Path(dir_okay=False), default=None)
def chaos(messages: int, nodes: int, preset: str | None, engine: str, routers: int, plan: str,
          duration: float, seed: int, settle: float, home: str | None,
          json_file: str | None) -> None:
    """Send MESSAGES among NODES while killing the router, nodes and the broker and freezing
    nodes; then classify every message. Exit 3 if anything was lost, duplicated or
    unexpected, or if no fault was injected."""
    with tempfile.TemporaryDirectory(prefix="i24net-chaos-") as tmp:
        h = prepare(Path(home) if home else Path(tmp) / "home", nodes, engine,
                    routers=routers, preset=preset)
        if preset:
            nodes = sum(1 for a in h.directory().agencies.values() if a.active)
        console.print(f"chaos: {messages} messages among {nodes} nodes on {engine} with "
                      f"{routers} router(s), plan {plan}, {duration:g}s of faults, seed "
                      f"{seed} ({h.path})")
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("feeding", total=messages)
            soak = Soak(h, messages=messages, seed=seed, duration=duration, engine=engine,
                        plan=plan,
                        log=lambda m: progress.console.print(f"  fault: {m}"),
                        progress=lambda n, _t: progress.update(task, completed=n))
            report = soak.run(settle_timeout=settle)
    t = Table(title="chaos checker")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for key in ("sent", "accepted", "delivered", "lost", "duplicated", "unexpected", "failed",
                "pending", "kills", "router_kills", "node_kills", "host_kills",
                "agency_crashes", "broker_restarts", "freezes", "hosts", "isolated",
                "takeovers", "elapsed_s", "settle_s"):
        t.add_row(key, str(getattr(report, key)))
    if report.nodes_start_member:
        t.add_row("nodes per member (start)", ", ".join(
            f"{m} {n}" for m, n in report.nodes_start_member.items()))
    console.print(t)
    if report.failed_reasons:
        console.print(f"failed by reason: {report.failed_reasons}")
    if json_file:
        Path(json_file).parent.mkdir(parents=True, exist_ok=True)
        Path(json_file).write_text(report.to_json())
    bad = report.lost or report.duplicated or report.unexpected or not report.kills
    if bad:
        console.print(f"[red]FAILED[/]: lost {report.lost}, duplicated {report.duplicated}, "
                      f"unexpected {report.unexpected}, kills {report.kills}")
        raise click.exceptions.Exit(EXIT_REFUSED)
    console.print("[green]no message lost, duplicated or unexpected[/]")
