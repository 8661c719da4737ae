"""The outside history sees what the node's own audit misses.

NCB-FR streams messages to NCB-DE (its own process). Right after NCB-DE hands a message to
its application, and while the audit line for it is still in the daemon's buffer, the test
freezes the process (SIGSTOP, so the moment is held still and checked: the hand-over is in
the node's hand-over log, the audit file lacks it) and SIGKILLs it: the audit line is gone
for good. While NCB-DE is down, a second hand-over of a message it already held is written
into its store, as a node that forgot it had delivered would. Then NCB-DE restarts and the
stream completes.

The checker, reading only the outside history (the feeder's submits, NCB-DE's application
consumer, NCB-FR's outcomes), must see every delivery, the one the audit lost included,
and exactly one duplicate: the planted one.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from i24net.core.node import InboxItem
from i24net.ops import client
from i24net.ops.chaos import prepare
from i24net.ops.history import Consumers, History, judge, record_outcomes
from i24net.ops.supervisor import Supervisor
from i24net.shell.runtime import node_store_path
from i24net.store import SqliteNodeStore

# one worker runs the soak tests in turn (make test: --dist loadgroup)
pytestmark = [pytest.mark.broker, pytest.mark.xdist_group("soak")]

A, B = "NCB-FR", "NCB-DE"
N = 400
RATE = 150.0  # messages a second: NCB-DE is seldom idle, so its audit buffer is seldom empty
ATTEMPTS = 300  # freezes tried before giving up on catching an unflushed hand-over
DEADLINE_S = 180.0


def audited(home_logs: Path) -> set[str]:
    path = home_logs / f"audit-{B}.jsonl"
    if not path.exists():
        return set()
    return {json.loads(line)["msg_id"] for line in path.read_bytes().splitlines()
            if b'"received"' in line}


@pytest.mark.timeout(300)
def test_a_delivery_the_audit_lost_in_a_sigkill_is_still_seen(tmp_path: Path) -> None:
    home = prepare(tmp_path / "home", 0, "embedded", preset="demo")
    sup = Supervisor(home)
    history = History(tmp_path / "history.jsonl", "audit-gap")
    consumers = Consumers(home, [B], history, interval=0.1)
    fed: list[bytes] = []
    stop = threading.Event()

    def feed() -> None:
        t0 = time.monotonic()
        for i in range(N):
            if stop.is_set():
                return
            h = client.send(home, A, [B], subject=f"m-{i:04d}", text="audit gap")
            history.submit(h.id, A, [B])
            history.flush()
            fed.append(h.id)
            ahead = t0 + (i + 1) / RATE - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    try:
        sup.up("embedded", isolate=[B])
        consumers.start()
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        store = SqliteNodeStore(node_store_path(home, B), readonly=True)
        caught = None
        try:
            pid = sup.load()[B].pid
            last = 0
            for _ in range(ATTEMPTS):
                while True:  # the next hand-over, as soon as it is committed
                    newest = store.handovers(after=last, limit=1000)
                    if newest:
                        break
                    time.sleep(0.0005)
                os.killpg(pid, signal.SIGSTOP)
                logged = store.handovers(after=0, limit=10_000)
                last = logged[-1].seq
                missing = {h.msg_id.hex() for h in logged} - audited(home.logs_dir)
                if missing:  # handed over, and its audit line still only in the buffer
                    caught = (missing, len(logged))
                    sup.kill(B)  # SIGKILL ends a stopped process too
                    break
                os.killpg(pid, signal.SIGCONT)
        finally:
            store.close()
        assert caught is not None, f"no unflushed hand-over caught in {ATTEMPTS} freezes"
        lost_by_audit, handed_at_kill = caught
        time.sleep(0.3)
        assert lost_by_audit - audited(home.logs_dir), "the audit got them after all"
        # while NCB-DE is down: a repeat hand-over its audit never hears of
        again = next(iter(sorted(lost_by_audit)))
        with SqliteNodeStore(node_store_path(home, B)) as down_store:
            item = down_store.inbox_get(bytes.fromhex(again))
            assert item is not None
            down_store.inbox_put(InboxItem(item.msg_id, item.sender, item.kind, item.label,
                                           item.precedence, item.subject, item.text,
                                           item.data, item.created_ms, item.received_ms + 1))
        sup.wait_ready([sup.spawn(B)])
        feeder.join(timeout=DEADLINE_S)
        assert not feeder.is_alive() and len(fed) == N
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            with SqliteNodeStore(node_store_path(home, A), readonly=True) as s:
                if s.counts()["outbox.delivered"] >= N:
                    break
            time.sleep(0.5)
        time.sleep(1.0)
    finally:
        stop.set()
        try:
            consumers.stop()
        finally:
            sup.down()
    record_outcomes(home, [A], history)
    history.close()
    v = judge(tmp_path / "history.jsonl")
    summary = json.dumps(v.summary(), indent=1)
    print(f"\naudit lost {len(lost_by_audit)} received line(s) of {handed_at_kill} hand-overs "
          f"at the kill; verdict {summary}")
    assert v.submitted == N
    assert v.counts["duplicated"] == 1 and v.ids["duplicated"] == [again], summary
    assert v.counts["delivered"] == N - 1, summary
    assert v.deliveries == N + 1, summary  # every hand-over, the lost-to-audit ones too
    assert v.failures == [f"duplicated: 1 message(s) ({again})"], summary
