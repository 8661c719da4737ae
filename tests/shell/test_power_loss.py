"""A power loss: every write the stores had not synced is gone, and the network restarts.

The network (``i24net up``: broker, router, node host) runs with an ``LD_PRELOAD`` shim
(``data/fsync_snapshot.c``) that copies each store file aside each time it is synced. The
power loss kills every process of the home mid-stream and puts every store file back as
it was at its last sync (a file never synced is gone), the ``-shm`` files too (SQLite
rebuilds them). After the restart nothing that was acknowledged may be missing:

- to its user: every message ``i24net publish`` returned for (durable in the sender's
  outbox) is still there and is delivered;
- to a peer: every message whose ``delivered`` receipt the recipient published (seen by an
  outside subscriber on the broker) is in the recipient's inbox, and every report and stamp
  the router sent stands (the sender's outbox, judged after the restart).

The daemons commit in batches and sync each commit (an fsync of the WAL, off the event
loop) before they publish or report what it decided (``daemons.SyncGate``); ``publish``
writes with ``synchronous=FULL``. Without the syncs the committed-but-unsynced tail is lost
here and this test fails. (A reader of a store sees an item from its commit on, which may
be up to one sync before it is durable: only what is published or told waits.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from livekit import cli, processes_of

from i24net.broker import pick_free_port
from i24net.config.home import ROUTER_ACCOUNT, Home
from i24net.core import frames as fr
from i24net.shell.runtime import endpoint, node_store_path
from i24net.store import SqliteNodeStore

pytestmark = pytest.mark.broker

SHIM = Path(__file__).with_name("data") / "fsync_snapshot.c"
MESSAGES = 60
CUT_AFTER = 36  # publishes returned before the power goes


def build_shim(tmp: Path) -> Path:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the fsync shim (Debian: apt-get install gcc)")
    out = tmp / "fsync_snapshot.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(out), str(SHIM), "-ldl"],
                   check=True, capture_output=True, timeout=60)
    return out


class Wiretap:
    """An outside subscriber on the recipient's submit topic: the ``delivered`` receipts
    it published, verified (the broker account of the router, its own client id)."""

    def __init__(self, home: Path, agency: str) -> None:
        self.home = Home(home)
        self.agency = agency
        self.acked: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _listen(self) -> None:
        from i24net.transport.mqtt import MqttTransport

        ep = endpoint(self.home)
        d = self.home.directory()
        async with MqttTransport(ep.host, ep.port, client_id=f"{ROUTER_ACCOUNT}:wiretap",
                                 username=ROUTER_ACCOUNT,
                                 password=self.home.broker_passwords()[ROUTER_ACCOUNT],
                                 clean_session=True, connect_timeout=5,
                                 publish_timeout=5) as t:
            await t.subscribe(f"{d.prefix}/submit/{self.agency}")
            self._ready.set()
            async for got in t.deliveries():
                if fr.peek_magic(got.payload) != fr.RECEIPT:
                    continue
                rec = fr.verify_receipt(fr.parse_frame(got.payload), d)
                if rec.status == "delivered":
                    self.acked.add(rec.msg_id.hex())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        listening = asyncio.ensure_future(self._listen())
        await self._stop.wait()
        listening.cancel()
        with contextlib.suppress(BaseException):  # cancelled, or the broker went first
            await listening

    def __enter__(self) -> Wiretap:
        self._thread.start()
        self._main_done = asyncio.run_coroutine_threadsafe(self._main(), self._loop)
        assert self._ready.wait(10), "the wiretap did not connect"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._main_done.result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def power_loss(home: Path) -> dict[str, int]:
    """Kill every process of the home at once, then put each store file back as it was at
    its last sync. Returns how many files were rolled back, removed, reset."""
    pids = processes_of(home)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while processes_of(home):
        assert time.monotonic() < deadline, f"still running: {processes_of(home)}"
        time.sleep(0.05)
    done = {"rolled back": 0, "never synced": 0, "shm": 0}
    state = home / "state"
    for f in sorted(state.iterdir()):
        if f.name.endswith((".sqlite", ".sqlite-wal")):
            synced = f.with_name(f.name + ".synced")
            if synced.exists():
                os.replace(synced, f)
                done["rolled back"] += 1
            else:
                f.unlink()
                done["never synced"] += 1
        elif f.name.endswith(".sqlite-shm"):
            f.unlink()
            done["shm"] += 1
    for f in state.iterdir():
        if ".synced" in f.name:
            f.unlink()
    return done


def outbox(home: Path, agency: str) -> dict[str, str]:
    r = cli(home, "outbox", agency, "--json", "--limit", "100000")
    assert r.returncode == 0, r.stdout + r.stderr
    return {e["id"]: e["state"] for e in json.loads(r.stdout)}


def inbox_ids(home: Path, agency: str) -> set[str]:
    with SqliteNodeStore(node_store_path(Home(home), agency), readonly=True) as store:
        return {i.msg_id.hex() for i in store.inbox_list(limit=None)}


def test_nothing_acknowledged_is_lost_when_the_power_goes(tmp_path: Path) -> None:
    shim = build_shim(tmp_path)
    home = tmp_path / "home"
    assert cli(home, "init", "--preset", "demo", "--port", str(pick_free_port())) \
        .returncode == 0
    env = {**os.environ, "LD_PRELOAD": str(shim),
           "I24NET_SNAPSHOT_DIR": str(home / "state") + "/"}
    try:
        up = cli(home, "up", "--hosts", "1", env=env, timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr
        returned: list[str] = []
        lock = threading.Lock()
        cut = threading.Event()

        def send(n: int) -> None:
            if cut.is_set():
                return
            r = cli(home, "publish", "--as", "NCB-FR", "--to", "NCB-DE", "--classification",
                    "RESTRICTED", "--subject", f"m{n}", "--json", env=env)
            if r.returncode == 0:
                with lock:
                    returned.append(json.loads(r.stdout)["id"])
                    if len(returned) >= CUT_AFTER:
                        cut.set()

        with Wiretap(home, "NCB-DE") as tap, ThreadPoolExecutor(4) as pool:
            for n in range(MESSAGES):
                pool.submit(send, n)
            assert cut.wait(120), f"only {len(returned)} publishes returned"
            with lock:
                acked_user = list(returned)
            acked_peer = set(tap.acked)
            rolled = power_loss(home)  # the publishes still running die with the rest
        assert rolled["rolled back"] >= 2, rolled  # the stores did sync along the way
        assert acked_peer, "no receipt was seen before the power went"

        up = cli(home, "up", "--hosts", "1", timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr
        after = inbox_ids(home, "NCB-DE")
        assert not acked_peer - after, \
            f"receipted, then lost by the recipient: {sorted(acked_peer - after)}"
        sent = outbox(home, "NCB-FR")
        assert not set(acked_user) - set(sent), \
            f"acknowledged to the user, then lost: {sorted(set(acked_user) - set(sent))}"
        deadline = time.monotonic() + 90
        while any(sent[m] != "delivered" for m in acked_user):
            assert time.monotonic() < deadline, {m: sent[m] for m in acked_user
                                                 if sent[m] != "delivered"}
            time.sleep(0.5)
            sent = outbox(home, "NCB-FR")
        assert set(acked_user) <= inbox_ids(home, "NCB-DE")
    finally:
        cli(home, "down", timeout=60)
        for pid in processes_of(home):
            os.kill(pid, signal.SIGKILL)
