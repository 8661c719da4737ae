"""The key injects live: the authority's directory versions reach the running router and
nodes before the run goes on, and a thief outside the victim's node forges with the stolen
key over the victim's broker account until the revocation shuts it out; what the stolen
keys open of the recorded traffic is measured as in virtual time (docs/exercises.md 8)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from i24net.config.home import Home
from i24net.core.envelope import Envelope
from i24net.core.keys import key_id
from i24net.exercise import loads, run
from i24net.exercise.live import LiveRun, check_live
from i24net.exercise.model import NotSupportedLive
from i24net.exercise.observe import ATTACKER
from i24net.ops import client

from .support import EXAMPLES

VICTIM = "NCB-BR"
FORGED_TO = ("NCB-FR", "NCB-JP", "NCB-US")

# stolen_key.toml in half a minute: forgeries every 2 s from 3 s, Tokyo's keys rotated at
# 6 s, Brasilia revoked at 10 s, mail to Brasilia at 14 s.
STOLEN = """\
[exercise]
name = "stolen key, short"
seed = 5
duration = 30

[network]
preset = "demo"

[[inject]]
at = 1
action = "send"
name = "before-theft"
from = "NCB-BR"
to = ["NCB-US"]
label = "RESTRICTED"

[[inject]]
at = 3
action = "compromise"
name = "forgery"
agency = "NCB-BR"
to = ["NCB-US", "NCB-FR", "NCB-JP"]
label = "RESTRICTED"
count = 8
every = 2

[[inject]]
at = 6
action = "rotate"
agency = "NCB-JP"

[[inject]]
at = 8
action = "send"
name = "after-rotation"
from = "NCB-JP"
to = ["NCB-US"]
label = "RESTRICTED"

[[inject]]
at = 10
action = "revoke"
agency = "NCB-BR"

[[inject]]
at = 14
action = "send"
name = "to-revoked"
from = "NCB-US"
to = ["NCB-BR"]
label = "RESTRICTED"

[[expect]]
kind = "delivered"
message = "before-theft"
within = 20

[[expect]]
kind = "delivered"
message = "after-rotation"
within = 20

[[expect]]
kind = "nothing-accepted-from-stolen-key-after-revocation"
agency = "NCB-BR"

[[expect]]
kind = "refused"
message = "to-revoked"
reason = "recipient.revoked"

[[expect]]
kind = "flowcheck-clean"
"""

# forward_secrecy.toml in a quarter of a minute: the network keeps no retired prekey
# (grace 0 h), and Berlin's node restarts after its answer (its sending key, held in
# memory only, is gone), as an hour would do in the committed drill.
SECRECY = """\
[exercise]
name = "forward secrecy, short"
seed = 11
duration = 30

[network]
spec = "zero-grace.toml"

[[inject]]
at = 1
action = "send"
name = "early"
from = "NCB-FR"
to = ["NCB-DE"]
label = "RESTRICTED"

[[inject]]
at = 2
action = "send"
name = "early-reply"
from = "NCB-DE"
to = ["NCB-FR"]
label = "RESTRICTED"

[[inject]]
at = 5
action = "rotate-prekeys"

[[inject]]
at = 6
action = "crash"
who = "NCB-DE"

[[inject]]
at = 7
action = "restart"
who = "NCB-DE"

[[inject]]
at = 10
action = "send"
name = "recent"
from = "NCB-FR"
to = ["NCB-DE"]
label = "RESTRICTED"

[[inject]]
at = 13
action = "compromise"
name = "forgery"
agency = "NCB-DE"
to = ["NCB-FR"]
label = "RESTRICTED"

[[expect]]
kind = "delivered"
message = "recent"

[[expect]]
kind = "unreadable-to-thief"
agency = "NCB-DE"
messages = ["early", "early-reply"]
readable = ["recent"]

