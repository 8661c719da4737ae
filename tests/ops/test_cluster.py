"""Scale-out on a real clustered broker: a 3-member NATS cluster on 127.0.0.1, two router
shards, nodes spread over the members, each daemon its own OS process.

The soak SIGKILLs one cluster member and one router mid-stream and keeps both down while
messages flow: the nodes on the dead member fail over to another member, the surviving
router takes the dead router's shard over, and when both come back the shard is handed
back. The checker then judges the outside history (every submit, every hand-over each
agency's application consumer saw, every sender's outcome): each message delivered exactly
once. Which member each node really used comes from the connections its transport made
(the daemons' logs), and some delivered messages must have gone between nodes that never
shared a member. ``make test-cluster`` runs a longer soak through the CLI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from i24net.ops.chaos import Soak, prepare

pytestmark = [
    pytest.mark.xdist_group("soak"),
    pytest.mark.broker,
    pytest.mark.cluster,
    pytest.mark.skipif(shutil.which("nats-server") is None
                       and not Path("/usr/sbin/nats-server").exists(),
                       reason="nats-server is not installed (apt-get install nats-server; "
                       "'make install' does it)"),
]

MESSAGES = int(os.environ.get("I24NET_CLUSTER_MESSAGES", "600"))
DURATION = float(os.environ.get("I24NET_CLUSTER_DURATION", "36"))


@pytest.mark.timeout(600)
def test_nothing_is_lost_or_duplicated_when_a_member_and_a_router_die(tmp_path: Path) -> None:
    home = prepare(tmp_path / "home", 6, "nats", routers=2)
    lines: list[str] = []
    soak = Soak(home, messages=MESSAGES, seed=9, duration=DURATION, engine="nats",
                plan="cluster", log=lines.append)
    report = soak.run(settle_timeout=300)
    summary = report.to_json()
    assert report.sent == MESSAGES, summary
    assert report.ok and report.failures == [], summary
    assert report.lost == 0 and report.duplicated == 0 and report.unexpected == 0, summary
    assert report.failed == 0 and report.pending == 0 and report.misdelivered == 0, summary
    assert report.delivered == report.accepted == MESSAGES, summary
    # the faults happened: a member and a router killed mid-stream, the shard taken over
    assert any(line.startswith("down broker-") for line in lines), lines
    assert any(line.startswith("down router-") for line in lines), lines
    assert report.broker_restarts >= 1 and report.router_kills >= 1, summary
    assert report.takeovers >= 1, summary
    # the nodes connected to more than one member, and messages crossed between members:
    # delivered between a sender and a recipient that never connected to the same one
    assert report.members == 3 and len(report.nodes_per_member) >= 2, summary
    assert report.crossed_members > 0, summary
