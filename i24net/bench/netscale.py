"""The whole network live, side by side on broker engines: ``i24net bench --network``.

Theory of operation: each case (a network and a broker engine) gets a fresh home in a
temporary folder, with its broker on a free port, and goes through what an operator does:
``i24net init``, ``i24net up``, a broadcast to ``@ALL``, a quiet spell, ``i24net down``.
Every step is timed by this process's clock, and the network is observed from outside,
through ``/proc``: every process of a home names the home in its command line (Mosquitto
too, through its configuration file), so "the network" is every live process whose
command line holds the home's path (zombies and this process left out).

- ``up_s``: wall seconds of ``i24net up`` as a subprocess, start to exit (all or nothing:
  it exits once every agency is ready, or fails naming what did not start).
- ``processes``, ``i24net_processes``: the home's processes right after ``up``, and how many
  of them are i24net's own (``python -m i24net ...``); the rest is the broker binary.
- ``rss_mib``: the sum of their ``VmRSS`` (``/proc/PID/status``), in MiB; the larger of two
  readings, right after ``up`` (``rss_mib_after_up``) and after both broadcasts.
- ``broadcast_s``: an ``@ALL`` message, from just before ``client.send`` (sealing for every
  recipient, writing the outbox, waking the node) until the sender's node reports it
  delivered, i.e. every recipient's signed receipt is back, followed on the node's control
  socket (``control.watch``). ``broadcast_receipts`` counts the receipts seen on the way.
- ``broadcast_cli_s``: the same through ``i24net publish --wait`` (wall seconds of the
  subprocess; includes starting Python and importing i24net).
- ``idle_cpu_pct``: after a pause for the broadcasts' last acknowledgements, CPU time (user +
  system, ``/proc/PID/stat`` fields 14 and 15) of every process of the home over ``idle_s``
  seconds of nothing to do, as a percentage of one core.
- ``down_s``: wall seconds of ``i24net down``; ``left_running`` counts the home's processes
  still alive once it has returned.

Whatever happens (a failed step, Ctrl-C, SIGTERM) the case ends with ``i24net down`` and a
SIGKILL for anything of the home still alive. Nothing is asserted: the figures go into a
table next to the targets (``TARGETS``), each marked met or missed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Say = Callable[[str], None]

CASES = ("interpol-embedded", "interpol-mosquitto", "1000-embedded")
QUICK_CASES = ("interpol-embedded", "interpol-mosquitto")
ENGINES = ("embedded", "mosquitto")
IDLE_S, QUICK_IDLE_S = 30.0, 5.0
SETTLE_S = 3.0  # after the broadcasts, before the idle window
BROADCAST_TIMEOUT_S = 120.0
UP_TIMEOUT_S = 600.0
STEP_TIMEOUT_S = 120.0
LABEL = "OFFICIAL-USE"  # every agency of both networks is cleared for it

# Upper bounds per network; a case whose network has none is reported without a verdict.
TARGETS: dict[str, dict[str, float]] = {
    "interpol": {"up_s": 15, "rss_mib": 1024, "broadcast_s": 3, "idle_cpu_pct": 5,
                 "down_s": 5, "left_running": 0},
    "1000": {"up_s": 60, "rss_mib": 2048, "broadcast_s": 15, "idle_cpu_pct": 15,
             "down_s": 10, "left_running": 0},
}


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    digits: int = 1


FIGURES = (
    Figure("agencies", "agencies", "", 0),
    Figure("up_s", "up", "s", 1),
    Figure("processes", "processes (i24net)", "", 0),
    Figure("rss_mib", "RSS", "MiB", 0),
    Figure("broadcast_s", "@ALL, all receipts", "s", 2),
    Figure("broadcast_receipts", "@ALL receipts", "", 0),
    Figure("broadcast_cli_s", "@ALL, publish --wait", "s", 2),
    Figure("idle_cpu_pct", "idle CPU", "% core", 1),
    Figure("down_s", "down", "s", 1),
    Figure("left_running", "left running", "", 0),
)


# -- the outside view: /proc -----------------------------------------------------------

def _names_home(argv: list[bytes], home: bytes) -> bool:
    """Whether a command line names ``home`` or a path inside it (not merely a path that
    starts with the same characters, e.g. ``home2``)."""
    for arg in argv:
        at = arg.find(home)
        while at >= 0:
            end = at + len(home)
            if (at == 0 or arg[at - 1:at] in (b"=", b" ", b":")) \
                    and (end == len(arg) or arg[end:end + 1] in (b"/", b" ", b":")):
                return True
            at = arg.find(home, at + 1)
    return False


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name: index 0 is field 3 (state)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def home_pids(home: Path | str) -> list[int]:
    """Live processes whose command line names ``home``, except this one; zombies (already
    dead, waiting to be reaped) do not count."""
    needle = os.fsencode(str(Path(home).resolve()))
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not _names_home(argv, needle):
            continue
        fields = _stat_fields(pid)
        if fields is not None and fields[0] not in ("Z", "X"):
            found.append(pid)
    return sorted(found)


def is_i24net(pid: int) -> bool:
    """Whether ``pid`` runs i24net (``python -m i24net ...`` or the ``i24net`` script)."""
    try:
        argv = [a.decode(errors="replace")
                for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return False
    if any(a == "-m" and b == "i24net" for a, b in itertools.pairwise(argv)):
        return True
    return any(Path(a).name == "i24net" for a in argv[:2])


def cpu_ticks(pids: Iterable[int]) -> dict[tuple[int, int], int]:
    """utime + stime (clock ticks) of each process, keyed by (pid, start time) so that a
    pid reused between two readings is not taken for the same process."""
    out = {}
    for pid in pids:
        f = _stat_fields(pid)
        if f is not None and len(f) > 19:
            out[(pid, int(f[19]))] = int(f[11]) + int(f[12])  # fields 22; 14, 15
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds the processes have used so far (gone ones count 0)."""
    return sum(cpu_ticks(pids).values()) / os.sysconf("SC_CLK_TCK")


