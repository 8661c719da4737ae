"""Running a broker as a child process: start, wait until it listens, stop, kill.

Theory of operation: a broker process is ready when it has written its readiness line to its
log (Mosquitto's "running", the embedded broker's "ready") and its TCP ports accept
connections. The port alone is not enough: another program may already listen there, and the
broker, unable to bind, is about to exit. Until ready, the other thing worth watching is
whether it has exited (bad config, port taken): then the tail of its log is the error message. Stopping is SIGTERM (brokers
save their persistence then), then SIGKILL if it does not exit in time. ``kill`` is SIGKILL
straight away, for chaos tests that need a crash, not a shutdown.

The control methods are synchronous (they are short, bounded waits); async users call them
through ``asyncio.to_thread`` so the event loop keeps running. A ``weakref.finalize`` kills
the child if its owner is dropped or the interpreter exits without ``stop()``, so a forgotten
broker never outlives the program holding its ports.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import signal
import socket
import subprocess
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from i24net.broker.accounts import BrokerAccount
from i24net.broker.errors import BrokerConfigError, BrokerStartError

__all__ = ["BrokerProcess", "pick_free_port", "port_accepts", "validate_host", "validate_port"]

_POLL_INTERVAL = 0.02
_LOG_TAIL_LINES = 15
_LOCALHOST = "127.0.0.1"
_LOWEST_PICKED = 10_000  # below: ports services commonly own
PORT_MARGIN = 100  # a picked port leaves this many below the ephemeral range free


def _is_ipv4_loopback(host: str) -> bool:
    try:
        return ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        return False


def validate_host(host: str) -> str:
    """Brokers here bind loopback only (any of 127.0.0.0/8, where each address can stand in
    for a machine): refuse anything else."""
    if host not in ("localhost", "::1") and not _is_ipv4_loopback(host):
        raise BrokerConfigError(
            f"broker host {host!r} refused: i24net brokers bind loopback only (127.0.0.1); "
            "for several machines use an existing clustered broker"
        )
    return host


def validate_port(port: int, what: str = "port") -> int:
    """A TCP port number, or 0 for 'pick a free one'."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise BrokerConfigError(
            f"broker {what} {port!r} is invalid: use 1-65535, or 0 for any free port"
        )
    return port


def _ephemeral_floor() -> int:
    """The lowest port the kernel gives outgoing connections (Linux: the first number of
    ``ip_local_port_range``; elsewhere the IANA dynamic range, 49152)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def pick_free_port(host: str = _LOCALHOST) -> int:
    """A TCP port on ``host`` that was free a moment ago, drawn below the kernel's
    ephemeral range: outgoing connections (which take ephemeral ports) then never take it
    between the pick and the broker's bind, nor between a broker's crash and its restart
    on the same port. The kernel's own choice for port 0 when no such port is free.

    Another listener can still take it before the broker binds; callers that picked it
    themselves retry with a fresh port when the broker reports the address in use.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    top = _ephemeral_floor() - PORT_MARGIN  # room for a NATS cluster's member ports above
    if top > _LOWEST_PICKED:
        for _ in range(64):
            port = random.randrange(_LOWEST_PICKED, top)
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if a TCP connection to ``host:port`` succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(log is empty)"


def _kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            proc.kill()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass


