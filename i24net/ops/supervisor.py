"""The local supervisor: start, watch and stop a whole network as OS processes.

``up`` starts the broker, then the router(s), then the agencies: by default on a few node
hosts (``i24net host``, many agencies per process, see ``i24net.shell.host``), as many as the
machine has cores and the network needs, never more processes in all than
``MAX_PROCESSES``; agencies named in ``isolate`` get a process of their own
(``i24net node``), so a drill can SIGKILL a real process, and ``per_process`` gives every
agency its own. Each process runs in its own session (a signal to the supervisor's terminal
does not reach it by accident), with its output in ``logs/<name>.log``.

``up`` is all or nothing: it returns once every process has printed its ``ready`` line;
on any failure, timeout or interruption it stops everything it started and raises, naming
the process (and, for a host, the agency) with the tail of its log.

The pids and each process's agencies go to ``state/processes.json``; ``status``, ``stop``,
``start`` and ``down`` read it back and check that each pid is still the process started:
the create time recorded at spawn (psutil) and the command line both match, so a recycled pid
is never signalled. A record without a create time (a state file written before they were
recorded) is judged by its command line alone.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from i24net.config.home import Home
from i24net.core.errors import ConfigError, I24Error, WaitTimeout
from i24net.core.netspec import CLUSTER_ENGINES

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
MAX_PROCESSES = 16  # brokers, routers, hosts and isolated agencies together (default layout)
AGENCIES_PER_HOST = 64  # below this many, one host fewer


class StartError(I24Error):
    """A process of the network exited while starting; ``tail`` is the end of its log."""

    def __init__(self, message: str, *, reason: str, component: str,
                 agency: str | None = None, tail: list[str] | None = None) -> None:
        super().__init__(message, reason=reason, agency=agency)
        self.component = component
        self.tail = tail or []


@dataclass(frozen=True, slots=True)
class Proc:
    name: str  # "broker", "router", "host-k" or an agency id (an agency's own process)
    pid: int
    argv: tuple[str, ...]
    log: str
    started: float
    agencies: tuple[str, ...] = ()  # the agencies it runs (a host's, or its own)
    created: float | None = None  # psutil create time at spawn; None in older state files
    boot: float | None = None  # psutil boot time when ``created`` was read

    @property
    def alive(self) -> bool:
        return self.process() is not None

    def process(self) -> psutil.Process | None:
        """A psutil handle on this process if it still runs (see ``process_of``)."""
        return process_of(self.pid, self.argv, self.created, self.boot)


#: Half a clock tick: the kernel records a process's start in ticks (1/100 s) since boot.
START_SLACK_S = 0.005


def start_stamp(pid: int) -> tuple[float | None, float | None]:
    """``pid``'s create time and the boot time it counts from (psutil, seconds since the
    epoch), or ``(None, None)`` if it is gone."""
    try:
        return float(psutil.Process(pid).create_time()), float(psutil.boot_time())
    except psutil.Error:
        return None, None


def same_start(proc: psutil.Process, created: float, boot: float) -> bool:
    """Whether ``proc`` started at ``created`` (``start_stamp`` read on another day, perhaps
    by another process). Compared as time since boot, which the kernel keeps in clock ticks:
    psutil's epoch times add the boot time, which a clock step (NTP) moves."""
    since_boot = float(proc.create_time()) - float(psutil.boot_time())
    return abs(since_boot - (created - boot)) <= START_SLACK_S


def process_of(pid: int, argv: Iterable[str], created: float | None = None,
               boot: float | None = None) -> psutil.Process | None:
    """A handle on ``pid`` if it is alive (not a zombie) and is the process we started: it
    started at ``created`` (``same_start``) and its command line ends with ``argv``; without
    ``created`` and ``boot`` (a record from before they were kept) the command line alone
    decides. None otherwise: gone, exited, or a recycled pid."""
    want = list(argv)
    try:
        proc = psutil.Process(pid)
        if created is not None and boot is not None and not same_start(proc, created, boot):
            return None  # the pid now belongs to a process started later
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None  # a zombie has exited
        cmdline = proc.cmdline()
    except psutil.Error:
        return None
    return proc if want and cmdline[-len(want):] == want else None


