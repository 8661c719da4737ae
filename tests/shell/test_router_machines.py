"""Two "machines" with a router each for one shard, on one NATS cluster: separate homes (the
second a copy of the first, sharing no file with it), leases on the cluster's key-value
bucket. The second router of a served shard waits, and both say so; it serves once the
first is killed and its lease has expired; a router frozen (SIGSTOP) past its lease stops
serving when it wakes instead of publishing. ``make test-cluster`` runs this."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from livekit import cli, nats_home, network_up, spawn

pytestmark = [pytest.mark.broker, pytest.mark.cluster, pytest.mark.xdist_group("nats"),
              pytest.mark.timeout(240),
              pytest.mark.skipif(shutil.which("nats-server") is None
                                 and not Path("/usr/sbin/nats-server").exists(),
                                 reason="nats-server is not installed (make install)")]


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def delivery_numbers(home: Path, agency: str) -> tuple[int, list[int]]:
    """The last delivery number ``agency``'s node saw from router shard 2, and the numbers
    it still misses (its store, read-only)."""
    from i24net.config.home import Home
    from i24net.core.keys import key_id
    from i24net.store import SqliteNodeStore

    kid = key_id(Home(home).directory().router_keys[1])
    with SqliteNodeStore(home / "state" / f"node-{agency}.sqlite", readonly=True) as store:
        last, missing = store.seq_get(kid)
    return last, sorted(missing)


def test_one_router_per_shard_across_homes(tmp_path: Path) -> None:
    a = nats_home(tmp_path / "machine-a", "--routers", "2")
    b = tmp_path / "machine-b"
    b.mkdir()
    for name in ("network.toml", "directory.signed", "authority.pub"):
        shutil.copy(a / name, b / name)
    shutil.copytree(a / "keys", b / "keys")
    (b / "state").mkdir()
    shutil.copy(a / "state" / "directory.held", b / "state" / "directory.held")
    (b / "logs").mkdir()
    with network_up(a):
        procs = json.loads((a / "state" / "processes.json").read_text())
        router_a = procs["router-2"]["pid"]
        log_a = Path(procs["router-2"]["log"])
        second: subprocess.Popen[bytes] = spawn(b, "router-2", "router", "--shard", "2/2")
        log_b = b / "logs" / "test-router-2.log"
        try:
            wait_for("machine b's router says it waits",
                     lambda: "waiting until its lease expires" in text(log_b))
            wait_for("machine a's router sees the waiter",
                     lambda: "is waiting for this one's lease" in text(log_a))
            assert "ready router" not in text(log_b) and second.poll() is None
            # a message through the network while b waits: shard 2 is a's
            sent = cli(a, "publish", "--as", "NCB-FR", "--to", "NCB-DE", "--classification",
                       "RESTRICTED", "--subject", "before", "--text", "x", "--wait", "60")
            assert sent.returncode == 0, sent.stdout + sent.stderr

            os.kill(router_a, signal.SIGKILL)
            killed = time.monotonic()
            wait_for("machine b's router serves shard 2",
                     lambda: "ready router 2/2" in text(log_b), timeout=30)
            takeover_s = time.monotonic() - killed
            print(f"shard 2 served from machine b {takeover_s:.1f} s after the SIGKILL")
            # b's router numbers NCB-DE's deliveries on from where a's stopped: the
            # counters live on the cluster, not in a's store
            sent = cli(a, "publish", "--as", "NCB-FR", "--to", "NCB-DE", "--classification",
                       "RESTRICTED", "--subject", "after the takeover", "--text", "x",
                       "--wait", "60")
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert delivery_numbers(a, "NCB-DE") == (2, [])  # seq 2, nothing missing

            # freeze b's router past its lease: machine a's router-1 takes shard 2 over,
            # and b's router, woken, stops serving it before publishing again
            os.kill(second.pid, signal.SIGSTOP)
            frozen = time.monotonic()
            router_1_log = Path(procs["router-1"]["log"])
            wait_for("machine a's router-1 takes shard 2 over",
                     lambda: "taking it over" in text(router_1_log), timeout=30)
            print(f"shard 2 taken over {time.monotonic() - frozen:.1f} s after the SIGSTOP")
            os.kill(second.pid, signal.SIGCONT)
            wait_for("the woken router fences itself",
                     lambda: "its lease is no longer valid" in text(log_b), timeout=20)
            sent = cli(a, "publish", "--as", "NCB-DE", "--to", "NCB-FR", "--classification",
                       "RESTRICTED", "--subject", "after", "--text", "x", "--wait", "60")
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert "delivered to 1 recipient(s)" in sent.stdout
        finally:
            if second.poll() is None:
                os.killpg(second.pid, signal.SIGCONT)
                os.killpg(second.pid, signal.SIGTERM)
            second.wait(timeout=20)
