"""A quick chaos soak (the CI variant of ``make chaos``): kills during traffic, then the
checker must find nothing lost, duplicated or unexpected."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from i24net.chaos import check, prepare

pytestmark = pytest.mark.broker


@pytest.mark.skipif(not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists(),
                    reason="mosquitto is not installed (make install installs it)")
def test_quick_chaos_soak_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    run = subprocess.run(
        [sys.executable, "-m", "i24net", "chaos", "--messages", "300", "--nodes", "5",
         "--duration", "18", "--seed", "7", "--settle", "120", "--home",
         str(tmp_path / "home"), "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    report = json.loads(out.read_text())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    for key in ("sent", "accepted", "delivered", "lost", "duplicated", "unexpected",
                "failed", "kills"):
        assert isinstance(report[key], int), key
    assert report["sent"] == 300 and report["kills"] > 0
    assert report["lost"] == report["duplicated"] == report["unexpected"] == 0
    assert report["delivered"] == report["accepted"]


def test_checker_finds_loss_duplicates_and_strangers(tmp_path: Path) -> None:
    """The checker itself: doctor the histories and it must notice."""
    import os
    from dataclasses import replace

    from i24net import client
    from i24net.core.node import InboxItem

    home = prepare(tmp_path / "home", 3, "embedded")
    agencies = sorted(a for a in home.directory().agencies if a.startswith("LEA-"))
    a, b = agencies[0], agencies[1]
    sent = [client.send(home, a, [b], subject=f"m{i}") for i in range(3)]
    with client.open_store(home, a) as store:
        for h in sent:  # the sender saw every message accepted and receipted
            store.outbox_put(replace(store.outbox_get(h.id), state="delivered",
                                     receipts={b: "delivered"}))
    with client.open_store(home, b) as store:
        for h in sent[:2]:  # the third never arrives: lost
            store.inbox_put(InboxItem(h.id, a, "message", "UNCLASSIFIED", 3, "s", "", {},
                                      h.created_ms, h.created_ms + 5))
        store.inbox_put(InboxItem(os.urandom(16), a, "message", "UNCLASSIFIED", 3, "x", "",
                                  {}, 1, 2))  # never sent: unexpected
    home.logs_dir.mkdir(exist_ok=True)
    line = json.dumps({"event": "received", "msg_id": sent[0].id.hex()})
    (home.logs_dir / f"audit-{b}.jsonl").write_text(line + "\n" + line + "\n")
    r = check(home, agencies)
    assert (r.sent, r.accepted, r.delivered, r.lost, r.unexpected, r.duplicated) == \
        (3, 3, 2, 1, 1, 1)
    assert r.lost_ids == [sent[2].id.hex()]
