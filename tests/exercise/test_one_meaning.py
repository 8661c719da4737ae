"""Each expectation means one thing in both modes (docs/exercises.md, section 7), and a
live run is judged once it has settled, not at a fixed time."""

from __future__ import annotations

from i24net.exercise import loads, run
from i24net.exercise.live import LiveRun

REFUSED_UNTOLD = """\
[exercise]
name = "refused, requester not told"
seed = 4
duration = 10

[network]
preset = "demo"
review = "manual"

[[inject]]
at = 1
action = "notice-request"
name = "missing"
from = "NCB-JP"
colour = "YELLOW"
person = "Unknown minor"
label = "RESTRICTED"

[[inject]]
at = 3
action = "crash"
who = "NCB-JP"

[[inject]]
at = 5
action = "review"
notice = "missing"
decision = "refuse"
reason = "notice.insufficient-data"

[[expect]]
kind = "refused"
message = "missing"
reason = "notice.insufficient-data"

[[expect]]
kind = "no-loss"
"""


def verdicts(result: object) -> dict[str, tuple[bool, str]]:
    return {o.kind: (o.passed, o.detail) for o in result.outcomes}  # type: ignore[attr-defined]


def test_refused_is_the_notice_authoritys_decision_in_both_modes() -> None:
    """The GS refuses a request while its requester is down: ``refused`` is met in both
    modes (the register's decision, not the requester's inbox), and ``no-loss`` fails in
    both, naming the decision that never reached the requester."""
    ex = loads(REFUSED_UNTOLD, source="untold.toml")
    virtual = verdicts(run(ex, "virtual"))
    live = verdicts(LiveRun(ex, settle_s=4.0).run())
    for v in (virtual, live):
        passed, detail = v["refused"]
        assert passed, detail
        assert "notice.insufficient-data" in detail
        passed, detail = v["no-loss"]
        assert not passed
        assert "-> NCB-JP" in detail
    assert virtual["refused"][0] == live["refused"][0]


SETTLES_EARLY = """\
[exercise]
name = "settles early"
seed = 5
duration = 300

[network]
preset = "demo"

[[inject]]
at = 1
action = "send"
name = "hello"
from = "NCB-FR"
to = ["NCB-DE"]
label = "RESTRICTED"

[[expect]]
kind = "delivered"
message = "hello"
within = 30
"""


def test_a_live_run_whose_messages_are_final_is_judged_before_its_planned_end() -> None:
    result = LiveRun(loads(SETTLES_EARLY, source="early.toml")).run()
    assert result.passed, [(o.kind, o.detail) for o in result.outcomes]
    d = result.to_dict()
    assert d["exercise"]["duration_s"] == 300
    assert 1 < d["exercise"]["ended_s"] < 60
    settle = result.extra["settle"]
    assert settle["pending"] == 0 and settle["planned_s"] == 300
    assert settle["ended_s"] == d["exercise"]["ended_s"]


def test_a_virtual_run_is_judged_at_its_planned_end() -> None:
    d = run(loads(SETTLES_EARLY, source="early.toml"), "virtual").to_dict()
    assert d["exercise"]["duration_s"] == d["exercise"]["ended_s"] == 300
