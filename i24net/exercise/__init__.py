"""Scripted exercises: load a drill from TOML, run it in virtual time or live, judge it.

    from i24net import exercise
    ex = exercise.load("examples/exercises/red_notice_lifecycle.toml")
    result = exercise.run(ex, mode="virtual")
    print(result.passed, result.summary)

See ``docs/exercises.md`` for the file format and the API.
"""

from __future__ import annotations

from i24net.exercise.loader import load, loads
from i24net.exercise.model import Exercise, ExerciseError, NotSupportedLive

__all__ = ["Exercise", "ExerciseError", "NotSupportedLive", "load", "loads"]
