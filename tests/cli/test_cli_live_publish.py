"""``publish`` against a real network (``i24net up`` on the embedded broker, one node host):
what "running" means for the sender's node, as a user meets it from a shell.

Up: ``--json --wait`` prints one object whose state is ``delivered``. The sender stopped
inside its running host: exit 7, ``i24net start AGENCY``. The network down: exit 7,
``i24net up``. Nothing is queued by a refused publish; ``down`` leaves no process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import cli, network_up

from i24net.broker import pick_free_port
from i24net.config.home import Home
from i24net.shell.runtime import node_store_path
from i24net.store import SqliteNodeStore

pytestmark = pytest.mark.broker

SEND = ("publish", "--as", "NCB-DE", "--to", "NCB-FR", "--classification", "CONFIDENTIAL",
        "--subject", "live")


def outbox_ids(home: Path) -> list[str]:
    with SqliteNodeStore(node_store_path(Home(home), "NCB-DE"), readonly=True) as s:
        return [e.msg_id.hex() for e in s.outbox_list(limit=None)]


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    assert cli(home, "init", "--preset", "demo", "--port", str(pick_free_port())) \
        .returncode == 0
    with network_up(home, "--hosts", "1"):
        yield home


def test_publish_needs_the_senders_node(network: Path) -> None:
    sent = cli(network, *SEND, "--json", "--wait", "30")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    doc = json.loads(sent.stdout)
    assert doc["state"] == "delivered" and doc["receipts"] == {"NCB-FR": "delivered"}
    assert doc["node_running"] is True

    assert cli(network, "stop", "NCB-DE").returncode == 0
    stopped = cli(network, *SEND)
    assert stopped.returncode == 7, stopped.stdout + stopped.stderr
    assert "node NCB-DE is not running (stopped); start it with `i24net start NCB-DE" \
        in stopped.stderr
    assert outbox_ids(network) == [doc["id"]]  # nothing more was queued

    assert cli(network, "down", timeout=60).returncode == 0
    down = cli(network, *SEND)
    assert down.returncode == 7
    assert f"node NCB-DE is not running; start it with `i24net up --home {network}`" \
        in down.stderr
    queued = cli(network, *SEND, "--queue", "-q")
    assert queued.returncode == 0 and outbox_ids(network)[0] == queued.stdout.strip()
