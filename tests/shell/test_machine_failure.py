"""A whole machine SIGKILLed mid-stream, then restarted: machine b (a machine's export)
runs router shard 2 and two agencies against the authority's NATS cluster. Every process of
b is SIGKILLed while messages flow to and through it; messages sent meanwhile wait (for
b's agencies in their broker sessions, for shard 2's senders in their outboxes, since no
router of another machine takes b's shard over); when ``up`` has started b again, each
message reaches its recipient once and each sender has every receipt."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from livekit import cli, nats_home, network_up, processes_of

pytestmark = [pytest.mark.broker, pytest.mark.cluster, pytest.mark.xdist_group("nats"),
              pytest.mark.timeout(300),
              pytest.mark.skipif(shutil.which("nats-server") is None
                                 and not Path("/usr/sbin/nats-server").exists(),
                                 reason="nats-server is not installed (make install)")]

# NCB-FR is in shard 2 (served on machine b), GS-LYON in shard 1 (on the authority's home)
FLOWS = (("NCB-FR", "NCB-US"), ("GS-LYON", "NCB-DE"))
EACH = 8  # messages per flow before the kill, and again while b is down


def send(home: Path, sender: str, recipient: str, n: int, tag: str) -> list[str]:
    ids = []
    for i in range(n):
        sent = cli(home, "publish", "--as", sender, "--to", recipient, "--classification",
                   "RESTRICTED", "--subject", f"{tag} {i}", "--text", "x", "-q")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        ids.append(sent.stdout.strip())
    return ids


def test_a_machine_killed_mid_stream_loses_nothing(tmp_path: Path) -> None:
    a = nats_home(tmp_path / "authority", "--routers", "2")
    b = tmp_path / "machine-b"
    exported = cli(a, "export", "--machine", "b", "--agencies", "NCB-DE,NCB-US",
                   "--routers", "2", str(b))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    sent: dict[tuple[str, str], list[str]] = {flow: [] for flow in FLOWS}
    with network_up(a):
        up = cli(b, "up", timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr
        try:
            for flow in FLOWS:
                sent[flow] += send(a, *flow, EACH, "before")
            victims = processes_of(b)
            assert victims, "machine b runs nothing"
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            for flow in FLOWS:
                sent[flow] += send(a, *flow, EACH, "while b is down")
            time.sleep(2.0)
            up = cli(b, "up", timeout=120)
            assert up.returncode == 0, up.stdout + up.stderr
            deadline = time.monotonic() + 120
            while True:
                states = {flow: {e["id"]: e["state"] for e in json.loads(
                    cli(a, "outbox", flow[0], "--json", "--limit", "500").stdout)}
                    for flow in FLOWS}
                if all(states[f].get(i) == "delivered" for f in FLOWS for i in sent[f]):
                    break
                assert time.monotonic() < deadline, states
                time.sleep(1.0)
            for (_, recipient), ids in sent.items():
                box = json.loads(cli(b, "inbox", recipient, "--json", "--limit", "500").stdout)
                got = [item["id"] for item in box]
                assert sorted(got) == sorted(ids), (recipient, got, ids)  # each exactly once
        finally:
            cli(b, "down", timeout=60)
    assert processes_of(b) == []
