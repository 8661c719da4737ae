"""Shared test configuration: Hypothesis profiles.

``default`` keeps the whole suite fast on two cores; ``thorough`` (set
``HYPOTHESIS_PROFILE=thorough``) runs ten times the examples for a deeper search before a
release. Deadlines are off: crypto timings vary on loaded CI machines and a deadline failure
would say nothing about correctness.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