def rss_mib(pids: Iterable[int]) -> float:
    """The sum of the processes' resident set sizes (VmRSS), in MiB."""
    kib = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kib += int(line.split()[1])
                    break
    return kib / 1024


def cpu_percent(pids_of: Callable[[], list[int]], seconds: float) -> tuple[float, int]:
    """CPU of a set of processes over ``seconds``, as % of one core, and how many there
    were. ``pids_of`` is asked at both ends: a process present at both counts its
    difference, one that started in between everything it used."""
    start = cpu_ticks(pids_of())
    w0 = time.monotonic()
    time.sleep(seconds)
    end = cpu_ticks(pids_of())
    wall = time.monotonic() - w0
    used = sum(t - start.get(key, 0) for key, t in end.items())
    return 100.0 * used / os.sysconf("SC_CLK_TCK") / wall, len(end)


def kill_home(home: Path, timeout: float = 5.0) -> int:
    """SIGKILL every process of ``home``; returns how many there were."""
    pids = home_pids(home)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while home_pids(home) and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(pids)


# -- targets and verdicts ----------------------------------------------------------------

def parse_case(case: str) -> tuple[str, str]:
    """``interpol-embedded`` -> ("interpol", "embedded"); ``1000-mosquitto`` -> ("1000", ...)."""
    network, _, engine = case.partition("-")
    if engine not in ENGINES:
        raise ValueError(f"case {case!r}: the engine must be one of {', '.join(ENGINES)}")
    if network != "interpol" and not (network.isdigit() and 2 <= int(network) <= 20000):
        raise ValueError(f"case {case!r}: the network must be 'interpol' or a number of "
                         "agencies (2..20000)")
    return network, engine


def targets_for(network: str) -> dict[str, float]:
    return TARGETS.get(network, {})


def verdict(value: float | None, limit: float | None) -> str:
    """``met`` (value within the upper bound), ``MISSED``, or ``n/a`` (no value or no
    target)."""
    if value is None or limit is None:
        return "n/a"
    return "met" if value <= limit else "MISSED"


def verdicts(case: dict[str, Any]) -> dict[str, str]:
    t = targets_for(str(case.get("network")))
    return {key: verdict(case.get(key), limit) for key, limit in t.items()}


