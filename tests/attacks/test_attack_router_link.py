"""Drill: the router's broker link is taken away; the router notices, says so, comes back,
and ``i24net status`` does not call the network up meanwhile.

1. Takeover: a connection with the router's own credentials presents its client id (a
   stolen router password, a second router started by mistake). The broker hands it the
   session and closes the router's link. The transport logs an error naming the client id
   and the likely takeover, the router daemon logs the lost link, reconnects on its own and
   is connected and subscribed again; traffic reaches it afterwards.
2. Status: with the router's account removed from Mosquitto's password file (and Mosquitto
   told to reread it), the router process runs but has no link. ``i24net status`` reports
   the router down (exit 1) until the account is back, then up again (exit 0). Before,
   status judged the router by its process alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from livekit import cli

from i24net.broker import ROUTER_USERNAME, pick_free_port
from i24net.config.home import Home
from i24net.config.presets import preset_toml
from i24net.ops.supervisor import Supervisor
from i24net.shell.runtime import make_broker, make_router

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]


async def _until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_the_router_notices_a_takeover_and_comes_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    home = Home(tmp_path / "home")
    home.init(preset_toml("demo"))
    port = pick_free_port()
    (home.broker_dir / "endpoint.json").write_text(json.dumps(
        {"engine": "embedded", "host": "127.0.0.1", "port": port, "tls_ca": None}))
    prefix = home.directory().prefix
    password = home.broker_passwords()[ROUTER_USERNAME]
    caplog.set_level(logging.INFO)
    async with make_broker(home, "embedded", port):
        router = make_router(home, logger=logging.getLogger("i24net.test-router"))
        async with router.transport, router:
            state = router.link_state()
            assert state["connected"] and state["subscribed"]
            assert state["client"] == ROUTER_USERNAME
            intruder = aiomqtt.Client("127.0.0.1", port, username=ROUTER_USERNAME,
                                      password=password, identifier=ROUTER_USERNAME,
                                      clean_session=False, timeout=5)
            try:
                async with intruder:
                    await _until(lambda: router.link_losses >= 1)
                    await asyncio.sleep(0.5)
            except aiomqtt.MqttError:
                pass  # the router took its session back and knocked the intruder off
            await _until(lambda: router.link_state()["connected"])
            state = router.link_state()
            assert state["subscribed"] and state["link_losses"] >= 1
            assert state["suspected_takeovers"] >= 1
            before = sum(router.machine.counters.values())
            async with aiomqtt.Client("127.0.0.1", port, username="NCB-FR",
                                      password=home.broker_passwords()["NCB-FR"],
                                      identifier="NCB-FR:drill") as fr:
                await fr.publish(f"{prefix}/submit/NCB-FR", b"not an envelope", qos=1)
            await _until(lambda: sum(router.machine.counters.values()) > before)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("lost its broker link" in m for m in errors), errors
    assert any(f"presented client id '{ROUTER_USERNAME}' and took its session over" in m
               for m in errors), errors


def _mosquitto_pid(broker_pid: int) -> int:
    for task in Path(f"/proc/{broker_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"mosquitto" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
    raise AssertionError("no mosquitto child of the broker process")


def _status(home: Path) -> tuple[int, dict[str, dict[str, object]]]:
    r = cli(home, "status", "--json", "--no-counts")
    return r.returncode, {p["name"]: p for p in json.loads(r.stdout)["processes"]}


@pytest.fixture
def mosquitto_network(tmp_path: Path) -> Iterator[Path]:
    if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("mosquitto is not installed (make install installs it)")
    home = tmp_path / "home"
    assert cli(home, "init", "--preset", "demo", "--port", str(pick_free_port())) \
        .returncode == 0
    up = cli(home, "up", "--engine", "mosquitto", "--hosts", "1", timeout=120)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield home
    finally:
        cli(home, "down")


def test_status_says_the_router_is_down_while_it_has_no_broker_link(
        mosquitto_network: Path) -> None:
    home = mosquitto_network
    code, rows = _status(home)
    assert code == 0 and rows["router"]["up"], rows["router"]
    passwd = home / "broker" / "mosquitto" / "passwd"
    saved = passwd.read_text()
    mosquitto = _mosquitto_pid(Supervisor(Home(home)).load()["broker"].pid)
    passwd.write_text("".join(line for line in saved.splitlines(keepends=True)
                              if not line.startswith(f"{ROUTER_USERNAME}:")))
    os.kill(mosquitto, signal.SIGHUP)  # Mosquitto disconnects and then refuses the router
    deadline = time.monotonic() + 15
    while True:
        code, rows = _status(home)
        if not rows["router"]["up"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert code == 1 and not rows["router"]["up"], rows["router"]
    assert rows["router"]["state"] == "disconnected"
    assert "not connected to the broker" in str(rows["router"]["detail"])
    assert rows["broker"]["up"]  # the broker itself runs
    passwd.write_text(saved)
    os.kill(mosquitto, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        code, rows = _status(home)
        if code == 0:
            break
        time.sleep(0.3)
    assert code == 0 and rows["router"]["up"], rows["router"]
