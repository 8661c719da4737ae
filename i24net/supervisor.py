"""The local supervisor: start, watch and stop a whole network as separate OS processes.

``up`` starts the broker, then the router, then one node daemon per agency, each in its own
session (so a signal to the supervisor's terminal does not reach them by accident), with its
output in ``logs/<name>.log``; it returns once every process has printed its ``ready`` line.
The pids go to ``state/processes.json``; ``status`` and ``down`` read it back and check that
each pid still runs the command recorded for it, so a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from i24net.core.errors import I24Error, WaitTimeout
from i24net.core.netspec import CLUSTER_ENGINES
from i24net.home import Home

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Proc:
    name: str  # "broker", "router" or an agency id
    pid: int
    argv: tuple[str, ...]
    log: str
    started: float

    @property
    def alive(self) -> bool:
        return pid_runs(self.pid, self.argv)


def pid_runs(pid: int, argv: Iterable[str]) -> bool:
    """True if ``pid`` is alive and its command line is the one we started (not recycled)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False  # a zombie has exited
    return raw.rstrip(b"\0").split(b"\0")[-len(tuple(argv)):] == [a.encode() for a in argv]


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
        return {n: Proc(n, p["pid"], tuple(p["argv"]), p["log"], p["started"])
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
        """``router``, or ``router-1..K`` with ``[router] shards = K``."""
        count = self.home.spec().router_shards
        return ["router"] if count == 1 else [f"router-{k}" for k in range(1, count + 1)]

    @staticmethod
    def is_infra(name: str) -> bool:
        """Brokers and routers (agency ids are upper case, so they never clash)."""
        return name in ("broker", "router") or name.startswith(("broker-", "router-"))

    # -- starting -------------------------------------------------------------------------
    def _argv(self, name: str, engine: str | None) -> tuple[str, ...]:
        home = str(self.home.path)
        if name == "broker" or name.startswith("broker-"):
            extra = ("--engine", engine) if engine else ()
            if name.startswith("broker-"):
                extra = ("--engine", engine or self.home.spec().broker.engine,
                         "--member", name.split("-", 1)[1])
            return ("-m", "i24net", "broker", *extra, "--home", home)
        if name == "router":
            return ("-m", "i24net", "router", "--home", home)
        if name.startswith("router-"):
            shard = f"{name.split('-', 1)[1]}/{self.home.spec().router_shards}"
            return ("-m", "i24net", "router", "--shard", shard, "--home", home)
        return ("-m", "i24net", "node", name, "--home", home)

    def spawn(self, name: str, engine: str | None = None) -> Proc:
        self.home.logs_dir.mkdir(parents=True, exist_ok=True)
        log = self.home.logs_dir / f"{name}.log"
        argv = self._argv(name, engine)
        with log.open("ab") as fh:
            fh.write(f"--- starting {name} at {time.strftime('%H:%M:%S')}\n".encode())
            fh.flush()
            p = subprocess.Popen([self.python, *argv], stdout=fh, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._children[p.pid] = p
        proc = Proc(name, p.pid, argv, str(log), time.time())
        procs = self.load()
        procs[name] = proc
        self._save(procs)
        return proc

    def wait_ready(self, procs: Iterable[Proc], timeout: float = READY_TIMEOUT_S,
                   on_ready: Callable[[str], None] | None = None) -> None:
        pending = {p.name: p for p in procs}
        offsets = {n: _last_start_offset(Path(p.log)) for n, p in pending.items()}
        deadline = time.monotonic() + timeout
        while pending:
            for name, p in list(pending.items()):
                text = Path(p.log).read_bytes()[offsets[name]:].decode(errors="replace")
                if "\nready " in "\n" + text or text.startswith("ready "):
                    del pending[name]
                    if on_ready:
                        on_ready(name)
                elif not self._started_alive(p):
                    tail = "\n".join(text.strip().splitlines()[-5:])
                    raise I24Error(f"{name} exited while starting (see {p.log}):\n{tail}",
                                   reason="supervisor.start")
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
           agencies: Iterable[str] | None = None) -> list[str]:
        """Start what is not running; returns the names started (empty if all were up)."""
        self.home.require()
        d = self.home.directory()
        running = self.running()
        brokers, routers = self.brokers(engine), self.routers()
        names = [*brokers, *routers, *(sorted(a.id for a in d.agencies.values() if a.active)
                                       if agencies is None else agencies)]
        missing = [n for n in names if n not in running]
        if not missing:
            return []
        self.wait_ready([self.spawn(n, engine) for n in brokers if n in missing],
                        on_ready=on_ready)
        if len(brokers) > 1:
            self._write_cluster_endpoint(engine)
        self.wait_ready([self.spawn(n) for n in routers if n in missing], on_ready=on_ready)
        nodes = [self.spawn(n) for n in missing if not self.is_infra(n)]
        self.wait_ready(nodes, on_ready=on_ready)
        return missing

    def _write_cluster_endpoint(self, engine: str | None) -> None:
        """Point every client at all the members (each member process runs alone and does
        not know it is one of several)."""
        from i24net.runtime import Endpoint, endpoint_file

        b = self.home.spec().broker.for_engine(engine)
        ep = Endpoint(b.engine, b.host, b.port, addresses=tuple(b.member_addresses()))
        endpoint_file(self.home).write_text(ep.to_json())

    # -- stopping -------------------------------------------------------------------------
    def kill(self, name: str, sig: int = signal.SIGKILL) -> bool:
        p = self.load().get(name)
        if p is None or not p.alive:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
        if sig == signal.SIGKILL:
            _wait_gone([p], 5.0)
        return True

    def down(self, timeout: float = STOP_TIMEOUT_S) -> list[str]:
        """Stop nodes, then the router, then the broker; SIGKILL what outlives ``timeout``."""
        procs = self.running()
        nodes = [p for n, p in procs.items() if not self.is_infra(n)]
        routers = [p for n, p in procs.items() if n.startswith("router")]
        brokers = [p for n, p in procs.items() if n.startswith("broker")]
        stopped = []
        for group in (nodes, routers, brokers):
            for p in group:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
            left = _wait_gone(group, timeout)
            for p in left:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            _wait_gone(left, 5.0)
            stopped += [p.name for p in group]
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.home.broker_dir / "endpoint.json").unlink()
        return stopped


def _wait_gone(procs: list[Proc], timeout: float) -> list[Proc]:
    deadline = time.monotonic() + timeout
    left = [p for p in procs if p.alive]
    while left and time.monotonic() < deadline:
        for p in left:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(p.pid, os.WNOHANG)  # reap our own children
        time.sleep(0.05)
        left = [p for p in left if p.alive]
    return left


def _last_start_offset(log: Path) -> int:
    data = log.read_bytes() if log.exists() else b""
    i = data.rfind(b"--- starting ")
    return max(i, 0)


def agency_status(home: Home, agency: str) -> dict[str, object]:
    """Inbox and outbox figures for one agency, read from its store without locking it."""
    from i24net.runtime import node_store_path
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
