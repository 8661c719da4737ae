"""Running exercises in virtual time: every example passes, a seed fixes the bytes of the
JSON report, another seed changes the timings, failures exit 3 and say which."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from i24net.cli import cli
from i24net.core.errors import I24Error
from i24net.exercise import expect as judge
from i24net.exercise import load, loads, run
from i24net.exercise import model as m
from i24net.exercise.observe import MessageObs, NoticeObs, Observations

from .support import EXAMPLES, MINIMAL, example_files


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_every_example_passes_in_virtual_mode(path: Path) -> None:
    result = run(load(path), "virtual")
    failed = [(o.index, o.description, o.detail) for o in result.failed]
    assert result.passed, failed
    assert all(i.ok for i in result.obs.injects), [i for i in result.obs.injects if not i.ok]
    assert result.obs.flowcheck_ran


def test_same_seed_same_bytes_other_seed_other_timings() -> None:
    ex = load(EXAMPLES / "red_notice_lifecycle.toml")
    first, second = run(ex).to_json(), run(ex).to_json()
    assert first == second
    other = json.loads(run(replace(ex, seed=ex.seed + 1)).to_json())
    same = json.loads(first)
    assert other["passed"] and same["passed"]
    assert other["latency_by_precedence"] != same["latency_by_precedence"]
    assert [o["measured_s"] for o in other["expectations"]] != \
        [o["measured_s"] for o in same["expectations"]]
    # what happened is the same; only when it happened moved
    assert other["summary"] == same["summary"]


def test_json_report_shape() -> None:
    d = json.loads(run(loads(MINIMAL, source="minimal.toml")).to_json())
    assert d["passed"] is True
    assert d["exercise"] == {"name": "minimal", "description": "", "file": "minimal.toml",
                             "network": "preset demo", "agencies": 8, "seed": 3,
                             "mode": "virtual", "duration_s": 600.0,
                             "ended_s": 600.0}
    assert d["summary"]["met"] == d["summary"]["expectations"] == 2
    assert set(d["latency_by_precedence"]) == {"FLASH", "IMMEDIATE", "PRIORITY", "ROUTINE"}
    assert d["latency_by_precedence"]["FLASH"]["target_s"] == 600
    assert d["latency_by_precedence"]["ROUTINE"]["target_s"] == 6 * 3600
    assert d["per_agency"]["NCB-DE"]["delivered"] >= 1
    assert d["notices"]["red1"]["decision"] == "published"
    assert d["notices"]["red1"]["time_to_withdraw_s"] > 0
    assert d["flowcheck"] == {"ran": True, "violations": []}
    kinds = [t["type"] for t in d["timeline"]]
    assert kinds.count("inject") == 3 and "message" in kinds
    assert [t["t"] for t in d["timeline"]] == sorted(t["t"] for t in d["timeline"])


def test_cli_run_exit_codes_and_outputs(tmp_path: Path, minimal: Path) -> None:
    runner = CliRunner()
    out_json, out_html = tmp_path / "aar.json", tmp_path / "aar.html"
    ok = runner.invoke(cli, ["exercise", "run", str(minimal), "--json", str(out_json),
                             "--report", str(out_html)])
    assert ok.exit_code == 0, ok.output
    assert "PASSED" in ok.stdout and "2/2 expectations met" in ok.stdout
    assert json.loads(out_json.read_text())["passed"] is True
    assert out_html.read_text().count("<svg") >= 4

    failing = tmp_path / "failing.toml"
    failing.write_text(MINIMAL.replace("within = 30", "within = 0.001"))
    res = runner.invoke(cli, ["exercise", "run", str(failing), "-q"])
    assert res.exit_code == 3
    assert "FAILED: #1 m1 delivered to every recipient within 0.001s" in res.stdout

    res = runner.invoke(cli, ["exercise", "run", str(failing)])
    assert res.exit_code == 3
    assert "FAILED" in res.stdout and "late: NCB-DE after" in res.stdout


def test_cli_run_refuses_live_for_virtual_only_actions(minimal: Path) -> None:
    minimal.write_text(minimal.read_text().replace("latency_ms = 30\n",
                                                   "latency_ms = 30\nbroker_queue_limit = 5\n"))
    res = CliRunner().invoke(cli, ["exercise", "run", str(minimal), "--live"])
    assert res.exit_code == 2
    assert "broker_queue_limit: not supported live" in res.stderr
    assert "Traceback" not in res.output


def test_a_failing_inject_is_reported_not_raised() -> None:
    text = MINIMAL.replace('at = 5\naction = "send"', 'at = 5\naction = "send"\nkind = "notice"')
    result = run(loads(text))
    assert not result.passed
    refused = next(o for o in result.outcomes if o.kind == "delivered")
    assert "kind.not-allowed" in refused.detail


# -- judging, on hand-made observations -------------------------------------------------------

def _obs(**kw: object) -> Observations:
    msg = MessageObs(id="aa" * 16, sender="NCB-FR", kind="message", label="RESTRICTED",
                     precedence="FLASH", recipients=("NCB-DE", "NCB-JP"), sent=10.0,
                     name="m1", state="accepted", decided=10.1,
                     delivered={"NCB-DE": 10.5, "NCB-JP": 700.0})
    obs = Observations(duration=900, agencies=("NCB-DE", "NCB-FR", "NCB-JP"),
                       groups={"@EU": ("NCB-DE", "NCB-FR")}, messages=[msg])
    for k, v in kw.items():
        setattr(obs, k, v)
    return obs


def test_purged_needs_every_listed_recipient_to_have_erased_it() -> None:
    obs = _obs()
    ok, detail, _ = judge.purged(m.Purged(message="m1"), obs)
    assert not ok and detail == "still held by NCB-DE, NCB-JP"
    obs.messages[0].purged["NCB-DE"] = 30.5
    ok, detail, held = judge.purged(m.Purged(message="m1", to=("@EU",)), obs)
    assert ok and held == pytest.approx(20.0) and "erased by 1 recipient(s)" in detail
    ok, detail, _ = judge.purged(m.Purged(message="m1"), obs)
    assert not ok and detail == "still held by NCB-JP"
    ok, detail, _ = judge.purged(m.Purged(message="nope"), obs)
    assert not ok and "no message named 'nope'" in detail


def test_network_retention_overrides_the_networks_rule() -> None:
    ex = loads(MINIMAL.replace('preset = "demo"\n',
                               'preset = "demo"\n\n[network.retention]\ndiffusion = "20s"\n'
                               'message = 2\n'), source="t")
    assert ex.network.retention == (("diffusion", "20s"), ("message", "2d"))
    from i24net.exercise.loader import network_spec

    spec = network_spec(ex.network)
    assert spec.retention == {"diffusion": 20_000, "alert": 90 * 86_400_000,
                              "message": 2 * 86_400_000}
    with pytest.raises(I24Error, match=r"network\.retention"):
        loads(MINIMAL.replace('preset = "demo"\n',
                              'preset = "demo"\n\n[network.retention]\nnotice = "1d"\n'),
              source="t")


def test_delivered_within_target_and_groups() -> None:
    obs = _obs()
    ok, detail, slowest = judge.delivered(m.Delivered(message="m1", to=("@EU",), within=1.0),
                                          obs)
    assert ok and slowest == pytest.approx(0.5)
    ok, detail, _ = judge.delivered(m.Delivered(message="m1", within="target"), obs)
    assert not ok and "NCB-JP after 11.5 min" in detail  # FLASH target: 10 min
    ok, detail, _ = judge.delivered(m.Delivered(message="nope"), obs)
    assert not ok and "no message named 'nope'" in detail


def test_no_loss_and_dropped() -> None:
    obs = _obs()
    obs.messages[0].delivered.pop("NCB-JP")
    ok, detail, _ = judge.no_loss(m.NoLoss(), obs)
    assert not ok and "-> NCB-JP" in detail
    assert judge.no_loss(m.NoLoss(ignore=("m1",)), obs)[0]
    ok, _, _ = judge.dropped(m.Dropped(message="m1", to=("NCB-JP",)), obs)
    assert ok
    assert not judge.dropped(m.Dropped(message="m1"), obs)[0]


def test_cancelled_everywhere_measures_time_to_withdraw() -> None:
    n = NoticeObs("red1", "NCB-FR", 0.0, decision="published", number="A-1/01-2026",
                  audience=("NCB-DE", "NCB-JP"), holders={"NCB-DE": 1.0, "NCB-JP": 2.0},
                  cancel_at=100.0, cancelled={"NCB-DE": 100.5})
    obs = _obs(notices={"red1": n})
    ok, detail, _ = judge.cancelled_everywhere(m.CancelledEverywhere(notice="red1"), obs)
    assert not ok and "still held at NCB-JP" in detail
    n.cancelled["NCB-JP"] = 103.0
    ok, detail, ttw = judge.cancelled_everywhere(
        m.CancelledEverywhere(notice="red1", within=2.0), obs)
    assert not ok and ttw == pytest.approx(3.0)
    assert judge.cancelled_everywhere(m.CancelledEverywhere(notice="red1", within=5.0),
                                      obs)[0]


def test_published_to_nobody_is_not_published() -> None:
    n = NoticeObs("red1", "NCB-FR", 0.0, decision="published", number="A-1/01-2026")
    ok, detail, _ = judge.published(m.Published(notice="red1"), _obs(notices={"red1": n}))
    assert not ok and "nobody" in detail


def test_stolen_key_judged_on_messages_sent_after_revocation() -> None:
    forged = [MessageObs(id=f"{i:032x}", sender="NCB-BR", kind="message", label="R",
                         precedence="FLASH", recipients=("NCB-US",), sent=float(t),
                         origin="attacker", state=state, decided=float(t),
                         reason="sender.revoked" if state == "refused" else "")
              for i, (t, state) in enumerate([(300, "accepted"), (720, "refused")])]
    obs = _obs(messages=forged, compromised={"NCB-BR": 300.0}, revoked={"NCB-BR": 720.0})
    e = m.NothingAfterRevocation(agency="NCB-BR")
    ok, detail, took = judge.nothing_after_revocation(e, obs)
    assert ok and took == 420.0 and "1 forged accepted before, 0 of 1 after" in detail
    forged[1].state, forged[1].reason = "accepted", ""
    assert not judge.nothing_after_revocation(e, obs)[0]


KITCHEN_SINK = """\
[exercise]
name = "every action"
seed = 31
duration = "40:00"