def missed(results: dict[str, Any]) -> list[str]:
    """``case: figure`` for every target missed."""
    return [f"{c['case']}: {k}" for c in results.get("cases", [])
            for k, v in c.get("verdicts", {}).items() if v == "MISSED"]


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def cell(case: dict[str, Any], fig: Figure, *, target: bool = True) -> tuple[str, str]:
    """(the value as shown, with its target unless not ``target``; its verdict, or "" when
    the figure has no target) of one figure of one case."""
    value = case.get(fig.key)
    text = _fmt(value, fig.digits)
    if fig.key == "processes" and value is not None:
        text += f" ({_fmt(case.get('i24net_processes'), 0)})"
    elif fig.key == "broadcast_receipts" and value is not None:
        text += f" of {_fmt(case.get('broadcast_recipients'), 0)}"
    limit = targets_for(str(case.get("network"))).get(fig.key)
    st = case.get("verdicts", {}).get(fig.key) or verdict(value, limit)
    if limit is not None and target:
        text += f" (<= {limit:g})"
    return text, st if limit is not None else ""


def target_cell(networks: Iterable[str], fig: Figure) -> str:
    """The targets of ``fig`` for each of ``networks`` that has one, e.g. ``<= 15 / <= 60``."""
    limits = [targets_for(n).get(fig.key) for n in networks]
    return " / ".join(f"<= {x:g}" for x in limits if x is not None)


def targets_text() -> list[str]:
    out = []
    for network, t in TARGETS.items():
        what = "interpol (198 agencies), either engine" if network == "interpol" \
            else f"{network} agencies"
        out.append(f"{what}: up <= {t['up_s']:g} s, RSS <= {t['rss_mib']:g} MiB, @ALL <= "
                   f"{t['broadcast_s']:g} s, idle <= {t['idle_cpu_pct']:g} % of a core, "
                   f"down <= {t['down_s']:g} s, nothing left running")
    return out


def markdown(results: dict[str, Any], command: str) -> str:
    cases = results.get("cases", [])
    lines = [f"Measured with `{command}` on {results.get('cpu_model')}, "
             f"{results.get('cores')} cores (load average "
             f"{' '.join(f'{x:.2f}' for x in results.get('loadavg', []))} at the start), "
             f"idle window {results.get('idle_s', 0):g} s, "
             f"{results.get('seconds', 0):.0f} s in all.", ""]
    lines.append("| figure | unit | " + " | ".join(c["case"] for c in cases) + " |")
    lines.append("| --- | --- |" + " ---: |" * len(cases))
    for fig in FIGURES:
        row = []
        for c in cases:
            text, st = cell(c, fig)
            row.append(f"{text} {'**MISSED**' if st == 'MISSED' else st}".strip())
        lines.append(f"| {fig.label} | {fig.unit} | " + " | ".join(row) + " |")
    lines.append("")
    notes = [f"- {c['case']} failed: {c['error']}" for c in cases if c.get("error")]
    notes += [f"- {s['case']} skipped: {s['reason']}" for s in results.get("skipped", [])]
    if notes:
        lines += [*notes, ""]
    lines.append("Targets (upper bounds; measurements, not assertions):")
    lines.append("")
    lines.extend(f"- {t}" for t in targets_text())
    return "\n".join(lines) + "\n"


def to_json(results: dict[str, Any]) -> str:
    return json.dumps(results, indent=2)


# -- one case ----------------------------------------------------------------------------