class BrokerProcess:
    """One broker child process: the command, its log file and the ports it must open."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log_path: Path,
        *,
        host: str,
        ports: Sequence[int],
        ready_marker: bytes | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.ready_marker = ready_marker
        self.command = list(command)
        self.log_path = Path(log_path)
        self.host = host
        self.ports = list(ports)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._logger = logger or logging.getLogger(f"i24net.broker.{name}")
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[..., BrokerProcess] | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs, else ``None``."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status of the last child once it has exited (negative: killed by signal)."""
        return None if self._proc is None else self._proc.poll()

    def log_tail(self) -> str:
        return _log_tail(self.log_path)

    def start(self) -> None:
        """Spawn the child and return once every port accepts connections.

        Raises ``BrokerStartError`` naming the log file if the child exits first or does not
        listen within ``start_timeout`` seconds (it is killed in that case).
        """
        if self.running:
            return
        try:
            log = self.log_path.open("ab")
        except OSError as exc:
            raise BrokerStartError(
                f"cannot open {self.name} log {self.log_path}: {exc.strerror}"
            ) from exc
        try:
            with log:
                log.write(f"--- i24net: starting {' '.join(self.command)}\n".encode())
                log.flush()
                log_offset = log.tell()  # look for the ready marker after our own header
                proc = subprocess.Popen(
                    self.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.log_path.parent,
                )
        except FileNotFoundError as exc:
            raise BrokerStartError(f"cannot run {self.command[0]!r}: not found") from exc
        except OSError as exc:
            raise BrokerStartError(f"cannot run {self.command[0]!r}: {exc.strerror}") from exc
        self._proc = proc
        self._finalizer = weakref.finalize(self, _kill_quietly, proc)
        self._wait_listening(proc, log_offset)
        self._logger.info(
            "%s listening on %s ports %s (pid %d)", self.name, self.host, self.ports, proc.pid
        )

    def _logged_ready(self, offset: int) -> bool:
        if self.ready_marker is None:
            return True
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return self.ready_marker in log.read()
        except OSError:
            return False

    def _wait_listening(self, proc: subprocess.Popen[bytes], log_offset: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        pending = list(self.ports)
        logged = False
        while True:
            code = proc.poll()
            if code is not None:
                self._forget()
                raise BrokerStartError(
                    f"{self.name} exited with status {code} before listening on "
                    f"{self.host}:{','.join(map(str, self.ports))}; see {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            logged = logged or self._logged_ready(log_offset)
            if logged:
                pending = [port for port in pending if not port_accepts(self.host, port)]
                if not pending:
                    return
            if time.monotonic() > deadline:
                _kill_quietly(proc)
                self._forget()
                raise BrokerStartError(
                    f"{self.name} did not listen on {self.host}:{','.join(map(str, pending))} "
                    f"within {self.start_timeout:.0f} s and was killed; see {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after ``stop_timeout`` seconds; return the exit status."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._logger.warning(
                    "%s (pid %d) ignored SIGTERM for %.0f s; killing it",
                    self.name,
                    proc.pid,
                    self.stop_timeout,
                )
                _kill_quietly(proc)
            except ProcessLookupError:
                pass
        code = proc.wait()
        self._forget()
        return code

    def kill(self) -> int | None:
        """SIGKILL now, as a crash would; return the exit status (``-9``)."""
        proc = self._proc
        if proc is None:
            return None
        _kill_quietly(proc)
        code = proc.wait()
        self._forget()
        return code

    def _forget(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the child (e.g. SIGHUP to make Mosquitto reload its files)."""
        if self._proc is None or self._proc.poll() is not None:
            raise BrokerStartError(f"{self.name} is not running; start it first")
        os.kill(self._proc.pid, signum)


class BlockingStartStop:
    """``async with`` and ``apply_accounts`` for a broker whose blocking ``start()``,
    ``stop()`` and ``reload(accounts)`` run in a thread."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> int | None:
        raise NotImplementedError

    def reload(self, accounts: Sequence[BrokerAccount]) -> None:
        raise NotImplementedError

    async def apply_accounts(self, accounts: Sequence[BrokerAccount]) -> None:
        """Serve ``accounts`` from now on, without a restart (``reload`` in a thread)."""
        await asyncio.to_thread(self.reload, accounts)

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)


class ProcessControl(BlockingStartStop):
    """What a broker run as a child process offers on top of its ``start()``: status, stop,
    kill (a crash), restart, and ``async with``. Subclasses set ``_process`` in ``start``."""

    _process: BrokerProcess | None

    def start(self) -> None:
        raise NotImplementedError

    @property
    def host(self) -> str:
        raise NotImplementedError

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where clients connect: this one broker."""
        return [(self.host, self.port)]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    def stop(self) -> int | None:
        """SIGTERM (a broker saves its persistence), SIGKILL if it hangs; the exit status."""
        return self._process.stop() if self._process is not None else None

    def kill(self) -> int | None:
        """SIGKILL: a crash. What the broker had not saved is lost, as in real life."""
        return self._process.kill() if self._process is not None else None

    def restart(self) -> None:
        """Stop and start again on the same ports and persistence."""
        self.stop()
        self.start()