[network]
preset = "demo"
review = "manual"

[conditions]
latency_ms = 25
jitter_ms = 5
loss = 0.005
broker_queue_limit = 1000

[conditions.router]
envelope_ms = 0.5
stamp_ms = 0.2

[[conditions.link]]
group = "@AMERICAS"
latency_ms = 120
end = "20:00"

[[conditions.link]]
between = ["NCB-FR", "NCB-DE"]
latency_ms = 500

[[conditions.filter]]
action = "delay"
delay_ms = 1000
jitter_ms = 200
precedence = "PRIORITY"
label = "RESTRICTED"
caveat = "EU"
kind = "message"
sender = "NCB-FR"
to = "@EU"
to_group = "@EU"
direction = "both"

[[inject]]
at = 10
action = "send"
name = "h2"
from = "NCB-FR"
to = ["NCB-DE", "NCB-US"]
label = "RESTRICTED"
handling = ["H2"]
text = "Not for court use."
data = {case = "FR-1", count = 3, urgent = true}
ttl_hours = 24

[[inject]]
at = 20
action = "notice-request"
name = "red1"
from = "NCB-DE"
colour = "red"

[[inject]]
at = 60
action = "review"
notice = "red1"
decision = "approve"

[[inject]]
at = 90
action = "forward"
name = "fwd"
message = "h2"
from = "NCB-US"
to = ["NCB-JP"]
release = true

