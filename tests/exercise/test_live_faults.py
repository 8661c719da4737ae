"""Live link faults: a fault proxy between each agency and the broker carries the file's
latency, loss and partitions on the real transport (docs/exercises.md, section 8)."""

from __future__ import annotations

from i24net.exercise import loads
from i24net.exercise.live import LiveRun

PARTITION = """\
[exercise]
name = "live partition"
seed = 4
duration = 16

[network]
preset = "demo"

[conditions]
latency_ms = 40
jitter_ms = 5

[[inject]]
at = 2
action = "partition"
agencies = ["NCB-DE"]

[[inject]]
at = 3
action = "send"
name = "during-cut"
from = "NCB-FR"
to = ["NCB-DE"]
label = "RESTRICTED"

[[inject]]
at = 9
action = "heal"

[[expect]]
kind = "delivered"
message = "during-cut"

[[expect]]
kind = "no-loss"
"""


def test_a_live_partition_holds_a_message_until_the_heal() -> None:
    run = LiveRun(loads(PARTITION, source="partition.toml"), settle_s=30.0)
    result = run.run()
    assert result.passed, [(o.kind, o.detail) for o in result.outcomes]
    (msg,) = result.obs.named("during-cut")
    lat = msg.latency("NCB-DE")
    assert lat is not None and lat > 9 - 3 - 0.5  # it waited for the heal
    played = {i.action: i for i in result.obs.injects}
    assert played["partition"].ok and "cut: NCB-DE" in played["partition"].detail
    assert played["heal"].ok and "healed: NCB-DE" in played["heal"].detail
    assert run.proxies is not None  # stopped with the run
