"""Shared values for the exercise tests: the example folder and a minimal valid file."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "exercises"

# A small valid exercise the malformed-file tests mutate one line at a time. Keep the line
# numbers in step with the tests that name them.
MINIMAL = """\
[exercise]
name = "minimal"
seed = 3
duration = "10:00"

[network]
preset = "demo"

[conditions]
latency_ms = 30

[[conditions.link]]
agency = "NCB-ZA"
latency_ms = 300

[[inject]]
at = 5
action = "send"
name = "m1"
from = "NCB-FR"
to = ["NCB-DE"]
label = "RESTRICTED"

[[inject]]
at = "1:00"
action = "notice-request"
name = "red1"
from = "NCB-FR"

[[inject]]
at = "5:00"
action = "cancel"
notice = "red1"

[[expect]]
kind = "delivered"
message = "m1"
within = 30

[[expect]]
kind = "cancelled-everywhere"
notice = "red1"
within = 120
"""


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.toml"))
