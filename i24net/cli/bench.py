"""``i24net bench``: performance figures against a baseline, in one run (see i24net.bench.pipeline)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from i24net.cli import (
    EXIT_ERROR,
    cli,
    console,
    err_console,
    json_report_option,
    plain_text,
    write_json_report,
)


@cli.command("bench")
@click.option("--quick", is_flag=True,
              help="Small counts, well under a minute: a smoke test, not a measurement "
              "(--network: the interpol cases only, idle window 5 s).")
@click.option("--engine", type=click.Choice(["mosquitto", "embedded", "nats"]),
              default=None, help="Broker for the live phases (embedded: amqtt in a child "
              "process; nats: a local 3-member NATS cluster, --scale only). Default: "
              "mosquitto, or nats with --scale.")
@click.option("--scale", is_flag=True,
              help="Instead: end-to-end throughput with --routers router shards against one "
              "router, alternating rounds on the same broker (medians and their ratio).")
@click.option("--network", is_flag=True,
              help="Instead: the whole network live, case by case side by side (a fresh "
              "home each): i24net up, processes and RSS, an @ALL broadcast until every "
              "receipt, idle CPU, i24net down; next to the targets.")
@click.option("--cases", default=None, metavar="CASE,...",
              help="--network: NETWORK-ENGINE cases, NETWORK 'interpol' or a number of "
              "agencies, ENGINE embedded or mosquitto (default interpol-embedded,"
              "interpol-mosquitto,1000-embedded; the first two with --quick).")
@click.option("--idle", "idle_s", type=click.FloatRange(1, 600), default=None,
              metavar="SECONDS", help="--network: length of the idle CPU window (default "
              "30, 5 with --quick).")
@click.option("--routers", type=click.IntRange(2, 8), default=2, show_default=True,
              help="--scale: router shards to compare with one router.")
@click.option("--nodes", type=click.IntRange(2, 64), default=8, show_default=True,
              help="--scale: agencies sending and receiving.")
@click.option("--messages", type=click.IntRange(10, 100_000), default=None,
              help="--scale: messages per round (default 1500, 200 with --quick).")
@click.option("--repeats", type=click.IntRange(1, 9), default=None,
              help="--scale: rounds per layout (default 3, 1 with --quick).")
@json_report_option("every figure")
@click.option("--markdown", "--table", "md_path",
              type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Write the markdown table here.")
@click.option("--keep", "keep", type=click.Path(file_okay=False, path_type=Path),
              default=None, metavar="DIR", help="Keep the run's home, stores and logs "
              "under DIR (for investigation).")
def bench_cmd(quick: bool, engine: str | None, scale: bool, network: bool,
              cases: str | None, idle_s: float | None, routers: int, nodes: int,
              messages: int | None, repeats: int | None, json_path: str | None,
              md_path: Path | None, keep: Path | None) -> None:
    """Measure i24net against a plain MQTT relay on the same broker, in one run.

    Relay throughput and latency (baseline vs. the full sealed, routed, receipted
    pipeline on SQLite), fan-out cost of sealing, FLASH latency under a ROUTINE flood,
    virtual-time simulation speed, and peak memory at 198 agencies. Prints a table;
    --json prints the figures (bench/README.md explains each key), --json-out FILE writes
    them with a markdown table next to it (FILE with .md) unless --markdown says otherwise.

    --network measures the whole network live instead, and --scale router shards; both
    are described in bench/README.md.
    """
    from i24net.bench import pipeline as bench

    def say(text: str) -> None:
        err_console.print(f"[dim]{text}[/]", markup=True, highlight=False)

    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    if network:
        if scale:
            raise click.UsageError("--network and --scale are two different runs")
        if engine is not None:
            raise click.UsageError("--network takes its engines from --cases")
        _network(quick, cases, idle_s, json_path, md_path, keep, say)
        return
    if cases is not None or idle_s is not None:
        raise click.UsageError("--cases and --idle apply to --network")
    if scale:
        _scale(engine or "nats", routers, nodes, messages or (200 if quick else 1500),
               repeats or (1 if quick else 3), json_path, keep, say)
        return
    if engine == "nats":
        raise click.UsageError("--engine nats applies to --scale; the other phases compare "
                               "with a single broker")
    engine = engine or "mosquitto"
    plan = bench.Plan.smoke() if quick else bench.Plan.full()
    results = bench.run(plan, engine, say, keep=keep)
    command = "i24net " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if Path(sys.argv[0]).name == "i24net" else "i24net bench" + (" --quick" if quick
                                                                     else "")
    console.print(table(results, bench))
    console.print(f"[dim]{results['cpu_model']}, {results['cores']} cores, Python "
                  f"{results['python']}; broker {results['engine']}; SQLite stores; "
                  f"{results['seconds']:.0f} s[/]")
    for note in bench.notes(results):
        console.print(f"[dim]- {note}[/]")
    md_path = _write_json(json_path, bench.to_json(results), md_path)
    if md_path is not None:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(bench.markdown(results, command))


def _write_json(json_path: str | None, text: str, md_path: Path | None) -> Path | None:
    """Write ``text`` to ``json_path`` (stdout for "-"); returns where the markdown table
    goes: ``md_path``, else next to a JSON file."""
    if json_path is None:
        return md_path
    if json_path == "-":
        write_json_report(json_path, text)
        return md_path
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return md_path or path.with_suffix(".md")


def _scale(engine: str, routers: int, nodes: int, messages: int, repeats: int,
           json_path: str | None, keep: Path | None, say: object) -> None:
    import json

    from i24net.bench.scale import run_scale

    r = run_scale(engine, shards=routers, nodes=nodes, messages=messages, repeats=repeats,
                  say=say, keep=keep)  # type: ignore[arg-type]
    for key, what in (("pipeline", f"full pipeline, {nodes} node daemons"),
                      ("routers_only", f"routers alone, {r['bound_agencies']} senders")):
        part = r[key]
        t = Table(title=f"{routers} router shards against 1: {what} ({engine}, {messages} "
                  f"messages a round)", title_justify="left")
        for col in ("routers", "seconds", "msg/s", "router CPU s"):
            t.add_column(col)
        for rd in part["rounds"]:
            t.add_row(str(rd["routers"]), f"{rd['seconds']:.1f}", f"{rd['rate']:.0f}",
                      " ".join(f"{v:.1f}" for v in rd["router_cpu_s"].values()))
        console.print(t)
        console.print(f"median: 1 router {part['rate_1_router']:.0f} msg/s, {routers} routers "
                      f"{part[f'rate_{routers}_routers']:.0f} msg/s, ratio "
                      f"{part['ratio']:.2f}")
    console.print(f"[dim]{r['cpu_model']}, {r['cores']} cores, {r['seconds']:.0f} s[/]")
    _write_json(json_path, json.dumps(r, indent=2), None)


def _network(quick: bool, cases: str | None, idle_s: float | None, json_path: str | None,
             md_path: Path | None, keep: Path | None, say: Callable[[str], None]) -> None:
    from i24net.bench import netscale

    chosen = [c.strip() for c in cases.split(",") if c.strip()] if cases is not None \
        else list(netscale.QUICK_CASES if quick else netscale.CASES)
    if not chosen:
        raise click.UsageError("--cases: name at least one case")
    for case in chosen:
        try:
            netscale.parse_case(case)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    idle = idle_s if idle_s is not None else (netscale.QUICK_IDLE_S if quick
                                              else netscale.IDLE_S)
    results = netscale.run(chosen, idle_s=idle, quick=quick, keep=keep,
                           say=lambda text: say(plain_text(text)))  # "[case] ..." literally
    console.print(network_table(results))
    console.print(f"[dim]{results['cpu_model']}, {results['cores']} cores, load average "
                  f"{' '.join(f'{x:.2f}' for x in results['loadavg'])} at the start, "
                  f"{' '.join(f'{x:.2f}' for x in results['loadavg_end'])} at the end; "
                  f"{results['seconds']:.0f} s[/]")
    for line in netscale.targets_text():
        console.print(f"[dim]- target {line}[/]")
    for s in results["skipped"]:
        console.print(f"[yellow]skipped {s['case']}[/]: {s['reason']}")
    failed = [c for c in results["cases"] if c["error"]]
    for c in failed:
        err_console.print(f"[bold red]{c['case']} failed:[/] {plain_text(c['error'])}",
                          soft_wrap=True)
    md_path = _write_json(json_path, netscale.to_json(results), md_path)
    if md_path is not None:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(netscale.markdown(results, _command("i24net bench --network")))
    if failed:
        raise click.exceptions.Exit(EXIT_ERROR)


def _command(default: str) -> str:
    """The command line this run was started with, as shown in a markdown table."""
    if Path(sys.argv[0]).name == "i24net":
        return "i24net " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return default


def network_table(results: dict[str, Any]) -> Table:
    """Figures down, cases across (``network`` over ``engine``), the targets beside them."""
    from i24net.bench.netscale import FIGURES, cell, target_cell, targets_for

    cases = results["cases"]
    networks = list(dict.fromkeys(c["network"] for c in cases if targets_for(c["network"])))
    t = Table(title=f"i24net bench --network (idle window {results['idle_s']:g} s)",
              title_justify="left")
    t.add_column("figure")
    if networks:
        t.add_column("target\n" + " / ".join(networks), justify="right", style="dim")
    for c in cases:
        t.add_column(f"{c['network']}\n{c['engine']}", justify="right")
    styles = {"met": "green", "MISSED": "bold red"}
    for fig in FIGURES:
        row = [f"{fig.label} ({fig.unit})" if fig.unit else fig.label]
        if networks:
            row.append(target_cell(networks, fig))
        for c in cases:
            text, st = cell(c, fig, target=False)
            row.append(f"{text} [{styles[st]}]{st}[/]" if st in styles else text)
        t.add_row(*row)
    return t


def table(results: dict[str, object], bench: object) -> Table:
    from i24net.bench.pipeline import FIGURES, fmt, status

    t = Table(title="i24net bench", title_justify="left")
    t.add_column("figure")
    t.add_column("key", style="dim")
    t.add_column("value", justify="right")
    t.add_column("goal")
    t.add_column("status")
    for fig in FIGURES:
        st = status(fig, results)
        style = {"met": "green", "MISSED": "bold red", "n/a": "yellow"}.get(st, "")
        t.add_row(fig.label, fig.key, f"{fmt(results.get(fig.key))} {fig.unit}", fig.goal,
                  f"[{style}]{st}[/]" if style else st)
    return t
