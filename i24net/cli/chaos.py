"""``i24net chaos``: a live soak under kills and partitions, judged from an outside history;
``i24net check``: the same checker over a history file."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click
from rich.progress import Progress
from rich.table import Table

from i24net.cli import (
    EXIT_REFUSED,
    cli,
    console,
    json_report_option,
    refuse_running_home,
    write_json_report,
)
from i24net.config.home import Home
from i24net.core.errors import I24Error
from i24net.core.labels import Label
from i24net.ops.chaos import PLANS, Soak, prepare
from i24net.ops.checker import CLASSES, Allowance


@cli.command()
@click.option("--messages", type=int, default=2000, show_default=True,
              help="Messages to send.")
@click.option("--nodes", type=int, default=10, show_default=True,
              help="Agencies (nodes) of a synthetic network.")
@click.option("--preset", type=click.Choice(["interpol"]), default=None,
              help="Run among every agency of this built-in network instead (interpol: "
              "198 agencies), most of them on node hosts.")
@click.option("--network", "network_file", type=click.Path(exists=True, dir_okay=False),
              default=None, metavar="FILE",
              help="Run among every active agency of this network.toml instead (its broker "
              "engine and port are replaced).")
@click.option("--label", default="UNCLASSIFIED", show_default=True, metavar="MARKING",
              help="The label every message carries; a message the policy refuses fails "
              "the run.")
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
              help="Where to create the network, replacing any stopped network there "
              "(default: a temporary folder, removed afterwards unless the soak fails: "
              "its logs say why).")
@json_report_option("the report")
@click.option("--history", "history_file", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="Keep the outside history here (default: history.jsonl "
              "in the home, so it is gone with a temporary home); 'i24net check FILE' "
              "judges it again.")
def chaos(messages: int, nodes: int, preset: str | None, network_file: str | None,
          label: str, engine: str, routers: int, plan: str, duration: float, seed: int,
          settle: float, home: str | None, json_path: str | None,
          history_file: str | None) -> None:
    """Send MESSAGES among NODES while killing the router, nodes and the broker and freezing
    nodes; then classify every message from the outside history (what the senders were
    told, what each agency's application consumer saw). Exit 3 unless every message was
    delivered exactly once to each of its recipients (a refusal, an expiry, a loss, a
    duplicate, a message still pending or one delivered where it must not be fails the
    run), or if no fault was injected."""
    if home:
        refuse_running_home(Path(home))
    spec = Path(network_file).read_text() if network_file else None
    tmp = tempfile.mkdtemp(prefix="i24net-chaos-")
    kept = False
    try:
        h = prepare(Path(home) if home else Path(tmp) / "home", nodes, engine,
                    routers=routers, preset=preset, spec=spec)
        if preset or spec is not None:
            nodes = sum(1 for a in h.directory().agencies.values() if a.active)
        console.print(f"chaos: {messages} messages among {nodes} nodes on {engine} with "
                      f"{routers} router(s), plan {plan}, {duration:g}s of faults, seed "
                      f"{seed} ({h.path})")
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("feeding", total=messages)
            soak = Soak(h, messages=messages, seed=seed, duration=duration, engine=engine,
                        plan=plan, label=_label(h, label), history=history_file,
                        log=lambda m: progress.console.print(f"  fault: {m}"),
                        progress=lambda n, _t: progress.update(task, completed=n))
            try:
                report = soak.run(settle_timeout=settle)
            except BaseException:
                kept = not home  # the daemons' logs say why; a temporary home would take them
                if kept:
                    console.print(f"the soak's home is kept for its logs: {h.path}")
                raise
    finally:
        if not kept:
            shutil.rmtree(tmp, ignore_errors=True)
    t = Table(title="chaos checker")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for key in ("sent", "accepted", "delivered", "lost", "duplicated", "misdelivered",
                "unexpected", "refused", "refused_unexpected", "expired", "pending", "kills", "router_kills", "node_kills", "host_kills",
                "agency_crashes", "broker_restarts", "freezes", "hosts", "isolated",
                "takeovers", "elapsed_s", "settle_s"):
        t.add_row(key, str(getattr(report, key)))
    if report.nodes_per_member:
        t.add_row("nodes per member (connected)", ", ".join(
            f"{m} {n}" for m, n in report.nodes_per_member.items()))
        t.add_row("delivered across members", str(report.crossed_members))
    console.print(t)
    if report.failed_reasons:
        console.print(f"failed by reason: {report.failed_reasons}")
    if json_path:
        if json_path != "-":
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        write_json_report(json_path, report.to_json())
    if history_file:
        console.print(f"history: {history_file}")
    if not report.ok or not report.kills:
        for failure in report.failures:
            console.print(f"[red]FAILED[/]: {failure}", highlight=False)
        if not report.kills:
            console.print("[red]FAILED[/]: no fault was injected (run it for longer)")
        raise click.exceptions.Exit(EXIT_REFUSED)
    console.print(f"[green]PASS[/]: all {report.sent} messages delivered exactly once to "
                  "each of their recipients")


def _label(home: Home, marking: str) -> Label:
    try:
        return home.directory().scale.validate(Label.parse(marking))
    except I24Error as exc:
        raise click.BadParameter(str(exc), param_hint="--label") from exc


@cli.command("check")
@click.argument("history", type=click.Path(exists=True, dir_okay=False))
@click.option("--allow", "allowed", multiple=True, type=click.Choice(CLASSES),
              help="Also accept messages in this class (repeatable), e.g. pending for a "
              "history judged before the run settled.")
@click.option("--allow-refusal", "refusals", multiple=True, metavar="REASON",
              help="Accept refusals with this reason code for any message (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def check_cmd(history: str, allowed: tuple[str, ...], refusals: tuple[str, ...],
              as_json: bool) -> None:
    """Judge the outside history HISTORY of a soak (chaos, a live exercise) again: classify
    every submitted message as delivered, duplicated, misdelivered, refused, expired, lost
    or pending. Exit 3 unless each is in a class the run allows."""
    import json

    from i24net.ops.history import judge

    v = judge(history, Allowance(frozenset(allowed), frozenset(refusals)))
    if as_json:
        click.echo(json.dumps(v.summary(), indent=2))
    else:
        t = Table(title=f"checker: {history}")
        t.add_column("class")
        t.add_column("messages", justify="right")
        t.add_row("submitted", str(v.submitted))
        for cls in CLASSES:
            t.add_row(cls, str(v.counts[cls]))
        t.add_row("refused (unexpected)", str(v.refused_unexpected))
        t.add_row("unexpected deliveries", str(v.unexpected))
        console.print(t)
        for failure in v.failures:
            console.print(f"[red]FAILED[/]: {failure}", highlight=False)
        if v.ok:
            console.print("[green]PASS[/]")
    if not v.ok:
        raise click.exceptions.Exit(EXIT_REFUSED)
