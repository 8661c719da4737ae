"""A discrete-event scheduler with a virtual clock.

Theory of operation: the scheduler is a heap of ``(time, seq, callback, args)``. ``run``
pops the earliest entry, moves the clock to its time and calls it; callbacks schedule more
entries. Time is an integer number of *microseconds* since the start of the simulation, so
sub-millisecond costs (a router's service time) add up exactly and two runs never differ by
a floating-point rounding. ``seq`` is a global counter: entries due at the same instant run
in the order they were scheduled, which is what makes a run a pure function of its inputs
and its seed. Nothing here reads the wall clock or any random source.

Public times are in seconds (floats) and converted once, at this boundary.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

US_PER_MS = 1_000
US_PER_S = 1_000_000


def seconds_to_us(seconds: float) -> int:
    """Seconds (as given to the public API) to integer microseconds."""
    return round(seconds * US_PER_S)


def ms_to_us(ms: float) -> int:
    return round(ms * US_PER_MS)


def us_to_seconds(us: int) -> float:
    return us / US_PER_S


class Scheduler:
    """The event heap and the virtual clock (``now_us``)."""

    __slots__ = ("_heap", "_seq", "events_run", "now_us")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = 0
        self.now_us = 0
        self.events_run = 0

    @property
    def now(self) -> float:
        """Virtual seconds since the start."""
        return self.now_us / US_PER_S

    def at(self, t_us: int, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` at virtual time ``t_us`` (never before now)."""
        if t_us < self.now_us:
            t_us = self.now_us
        self._seq += 1
        heapq.heappush(self._heap, (t_us, self._seq, fn, args))

    def after(self, delay_us: int, fn: Callable[..., Any], *args: Any) -> None:
        self.at(self.now_us + max(0, delay_us), fn, *args)

    def pending(self) -> int:
        return len(self._heap)

    def next_time(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def run(self, until_us: int | None = None, *, max_events: int | None = None) -> int:
        """Run every entry due at or before ``until_us`` (all of them if None); the clock
        ends at ``until_us`` when given. Returns the number of entries run."""
        heap = self._heap
        pop = heapq.heappop
        n = 0
        limit = max_events if max_events is not None else -1
        while heap and (until_us is None or heap[0][0] <= until_us):
            if n == limit:
                break
            t, _, fn, args = pop(heap)
            self.now_us = t
            fn(*args)
            n += 1
        if until_us is not None and until_us > self.now_us and (
                not heap or heap[0][0] > until_us):
            self.now_us = until_us
        self.events_run += n
        return n
