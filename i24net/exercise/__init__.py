"""Scripted exercises: load a drill from TOML, run it in virtual time or live, judge it.

    from i24net import exercise

    ex = exercise.load("examples/exercises/red_notice_lifecycle.toml")
    result = exercise.run(ex)                  # the file's mode; mode="live" to go live
    print(result.passed, result.summary())
    for o in result.outcomes:
        print(o.index, o.passed, o.description, o.detail)
    open("report.html", "w").write(exercise.render_html(result))

The file format and the API are documented in ``docs/exercises.md``.
"""

from __future__ import annotations

from i24net.exercise.expect import Outcome
from i24net.exercise.htmlreport import render as render_html
from i24net.exercise.loader import load, loads
from i24net.exercise.model import Exercise, ExerciseError, NotSupportedLive
from i24net.exercise.result import Result
from i24net.exercise.runner import run

__all__ = ["Exercise", "ExerciseError", "NotSupportedLive", "Outcome", "Result", "load",
           "loads", "render_html", "run"]