[[inject]]
at = 120
action = "partition"
agencies = ["@G7-LIAISON"]

[[inject]]
at = 180
action = "heal"

[[inject]]
at = 200
action = "crash"
who = "NCB-ZA"

[[inject]]
at = 260
action = "restart"
who = "NCB-ZA"

[[inject]]
at = 300
action = "compromise"
name = "forged"
agency = "NCB-ZA"
to = "NCB-US"
count = 2
every = 30

[[inject]]
at = 400
action = "revoke"
agency = "NCB-ZA"

[[inject]]
at = 420
action = "rotate"
agency = "NCB-BR"

[[inject]]
at = 440
action = "skew"
agency = "NCB-JP"
seconds = -30

[[inject]]
at = 500
action = "cancel"
notice = "red1"
by = "GS-LYON"
reason = "notice.arrested"

[[expect]]
kind = "delivered"
message = "h2"
within = "target"

[[expect]]
kind = "delivered"
message = "fwd"

[[expect]]
kind = "published"
notice = "red1"

[[expect]]
kind = "cancelled-everywhere"
notice = "red1"
within = 120

[[expect]]
kind = "nothing-accepted-from-stolen-key-after-revocation"
agency = "NCB-ZA"

[[expect]]
kind = "no-loss"

[[expect]]
kind = "flowcheck-clean"
"""


def test_every_action_and_condition_plays_in_virtual_mode() -> None:
    result = run(loads(KITCHEN_SINK))
    assert [i.action for i in result.obs.injects if not i.ok] == []
    assert result.passed, [(o.description, o.detail) for o in result.failed]
    notice = result.obs.notices["red1"]
    assert notice.cancel_at == 500
    # NCB-ZA was revoked before the cancellation: it cannot be told, and is not counted
    assert set(notice.audience) - set(notice.cancelled) == {"NCB-ZA"}
    assert "1 revoked holder(s) not counted" in result.outcomes[3].detail


def test_the_documentation_examples_run_as_written() -> None:
    """Exercises written from the documentation alone run unchanged: the complete example
    in docs/exercises.md passes, and every fragment there loads inside a valid file."""
    import re

    doc = (EXAMPLES.parents[1] / "docs" / "exercises.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", doc, re.S)
    complete = [b for b in blocks if b.startswith("[exercise]")]
    assert complete
    for text in complete:
        result = run(loads(text, source="docs"))
        assert result.passed, [(o.description, o.detail) for o in result.failed]
    for fragment in (b for b in blocks if not b.startswith("[exercise]")):
        assert loads(MINIMAL + "\n" + fragment, source="docs")


def test_live_preconditions_need_no_network() -> None:
    from i24net.config.presets import preset_toml
    from i24net.exercise.live import check_live, with_port
    from i24net.exercise.livesize import Machine, live_size

    text = with_port(preset_toml("demo").replace('engine = "embedded"',
                                                  'engine = "mosquitto"'), 40123)
    assert "port = 40123" in text and 'engine = "embedded"' in text
    assert "port = 18830" not in text
    interpol = loads(MINIMAL.replace('preset = "demo"', 'preset = "interpol"')
                     .replace('[[conditions.link]]\nagency = "NCB-ZA"\nlatency_ms = 300\n',
                              "").replace("latency_ms = 30\n", ""))
    check_live(interpol)  # every action here has a live form...
    # ...and whether its 198 agencies fit is the machine's to say: not in 256 MiB
    small = Machine(cores=2, available_mib=256.0, files_soft=1024, files_hard=4096)
    assert "198 agencies would take about" in (live_size(interpol, machine=small).problem or "")
    check_live(loads(MINIMAL))  # an agency's link rule runs live, through its fault proxy
    check_live(loads(MINIMAL.replace('agency = "NCB-ZA"\n', 'between = ["NCB-ZA", "NCB-FR"]\n')))
    limited = MINIMAL.replace("latency_ms = 30\n", "latency_ms = 30\nbroker_queue_limit = 5\n")
    with pytest.raises(m.NotSupportedLive, match="broker_queue_limit: not supported live"):
        check_live(loads(limited))
