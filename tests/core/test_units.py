"""i24net.core.units: the one duration notation, clock notation and percentile."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from i24net.core.units import clock, duration, percentile
from i24net.exercise.model import seconds as parse_seconds


@pytest.mark.parametrize(("s", "short", "precise"), [
    (0.0004, "0 ms", "0 ms"),
    (0.25, "250 ms", "250 ms"),
    (1.0, "1.0 s", "1.00 s"),
    (5.0, "5.0 s", "5.00 s"),  # "burst planned at 5.00 s never submitted"
    (59.96, "60.0 s", "59.96 s"),
    (90.0, "1.5 min", "90.00 s"),  # precise keeps seconds up to two minutes
    (600.0, "10.0 min", "10.0 min"),  # "FLASH target: 10.0 min"
    (690.0, "11.5 min", "11.5 min"),  # "NCB-JP after 11.5 min"
    (5400.0, "1.5 h", "90.0 min"),
    (21_600.0, "6.0 h", "6.00 h"),  # "ROUTINE target: 6.0 h"
])
def test_duration(s: float, short: str, precise: str) -> None:
    assert duration(s) == short
    assert duration(s, precise=True) == precise


def test_duration_of_nothing() -> None:
    assert duration(None) == duration(None, precise=True) == "-"


@pytest.mark.parametrize(("s", "rounded", "truncated", "exact"), [
    (0.0, "0:00", "0:00", "0s"),
    (2.5, "0:02", "0:02", "2.5s"),  # round half to even, as Python rounds
    (45.0, "0:45", "0:45", "45s"),
    (59.6, "1:00", "0:59", "59.6s"),  # a running clock shows 0:59 until the minute is full
    (600.0, "10:00", "10:00", "10:00"),
    (600.25, "10:00", "10:00", "10:00.25"),
    (5400.0, "1:30:00", "1:30:00", "1:30:00"),
    (3599.5, "1:00:00", "59:59", "59:59.5"),
])
def test_clock(s: float, rounded: str, truncated: str, exact: str) -> None:
    assert clock(s) == rounded
    assert clock(s, truncate=True) == truncated
    assert clock(s, exact=True) == exact


@given(st.integers(60, 100 * 3600), st.sampled_from([0, 0.25, 0.5, 0.125]))
def test_an_exact_clock_from_a_minute_on_reads_back(whole: int, frac: float) -> None:
    assert parse_seconds(clock(whole + frac, exact=True)) == whole + frac


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([1.0, 2.0], 0) == 1.0 and percentile([1.0, 2.0], 100) == 2.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 10.0], 95) == 10.0  # a value that occurred
    assert math.isnan(percentile([], 50))


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60), st.floats(0, 100))
def test_percentile_is_the_smallest_value_covering_q_per_cent(values: list[float],
                                                              q: float) -> None:
    p = percentile(values, q)
    assert p in values
    n = len(values)
    assert sum(v <= p for v in values) >= q / 100 * n - 1e-9
    assert sum(v < p for v in values) < max(1.0, q / 100 * n)  # no smaller value covers q
