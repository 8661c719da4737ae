"""``i24net exercise validate|run``: scripted drills and their after-action report.

Exit codes: ``validate`` 0 when the file is valid, 2 when it is not (one line naming the
field and the line). ``run`` 0 when every expectation is met, 3 when any is not, 2 for an
invalid file or an action the chosen mode cannot play; ``run --both`` 5 when the virtual and
the live verdicts differ on an expectation not marked ``timing``; a live run stopped by
SIGTERM, SIGHUP or Ctrl-C exits 128 + the signal's number once its processes are stopped.
"""

from __future__ import annotations

import signal
from dataclasses import replace
from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from i24net.cli import (
    EXIT_DIFFERENT,
    EXIT_REFUSED,
    EXIT_USAGE,
    cli,
    console,
    err_console,
    json_report_option,
    plain_text,
    write_json_report,
)
from i24net.core.units import clock
from i24net.exercise import model as m


def _fail(message: str) -> None:
    err_console.print(f"[bold red]ERROR:[/] {plain_text(message)}", soft_wrap=True, markup=True)
    raise SystemExit(EXIT_USAGE)


def _load(path: str) -> m.Exercise:
    from i24net.exercise import load

    try:
        return load(path)
    except m.ExerciseError as exc:
        _fail(exc.message)
        raise  # unreachable: _fail exits
    except Exception as exc:  # a loader bug must still not print a traceback at a user
        _fail(f"{path}: could not load it ({type(exc).__name__}: {exc}); please report "
              "this with the file")
        raise


@cli.group()
def exercise() -> None:
    """Scripted exercises: a drill in a TOML file, run in virtual time or live, judged.

    See docs/exercises.md for the file format; examples/exercises/ holds worked drills.
    """


def _live_problem(ex: m.Exercise) -> str | None:
    """Why this file cannot run live on this machine: an inject kind or a condition the
    live runner does not play, or a network that does not fit here (memory, cores, open
    files: ``livesize``), with what to do."""
    from i24net.exercise.live import check_live
    from i24net.exercise.livesize import live_size

    try:
        check_live(ex)
    except m.NotSupportedLive as exc:
        return exc.message
    return live_size(ex).problem


def _live_fit(ex: m.Exercise) -> str:
    """How a live run of this file is laid out here and what it costs, for a user to see
    before starting one: '198 agencies in 2 host processes, about 400 MiB, ...'."""
    from i24net.exercise.livesize import live_size

    return live_size(ex).describe()


@exercise.command("validate")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--live", "live", is_flag=True,
              help="Also check that each file can run live here (inject kinds, conditions, "
              "network size).")
def validate(files: tuple[str, ...], live: bool) -> None:
    """Check exercise FILEs: 'ok: NAME, N injects, M expectations' or one ERROR line."""
    for f in files:
        ex = _load(f)
        checked_live = live or ex.mode == "live"
        problem = _live_problem(ex) if checked_live else None
        if problem:
            _fail(f"not runnable live: {problem}")
        console.print(f"ok: {plain_text(ex.name)}, {len(ex.injects)} injects, "
                      f"{len(ex.expectations)} expectations"
                      + (f", runnable live: {_live_fit(ex)}" if checked_live else ""),
                      soft_wrap=True)
        if checked_live:
            from i24net.exercise.live import virtual_only

            for note in virtual_only(ex):
                console.print(f"  note: {plain_text(note)}", soft_wrap=True)


@exercise.command("run")
@click.argument("file", metavar="FILE")
@click.option("--virtual", "mode", flag_value="virtual", default=None,
              help="Run in virtual time on the simulator (default unless the file says "
              "mode = \"live\").")
@click.option("--live", "mode", flag_value="live",
              help="Run live: real processes on the embedded broker, wall-clock time.")
@click.option("--both", "mode", flag_value="both",
              help="Run it virtual, then live, and compare the verdicts expectation by "
              "expectation (exit 5 if they differ).")
