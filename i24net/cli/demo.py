"""``i24net demo``: start a local network and play the storyline, with a live dashboard."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console, Group
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from i24net.cli import cli, console, json_report_option, refuse_running_home, write_json_report
from i24net.config.home import Home, now_ms
from i24net.core import envelope as env
from i24net.core.errors import I24Error
from i24net.core.labels import ClassificationScale, HandlingCodes, Label, Precedence
from i24net.ops.demo import Snapshot, Storyline, prepare_home
from i24net.ops.supervisor import Supervisor

_STATE_MARK = {"pending": "[dim]·[/]", "running": "[yellow]▶[/]", "ok": "[green]✓[/]",
               "failed": "[red]✗[/]"}


def _label_style(scale: ClassificationScale, marking: str) -> str:
    return f"[{scale.colour(marking.split('//')[0])}]{marking}[/]"


def render(story: Storyline, snap: Snapshot, scale: ClassificationScale,
           started: float, max_flows: int = 14) -> Layout:
    """The dashboard: agencies, message flow, storyline, refusals and latency."""
    agencies = Table(expand=True, box=None, pad_edge=False)
    for col, just in (("agency", "left"), ("clearance", "left"), ("state", "left"),
                      ("inbox", "right"), ("new", "right"), ("out", "right")):
        agencies.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    d = story.home.directory()
    for a in story.monitor.agencies:
        online = "[green]online[/]" if snap.online.get(a) else "[red]offline[/]"
        agencies.add_row(a, _label_style(scale, d.agencies[a].clearance.marking), online,
                         str(snap.inbox.get(a, 0)), str(snap.new.get(a, 0)),
                         str(snap.pending.get(a, 0)))

    flow = Table(expand=True, box=None, pad_edge=False)
    for col, just in (("time", "left"), ("from → to", "left"), ("kind", "left"),
                      ("label", "left"), ("prec", "left"), ("subject", "left"),
                      ("ms", "right")):
        flow.add_column(col, justify=just,  # type: ignore[arg-type]
                        no_wrap=True, overflow="ellipsis", ratio=1 if col == "subject" else None)
    for f in snap.flows[-max_flows:]:
        p = Precedence(f.precedence)
        flow.add_row(datetime.fromtimestamp(f.at_ms / 1000).strftime("%H:%M:%S"),
                     f"{f.sender}→{f.recipient}", f.kind, _label_style(scale, f.label),
                     f"[{p.colour}]{p.name}[/]", f.subject, str(f.latency_ms))

    steps = Table(expand=True, box=None, show_header=False, pad_edge=False)
    steps.add_column(width=1)
    steps.add_column(ratio=1, overflow="ellipsis", no_wrap=True)
    for s in story.steps:
        text = s.title + (f" [dim]— {s.detail}[/]" if s.detail else "")
        steps.add_row(_STATE_MARK[s.state], text)

    stats = Table(expand=True, box=None, show_header=False, pad_edge=False)
    stats.add_column(no_wrap=True)
    stats.add_column(justify="right", no_wrap=True)
    stats.add_row("delivered", str(snap.delivered))
    for reason, n in sorted(snap.refused.items()):
        stats.add_row(f"[red]refused[/] {reason}", str(n))
    for reason, n in sorted(snap.notice_refusals.items()):
        stats.add_row(f"[red]notice refused[/] {reason}", str(n))
    for reason, n in sorted(snap.dropped.items()):
        stats.add_row(f"[magenta]dropped[/] {reason}", str(n))
    p50, p99 = snap.percentile(50), snap.percentile(99)
    stats.add_row("latency p50 / p99",
                  "-" if p50 is None else f"{p50:.0f} / {p99:.0f} ms")

    layout = Layout()
    title = Text.from_markup(f"[bold]i24net demo[/] — network {d.network}, directory "
                             f"v{d.serial}, {time.monotonic() - started:.0f}s")
    layout.split_column(Layout(Panel(title), size=3), Layout(name="top", size=20),
                        Layout(Panel(flow, title="message flow"), name="flow"))
    layout["top"].split_row(Layout(Panel(agencies, title="agencies"), size=58),
                            Layout(name="right"))
    layout["right"].split_column(Layout(Panel(steps, title="storyline"), size=11),
                                 Layout(Panel(stats, title="refusals, drops, latency")))
    layout["flow"].update(Panel(flow, title="message flow"))
    return layout


def summary_table(snap: Snapshot) -> Table:
    t = Table(title="demo summary")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("delivered", str(snap.delivered))
    for reason, n in sorted(snap.refused.items()):
        t.add_row(f"refused: {reason}", str(n))
    for reason, n in sorted(snap.notice_refusals.items()):
        t.add_row(f"notice refused: {reason}", str(n))
    for reason, n in sorted(snap.dropped.items()):
        t.add_row(f"dropped: {reason}", str(n))
    p50, p99 = snap.percentile(50), snap.percentile(99)
    t.add_row("latency p50", "-" if p50 is None else f"{p50:.0f} ms")
    t.add_row("latency p99", "-" if p99 is None else f"{p99:.0f} ms")
    return t


def summary_json(story: Storyline, snap: Snapshot) -> dict[str, object]:
    return {
        "ok": all(s.state == "ok" for s in story.steps),
        "steps": [{"title": s.title, "state": s.state, "detail": s.detail,
                   "seconds": round(s.seconds, 2)} for s in story.steps],
        "delivered": snap.delivered, "refused": dict(snap.refused),
        "notice_refused": dict(snap.notice_refusals), "dropped": dict(snap.dropped),
        "latency_p50_ms": snap.percentile(50), "latency_p99_ms": snap.percentile(99),
    }


@contextlib.contextmanager
def _network(home: Home, engine: str, log: Console) -> Iterator[Supervisor]:
    """Start the network; stop every process on the way out, also on Ctrl-C or SIGTERM."""
    sup = Supervisor(home)
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        # NCB-JP runs in its own process: the catch-up step SIGKILLs it for real.
        sup.up(engine, on_ready=lambda n: log.print(f"  {n} ready"), isolate=["NCB-JP"])
        yield sup
    finally:
        sup.down()
        signal.signal(signal.SIGTERM, previous)


def run_tour(home: Home) -> bool:
    """Without a network: seal one diffusion, show who can and cannot open it."""
    d = home.init(_demo_spec(), force=True)
    header = env.make_header(
        d, sender="NCB-FR", addressing=["@EU", "GS-LYON"], kind="diffusion",
        label=Label("CONFIDENTIAL", frozenset({"EU"})), now_ms=now_ms(), ttl_ms=3600_000,
        random_bytes=os.urandom, precedence=Precedence.IMMEDIATE,
        handling=HandlingCodes.parse(["H2"]))
    raw = env.seal(header, env.Body("Wanted: J. Doe", "Suspect seen at Gare de Lyon."),
                   home.keys("NCB-FR"), env.recipient_keys(d, header), random_bytes=os.urandom)
    ok = True
    console.print(f"sealed diffusion {header.id_hex[:12]} to {', '.join(header.recipients)}"
                  f" at {header.label.marking}, H2 ({len(raw)} bytes)")
    opened = env.open_envelope(raw, home.keys("NCB-DE"), d)
    console.print(f"NCB-DE opens it: {opened.body.subject!r}")
    for who, data in (("NCB-US", raw), ("NCB-DE (one bit flipped)",
                                        raw[:100] + bytes([raw[100] ^ 1]) + raw[101:])):
        try:
            env.open_envelope(data, home.keys(who.split()[0]), d)
            ok = False
            console.print(f"[red]{who} opened it[/]")
        except I24Error as exc:
            console.print(f"{who}: refused ({exc.reason})")
    return ok


def _demo_spec() -> str:
    from i24net.config.presets import preset_toml

    return preset_toml("demo")


@cli.command()
@click.option("--home", "home", default=None, metavar="DIR",
              help="Where to create the demo network, replacing any stopped network there "
              "(default: a temporary folder, removed after).")
@click.option("--headless", is_flag=True,
              help="Plain log and summary, no dashboard (automatic when not on a terminal).")
@click.option("--engine", type=click.Choice(["embedded", "mosquitto"]), default="embedded",
              show_default=True, help="Broker engine.")
@click.option("--duration", type=float, default=0.0, metavar="S",
              help="Keep the network running (and the dashboard live) for at least S "
                   "seconds in all.")
@json_report_option("the summary")
@click.option("--pace", type=float, default=None, metavar="S",
              help="Pause between steps so people can follow (default 4 s with the "
                   "dashboard, 0 headless).")
@click.option("--tour", is_flag=True, help="Only the offline envelope tour (no network).")
def demo(home: str | None, headless: bool, engine: str, duration: float,
         json_path: str | None, pace: float | None, tour: bool) -> None:
    """Start a demo network and play a one-minute storyline.

    A Red Notice is requested, published and cancelled; an H2 diffusion cannot be forwarded
    without release; a FLASH alert overtakes routine traffic; an uncleared recipient, a
    forged message and a political notice request are refused; a node is killed and catches
    up. Exit 0 when every step did what it should, 1 naming the step otherwise.
    """
    if home:
        refuse_running_home(Path(home))
    with contextlib.ExitStack() as stack:
        path = Path(home) if home else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="i24net-demo-"))) / "home"
        if tour:
            if not run_tour(Home(path)):
                raise click.ClickException("the tour did not behave as expected")
            return
        headless = headless or not sys.stdout.isatty()
        h = prepare_home(path, engine)
        console.print(f"demo network in {h.path} ({engine} broker); starting processes")
        started = time.monotonic()
        with _network(h, engine, console) as sup:
            scale = h.directory().scale
            story: Storyline
            if headless:
                story = Storyline(h, sup, log=lambda m: console.print(m, markup=False))
                story.pace = pace or 0.0
                story.run()
                _linger(story, started, duration, lambda: None)
            else:
                live = Live(console=console, screen=False, auto_refresh=False,
                            vertical_overflow="crop")
                story = Storyline(h, sup)

                def refresh() -> None:
                    live.update(render(story, story.monitor.snapshot(), scale, started),
                                refresh=True)
                story.refresh = refresh
                story.pace = pace if pace is not None else 4.0
                with live:
                    story.run()
                    _linger(story, started, duration, refresh)
            snap = story.monitor.snapshot()
        console.print(Group(summary_table(snap)))
        if json_path:
            write_json_report(json_path, json.dumps(summary_json(story, snap), indent=2))
        failed = [s for s in story.steps if s.state != "ok"]
        if failed:
            raise click.ClickException(f"step failed: {failed[0].title}: {failed[0].detail}")
        console.print(f"[bold green]demo complete[/]: {len(story.steps)} steps in "
                      f"{time.monotonic() - started:.0f}s; no process left running")


def _linger(story: Storyline, started: float, duration: float, refresh: object) -> None:
    while time.monotonic() - started < duration:
        if callable(refresh):
            refresh()
        time.sleep(0.5)
