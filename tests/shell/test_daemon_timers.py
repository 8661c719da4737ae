"""The shells run the machines' timers: ``handle_timer`` when ``next_timer`` comes.

The router daemon sums up the drops of a window when the window ends, not at the next frame
(a flood that stops would otherwise leave its last window unwritten), and a frame that
opens a window earlier than the timer sleeps to wakes the timer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from i24net.config.home import ROUTER_ACCOUNT, Home
from i24net.config.presets import preset_toml
from i24net.core.events import DropSummary, FrameDropped, RouterEvent
from i24net.core.router import AuditBound, MemoryRouterStore, RouterMachine
from i24net.shell.daemons import RouterDaemon
from i24net.transport import MemoryBroker, MemoryTransport


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path / "home")
    h.init(preset_toml("demo"))
    return h


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_the_router_daemon_sums_up_a_window_when_it_ends(home: Home) -> None:
    d = home.directory()
    bound = AuditBound(per_window=1, window_ms=300)
    machine = RouterMachine(d, home.router_keys(), MemoryRouterStore(), audit_bound=bound)
    events: list[RouterEvent] = []
    broker = MemoryBroker()
    router = RouterDaemon(machine, MemoryTransport(broker, ROUTER_ACCOUNT),
                          on_event=events.append)
    async with router.transport, router, MemoryTransport(broker, "NCB-FR") as pub:
        assert machine.next_timer() is None  # nothing to wait for: the timers sleep
        for _ in range(3):
            await pub.publish(f"{d.prefix}/submit/NCB-FR", b"junk")
        await until(lambda: len(events) == 1, "the first drop")
        started = time.monotonic()
        await until(lambda: len(events) == 2, "the summary, with no frame after it")
        assert time.monotonic() - started < 2.0
    assert [type(e) for e in events] == [FrameDropped, DropSummary]
    summary = events[1]
    assert isinstance(summary, DropSummary) and summary.count == 2
    assert machine.next_timer() is None