@click.option("--seed", type=int, default=None, help="Override the file's seed.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              metavar="OUT.html", help="Write the self-contained HTML after-action report.")
@json_report_option("the after-action report")
@click.option("--workdir", type=click.Path(file_okay=False, exists=True), default=None,
              metavar="DIR", help="Live runs: create the temporary network home in DIR "
              "(default: the system's temporary folder).")
@click.option("--keep", is_flag=True, help="Live runs: keep the network home (logs, stores, "
              "history.jsonl) afterwards and say where it is.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar; only the verdict.")
def run(file: str, mode: str | None, seed: int | None, report_path: str | None,
        json_path: str | None, workdir: str | None, keep: bool, quiet: bool) -> None:
    """Run the exercise in FILE and judge its expectations (exit 0 all met, 3 otherwise)."""
    from i24net.exercise.htmlreport import render
    from i24net.exercise.live import Interrupted, LiveRun
    from i24net.exercise.runner import run as run_exercise
    from i24net.exercise.terminal import print_report

    ex = _load(file)
    for path in (json_path, report_path):  # fail before a long run, not after it
        if path and not Path(path).resolve().parent.is_dir():
            _fail(f"{path}: no such directory to write the report into")
    if mode == "both":
        _run_both(ex, seed, workdir, keep, quiet, json_path)
        return
    chosen = mode or ex.mode
    live: LiveRun | None = None
    unit = "virtual" if chosen == "virtual" else "wall-clock"
    progress = Progress(TextColumn("[bold]{task.fields[clock]}[/]"), BarColumn(),
                        TextColumn("{task.percentage:>3.0f}%"),
                        TextColumn("[dim]{task.description}[/]"), TimeElapsedColumn(),
                        console=err_console, transient=True,
                        disable=quiet or not err_console.is_terminal)
    with progress:
        task = progress.add_task("", total=max(ex.duration, 1e-9),
                                 clock=f"{unit} 0:00 / {clock(ex.duration, truncate=True)}")

        def tick(now: float, total: float, text: str) -> None:
            progress.update(task, completed=now, description=text,
                            clock=f"{unit} {clock(now, truncate=True)} / "
                                  f"{clock(total, truncate=True)}")
        try:
            if chosen == "live":
                live = LiveRun(ex if seed is None else replace(ex, seed=seed), progress=tick,
                               workdir=Path(workdir) if workdir else None, keep=keep)
                result = live.run()
            else:
                result = run_exercise(ex, chosen, seed=seed, progress=tick)
        except m.NotSupportedLive as exc:
            _fail(exc.message)
            return
        except Interrupted as exc:
            err_console.print(f"interrupted by {signal.Signals(exc.signum).name}: every "
                              "process of the run was stopped" +
                              (f"; its home is kept in {plain_text(str(live.tmp))}"
                               if keep and live is not None and live.tmp else ""),
                              soft_wrap=True)
            raise SystemExit(128 + exc.signum) from None
        finally:
            if keep and live is not None and live.tmp is not None:
                err_console.print(f"[dim]network home kept: {plain_text(str(live.tmp))}[/]",
                                  soft_wrap=True)
    if json_path:
        write_json_report(json_path, result.to_json())
    if report_path:
        Path(report_path).write_text(render(result))
    if quiet:
        verdict = "PASSED" if result.passed else "FAILED: " + ", ".join(
            f"#{o.index} {o.description}" for o in result.failed)
        console.print(f"{plain_text(ex.name)}: {plain_text(verdict)}", soft_wrap=True)
    else:
        print_report(result, console)
        late = result.extra.get("lateness")
        if late:
            n = len(late["late"])
            console.print(f"injects played at most {late['worst_s']:.3f} s after their planned "
                          f"times (tolerance {late['tolerance_s']:g} s)" +
                          (f": [yellow]{n} played late[/]" if n else ""))
        for what, path in (("JSON", json_path), ("HTML report", report_path)):
            if path and path != "-":
                console.print(f"[dim]{what}: {plain_text(path)}[/]")
    if not result.passed:
        raise SystemExit(EXIT_REFUSED)


def _run_both(ex: m.Exercise, seed: int | None, workdir: str | None, keep: bool, quiet: bool,
              json_path: str | None) -> None:
    """Virtual, then live, then the two verdicts side by side."""
    import json

    from i24net.exercise.compare import compare, same_verdicts
    from i24net.exercise.live import Interrupted, LiveRun
    from i24net.exercise.runner import run as run_exercise
    from i24net.exercise.terminal import print_report

    problem = _live_problem(ex)
    if problem:
        _fail(f"cannot compare: not runnable live: {problem}")
    ex = ex if seed is None else replace(ex, seed=seed)
    virtual = run_exercise(ex, "virtual")
    try:
        live = LiveRun(ex, workdir=Path(workdir) if workdir else None, keep=keep).run()
    except Interrupted as exc:
        err_console.print(f"interrupted by {signal.Signals(exc.signum).name}: every process "
                          "of the run was stopped", soft_wrap=True)
        raise SystemExit(128 + exc.signum) from None
    if not quiet:
        for result in (virtual, live):
            print_report(result, console)
    rows = compare(virtual, live)
    mark = {True: "[green]met[/]", False: "[red]not met[/]", None: "[dim]-[/]"}
    for r in rows:
        flag = "" if r.agree else (" [yellow]differs (timing)[/]" if r.timing
                                   else " [bold red]DIFFERS[/]")
        console.print(f"#{r.index} {plain_text(r.description)}: virtual {mark[r.virtual]}, "
                      f"live {mark[r.live]}{flag}", soft_wrap=True)
    if json_path:
        write_json_report(json_path, json.dumps({
            "virtual": json.loads(virtual.to_json()), "live": json.loads(live.to_json()),
            "comparison": [r.to_dict() for r in rows], "same": same_verdicts(rows)},
            indent=2, sort_keys=True) + "\n")
    if not same_verdicts(rows):
        console.print("[bold red]the two modes disagree[/]")
        raise SystemExit(EXIT_DIFFERENT)
    if not (virtual.passed and live.passed):
        raise SystemExit(EXIT_REFUSED)