def pid_runs(pid: int, argv: Iterable[str], created: float | None = None,
             boot: float | None = None) -> bool:
    """True if ``pid`` is alive and is the process we started (not recycled): see
    ``process_of``."""
    return process_of(pid, argv, created, boot) is not None


class Supervisor:
    """Processes of one network home."""

    def __init__(self, home: Home, *, python: str = sys.executable) -> None:
        self.home = home
        self.python = python
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def state_file(self) -> Path:
        return self.home.state_dir / "processes.json"

    def load(self) -> dict[str, Proc]:
        if not self.state_file.exists():
            return {}
        data = json.loads(self.state_file.read_text())
        return {n: Proc(n, p["pid"], tuple(p["argv"]), p["log"], p["started"],
                        tuple(p.get("agencies", ())), p.get("created"), p.get("boot"))
                for n, p in data.items()}

    def _save(self, procs: dict[str, Proc]) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({n: asdict(p) for n, p in procs.items()}, indent=2))
        os.replace(tmp, self.state_file)

    def running(self) -> dict[str, Proc]:
        return {n: p for n, p in self.load().items() if p.alive}

    # -- naming ---------------------------------------------------------------------------
    def brokers(self, engine: str | None = None) -> list[str]:
        """The broker processes: ``broker``, or ``broker-1..n`` for a clustered engine (one
        process per member, so a member can die alone)."""
        b = self.home.spec().broker.for_engine(engine)
        if b.engine not in CLUSTER_ENGINES:
            return ["broker"]
        return [f"broker-{k}" for k in range(1, b.members + 1)]

    def routers(self) -> list[str]:
        """``router``, or ``router-1..K`` with ``[router] shards = K``: the shards this home
        runs (``machine.share_of``: not those exported to another machine)."""
        from i24net.config.machine import shards_here

        count = self.home.spec().router_shards
        return [("router" if count == 1 else f"router-{k}") for k in shards_here(self.home)]

    def brokers_here(self, engine: str | None = None) -> list[str]:
        """The broker processes this home starts: none when ``[broker] addresses`` names
        brokers run elsewhere, and none on a machine's export (it connects to the network's
        broker, ``[broker]`` in network.toml)."""
        from i24net.config.machine import members_here

        b = self.home.spec().broker.for_engine(engine)
        if b.addresses:
            return []
        names = self.brokers(engine)
        if b.engine not in CLUSTER_ENGINES:
            return [] if self._is_export() else names
        here = set(members_here(self.home))
        return [n for k, n in enumerate(names, 1) if k in here]

    def _is_export(self) -> bool:
        from i24net.config.machine import machine_of

        return machine_of(self.home) is not None

    @staticmethod
    def is_infra(name: str) -> bool:
        """Brokers and routers (agency ids are upper case, so they never clash)."""
        return name in ("broker", "router") or name.startswith(("broker-", "router-"))

    @staticmethod
    def is_host(name: str) -> bool:
        return name.startswith("host-")

    def placement(self, agencies: list[str], *, isolate: Iterable[str] = (),
                  per_process: bool = False, hosts: int | None = None,
                  engine: str | None = None) -> dict[str, tuple[str, ...]]:
        """Which process runs which agencies: ``host-1..n`` (the agencies dealt out in
        turn) plus one process per isolated agency, named after it."""
        isolated = sorted(set(isolate) & set(agencies)) if not per_process else agencies
        unknown = sorted(set(isolate) - set(agencies))
        if unknown:
            raise ConfigError(f"cannot isolate {', '.join(unknown)}: not an active agency "
                              "of this network", reason="config.agency")
        out: dict[str, tuple[str, ...]] = {a: (a,) for a in isolated}
        rest = [a for a in agencies if a not in out]
        if not rest:
            return out
        if hosts is None:
            infra = len(self.brokers(engine)) + len(self.routers())
            room = max(1, MAX_PROCESSES - infra - len(out))
            hosts = min(os.cpu_count() or 1, math.ceil(len(rest) / AGENCIES_PER_HOST), room)
        hosts = max(1, min(hosts, len(rest)))
        for k in range(hosts):
            out[f"host-{k + 1}"] = tuple(rest[k::hosts])
        return out

    def where(self, agency: str) -> Proc | None:
        """The process (running or not) recorded as running ``agency``."""
        for p in self.load().values():
            if agency in p.agencies:
                return p
        return None

    def control_path(self, agency: str) -> Path:
        """The control socket of the process that runs ``agency``: the one ``up`` recorded;
        else ``i24net node AGENCY`` started by hand (``state/ctl/AGENCY.sock``); else a host
        started by hand (``i24net host NAME --agencies ...``, as on a machine's export)
        whose status lists the agency."""
        from i24net.shell.control import ControlError, ctl_dir, ctl_path, request

        p = self.where(agency)
        own = ctl_path(self.home, p.name if p is not None else agency)
        if p is not None or own.exists() or not ctl_dir(self.home).is_dir():
            return own
        for path in sorted(ctl_dir(self.home).glob("*.sock")):
            try:
                answer = request(path, {"op": "status"}, timeout=2.0)
            except ControlError:
                continue
            if agency in (answer.get("agencies") or {}):
                return path
        return own

    # -- starting -------------------------------------------------------------------------
    def argv(self, name: str, engine: str | None,
             agencies: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The arguments after the Python executable that run process ``name`` (a broker
        or one member, a router shard, a node host of ``agencies``, an agency's node)."""
        home = str(self.home.path)
        if name == "broker" or name.startswith("broker-"):
            extra: tuple[str, ...] = ("--engine", engine) if engine else ()
            if name.startswith("broker-"):
                extra = ("--engine", engine or self.home.spec().broker.engine,
                         "--member", name.split("-", 1)[1])
            return ("-m", "i24net", "broker", *extra, "--home", home)
        if name == "router":
            return ("-m", "i24net", "router", "--home", home)
        if name.startswith("router-"):
            shard = f"{name.split('-', 1)[1]}/{self.home.spec().router_shards}"
            return ("-m", "i24net", "router", "--shard", shard, "--home", home)
        if self.is_host(name):
            if not agencies:
                raise ConfigError(f"{name} has no agencies recorded: run 'i24net up'",
                                  reason="config.host")
            return ("-m", "i24net", "host", name, "--agencies", ",".join(agencies),
                    "--home", home)
        return ("-m", "i24net", "node", name, "--home", home)

    def spawn(self, name: str, engine: str | None = None,
              agencies: Iterable[str] | None = None) -> Proc:
        """Start process ``name``; a host runs ``agencies`` (default: those recorded for
        it), an agency's own process runs that agency."""
        self.home.logs_dir.mkdir(parents=True, exist_ok=True)
        log = self.home.logs_dir / f"{name}.log"
        if agencies is not None:
            runs = tuple(agencies)
        elif self.is_host(name):
            old = self.load().get(name)
            runs = old.agencies if old is not None else ()
        else:
            runs = () if self.is_infra(name) else (name,)
        argv = self.argv(name, engine, runs)
        with log.open("ab") as fh:
            fh.write(f"--- starting {name} at {time.strftime('%H:%M:%S')}\n".encode())
            fh.flush()
            p = subprocess.Popen([self.python, *argv], stdout=fh, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._children[p.pid] = p
        # Our child cannot be reaped (nor its pid reused) before we wait for it, so its
        # create time is readable here even if it has already exited.
        proc = Proc(name, p.pid, argv, str(log), time.time(), runs, *start_stamp(p.pid))
        procs = self.load()
        procs[name] = proc
        self._save(procs)
        return proc

    def wait_ready(self, procs: Iterable[Proc], timeout: float = READY_TIMEOUT_S,
                   on_ready: Callable[[str], None] | None = None,
                   on_agency: Callable[[str], None] | None = None) -> None:
        """Wait until each process has printed its ``ready`` line; ``on_agency`` hears of
        each agency a host reports up on the way. Raises if one exits first (with the tail
        of its log) or on timeout (naming what is not ready)."""
        pending = {p.name: p for p in procs}
        offsets = {n: _last_start_offset(Path(p.log)) for n, p in pending.items()}
        seen: dict[str, int] = dict.fromkeys(pending, 0)
        deadline = time.monotonic() + timeout
        while pending:
            for name, p in list(pending.items()):
                text = Path(p.log).read_bytes()[offsets[name]:].decode(errors="replace")
                lines = text.splitlines()
                if on_agency is not None:
                    ups = [ln.split()[1] for ln in lines if ln.startswith("up ")
                           and len(ln.split()) > 1]
                    for agency in ups[seen[name]:]:
                        on_agency(agency)
                    seen[name] = len(ups)
                if any(ln.startswith("ready ") for ln in lines):
                    del pending[name]
                    if on_ready:
                        on_ready(name)
                elif not self._started_alive(p):
                    tail = [ln for ln in lines[-8:] if not ln.startswith("--- starting")]
                    failed = [ln.split(None, 2) for ln in lines
                              if ln.startswith("failed ") and len(ln.split()) > 2]
                    culprit = failed[0][1].rstrip(":") if failed else None
                    what = f"{culprit} could not start in {name}: {failed[0][2]}" if failed \
                        else f"{name} exited while starting"
                    raise StartError(f"{what} (log: {p.log})", reason="supervisor.start",
                                     component=name, agency=culprit, tail=tail)
            if pending and time.monotonic() > deadline:
                raise WaitTimeout(f"{', '.join(sorted(pending))} not ready after {timeout:g}s"
                                  f" (logs in {self.home.logs_dir})", reason="timeout")
            time.sleep(0.05)

    def _started_alive(self, p: Proc) -> bool:
        # Right after fork, /proc/<pid>/cmdline still shows our own command line, so a
        # child we started is judged by its Popen handle, not by pid_runs.
        child = self._children.get(p.pid)
        return child.poll() is None if child is not None else p.alive

    def up(self, engine: str | None = None, *, on_ready: Callable[[str], None] | None = None,
           on_agency: Callable[[str], None] | None = None,
           agencies: Iterable[str] | None = None, isolate: Iterable[str] = (),
           per_process: bool = False, hosts: int | None = None,
           timeout: float = READY_TIMEOUT_S) -> list[str]:
        """Start what is not running; returns the process names started (empty if all
        were up). All or nothing: if anything fails, or the caller is interrupted
        (KeyboardInterrupt, SystemExit), every process this call started is stopped
        before the error goes on."""
        from i24net.config.machine import share_of

        self.home.require()
        running = self.running()
        brokers, routers = self.brokers_here(engine), self.routers()
        wanted = list(share_of(self.home).agencies) if agencies is None else list(agencies)
        recorded = {n: p.agencies for n, p in self.load().items() if not self.is_infra(n)}
        if recorded and not per_process and not tuple(isolate) and hosts is None \
                and agencies is None:
            layout = recorded  # a restart keeps the placement processes.json records
            placed = {a for runs in layout.values() for a in runs}
            layout.update(self.placement([a for a in wanted if a not in placed],
                                         hosts=1, engine=engine)
                          if set(wanted) - placed else {})
        else:
            layout = self.placement(wanted, isolate=isolate, per_process=per_process,
                                    hosts=hosts, engine=engine)
        missing = [n for n in [*brokers, *routers, *layout] if n not in running]
        if not missing:
            return []
        if brokers and not any(n in running for n in brokers):
            self.check_ports(engine)
        if len(brokers) > 1 and self.home.spec().broker.tls:
            from i24net.shell.runtime import broker_tls_files

            broker_tls_files(self.home)  # once, before the members: they must share one CA
        started: list[Proc] = []
        try:
            group = [self.spawn(n, engine) for n in brokers if n in missing]
            started += group
            self.wait_ready(group, on_ready=on_ready, timeout=timeout)
            if len(brokers) > 1:
                self._write_cluster_endpoint(engine)
            group = [self.spawn(n) for n in routers if n in missing]
            started += group
            self.wait_ready(group, on_ready=on_ready, timeout=timeout)
            group = [self.spawn(n, agencies=layout[n]) for n in layout if n in missing]
            started += group
            self.wait_ready(group, on_ready=on_ready, on_agency=on_agency, timeout=timeout)
        except BaseException:
            self.stop_processes(started)
            raise
        return missing

    def check_ports(self, engine: str | None = None) -> None:
        """Refuse to start a broker on a port something else holds, with the fix."""
        b = self.home.spec().broker.for_engine(engine)
        if b.addresses:
            return  # brokers run elsewhere
        here = set(self.brokers_here(engine))
        for k, (host, port) in enumerate(b.member_addresses(), 1):
            if b.engine in CLUSTER_ENGINES and f"broker-{k}" not in here:
                continue  # another machine's member
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host, port))
                except OSError:
                    raise ConfigError(
                        f"port {port} on {host} is taken (another broker or network?): "
                        f"stop it, or give this network another port with 'i24net init "
                        f"--force --port N --home {self.home.path}' (recreates its keys) or "
                        f"by editing [broker] port in {self.home.spec_file}",
                        reason="config.port") from None

    def _write_cluster_endpoint(self, engine: str | None) -> None:
        """Point every client at all the members (each member process runs alone and does
        not know it is one of several)."""
        from i24net.shell.runtime import Endpoint, endpoint_file, tls_dir

        b = self.home.spec().broker.for_engine(engine)
        ca = str(tls_dir(self.home) / "ca.crt") if b.tls else None
        ep = Endpoint(b.engine, b.host, b.port, ca, addresses=tuple(b.member_addresses()))
        endpoint_file(self.home).write_text(ep.to_json())

    # -- stopping -------------------------------------------------------------------------
    def kill(self, name: str, sig: int = signal.SIGKILL) -> bool:
        p = self.load().get(name)
        handle = p.process() if p is not None else None
        if p is None or handle is None:
            return False
        _signal_group(p, sig)
        if sig == signal.SIGKILL:
            _wait_gone([handle], 5.0)
        return True

    def stop_processes(self, procs: Iterable[Proc], timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM ``procs`` (nodes first, then routers, then brokers); SIGKILL what
        outlives ``timeout``; forget them in processes.json."""
        procs = list(procs)
        order = ([p for p in procs if not self.is_infra(p.name)],
                 [p for p in procs if p.name.startswith("router")],
                 [p for p in procs if p.name.startswith("broker")])
        for group in order:
            self._terminate(group, timeout)
        names = {p.name for p in procs}
        left = {n: p for n, p in self.load().items() if n not in names}
        if left:
            self._save(left)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.state_file.unlink()
        if any(p.name.startswith("broker") for p in procs):
            with contextlib.suppress(FileNotFoundError):
                (self.home.broker_dir / "endpoint.json").unlink()

    def _terminate(self, group: list[Proc], timeout: float) -> None:
        handles = {}
        for p in group:
            _signal_group(p, signal.SIGTERM)
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(p.pid)
                if not _foreign(p, proc):
                    handles[proc] = p
        for proc in _wait_gone(list(handles), timeout):
            _signal_group(handles[proc], signal.SIGKILL)
        _wait_gone(list(handles), 5.0)

    # -- agencies inside their processes ----------------------------------------------------
    def _group(self, agencies: Iterable[str]) -> dict[str, list[str]]:
        d = self.home.directory()
        out: dict[str, list[str]] = {}
        for a in agencies:
            d.agency(a)  # an unknown id: a clear error
            p = self.where(a)
            if p is None:
                raise I24Error(f"{a} is not placed in any process of this network: run "
                               "'i24net up'", reason="supervisor.unplaced", agency=a)
            out.setdefault(p.name, []).append(a)
        return out

    def stop_agencies(self, agencies: Iterable[str], *, kill: bool = False) -> list[str]:
        """Stop agencies: inside their host (gracefully, or with ``kill`` as a crash: the
        connection dropped, nothing flushed), or their own process (SIGTERM, or
        SIGKILL). Returns the agencies that were running."""
        from i24net.shell.control import ControlError, request

        stopped = []
        procs = self.load()
        for name, names in self._group(agencies).items():
            p = procs[name]
            if not p.alive:
                continue
            if not self.is_host(name):
                if kill:
                    self.kill(name)
                else:
                    self._terminate([p], STOP_TIMEOUT_S)
                stopped += names
                continue
            try:
                answer = request(self.control_path(names[0]),
                                 {"op": "stop", "agencies": names, "kill": kill})
            except ControlError:
                continue  # the host is gone: so are its agencies
            stopped += [a for a in names if a in answer.get("agencies", {})]
        return stopped

    def start_agencies(self, agencies: Iterable[str],
                       on_ready: Callable[[str], None] | None = None) -> dict[str, str]:
        """Start agencies in their process: inside their host, or by starting their own
        process (or their host, if it died). Returns each agency's state."""
        from i24net.shell.control import ControlError, request

        out: dict[str, str] = {}
        procs = self.load()
        for name, names in self._group(agencies).items():
            p = procs[name]
            if not p.alive:
                self.wait_ready([self.spawn(name)], on_ready=on_ready)
                out.update(dict.fromkeys(names, "up"))
                continue
            if not self.is_host(name):
                out.update(dict.fromkeys(names, "up"))
                continue
            try:
                answer = request(self.control_path(names[0]),
                                 {"op": "start", "agencies": names}, timeout=60.0)
            except ControlError as exc:
                out.update(dict.fromkeys(names, f"failed ({exc.reason})"))
                continue
            for a, st in answer.get("agencies", {}).items():
                out[a] = st["state"] if st["state"] == "up" else \
                    f"{st['state']} ({st.get('reason', '')}: {st.get('error', '')})"
        return out

    def agency_states(self) -> dict[str, tuple[str, str, str]]:
        """Every placed agency: (state, process, detail). An agency is up only if its
        process runs and (for a host) the host reports it up."""
        from i24net.shell.control import ControlError, ctl_path, request

        out: dict[str, tuple[str, str, str]] = {}
        for name, p in self.load().items():
            if not p.agencies:
                continue
            if not p.alive:
                out.update({a: ("down", name, "process not running") for a in p.agencies})
                continue
            try:
                answer = request(ctl_path(self.home, name), {"op": "status"}, timeout=5.0)
            except (ControlError, I24Error) as exc:
                out.update({a: ("down", name, f"no answer ({exc.reason})")
                            for a in p.agencies})
                continue
            states = answer.get("agencies", {})
            for a in p.agencies:
                st = states.get(a, {"state": "unknown"})
                detail = f"{st.get('reason', '')}: {st.get('error', '')}" \
                    if st.get("reason") else ""
                if st.get("state") == "up" and st.get("connected") is False:
                    detail = "reconnecting to the broker"
                out[a] = (str(st.get("state")), name, detail)
        return out

    def router_states(self) -> dict[str, tuple[bool, str]]:
        """Every recorded router process: (up, detail). Up means more than a running
        process: the router answers on its control socket that its own shard is served,
        connected to the broker and subscribed (``shard_host.own_shard_state``). A router
        that lost its link (a broker restart, a takeover of its client id) is down until
        it is back."""
        from i24net.shell.control import ControlError
        from i24net.shell.shard_host import own_shard_state, router_status

        out: dict[str, tuple[bool, str]] = {}
        for name, p in self.load().items():
            if not name.startswith("router"):
                continue
            if not p.alive:
                out[name] = (False, "process not running")
                continue
            try:
                answer = router_status(self.home, name)
            except (ControlError, I24Error) as exc:
                out[name] = (False, f"no answer ({exc.reason})")
                continue
            out[name] = own_shard_state(answer)
        return out

    def down(self, timeout: float = STOP_TIMEOUT_S) -> list[str]:
        """Stop nodes, then the router, then the broker; SIGKILL what outlives ``timeout``."""
        procs = self.running()
        self.stop_processes(procs.values(), timeout)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.home.broker_dir / "endpoint.json").unlink()
        return list(procs)


def _foreign(p: Proc, proc: psutil.Process) -> bool:
    """Whether ``proc``, found at ``p``'s pid, is another process than the one recorded
    (started later, by its create time; or, for a record without one, another command)."""
    try:
        if p.created is not None and p.boot is not None:
            return not same_start(proc, p.created, p.boot)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False  # ours or not, it has exited; the old check signalled it too
        want = list(p.argv)
        return bool(proc.cmdline()[-len(want):] != want)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # not ours to read, so not ours to signal


def _signal_group(p: Proc, sig: int) -> None:
    """Send ``sig`` to ``p``'s process group (each process runs in a session of its own,
    with whatever it started), unless its pid now belongs to another process. A gone
    leader is no reason to skip it: Linux does not hand out a pid that is still some
    group's id, so the group, if it is there, is still ours."""
    with contextlib.suppress(psutil.NoSuchProcess):
        if _foreign(p, psutil.Process(p.pid)):
            return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, sig)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until ``procs`` have exited (``psutil.wait_procs``, which also reaps our own
    children); returns those still running after ``timeout``. A zombie, dead but not yet
    reaped by a parent that is not us, counts as gone, and so does a handle whose pid has
    been taken by another process (``is_running`` compares create times)."""
    def running(proc: psutil.Process) -> bool:
        try:
            if not proc.is_running():
                return False
            if proc.status() == psutil.STATUS_ZOMBIE:
                with contextlib.suppress(psutil.TimeoutExpired):
                    proc.wait(timeout=0)  # reaps it if it is our child
                return False
            return True
        except psutil.Error:
            return False

    deadline = time.monotonic() + timeout
    left = [p for p in procs if running(p)]
    while left and (remaining := deadline - time.monotonic()) > 0:
        _, left = psutil.wait_procs(left, timeout=min(0.1, remaining))
        left = [p for p in left if running(p)]
    return left


def _last_start_offset(log: Path) -> int:
    data = log.read_bytes() if log.exists() else b""
    i = data.rfind(b"--- starting ")
    return max(i, 0)


def agency_status(home: Home, agency: str) -> dict[str, object]:
    """Inbox and outbox figures for one agency, read from its store without locking it."""
    from i24net.shell.runtime import node_store_path
    from i24net.store import SqliteNodeStore

    path = node_store_path(home, agency)
    if not path.exists():
        return {"inbox": 0, "inbox_new": 0, "outbox_active": 0, "lag_s": None}
    with SqliteNodeStore(path, readonly=True) as store:
        counts = store.counts()
        active = [e for e in store.outbox_list(limit=None) if not e.final]
    now = time.time() * 1000
    lag = max(((now - e.created_ms) / 1000 for e in active), default=0.0)
    return {"inbox": counts.get("inbox.total", 0), "inbox_new": counts.get("inbox.new", 0),
            "outbox_active": counts.get("outbox.active", 0),
            "outbox_delivered": counts.get("outbox.delivered", 0),
            "outbox_refused": counts.get("outbox.refused", 0), "lag_s": round(lag, 1)}
