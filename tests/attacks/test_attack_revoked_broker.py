"""Drill: a revoked agency loses the broker within seconds, not at the next broker restart.

``i24net broker`` follows the home's signed directory (``runtime.follow_directory``): when
``i24net directory revoke NCB-ZA`` issues the new version, the running broker reloads its
accounts (embedded: in process; Mosquitto: files rewritten and SIGHUP), closes NCB-ZA's open
connection and refuses its next login, while the other agencies stay connected. Before, the
broker kept every agency's account until it was restarted (the router refused the revoked
agency's messages, but the broker still carried them and served its inbox).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from livekit import cli, demo_home, spawn, wait_ready

from i24net.config.home import Home

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

REVOKED, OTHER = "NCB-ZA", "NCB-FR"
WITHIN_S = 5.0


@pytest.fixture(params=["embedded", "mosquitto"])
def broker_home(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    engine = request.param
    home, port = demo_home(tmp_path, engine)
    proc = spawn(home, "broker", "broker", "--engine", engine)
    try:
        wait_ready(home, "broker", proc, "ready 127.0.0.1")
        yield home, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _client(port: int, agency: str, password: str) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", port, username=agency, password=password,
                          identifier=f"{agency}:drill", clean_session=False, timeout=5)


async def test_a_revoked_agency_is_disconnected_and_refused(
        broker_home: tuple[Path, int]) -> None:
    home, port = broker_home
    passwords = Home(home).broker_passwords()
    prefix = Home(home).directory().prefix
    async with _client(port, OTHER, passwords[OTHER]) as other:
        revoked = _client(port, REVOKED, passwords[REVOKED])
        await revoked.__aenter__()
        try:
            await revoked.subscribe(f"{prefix}/inbox/{REVOKED}", qos=1)
            done = await asyncio.to_thread(cli, home, "directory", "revoke", REVOKED)
            assert done.returncode == 0, done.stdout + done.stderr
            started = time.monotonic()
            with pytest.raises(aiomqtt.MqttError):
                async with asyncio.timeout(WITHIN_S):
                    while True:
                        await revoked.publish(f"{prefix}/submit/{REVOKED}", b"x", qos=1,
                                              timeout=1)
                        await asyncio.sleep(0.1)
            assert time.monotonic() - started < WITHIN_S
        finally:
            try:
                await revoked.__aexit__(None, None, None)
            except aiomqtt.MqttError:
                pass
        with pytest.raises(aiomqtt.MqttError, match=r"(?i)not authori[sz]ed|bad user"):
            async with _client(port, REVOKED, passwords[REVOKED]):
                pytest.fail("the revoked agency could still log in")
        await other.publish(f"{prefix}/submit/{OTHER}", b"still here", qos=1, timeout=5)
    log = (home / "logs" / "test-broker.log").read_text()
    assert f"broker accounts reloaded (removed: {REVOKED}; added: none)" in log
