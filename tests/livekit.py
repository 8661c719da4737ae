"""Helpers for tests that run i24net daemons as separate processes through the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "i24net", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=timeout)


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
