"""The scheduler: time order, FIFO among equals, the clock."""

from __future__ import annotations

from i24net.sim.scheduler import Scheduler, seconds_to_us, us_to_seconds


def test_events_run_in_time_order_and_fifo_among_equal_times() -> None:
    s = Scheduler()
    seen: list[str] = []
    s.at(30, seen.append, "c")
    s.at(10, seen.append, "a1")
    s.at(10, seen.append, "a2")
    s.at(20, seen.append, "b")
    assert s.run() == 4
    assert seen == ["a1", "a2", "b", "c"]
    assert s.now_us == 30


def test_run_until_stops_and_moves_the_clock() -> None:
    s = Scheduler()
    seen: list[int] = []
    for t in (5, 15, 25):
        s.at(t, seen.append, t)
    s.run(until_us=20)
    assert seen == [5, 15] and s.now_us == 20
    s.run(until_us=100)
    assert seen == [5, 15, 25] and s.now_us == 100


def test_callbacks_can_schedule_more_and_never_in_the_past() -> None:
    s = Scheduler()
    seen: list[int] = []

    def tick(n: int) -> None:
        seen.append(s.now_us)
        if n:
            s.after(10, tick, n - 1)
            s.at(0, seen.append, -1)  # the past is clamped to now
    s.at(0, tick, 2)
    s.run()
    assert seen == [0, -1, 10, -1, 20]


def test_max_events_is_a_safety_net() -> None:
    s = Scheduler()

    def forever() -> None:
        s.after(1, forever)
    s.at(0, forever)
    assert s.run(max_events=50) == 50
    assert s.pending() == 1


def test_time_conversions() -> None:
    assert seconds_to_us(1.5) == 1_500_000
    assert us_to_seconds(2_500) == 0.0025