def _i24net(home: Path, *args: str, timeout: float = STEP_TIMEOUT_S
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "i24net", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _why(p: subprocess.CompletedProcess[str]) -> str:
    text = (p.stderr.strip() or p.stdout.strip())[-2000:]
    return f"exit {p.returncode}: {text}" if text else f"exit {p.returncode}"


def broadcast(home: Path, sender: str, label: str, timeout: float) -> tuple[float, int, int]:
    """Send ``@ALL`` from ``sender`` through its running node; returns the seconds from
    just before sending until it is delivered, the receipts seen, and the recipients."""
    from i24net.config.home import Home
    from i24net.ops.client import send
    from i24net.ops.supervisor import Supervisor
    from i24net.shell.control import watch

    h = Home(home)
    ctl = Supervisor(h).control_path(sender)
    t0 = time.perf_counter()
    header = send(h, sender, ["@ALL"], label=label, subject="netscale broadcast")
    deadline = time.monotonic() + timeout
    receipts: set[str] = set()
    # The first event is the outbox entry as it stands, with every receipt so far: none
    # is lost between sending and watching.
    for ev in watch(ctl, sender, header.id_hex, deadline):
        kind = ev.get("event")
        if kind == "state":
            receipts.update(ev.get("receipts", {}))
            if ev.get("state") in ("delivered", "refused", "expired"):
                kind = ev["state"]
        elif kind == "receipt":
            receipts.add(str(ev.get("peer")))
        if kind == "delivered":
            return time.perf_counter() - t0, len(receipts), len(header.recipients)
        if kind in ("refused", "expired"):
            raise RuntimeError(f"the broadcast was {kind}: {ev.get('reason') or ev}")
    raise RuntimeError(f"the broadcast was not delivered within {timeout:g} s "
                       f"({len(receipts)} of {len(header.recipients)} receipts)")


def run_case(case: str, *, idle_s: float = IDLE_S, say: Say = print,
             keep: Path | None = None,
             broadcast_timeout: float = BROADCAST_TIMEOUT_S) -> dict[str, Any]:
    """Measure one case in a fresh home; never raises for a failed step (the result's
    ``error`` says what failed), and leaves nothing of the home running."""
    from i24net.broker import pick_free_port
    from i24net.config.home import Home

    network, engine = parse_case(case)
    r: dict[str, Any] = {
        "case": case, "network": network, "engine": engine, "agencies": None,
        "up_s": None, "processes": None, "i24net_processes": None, "rss_mib": None,
        "rss_mib_after_up": None, "broadcast_s": None, "broadcast_receipts": None,
        "broadcast_recipients": None, "broadcast_cli_s": None, "idle_s": idle_s,
        "idle_cpu_pct": None, "down_s": None, "left_running": None, "error": None}
    root = Path(tempfile.mkdtemp(prefix="i24net-netscale-", dir=keep)).resolve()
    home = root / case
    started = time.monotonic()
    went_down = False

    def step(text: str) -> None:
        say(f"[{case}] {text}")

    try:
        shape = ["--preset", "interpol"] if network == "interpol" else ["--agencies", network]
        port = pick_free_port()
        step(f"init {' '.join(shape)} --engine {engine} --port {port} in {home}")
        p = _i24net(home, "init", *shape, "--engine", engine, "--port", str(port))
        if p.returncode:
            raise RuntimeError(f"i24net init failed ({_why(p)})")
        d = Home(home).directory()
        r["agencies"] = sum(1 for a in d.agencies.values() if a.active)
        sender = "NCB-FR" if "NCB-FR" in d.agencies else "GS-LYON"

        step(f"up ({r['agencies']} agencies)")
        t0 = time.perf_counter()
        p = _i24net(home, "up", timeout=UP_TIMEOUT_S)
        up_s = time.perf_counter() - t0
        if p.returncode:
            raise RuntimeError(f"i24net up failed after {up_s:.1f} s ({_why(p)})")
        r["up_s"] = round(up_s, 2)
        pids = home_pids(home)
        r["processes"] = len(pids)
        r["i24net_processes"] = sum(1 for pid in pids if is_i24net(pid))
        r["rss_mib_after_up"] = r["rss_mib"] = round(rss_mib(pids), 1)
        step(f"up in {up_s:.1f} s: {len(pids)} processes ({r['i24net_processes']} "
             f"i24net), {r['rss_mib']:.0f} MiB")

        step(f"@ALL from {sender}")
        took, got, recipients = broadcast(home, sender, LABEL, broadcast_timeout)
        r["broadcast_s"], r["broadcast_receipts"] = round(took, 3), got
        r["broadcast_recipients"] = recipients
        step(f"@ALL delivered in {took:.2f} s: {got} of {recipients} receipts")

        t0 = time.perf_counter()
        p = _i24net(home, "publish", "--as", sender, "--to", "@ALL", "--classification",
                    LABEL, "--subject", "netscale broadcast (publish)", "--wait",
                    f"{broadcast_timeout:g}", timeout=broadcast_timeout + 60)
        cli_s = time.perf_counter() - t0
        if p.returncode:
            raise RuntimeError(f"i24net publish --wait failed after {cli_s:.1f} s "
                               f"({_why(p)})")
        r["broadcast_cli_s"] = round(cli_s, 3)
        r["rss_mib"] = round(max(r["rss_mib"], rss_mib(home_pids(home))), 1)
        step(f"@ALL through publish --wait in {cli_s:.2f} s; RSS now {r['rss_mib']:.0f} MiB")

        step(f"idle: {SETTLE_S:g} s to settle, then {idle_s:g} s measured")
        time.sleep(SETTLE_S)
        pct, _ = cpu_percent(lambda: home_pids(home), idle_s)
        r["idle_cpu_pct"] = round(pct, 2)
        step(f"idle CPU {pct:.1f} % of a core")

        step("down")
        t0 = time.perf_counter()
        went_down = True
        p = _i24net(home, "down", timeout=STEP_TIMEOUT_S)
        down_s = time.perf_counter() - t0
        r["left_running"] = len(home_pids(home))
        if p.returncode:
            raise RuntimeError(f"i24net down failed ({_why(p)})")
        r["down_s"] = round(down_s, 2)
        step(f"down in {down_s:.1f} s; {r['left_running']} process(es) left running")
    except Exception as exc:  # a failed step, an I24Error from send or watch: reported
        r["error"] = _error_text(exc)
        step(f"FAILED: {r['error']}")
    finally:
        left = _cleanup(home, went_down)
        if r["left_running"] is None:
            r["left_running"] = left
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    r["seconds"] = round(time.monotonic() - started, 1)
    r["verdicts"] = verdicts(r)
    return r


def _error_text(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if isinstance(exc, subprocess.TimeoutExpired):
        message = f"{' '.join(map(str, exc.cmd[2:4]))} did not finish within {exc.timeout:g} s"
    return str(message)


def _cleanup(home: Path, went_down: bool) -> int:
    """``i24net down`` (unless it already ran), then SIGKILL whatever of the home is still
    alive; a second Ctrl-C during ``down`` still gets to the SIGKILL. Returns how many
    processes were still alive before the SIGKILL."""
    interrupted: BaseException | None = None
    try:
        if not went_down and home_pids(home) and (home / "network.toml").exists():
            _i24net(home, "down", timeout=60)
    except (KeyboardInterrupt, SystemExit) as exc:
        interrupted = exc
    except (OSError, subprocess.SubprocessError):
        pass
    left = kill_home(home)
    if interrupted is not None:
        raise interrupted
    return left


# -- a run -------------------------------------------------------------------------------

def skip_reason(case: str) -> str | None:
    """Why ``case`` cannot run on this machine (its broker is not installed), or None."""
    _, engine = parse_case(case)
    if engine == "mosquitto":
        from i24net.broker.mosquitto import find_mosquitto
        from i24net.core.errors import I24Error

        try:
            find_mosquitto()
        except I24Error:
            return "the mosquitto binary is not installed (make system-deps)"
    return None


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (make or CI stopping the run) unwinds like Ctrl-C, so cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def machine() -> dict[str, Any]:
    from i24net.bench.pipeline import machine_info

    info = machine_info()
    info.pop("loadavg_start", None)
    return {**info, "loadavg": [round(x, 2) for x in os.getloadavg()]}


def run(cases: Iterable[str] = CASES, *, idle_s: float = IDLE_S, quick: bool = False,
        say: Say = print, keep: Path | None = None) -> dict[str, Any]:
    """Every case in turn, side by side; the machine's description at the top."""
    cases = list(cases)
    for case in cases:
        parse_case(case)
    t0 = time.monotonic()
    results: dict[str, Any] = {**machine(), "quick": quick, "idle_s": idle_s,
                               "targets": TARGETS, "cases": [], "skipped": []}
    with _sigterm_as_interrupt():
        for case in cases:
            reason = skip_reason(case)
            if reason is not None:
                say(f"[{case}] skipped: {reason}")
                results["skipped"].append({"case": case, "reason": reason})
                continue
            results["cases"].append(run_case(case, idle_s=idle_s, say=say, keep=keep))
    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = round(time.monotonic() - t0, 1)
    return results