[[expect]]
kind = "flowcheck-clean"
"""


def _verdicts(result: object) -> list[tuple[str, bool]]:
    return [(o.kind, o.passed) for o in result.outcomes  # type: ignore[attr-defined]
            if o.kind != "history"]


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_a_thief_forges_until_the_revocation_and_rotated_keys_sign_live(
        tmp_path: Path) -> None:
    ex = loads(STOLEN, source="stolen.toml")
    live = LiveRun(ex, workdir=tmp_path, keep=True, settle_s=20.0)
    result = live.run()
    assert result.passed, [(o.kind, o.detail) for o in result.outcomes]
    assert _verdicts(result) == _verdicts(run(ex))  # the same verdicts as in virtual time
    obs = result.obs
    played = {i.action: i for i in obs.injects}
    assert all(i.ok for i in obs.injects), [(i.action, i.detail) for i in obs.injects]
    assert "in force" in played["revoke"].detail and "in force" in played["rotate"].detail
    assert "8 forgeries" in played["compromise"].detail

    # the revocation's time is the router's adoption, after the inject and the theft
    stolen_at, revoked_at = obs.compromised[VICTIM], obs.revoked[VICTIM]
    assert 2.9 <= stolen_at < 4 and 10 <= revoked_at < 12
    forged = sorted((msg for msg in obs.messages if msg.origin == ATTACKER),
                    key=lambda msg: msg.sent)
    assert len(forged) == 8 and {msg.sender for msg in forged} == {VICTIM}
    before = [msg for msg in forged if msg.sent < revoked_at]
    after = [msg for msg in forged if msg.sent >= revoked_at]
    assert len(before) == 4 and len(after) == 4
    # a stolen key signs as the agency until the revocation: accepted, delivered to all
    for msg in before:
        assert msg.accepted and sorted(msg.delivered) == list(FORGED_TO), msg
    # from then on the router refuses it, or the broker no longer lets the thief in
    for msg in after:
        assert msg.state == "refused" and not msg.delivered, msg
        assert msg.reason in ("sender.revoked", "transport.refused"), msg
    # the router answered the forgeries on the victim's inbox topic, where the victim's own
    # node (its session untouched by the thief's) dropped the reports it never asked for
    reports = [d for d in obs.drops if d.agency == VICTIM and d.reason == "node:report.unknown"]
    assert len(reports) == len(before)

    # the outside history holds every forgery that left, named as the attacker's
    history = live.tmp / "history.jsonl"  # type: ignore[operator]
    records = [json.loads(line) for line in history.read_text().splitlines()]
    attacker = {r["id"] for r in records if r.get("op") == "submit"
                and r.get("origin") == ATTACKER}
    assert {msg.id for msg in before} <= attacker
    assert result.extra["history"]["ok"], result.extra["history"]

    # after the rotation Tokyo's message is signed with its new key, the one listed now
    home = Home(live.tmp / "home")  # type: ignore[operator]
    d = home.directory()
    assert d.agency("NCB-JP").key_version == 2 and not d.agency(VICTIM).active
    (sent,) = obs.named("after-rotation")
    with client.open_store(home, "NCB-JP", readonly=True) as store:
        entry = store.outbox_get(bytes.fromhex(sent.id))
    assert entry is not None
    assert Envelope.parse(entry.raw).header.key_id == key_id(d.agency("NCB-JP").sign_key)


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_the_stolen_keys_open_only_the_current_window_live(tmp_path: Path) -> None:
    grace = (EXAMPLES / "networks" / "short-prekey-grace.toml").read_text()
    assert "prekey_grace_hours = 1\n" in grace
    (tmp_path / "zero-grace.toml").write_text(
        grace.replace("prekey_grace_hours = 1\n", "prekey_grace_hours = 0\n"))
    ex = loads(SECRECY, source=str(tmp_path / "secrecy.toml"), base=tmp_path)
    result = LiveRun(ex, workdir=tmp_path, settle_s=20.0).run()
    assert result.passed, [(o.kind, o.detail) for o in result.outcomes]
    assert _verdicts(result) == _verdicts(run(ex))
    obs = result.obs
    played = {i.action: i for i in obs.injects}
    assert played["rotate-prekeys"].ok, played["rotate-prekeys"].detail
    # the node erased the retired prekey; the key file still has it, and the report says so
    assert "still holds 1 retired prekey" in played["compromise"].detail
    readable, shut = obs.exposure["NCB-DE"]
    ids = {name: obs.named(name)[0].id for name in ("early", "early-reply", "recent")}
    assert readable == {ids["recent"]}
    assert shut == {ids["early"]: "prekey.unknown", ids["early-reply"]: "key.sending"}


def test_skew_is_refused_live_with_the_reason() -> None:
    text = STOLEN.replace('action = "rotate"\nagency = "NCB-JP"',
                          'action = "skew"\nagency = "NCB-JP"\nseconds = 600')
    with pytest.raises(NotSupportedLive, match=r"inject\[3\]: not supported live: skew: "
                       r"a live run has one clock.*--virtual"):
        check_live(loads(text, source="skew.toml"))


@pytest.mark.parametrize("drill", ["stolen_key.toml", "forward_secrecy.toml"])
def test_the_key_drills_validate_live(drill: str) -> None:
    res = subprocess.run([sys.executable, "-m", "i24net", "exercise", "validate", "--live",
                          str(EXAMPLES / drill)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "runnable live" in res.stdout
