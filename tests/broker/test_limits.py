"""Packet size caps: an oversized MQTT packet is refused before the broker buffers it.

A client announces a PUBLISH of 200 MB and streams it. The embedded broker reads the fixed
header, sees a remaining length over the account's cap (``limits.AGENCY_MAX_PACKET``) and
drops the connection; Mosquitto does the same from its ``max_packet_size``. Either way the
sender gets only a few megabytes into the socket buffers, the broker's memory stays where it
was, and the router account subscribed to every submit topic receives nothing while the
broker keeps serving. Packets up to the caps pass: an envelope of ``MAX_ENVELOPE`` bytes from
an agency, a directory-sized message from the router.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from i24net.broker import ROUTER_USERNAME, MosquittoBroker, start_broker
from i24net.broker.limits import AGENCY_MAX_PACKET, ROUTER_MAX_PACKET
from i24net.core.wire import MAX_ENVELOPE

from .support import (
    FR,
    HOST,
    PREFIX,
    Endpoint,
    Network,
    connect,
    messages_within,
    next_message,
    requires_mosquitto,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

SUBMIT_FR = f"{PREFIX}/submit/{FR}"
INBOX_FR = f"{PREFIX}/inbox/{FR}"
HUGE = 200 * 1024 * 1024
CHUNK = 1024 * 1024
# What loopback socket buffers can hold on the way: far below the 200 MB announced.
MAX_SENT = 32 * 1024 * 1024
MAX_GROWTH = 64 * 1024 * 1024


def _string(value: str) -> bytes:
    data = value.encode()
    return len(data).to_bytes(2, "big") + data


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _connect_packet(username: str, password: str, client_id: str) -> bytes:
    body = (_string("MQTT") + bytes([4, 0xC2]) + (30).to_bytes(2, "big")
            + _string(client_id) + _string(username) + _string(password))
    return bytes([0x10]) + _length(len(body)) + body


def push_huge_publish(port: int, username: str, password: str, client_id: str) -> tuple[int, bool]:
    """Log in, announce a QoS 0 PUBLISH of ``HUGE`` bytes on FR's submit topic and stream it;
    return the bytes the socket took and whether the broker closed the connection."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(_connect_packet(username, password, client_id))
        connack = sock.recv(4)
        assert connack[:1] == b"\x20" and connack[3:4] == b"\x00", connack
        topic = _string(SUBMIT_FR)
        sock.sendall(bytes([0x30]) + _length(len(topic) + HUGE) + topic)
        chunk = bytes(CHUNK)
        sent = 0
        sock.settimeout(5)
        try:
            while sent < HUGE:
                sent += sock.send(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        try:  # a closed connection reads as EOF or a reset
            closed = sock.recv(1) == b""
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
        return sent, closed


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_the_caps_admit_every_legitimate_packet() -> None:
    assert AGENCY_MAX_PACKET == 1_572_864 >= MAX_ENVELOPE + len(SUBMIT_FR) + 4
    assert ROUTER_MAX_PACKET == 8_454_144


async def _oversized_publish_is_refused(endpoint: Endpoint, network: Network, pid: int) -> None:
    async with connect(endpoint, network, ROUTER_USERNAME, identifier=f"{ROUTER_USERNAME}:spy",
                       clean_session=True) as router:
        await router.subscribe(f"{PREFIX}/submit/+", qos=1)
        before = rss(pid)
        started = time.monotonic()
        sent, closed = await asyncio.to_thread(
            push_huge_publish, endpoint.port, FR, network.passwords[FR], f"{FR}:huge")
        assert closed, "the broker kept reading the oversized packet"
        assert sent < MAX_SENT, f"the broker took {sent} bytes of an oversized packet"
        assert time.monotonic() - started < 30
        assert rss(pid) - before < MAX_GROWTH
        assert await messages_within(router) == []
        async with connect(endpoint, network, FR) as fr:  # the broker still serves
            await fr.publish(SUBMIT_FR, b"control", qos=1)
        assert (await next_message(router)).payload == b"control"


async def test_the_embedded_broker_refuses_an_oversized_publish(network: Network,
                                                               tmp_path: Path) -> None:
    async with start_broker("embedded", tmp_path / "e", network.accounts) as broker:
        await _oversized_publish_is_refused(Endpoint("embedded", broker.host, broker.port),
                                            network, os.getpid())


@requires_mosquitto
async def test_mosquitto_refuses_an_oversized_publish(network: Network, tmp_path: Path) -> None:
    async with MosquittoBroker(tmp_path / "m", network.accounts) as broker:
        assert broker.pid is not None
        await _oversized_publish_is_refused(Endpoint("mosquitto", broker.host, broker.port),
                                            network, broker.pid)


async def test_the_embedded_broker_process_stays_small(network: Network, tmp_path: Path) -> None:
    async with start_broker("embedded-process", tmp_path / "e", network.accounts) as broker:
        assert broker.pid is not None
        await _oversized_publish_is_refused(Endpoint("embedded", broker.host, broker.port),
                                            network, broker.pid)


async def test_packets_at_the_caps_pass_and_above_do_not(broker: Endpoint,
                                                         network: Network) -> None:
    """An envelope of MAX_ENVELOPE bytes from an agency and a 4 MB message from the router
    (a large directory) arrive. An agency's 2 MB payload, under Mosquitto's broker-wide
    max_packet_size, is dropped too: by the embedded broker's per-account cap (the link is
    closed) or by the Mosquitto plugin (acknowledged and dropped, as any denied publish)."""
    envelope = os.urandom(MAX_ENVELOPE)
    directory = os.urandom(4_000_000)
    async with (
        connect(broker, network, ROUTER_USERNAME, clean_session=True) as router,
        connect(broker, network, FR, clean_session=True) as fr,
    ):
        await router.subscribe(f"{PREFIX}/submit/+", qos=1)
        await fr.subscribe(INBOX_FR, qos=1)
        await fr.publish(SUBMIT_FR, envelope, qos=1, timeout=20)
        assert (await next_message(router, timeout=20)).payload == envelope
        await router.publish(INBOX_FR, directory, qos=1, timeout=20)
        assert (await next_message(fr, timeout=20)).payload == directory
    async with connect(broker, network, ROUTER_USERNAME, clean_session=True) as router:
        await router.subscribe(f"{PREFIX}/submit/+", qos=1)
        try:
            async with connect(broker, network, FR, identifier=f"{FR}:big",
                               clean_session=True) as fr:
                # Mosquitto acknowledges within milliseconds; the embedded broker's closed
                # link shows as this timeout, so it is short
                await fr.publish(SUBMIT_FR, bytes(2 * 1024 * 1024), qos=1, timeout=4)
        except Exception:  # the embedded broker closes the link: whatever error that gives
            assert broker.engine == "embedded"
        assert await messages_within(router, 1.0) == []
