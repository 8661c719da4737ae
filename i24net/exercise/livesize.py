"""Will a live run of this network fit on this machine? And what did it take?

A live run starts the broker, the router(s) and the agencies on node hosts, many agencies
per process (``Supervisor.placement``), plus a process of its own for each agency a crash
inject kills; the runner itself holds a fault proxy and a consumer store per agency. What
limits the size of a live network is therefore not a count of agencies but the machine:

- memory: each process costs a Python interpreter with i24net loaded, and each agency a
  slice in its host (store, keys, broker connection, queues), in the broker (its session)
  and in the runner (its proxy and its consumer);
- cores: the supervisor waits ``READY_TIMEOUT_S`` for the agencies to be up, and starting
  one costs CPU in its host (keys, store, connect, subscribe) that a few cores share;
- open files: a host holds a socket and its store's three files per agency, the runner a
  proxy's three sockets and a consumer's three files per agency; the soft limit is often
  1,024 where the hard limit is far higher, so the runner raises its own (its children
  inherit it) and only the hard limit refuses a run.

``live_size`` estimates the three from the layout the supervisor will choose and the figures
below, and says what does not fit, and why. The figures are measured: every live run
reports each process's peak resident memory and CPU time (``result.extra["size"]``, from
``measure``); the constants come from ``i24net exercise run --live --json out.json
examples/exercises/interpol_broadcast.toml`` (198 agencies, 2 node hosts, 2 cores, Python
3.11) and from ``Supervisor.up`` of synthetic networks of 8 and 400 agencies on one host.
"""

from __future__ import annotations

import contextlib
import os
import resource
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from i24net.config.home import Home
from i24net.core.netspec import NetworkSpec
from i24net.exercise import model as m

# Peak resident memory, MiB. An i24net process that does little (a router, an isolated
# node, a host before its agencies): 51-55 MiB measured.
PROCESS_MIB = 52.0
HOST_AGENCY_MIB = 0.4  # per agency in a host: 0.31 (interpol, idle) to 0.39 (synthetic)
BROKER_AGENCY_MIB = 0.1  # per session in the embedded broker: 0.06 idle, more with traffic
RUNNER_MIB = 48.0  # the runner with its loader, simulator types and reports loaded
RUNNER_AGENCY_MIB = 0.25  # per agency in the runner: its fault proxy, consumer, history
# CPU seconds to start: an i24net process (the import), and one agency in its host
# (opening its store and keys, connecting and subscribing, its share of the broker's work).
PROCESS_START_CPU_S = 0.5
AGENCY_START_CPU_S = 0.03
INFRA_STAGE_S = 0.6  # wall-clock seconds the broker's and each router's stage take
# Open files per process: a host's agency (socket, store, write-ahead log, its index), the
# runner's (a proxy's listener and two sockets, a consumer's three files), the broker's.
HOST_AGENCY_FILES = 6
RUNNER_AGENCY_FILES = 6
BROKER_AGENCY_FILES = 1
BASE_FILES = 64  # what any process holds besides: interpreter, logs, control socket
# A run may plan to use this share of the memory available now (the rest is the machine's
# and the run's margin), and this share of the supervisor's ready timeout to start.
MEMORY_SHARE = 0.8
START_SHARE = 0.5


@dataclass(frozen=True)
class Machine:
    """What this machine offers a live run: usable cores, memory available now (MiB,
    within a cgroup's limit if there is one) and the open-files limits."""

    cores: int
    available_mib: float
    files_soft: int
    files_hard: int

    @classmethod
    def here(cls) -> Machine:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        infinite = resource.RLIM_INFINITY
        return cls(cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 1,
                   available_mib=_available_mib(),
                   files_soft=1 << 30 if soft == infinite else soft,
                   files_hard=1 << 30 if hard == infinite else hard)


def _available_mib() -> float:
    """MemAvailable (the kernel's estimate of what can be allocated without swapping),
    lowered to what a cgroup v2 memory limit leaves."""
    available = float("inf")
    with contextlib.suppress(OSError, ValueError, StopIteration):
        lines = Path("/proc/meminfo").read_text().splitlines()
        available = int(next(ln for ln in lines if ln.startswith("MemAvailable:")).split()[1]) \
            / 1024
    if available == float("inf"):  # not Linux: the physical pages free
        with contextlib.suppress(OSError, ValueError, AttributeError):
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    with contextlib.suppress(OSError, ValueError):
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text())
            available = min(available, (int(limit) - used) / 2**20)
    return available


