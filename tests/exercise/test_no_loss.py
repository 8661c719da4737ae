"""``no-loss`` counts every message the exercise asked for, not only what the router
accepted, and a run settles before it is judged (docs/exercises.md)."""

from __future__ import annotations

from i24net.exercise import loads, run

HEAD = """\
[exercise]
name = "{name}"
seed = 3
duration = "2:00"

[network]
preset = "demo"
"""

BURST = """
[[inject]]
at = 1
action = "send"
name = "burst"
from = "NCB-FR"
to = ["NCB-DE"]
label = "RESTRICTED"
repeat = 4
every = 2
"""

NO_LOSS = """
[[expect]]
kind = "no-loss"
"""


def outcome(text: str) -> tuple[bool, str]:
    result = run(loads(text, source="drill.toml"), "virtual")
    (o,) = [o for o in result.outcomes if o.kind == "no-loss"]
    return o.passed, o.detail


def test_a_sender_crashed_for_good_mid_burst_loses_what_it_never_sent() -> None:
    passed, detail = outcome(HEAD.format(name="sender dies") + BURST + """
[[inject]]
at = 4
action = "crash"
who = "NCB-FR"
""" + NO_LOSS)
    assert not passed
    assert detail.startswith("2 of 4 lost")
    assert "burst planned at 5.00 s never submitted" in detail
    assert "burst planned at 7.00 s never submitted" in detail


def test_a_recipient_killed_for_good_fails_no_loss_naming_the_messages() -> None:
    passed, detail = outcome(HEAD.format(name="recipient dies") + """
[[inject]]
at = "0:30"
action = "crash"
who = "NCB-DE"
""" + BURST.replace("at = 1\n", "at = 40\n") + NO_LOSS)
    assert not passed
    assert detail.startswith("4 of 4 lost")
    assert "burst" in detail and "-> NCB-DE (still pending at the end)" in detail


def test_a_run_settles_past_its_planned_end_before_judging() -> None:
    """A message sent near the end of a run still counts: the run waits for its receipts."""
    text = HEAD.format(name="late send").replace('duration = "2:00"', 'duration = "0:30"') \
        + BURST.replace("at = 1\n", "at = 29\n").replace("repeat = 4\nevery = 2\n", "") \
        + NO_LOSS
    result = run(loads(text, source="late.toml"), "virtual")
    assert result.passed, [(o.kind, o.detail) for o in result.outcomes]
    settle = result.extra["settle"]
    assert settle["planned_s"] == 30 and settle["pending"] == 0
    assert settle["ended_s"] >= 30


def test_live_a_recipient_killed_for_good_fails_no_loss_after_settling() -> None:
    """The same drill live: the run waits (here at most 5 s) for the messages to be final,
    then counts what is still pending as lost, by name."""
    from i24net.exercise.live import LiveRun

    text = HEAD.format(name="recipient dies live").replace('duration = "2:00"',
                                                           'duration = "0:08"') + """
[[inject]]
at = 1
action = "crash"
who = "NCB-DE"
""" + BURST.replace("at = 1\n", "at = 3\n").replace("repeat = 4\nevery = 2\n",
                                                    "repeat = 2\nevery = 1\n") + NO_LOSS
    result = LiveRun(loads(text, source="live.toml"), settle_s=5.0).run()
    (o,) = [o for o in result.outcomes if o.kind == "no-loss"]
    assert not o.passed
    assert o.detail.startswith("2 of 2 lost") and "-> NCB-DE (still pending at the end)" \
        in o.detail
    settle = result.extra["settle"]
    assert settle["pending"] == 2 and settle["ended_s"] >= 8 + 5 - 0.5
