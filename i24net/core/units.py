"""How i24net prints a span of time and computes a percentile: one definition of each.

Pure functions, no I/O, nothing imported beyond the standard library.

* ``duration``: a span with its unit, for a person (``850 ms``, ``4.2 s``, ``11.5 min``,
  ``6.0 h``); ``precise`` is the form of verdict details, which are read against limits
  written in seconds (``4.25 s``, seconds up to two minutes, ``1.50 h``).
* ``clock``: a time as a clock reads (``0:45``, ``10:00``, ``1:30:00``), rounded to the
  second; ``truncate`` for a running clock (it shows ``0:59`` until the minute is full);
  ``exact`` for an exercise's own times, as its descriptions quote them: nothing rounded
  (``45s``, ``2.5s``, ``10:00``, ``1:30:00.25``; from a minute on, the loader reads them
  back).
* ``percentile``: the nearest-rank percentile: the smallest value that at least ``q`` per
  cent of the values do not exceed. It is always a value that occurred (a latency some
  delivery had), needs no interpolation, and is what benchmarks, simulations, soak checks,
  exercises and the demo report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def duration(seconds: float | None, *, precise: bool = False) -> str:
    """``seconds`` with a unit: milliseconds below a second, then seconds, minutes, hours
    (one decimal; ``precise``: two for seconds and hours, and each unit kept up to twice the
    next one, ``90.00 s`` rather than ``1.5 min``). ``-`` for None."""
    if seconds is None:
        return "-"
    span, digits = (2, 2) if precise else (1, 1)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60 * span:
        return f"{seconds:.{digits}f} s"
    if seconds < 3600 * span:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.{digits}f} h"


def clock(seconds: float, *, truncate: bool = False, exact: bool = False) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on. Rounded to the second; ``truncate`` drops
    the fraction instead; ``exact`` rounds nothing: ``45s`` and ``2.5s`` below a minute, any
    fraction kept from there (``10:00.25``)."""
    if exact and seconds < 60:
        return f"{seconds:g}s"
    whole = int(seconds) if truncate or exact else round(seconds)
    h, rest = divmod(whole, 3600)
    text = f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"
    if exact and seconds != whole:
        text += f"{seconds - whole:.3f}".rstrip("0").rstrip(".")[1:]
    return text


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (``q`` in 0..100) of ``values`` by the nearest-rank method:
    the value at rank ``ceil(q / 100 * n)`` (at least 1) of the ``n`` values in order. NaN
    when there are none."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered) / 100))
    return ordered[min(rank, len(ordered)) - 1]
