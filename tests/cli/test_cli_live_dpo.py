"""Data protection on a real network (``i24net up``, embedded broker): a diffusion past
its retention is gone from the recipient's store, its audit line remains, and ``audit dpo``
shows when and why; a renewed one is kept; ``audit dpo`` lists hand-overs and onward
messages."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from livekit import cli, network_up

from i24net.broker import pick_free_port
from i24net.config.home import Home
from i24net.shell.runtime import node_store_path
from i24net.store import SqliteNodeStore

pytestmark = pytest.mark.broker

RETENTION_S = 4
SEND = ("publish", "--as", "NCB-US", "--to", "NCB-BR", "--kind", "diffusion",
        "--classification", "RESTRICTED", "--handling", "H1", "--text", "the body")


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    assert cli(home, "init", "--preset", "demo", "--port", str(pick_free_port())) \
        .returncode == 0
    spec = home / "network.toml"
    text = spec.read_text()
    assert 'diffusion = "365d"' in text  # the preset's rule, shortened for the test
    spec.write_text(text.replace('diffusion = "365d"', f'diffusion = "{RETENTION_S}s"'))
    with network_up(home, "--hosts", "1"):
        yield home


def dpo(home: Path, agency: str) -> dict[str, Any]:
    r = cli(home, "audit", "dpo", agency, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    record: dict[str, Any] = json.loads(r.stdout)
    return record


def item(record: dict[str, Any], msg_id: str) -> dict[str, Any]:
    (found,) = [i for i in record["items"] if i["id"] == msg_id]
    return found


def send(home: Path, subject: str) -> str:
    sent = cli(home, *SEND, "--subject", subject, "--json", "--wait", "30")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    msg_id: str = json.loads(sent.stdout)["id"]
    return msg_id


def test_a_diffusion_past_its_retention_is_erased_and_the_dpo_record_says_so(
        network: Path) -> None:
    gone, kept = send(network, "Wanted: to be erased"), send(network, "Wanted: renewed")
    record = dpo(network, "NCB-BR")
    assert record["retention_days"] == {"alert": 90, "diffusion": RETENTION_S / 86_400}
    held = item(record, gone)
    assert (held["kind"], held["from"], held["label"], held["handling"], held["state"]) == (
        "diffusion", "NCB-US", "RESTRICTED", ["H1"], "new")
    assert held["retained_until_ms"] == held["received_ms"] + RETENTION_S * 1000
    assert held["erased_ms"] is None and len(held["handovers"]) == 1
    assert [a["event"] for a in held["audit"]] == ["received"]
    renewed = cli(network, "audit", "renew", "NCB-BR", kept[:10], "--for", "1d")
    assert renewed.returncode == 0 and "kept" in renewed.stdout, renewed.stderr

    deadline = time.monotonic() + RETENTION_S + 20
    while item(dpo(network, "NCB-BR"), gone)["state"] != "purged":
        assert time.monotonic() < deadline, "the diffusion was never erased"
        time.sleep(0.5)
    record = dpo(network, "NCB-BR")
    erased = item(record, gone)
    assert erased["erased_ms"] >= erased["received_ms"] + RETENTION_S * 1000
    assert [(a["event"], a["reason"]) for a in erased["audit"]] == [
        ("received", ""), ("purged", "retention.expired")]
    with SqliteNodeStore(node_store_path(Home(network), "NCB-BR"), readonly=True) as store:
        body = store.inbox_get(bytes.fromhex(gone))
        assert body is not None and (body.subject, body.text, body.data) == ("", "", {})
        renewed_item = store.inbox_get(bytes.fromhex(kept))
        assert renewed_item is not None and renewed_item.subject == "Wanted: renewed"
    assert item(record, kept)["state"] == "new" and item(record, kept)["renewed_until_ms"]
    assert (record["held"], record["erased"]) >= (1, 1)

    table = cli(network, "audit", "dpo", "NCB-BR")
    assert table.returncode == 0 and "1 held, 1 erased" in table.stdout, table.stderr
    assert "retention: alert 90 d, diffusion 4.0 s" in table.stdout
    again = cli(network, "audit", "renew", "NCB-BR", gone, "--for", "1d")
    assert again.returncode != 0 and "nothing left to keep" in again.stderr
    # the sender keeps its own copy: retention is what a recipient holds
    assert all(i["state"] != "purged" for i in dpo(network, "NCB-US")["items"])