class _SpecOnlyHome(Home):
    """A network that is only its spec: what ``Supervisor.placement`` reads (the brokers
    and routers a spec asks for) before any home exists, so sizing a run does not generate
    every agency's keys."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__(tempfile.gettempdir())
        self._spec = spec

    def spec(self) -> NetworkSpec:
        return self._spec


@dataclass(frozen=True)
class LiveSize:
    """A live run's layout and its estimated cost on ``machine``; ``problem`` says what does
    not fit (``None``: it fits)."""

    source: str
    agencies: int
    hosts: int  # node hosts
    isolated: tuple[str, ...]  # agencies in a process of their own (crash targets)
    processes: int  # all of them: brokers, routers, hosts, isolated agencies
    largest_host: int  # agencies in the largest host
    estimated_mib: float
    start_s: float  # estimated time until every agency is up
    open_files: int  # the most one process needs
    machine: Machine
    ready_timeout_s: float

    @property
    def problem(self) -> str | None:
        where = f"{self.source}: network: {self.agencies} agencies"
        budget = self.machine.available_mib * MEMORY_SHARE
        if self.estimated_mib > budget:
            return (f"{where} would take about {self.estimated_mib:.0f} MiB in "
                    f"{self.processes} processes, more than the {budget:.0f} MiB this machine "
                    f"can spare ({MEMORY_SHARE:.0%} of the "
                    f"{self.machine.available_mib:.0f} MiB available now): free memory, run "
                    "it on a larger machine, or run it --virtual")
        if self.start_s > self.ready_timeout_s * START_SHARE:
            return (f"{where} would take about {self.start_s:.0f} s to start on "
                    f"{self.machine.cores} core(s) ({self.largest_host} agencies in the "
                    f"largest of {self.hosts} node hosts), and the supervisor waits at most "
                    f"{self.ready_timeout_s:g} s for them: run it on a machine with more "
                    "cores, on fewer agencies, or --virtual")
        if self.open_files > self.machine.files_hard:
            return (f"{where} need about {self.open_files} open files in one process, above "
                    f"this machine's limit of {self.machine.files_hard} ('ulimit -Hn'): raise "
                    "the hard limit (limits.conf, or LimitNOFILE for a systemd service), or "
                    "run it --virtual")
        return None

    def describe(self) -> str:
        """'198 agencies in 2 host processes, about 400 MiB' and the rest of the layout."""
        own = len(self.isolated)
        return (f"{self.agencies} agencies in {self.hosts} host process"
                f"{'es' if self.hosts != 1 else ''}"
                + (f" and {self.isolated[0]} in a process of its own" if own == 1 else
                   f" and {own} agencies in processes of their own" if own else "")
                + f", about {self.estimated_mib:.0f} MiB ({self.processes} processes and the "
                f"runner), start-up about {self.start_s:.0f} s on {self.machine.cores} "
                f"core{'s' if self.machine.cores != 1 else ''}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("machine")
        out.pop("source")
        out["isolated"] = list(self.isolated)
        out["estimated_mib"] = round(self.estimated_mib, 1)
        out["start_s"] = round(self.start_s, 1)
        out["cores"] = self.machine.cores
        out["available_mib"] = round(self.machine.available_mib)
        return out


def live_size(ex: m.Exercise, spec: NetworkSpec | None = None,
              machine: Machine | None = None) -> LiveSize:
    """The layout a live run of ``ex`` gets (the supervisor's default placement, crash
    targets isolated, the embedded broker) and what it costs on ``machine`` (default:
    this one)."""
    from i24net.exercise.loader import network_spec
    from i24net.ops.supervisor import READY_TIMEOUT_S, Supervisor

    spec = spec or network_spec(ex.network)
    machine = machine or Machine.here()
    agencies = spec.agency_ids()
    isolated = tuple(sorted({i.who for i in ex.injects if isinstance(i, m.Crash)}
                            & set(agencies)))
    layout = Supervisor(_SpecOnlyHome(spec)).placement(agencies, isolate=isolated,
                                                       engine="embedded")
    hosted = [len(runs) for name, runs in layout.items() if Supervisor.is_host(name)]
    routers = spec.router_shards
    n = len(agencies)
    mib = (RUNNER_MIB + RUNNER_AGENCY_MIB * n
           + PROCESS_MIB + BROKER_AGENCY_MIB * n
           + PROCESS_MIB * routers
           + PROCESS_MIB * len(layout) + HOST_AGENCY_MIB * n)
    largest = max(hosted, default=1)
    stage_cpu = PROCESS_START_CPU_S * len(layout) + AGENCY_START_CPU_S * n
    start = INFRA_STAGE_S * (1 + routers) + max(
        PROCESS_START_CPU_S + AGENCY_START_CPU_S * largest,
        stage_cpu / max(1, min(machine.cores, len(layout))))
    files = BASE_FILES + max(RUNNER_AGENCY_FILES * n, HOST_AGENCY_FILES * largest,
                             BROKER_AGENCY_FILES * n)
    return LiveSize(source=ex.source or ex.name, agencies=n, hosts=len(hosted),
                    isolated=isolated, processes=1 + routers + len(layout),
                    largest_host=largest if hosted else 0, estimated_mib=mib,
                    start_s=start, open_files=files, machine=machine,
                    ready_timeout_s=READY_TIMEOUT_S)


def allow_open_files(needed: int) -> None:
    """Raise this process's soft limit on open files to ``needed`` if it is lower (never
    above the hard limit): the processes it starts inherit it. Kept for the rest of the
    process, as a server sets its own limit at start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def measure(processes: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Peak resident memory (VmHWM) and CPU time of each running process, by name ->
    (pid, agencies it runs), and of this process (the runner); their sum. Read from /proc
    while they still run; a process already gone is left out."""
    rows: dict[str, dict[str, Any]] = {}
    for name, (pid, agencies) in {**processes, "runner": (os.getpid(), 0)}.items():
        usage = _usage(pid)
        if usage is not None:
            rows[name] = {"agencies": agencies, **usage}
    return {"peak_mib": round(sum(r["peak_mib"] for r in rows.values()), 1),
            "cpu_s": round(sum(r["cpu_s"] for r in rows.values()), 2), "processes": rows}


def _usage(pid: int) -> dict[str, float] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    peak = next((int(ln.split()[1]) for ln in status.splitlines()
                 if ln.startswith("VmHWM:")), 0)
    ticks = os.sysconf("SC_CLK_TCK")
    # fields after the command: state is 0, utime 11, stime 12 (proc(5) counts from 1)
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    return {"peak_mib": round(peak / 1024, 1), "cpu_s": round(cpu, 2)}
