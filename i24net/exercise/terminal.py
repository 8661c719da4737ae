"""The after-action report in the terminal (rich): expectations, counts, latency."""

from __future__ import annotations

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from i24net.core.units import duration
from i24net.exercise.result import Result

_PREC_STYLE = {"FLASH": "bold red", "IMMEDIATE": "dark_orange", "PRIORITY": "yellow",
               "ROUTINE": "white"}


def _clean(text: str) -> str:
    return escape("".join(c if c.isprintable() else "?" for c in text))


def report(result: Result) -> Group:
    d = result.to_dict()
    ex, s = d["exercise"], d["summary"]
    title = Text.from_markup(
        f"[bold]{_clean(ex['name'])}[/] — {_clean(ex['network'])}, {ex['agencies']} agencies, "
        f"{ex['mode']}, seed {ex['seed']}, planned {duration(ex['duration_s'])}"
        + (f", judged at {duration(ex['ended_s'])}" if ex["ended_s"] != ex["duration_s"] else "")
        + (f", {duration(result.wall_seconds)} elapsed" if result.mode == "live" else ""))

    exp = Table(title="expectations", title_justify="left", expand=True)
    exp.add_column("#", justify="right", no_wrap=True)
    exp.add_column("expectation", ratio=2)
    exp.add_column("result", no_wrap=True)
    exp.add_column("detail", ratio=3)
    for o in d["expectations"]:
        mark = "[green]✓ met[/]" if o["passed"] else "[bold red]✗ FAILED[/]"
        exp.add_row(str(o["index"]), _clean(o["description"]), mark, _clean(o["detail"]))

    counts = Table(title="counts", title_justify="left", box=None, show_header=False)
    counts.add_column(no_wrap=True)
    counts.add_column(justify="right", no_wrap=True)
    for label, key in (("injects played", "injects"), ("messages", "messages"),
                       ("accepted", "accepted"), ("refused", "refused"),
                       ("deliveries", "deliveries"), ("dropped frames", "dropped_frames"),
                       ("flow violations", "flowcheck_violations")):
        counts.add_row(label, str(s[key]))
    for reason, n in d["refusals"].items():
        counts.add_row(f"[red]refused[/] {_clean(reason)}", str(n))

    lat = Table(title="delivery latency", title_justify="left", box=None)
    for col in ("precedence", "n", "median", "p95", "max", "target"):
        lat.add_column(col, justify="left" if col == "precedence" else "right", no_wrap=True)
    for p, row in d["latency_by_precedence"].items():
        if not row["count"]:
            continue
        over = row["count"] - row["within_target"]
        lat.add_row(f"[{_PREC_STYLE[p]}]{p}[/]", str(row["count"]), duration(row["p50_s"]),
                    duration(row["p95_s"]), ("[red]" if over else "") + duration(row["max_s"])
                    + ("[/]" if over else ""), duration(row["target_s"]))

    debriefs: list[object] = []
    for name, op in d["operations"].items():
        t = Table(title=f"joint debriefing: operation {_clean(name)} ({_clean(op['title'])}), "
                  f"lead {op['lead']}, {op['messages']} message(s)", title_justify="left",
                  box=None)
        for col in ("sender", "sent", "refused", "deliveries", "median", "max"):
            t.add_column(col, justify="left" if col == "sender" else "right", no_wrap=True)
        for sender, row in op["by_sender"].items():
            t.add_row(sender, str(row["sent"]), str(row["refused"]), str(row["deliveries"]),
                      duration(row["p50_s"]) if row["p50_s"] is not None else "-",
                      duration(row["max_s"]) if row["max_s"] is not None else "-")
        debriefs.append(t)
        changes = [f"{a} left at {duration(when)}" for a, when in op["removed"].items()]
        changes += [f"{a} joined at {duration(when)}" for a, when in op["joined"].items()]
        if op["closed_t"] is not None:
            changes.append(f"closed at {duration(op['closed_t'])}")
        refused = [f"{_clean(r)} x{n}" for r, n in op["refusals"].items()]
        debriefs.append(Text.from_markup(
            f"  members {', '.join(op['members'])}"
            + (f"; {'; '.join(changes)}" if changes else "")
            + (f"\n  [red]refused[/] {', '.join(refused)}" if refused else "")))

    failed = [o for o in d["expectations"] if not o["passed"]]
    verdict = Text.from_markup(
        f"[bold green]PASSED[/]: {s['met']}/{s['expectations']} expectations met"
        if not failed else
        f"[bold red]FAILED[/]: {len(failed)} of {s['expectations']} expectations not met "
        f"(#{', #'.join(str(o['index']) for o in failed)})")
    errors = [t for t in d["timeline"] if t["type"] == "inject" and "error" in t]
    parts: list[object] = [title, exp, counts]
    if any(r["count"] for r in d["latency_by_precedence"].values()):
        parts.append(lat)
    parts += debriefs
    for t in errors:
        parts.append(Text.from_markup(f"[yellow]inject[{t['index']}] {t['action']} failed:[/] "
                                      f"{_clean(t['error'])}"))
    if result.mode == "live":
        from i24net.exercise.live import virtual_only

        for note in virtual_only(result.exercise):
            parts.append(Text.from_markup(f"[dim]note: {_clean(note)}[/]"))
    parts.append(verdict)
    return Group(*parts)  # type: ignore[arg-type]


def print_report(result: Result, console: Console) -> None:
    console.print(report(result))
