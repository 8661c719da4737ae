"""Start and stop a private Mosquitto on 127.0.0.1 (used by the fixtures and by
measure_throughput.py, which is why it is not in conftest.py).

Each broker gets a free port and a config written to its own directory, so tests cannot
see each other's sessions or retained messages and a test may crash and restart its broker.
Set ``I24NET_MOSQUITTO`` to use another Mosquitto binary.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

HOST = "127.0.0.1"

#: How long a freshly started Mosquitto may take to accept connections.
BROKER_START_TIMEOUT = 10.0


def find_mosquitto() -> str | None:
    """The Mosquitto binary: ``$I24NET_MOSQUITTO``, then PATH, then Debian's /usr/sbin
    (not on PATH for non-root users)."""
    explicit = os.environ.get("I24NET_MOSQUITTO")
    if explicit:
        return explicit
    found = shutil.which("mosquitto")
    if found:
        return found
    debian = Path("/usr/sbin/mosquitto")
    return str(debian) if debian.exists() else None


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class MosquittoProcess:
    """One Mosquitto broker we own: start, kill, restart on the same port.

    Args:
        binary: path to ``mosquitto``.
        workdir: where the config, the persistence file and the log go.
        persistence: keep sessions and queued messages across a clean restart (saved on
            SIGTERM; a SIGKILL loses everything since the last autosave).
        anonymous: admit clients without a username (``False`` refuses them all).
        extra_config: more ``mosquitto.conf`` lines.
    """

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        persistence: bool = False,
        anonymous: bool = True,
        extra_config: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.host = HOST
        self.port = free_port()
        self.persistence = persistence
        self.anonymous = anonymous
        self.extra_config = extra_config
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            # Unlimited queue: the default of 1000 would silently drop in the bulk tests.
            "max_queued_messages 0",
            "log_type error",
            "log_type warning",
            "log_type notice",
            *self.extra_config,
        ]
        if os.geteuid() == 0:
            # Started as root, Mosquitto switches to the 'mosquitto' user, which cannot write
            # persistence into pytest's private (0700) tmp_path: stay as the test's user.
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        """Start the broker and wait until it accepts TCP connections."""
        self.write_config()
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + BROKER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self._proc.returncode}: {self.log.read_text()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the broker with ``sig`` (SIGTERM saves persistence, SIGKILL is a crash)."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def freeze(self) -> None:
        """Stop the broker in its tracks (SIGSTOP): connections stay open, nothing is read
        or acknowledged, as with a hung broker or a silent network partition."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """Crash the broker: no clean shutdown, nothing saved."""
        self.stop(signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None
