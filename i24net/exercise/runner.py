"""Running an exercise: pick the runner for the mode, hand back a judged ``Result``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from i24net.exercise import model as m
from i24net.exercise.result import Result

Progress = Callable[[float, float, str], None]


def run(exercise: m.Exercise, mode: str | None = None, *, seed: int | None = None,
        progress: Progress | None = None, workdir: Path | None = None) -> Result:
    """Play ``exercise`` and judge its expectations.

    ``mode`` is ``"virtual"`` or ``"live"`` (default: the file's ``[exercise] mode``);
    ``seed`` overrides the file's seed; ``progress(now_s, total_s, text)`` is called as
    time advances (virtual or wall-clock seconds). Raises ``NotSupportedLive`` when a live
    run meets an action it cannot play, ``I24Error`` for anything else that stops the run;
    expectations that are not met are a ``Result`` with ``passed`` False, not an error.
    """
    mode = mode or exercise.mode
    if mode not in m.MODES:
        raise m.ExerciseError(f"mode must be one of {', '.join(m.MODES)}, not {mode!r}")
    if seed is not None:
        exercise = replace(exercise, seed=seed)
    if mode == "live":
        from i24net.exercise.live import run_live

        return run_live(exercise, progress=progress, workdir=workdir)
    from i24net.exercise.virtual import run_virtual

    return run_virtual(exercise, progress=progress)
