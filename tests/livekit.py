"""Helpers for tests that run i24net daemons as separate processes through the CLI."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path


def demo_home(tmp_path: Path, engine: str = "embedded") -> tuple[Path, int]:
    """A demo network home on ``engine`` and a free loopback port: (home, port). Skips
    when the engine is Mosquitto and it is not installed."""
    import shutil

    import pytest

    from i24net.broker import pick_free_port

    if engine == "mosquitto" and not shutil.which("mosquitto") \
            and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("mosquitto is not installed (make install installs it)")
    home = tmp_path / "home"
    assert cli(home, "init", "--preset", "demo").returncode == 0
    port = pick_free_port()
    spec = home / "network.toml"
    text = spec.read_text().replace("port = 18830", f"port = {port}")
    spec.write_text(text.replace('engine = "embedded"', f'engine = "{engine}"'))
    return home, port


def nats_home(home: Path, *init_args: str) -> Path:
    """``i24net init --preset demo --engine nats`` at ``home`` on a free base port (the 3
    members' ports included), with ``init_args`` (``--routers 2``...)."""
    from i24net.broker.nats import pick_base_port

    port = pick_base_port("127.0.0.1", 3)
    made = cli(home, "init", "--preset", "demo", "--engine", "nats", "--port", str(port),
               *init_args)
    assert made.returncode == 0, made.stdout + made.stderr
    return home


def cli(home: Path, *args: str, timeout: float = 60,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "i24net", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def spawn(home: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = (home / "logs" / f"test-{name}.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "i24net", *args, "--home", str(home)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(home: Path, name: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    path = home / "logs" / f"test-{name}.log"
    while time.monotonic() < deadline:
        if what in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"{name} did not become ready:\n{path.read_text(errors='replace')}")


@contextlib.contextmanager
def running_network(home: Path, agencies: Iterable[str],
                    *broker_args: str) -> Iterator[Path]:
    """The broker (``i24net broker *broker_args``), the router and a node per agency as
    processes, each ready before this yields; all stopped (SIGTERM, then SIGKILL) after."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        b = spawn(home, "broker", "broker", *broker_args)
        procs.append(b)
        wait_ready(home, "broker", b, "ready 127.0.0.1")
        r = spawn(home, "router", "router")
        procs.append(r)
        nodes = [(a, spawn(home, a, "node", a)) for a in agencies]
        procs += [p for _, p in nodes]
        wait_ready(home, "router", r, "ready router")
        for a, p in nodes:
            wait_ready(home, a, p, f"ready {a}")
        yield home
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@contextlib.contextmanager
def network_up(home: Path, *args: str) -> Iterator[Path]:
    """``i24net up ARGS`` on ``home`` for the block, then ``down``, and no process left."""
    try:
        up = cli(home, "up", *args, timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr
        yield home
    finally:
        cli(home, "down", timeout=60)
        assert processes_of(home) == []


def processes_of(home: Path, *, every: bool = False) -> list[int]:
    """Every live i24net process whose command line names this home (an outside view);
    ``every``: also any other process naming a file inside it (the nats-server members
    i24net started: a machine's every process)."""
    h = str(home).encode()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state == "Z":
            continue
        if every:
            if any(part == h or part.startswith(h + b"/") for part in argv):
                out.append(int(d.name))
        elif h in argv and b"i24net" in b" ".join(argv):
            out.append(int(d.name))
    return out
