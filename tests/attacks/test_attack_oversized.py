"""Drill: an agency publishes 200 MB on its submit topic against a running network.

Before the packet caps, the embedded broker read the whole packet and handed it to the
router, whose process grew by hundreds of megabytes (360 MB measured) before its parser
refused the frame. Now the broker refuses the packet from its fixed header (embedded: the
agency cap, an envelope plus 64 KiB; Mosquitto: ``max_packet_size``) and closes the
connection: neither the broker's nor the router's process grows, and the network still
delivers a message afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker.test_limits import MAX_GROWTH, MAX_SENT, push_huge_publish, rss
from livekit import cli, demo_home, running_network

from i24net.config.home import Home

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

AGENCIES = ("NCB-FR", "NCB-DE")


def _pid_of(home: Path, what: str) -> int:
    """The pid of the test's daemon ``what`` (``broker``, ``router``), from /proc."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"i24net" in argv and what.encode() in argv and str(home).encode() in argv:
            return int(d.name)
    raise AssertionError(f"no {what} process for {home}")


@pytest.fixture(params=["embedded", "mosquitto"])
def network(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    engine = request.param
    home, _ = demo_home(tmp_path, engine)
    with running_network(home, AGENCIES, "--engine", engine):
        yield home, engine


def test_a_200_mb_publish_grows_neither_broker_nor_router(network: tuple[Path, str]) -> None:
    home, engine = network
    h = Home(home)
    port = json.loads((h.broker_dir / "endpoint.json").read_text())["port"]
    router = _pid_of(home, "router")
    broker = _pid_of(home, "broker")
    if engine == "mosquitto":
        broker = next(int(c) for t in Path(f"/proc/{broker}/task").iterdir()
                      for c in (t / "children").read_text().split())
    before = {"router": rss(router), "broker": rss(broker)}
    sent, closed = push_huge_publish(port, "NCB-FR", h.broker_passwords()["NCB-FR"],
                                     "NCB-FR:huge")
    assert closed and sent < MAX_SENT, (sent, closed)
    time.sleep(1.0)  # what the router would have received, it would hold by now
    grown = {"router": rss(router) - before["router"], "broker": rss(broker) - before["broker"]}
    assert all(g < MAX_GROWTH for g in grown.values()), grown
    sent_ok = cli(home, "publish", "--as", "NCB-FR", "--to", "NCB-DE", "--classification",
                  "UNCLASSIFIED", "--subject", "after the flood", "--wait", "30")
    assert sent_ok.returncode == 0, sent_ok.stdout + sent_ok.stderr
    assert "delivered to 1 recipient(s)" in sent_ok.stdout
