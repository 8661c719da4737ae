"""``i24net publish`` and ``i24net inbox`` without a broker: the files they read and write.

``publish`` seals into the sender's durable outbox (the running node sends it), so it works
and is testable with no daemon at all; ``--wait`` then times out with exit code 4. ``inbox``
reads a node's store read-only.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from i24net.config.home import Home, now_ms
from i24net.core.envelope import Envelope
from i24net.core.node import InboxItem
from i24net.shell.runtime import node_store_path
from i24net.store import SqliteNodeStore

Run = Callable[..., Result]  # the ``run`` fixture (tests/cli/conftest.py)

MESSAGE = ("--as", "NCB-DE", "--to", "NCB-FR", "--classification", "CONFIDENTIAL",
           "--caveat", "EU", "--subject", "Wanted: J. Doe")


def publish(run: Run, home: Path, *extra: str, text: str | None = "seen in Lyon") -> Result:
    """``publish --queue``: no node runs here, so the message is queued for later."""
    body = ("--text", text) if text is not None else ()
    return run("publish", "--queue", *MESSAGE, *body, *extra, "--home", home)


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_publish_writes_a_sendable_outbox_entry_and_prints_its_id(run: Run, home: Path) -> None:
    result = publish(run, home)
    assert result.exit_code == 0, result.output
    found = re.search(r"queued message ([0-9a-f]{32}) in NCB-DE's outbox for NCB-FR",
                      result.stdout)
    assert found, result.stdout
    msg_id = bytes.fromhex(found.group(1))
    store = SqliteNodeStore(node_store_path(Home(home), "NCB-DE"), readonly=True)
    entry = store.outbox_get(msg_id)
    assert entry is not None
    assert entry.next_ms == 0  # the node daemon sends it on its very next tick
    assert (entry.state, entry.recipients, entry.subject) == ("queued", ("NCB-FR",),
                                                              "Wanted: J. Doe")
    header = Envelope.parse(entry.raw).header
    assert header.id == msg_id and header.sender == "NCB-DE"
    assert header.label.marking == "CONFIDENTIAL//EU"


def test_wait_without_a_running_node_times_out_with_exit_4(run: Run, home: Path) -> None:
    start = time.monotonic()
    result = publish(run, home, "--wait", "0.5")
    assert 0.5 <= time.monotonic() - start < 10
    assert result.exit_code == 4, result.output
    assert "queued message" in result.stdout  # durable before the wait began
    lines = error_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("ERROR:") and "within 0.5s" in lines[0]
    assert "(timeout)" in lines[0] and "Traceback" not in result.output


def test_inbox_of_an_agency_without_a_store(run: Run, home: Path) -> None:
    result = run("inbox", "NCB-FR", "--home", home)
    assert result.exit_code == 1, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("ERROR:")
    assert "NCB-FR has no store yet" in lines[0] and "i24net node NCB-FR" in lines[0]
    assert not node_store_path(Home(home), "NCB-FR").exists()  # inbox never creates one


def test_inbox_of_an_unknown_agency(run: Run, home: Path) -> None:
    result = run("inbox", "NCB-XX", "--home", home)
    assert result.exit_code != 0
    assert "ERROR:" in result.stderr and "NCB-XX" in result.stderr
    assert "Traceback" not in result.output


def test_inbox_json_lists_what_the_store_holds(run: Run, home: Path) -> None:
    store = SqliteNodeStore(node_store_path(Home(home), "NCB-FR"))
    t = now_ms()
    items = [InboxItem(bytes([i]) * 16, "NCB-DE", "diffusion", "CONFIDENTIAL//EU", p,
                       f"subject {i}", "text", {"colour": "red"} if i else {}, t - 1000 + i,
                       t + i) for i, p in ((1, 3), (2, 0))]
    for item in items:
        store.inbox_put(item)
    store.close()
    result = run("inbox", "NCB-FR", "--json", "--home", home)
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [i["subject"] for i in listed] == ["subject 1", "subject 2"]  # oldest first
    first = listed[0]
    assert first["id"] == (b"\x01" * 16).hex()
    assert (first["from"], first["kind"], first["label"]) == ("NCB-DE", "diffusion",
                                                              "CONFIDENTIAL//EU")
    assert first["precedence"] == "ROUTINE" and listed[1]["precedence"] == "FLASH"
    assert first["data"] == {"colour": "red"} and first["state"] == "new"
    assert first["ref"] is None
    table = run("inbox", "NCB-FR", "--home", home)
    assert table.exit_code == 0 and "subject 2" in table.stdout


def test_inbox_json_of_an_empty_store(run: Run, home: Path) -> None:
    SqliteNodeStore(node_store_path(Home(home), "NCB-FR")).close()
    result = run("inbox", "NCB-FR", "--json", "--home", home)
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_body_file_that_is_not_utf8_is_a_clean_usage_error(run: Run, home: Path,
                                                           tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_bytes(b"caf\xe9 au lait\n")  # Latin-1, not UTF-8
    result = publish(run, home, "--body-file", body, text=None)
    assert result.exit_code == 2, result.output
    assert "--body-file" in result.stderr and "not UTF-8" in result.stderr
    assert "0xe9 at offset 3" in result.stderr
    assert "Traceback" not in result.output
    assert not node_store_path(Home(home), "NCB-DE").exists()  # nothing was queued


def test_body_file_in_utf8_is_sent_verbatim(run: Run, home: Path, tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("café — 東京\n", encoding="utf-8")
    result = publish(run, home, "--body-file", body, text=None)
    assert result.exit_code == 0, result.output
    assert "queued message" in result.stdout


def test_text_and_body_file_together_is_a_usage_error(run: Run, home: Path,
                                                      tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("x")
    result = publish(run, home, "--body-file", body)
    assert result.exit_code == 2
    assert "--text or --body-file, not both" in result.stderr


def test_publish_refused_locally_before_anything_is_queued(run: Run, home: Path) -> None:
    result = run("publish", "--as", "NCB-DE", "--to", "NCB-NOPE", "--classification",
                 "RESTRICTED", "--subject", "s", "--text", "t", "--home", home)
    assert result.exit_code != 0
    assert "ERROR:" in result.stderr and "NCB-NOPE" in result.stderr
    path = node_store_path(Home(home), "NCB-DE")
    assert not path.exists() or SqliteNodeStore(path, readonly=True).outbox_active() == []
