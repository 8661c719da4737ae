"""Live gateway filters and timed or pairwise links: the fault proxies apply the file's
``[[conditions.filter]]`` rules and its ``between`` and timed ``[[conditions.link]]`` rules
on the real transport, with the simulator's meaning (docs/exercises.md, section 8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from i24net.cli import cli
from i24net.exercise import loads
from i24net.exercise.compare import compare, same_verdicts
from i24net.exercise.live import LiveRun
from i24net.exercise.runner import run as run_exercise
from i24net.exercise.terminal import print_report

pytestmark = pytest.mark.timeout(90)

FILTERS = """\
[exercise]
name = "live gateway filters"
seed = 5
duration = 18

[network]
preset = "demo"

[conditions]
latency_ms = 20
jitter_ms = 4

[[conditions.filter]]            # Tokyo's gateway holds FLASH deliveries 3 s
to = "NCB-JP"
precedence = "FLASH"
direction = "down"
action = "delay"
delay_ms = 3000

[[conditions.filter]]            # Brasilia's gateway loses every alert coming down
to = "NCB-BR"
kind = "alert"
direction = "down"
action = "drop"

[[conditions.filter]]            # what is addressed to @EU is lost from 3 s to 8 s
to_group = "@EU"
action = "drop"
start = 3
end = 8

[conditions.router]              # virtual-only: a live run uses the real router
envelope_ms = 1

[[inject]]
at = 1
action = "send"
name = "flash"
from = "NCB-US"
to = ["NCB-JP", "NCB-FR"]
kind = "alert"
label = "RESTRICTED"
precedence = "FLASH"

[[inject]]
at = 1
action = "send"
name = "alert-br"
from = "NCB-US"
to = ["NCB-BR"]
kind = "alert"
label = "RESTRICTED"
precedence = "IMMEDIATE"

[[inject]]
at = 1
action = "send"
name = "message-br"
from = "NCB-US"
to = ["NCB-BR"]
label = "RESTRICTED"

[[inject]]
at = 4
action = "send"
name = "eu-diffusion"
from = "NCB-DE"
to = "@EU"
kind = "diffusion"
label = "CONFIDENTIAL//EU"
precedence = "PRIORITY"

[[expect]]
kind = "delivered"
message = "flash"
to = "NCB-FR"
within = 2

[[expect]]
kind = "delivered"
message = "flash"
to = "NCB-JP"
within = 8

[[expect]]
kind = "dropped"
message = "alert-br"

[[expect]]
kind = "delivered"
message = "message-br"
within = 3

[[expect]]
kind = "delivered"
message = "eu-diffusion"

[[expect]]
kind = "no-loss"
except = ["alert-br"]

[[expect]]
kind = "flowcheck-clean"
"""


def test_live_filters_hold_drop_and_open_their_window_as_the_virtual_run_does() -> None:
    ex = loads(FILTERS, source="filters.toml")
    run = LiveRun(ex, settle_s=4.0)  # alert-br stays pending: that is the drill
    live = run.run()
    assert live.passed, [(o.kind, o.detail) for o in live.outcomes if not o.passed]
    (flash,) = live.obs.named("flash")
    fr, jp = flash.latency("NCB-FR"), flash.latency("NCB-JP")
    assert fr is not None and jp is not None
    assert fr < 1.5 and jp >= 3.0  # held at Tokyo's gateway only
    (eu,) = live.obs.named("eu-diffusion")
    latest = max(t for t in (eu.latency(a) for a in eu.recipients) if t is not None)
    assert latest > 8 - 4 - 0.5  # lost until the window closed, then a retry got through
    (alert,) = live.obs.named("alert-br")
    assert "NCB-BR" not in alert.delivered
    stats = run.proxies.stats()
    assert stats["NCB-BR"]["dropped"].get("filter:filter-2", 0) >= 1
    assert stats["NCB-JP"]["packets_held"] >= 1
    assert sum(s["dropped"].get("filter:filter-3", 0) for s in stats.values()) >= 1
    virtual = run_exercise(ex, "virtual")
    assert same_verdicts(compare(virtual, live)), [
        (r.index, r.virtual, r.live) for r in compare(virtual, live)]
    console = Console(record=True, width=200)
    print_report(live, console)
    assert "note: conditions.router: virtual-only" in console.export_text()


def test_validate_live_accepts_every_condition_but_the_queue_limit(tmp_path: Path) -> None:
    path = tmp_path / "filters.toml"
    path.write_text(FILTERS)
    res = CliRunner().invoke(cli, ["exercise", "validate", "--live", str(path)])
    assert res.exit_code == 0, res.output
    assert "runnable live" in res.stdout
    assert "note: conditions.router: virtual-only: " in res.stdout
    path.write_text(LINKS.replace("jitter_ms = 2\n", "jitter_ms = 2\nbroker_queue_limit = 50\n"))
    assert CliRunner().invoke(cli, ["exercise", "validate", str(path)]).exit_code == 0
    res = CliRunner().invoke(cli, ["exercise", "validate", "--live", str(path)])
    assert res.exit_code == 2
    assert "conditions.broker_queue_limit: not supported live: the embedded broker" in \
        " ".join(res.stderr.split())


LINKS = """\
[exercise]
name = "live pair and timed links"
seed = 6
duration = 16

[network]
preset = "demo"

[conditions]
latency_ms = 10
jitter_ms = 2

[[conditions.link]]              # deliveries from NCB-US to NCB-DE wait 2 s more
between = ["NCB-US", "NCB-DE"]
latency_ms = 2000

[[conditions.link]]              # Tokyo's link is slow from 5 s to 10 s only
agency = "NCB-JP"
latency_ms = 1200
start = 5
end = 10

[[inject]]
at = 1
action = "send"
name = "us-de"
from = "NCB-US"
to = ["NCB-DE"]

[[inject]]
at = 1
action = "send"
name = "de-us"
from = "NCB-DE"
to = ["NCB-US"]

[[inject]]
at = 2
action = "send"
name = "jp-before"
from = "NCB-FR"
to = ["NCB-JP"]

[[inject]]
at = 6
action = "send"
name = "jp-during"
from = "NCB-FR"
to = ["NCB-JP"]

[[inject]]
at = 11
action = "send"
name = "jp-after"
from = "NCB-FR"
to = ["NCB-JP"]

[[expect]]
kind = "no-loss"
"""


def test_live_links_between_two_agencies_and_with_a_window() -> None:
    run = LiveRun(loads(LINKS, source="links.toml"), settle_s=10.0)
    result = run.run()
    assert result.passed, [(o.kind, o.detail) for o in result.outcomes if not o.passed]

    def latency(name: str, to: str) -> float:
        (msg,) = result.obs.named(name)
        t = msg.latency(to)
        assert t is not None, name
        return t

    assert latency("us-de", "NCB-DE") >= 2.0  # the pair's rule, one way only
    assert latency("de-us", "NCB-US") < 1.5
    assert latency("jp-before", "NCB-JP") < 1.0
    assert latency("jp-during", "NCB-JP") >= 1.1  # a crossing of the slow link (1.2 s ± 2 ms)
    assert latency("jp-after", "NCB-JP") < 1.0
    assert run.proxies.stats("NCB-DE")["packets_held"] >= 1
    assert run.proxies.stats("NCB-JP")["conditions"]["latency_ms"] == 10  # back at the end
