"""Refused logins and denied publishes, subscriptions and deliveries are logged, rate-limited.

Each kind of refusal has a token bucket (``refusals.LOG_BURST`` lines at once, then
``LOG_PER_SECOND``); a flood of 500 denied publishes writes the burst, not 500 lines, and
the next line written says how many were held back. The embedded broker logs through
``i24net.broker.embedded`` (``RefusalLog``), Mosquitto through i24net's plugin into its log.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import pytest
from aiomqtt import MqttError

from i24net.broker import ROUTER_USERNAME, MosquittoBroker, start_broker
from i24net.broker.refusals import LOG_BURST, RefusalLog, shown

from .support import (
    DE,
    FR,
    PREFIX,
    Endpoint,
    Network,
    connect,
    messages_within,
    next_message,
    requires_mosquitto,
)

pytestmark = [pytest.mark.timeout(120)]

INBOX_FR = f"{PREFIX}/inbox/{FR}"
SUBMIT_DE = f"{PREFIX}/submit/{DE}"
FLOOD = 500


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_writes_the_burst_then_one_a_second_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    log = RefusalLog(logging.getLogger("test.refusals"), burst=3, per_second=1, clock=clock)
    with caplog.at_level(logging.WARNING, "test.refusals"):
        written = [log.refused("refused %d", n) for n in range(10)]
        assert written == [True] * 3 + [False] * 7
        clock.now += 0.5
        assert not log.refused("refused %d", 10)
        clock.now += 0.5
        assert log.refused("refused %d", 11)
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0", "refused 1", "refused 2", "refused 11 (and 8 more not logged)"]
    assert log.refusals == 12 and log.suppressed == 0


def test_names_are_quoted_and_cut() -> None:
    assert shown("a\nb") == "'a\\nb'"
    assert len(shown("x" * 10_000)) == 200
    assert shown(None) == "'None'"


async def _flood_denied_publishes(endpoint: Endpoint, network: Network) -> None:
    async with connect(endpoint, network, FR, clean_session=True) as fr:
        await fr.subscribe(INBOX_FR, qos=1)
        async with connect(endpoint, network, DE, clean_session=True) as de:
            for n in range(FLOOD):
                await de.publish(INBOX_FR, f"forged {n}".encode(), qos=1)
            await de.publish(SUBMIT_DE, b"allowed", qos=1)
        assert await messages_within(fr) == []


@pytest.mark.broker
async def test_the_embedded_broker_logs_a_flood_of_refusals_in_a_few_lines(
    network: Network, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with start_broker("embedded", tmp_path / "e", network.accounts) as broker:
        endpoint = Endpoint("embedded", broker.host, broker.port)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, "i24net.broker.embedded"):
            await _flood_denied_publishes(endpoint, network)
            for _ in range(FLOOD):
                with pytest.raises(MqttError):
                    async with connect(endpoint, network, DE, identifier=FR):
                        pass
            await asyncio.sleep(1.1)
            await _flood_denied_publishes(endpoint, network)
            with pytest.raises(MqttError):
                async with connect(endpoint, network, DE, identifier=FR):
                    pass
        elapsed = time.monotonic() - started
        lines = [r.getMessage() for r in caplog.records if r.name == "i24net.broker.embedded"]
    denied = [ln for ln in lines if ln.startswith("refused publish")]
    logins = [ln for ln in lines if ln.startswith("refused login")]
    assert denied[0] == (f"refused publish on '{INBOX_FR}' for '{DE}' (client '{DE}')")
    assert logins[0].startswith(f"refused login of '{DE}': client id '{FR}' does not belong")
    for written in (denied, logins):  # the burst, then one a second at most, with the count
        assert LOG_BURST < len(written) <= LOG_BURST + elapsed + 1, (len(written), elapsed)
        assert any(re.search(r"\(and \d+ more not logged\)$", ln) for ln in written)


@pytest.mark.broker
@requires_mosquitto
async def test_mosquitto_logs_a_flood_of_refusals_in_a_few_lines(
    network: Network, tmp_path: Path
) -> None:
    started = time.monotonic()
    async with MosquittoBroker(tmp_path / "m", network.accounts) as broker:
        endpoint = Endpoint("mosquitto", broker.host, broker.port)
        await _flood_denied_publishes(endpoint, network)
        for _ in range(FLOOD // 5):
            with pytest.raises(MqttError):
                async with connect(endpoint, network, DE, identifier=ROUTER_USERNAME):
                    pass
        await asyncio.sleep(1.1)
        await _flood_denied_publishes(endpoint, network)
        with pytest.raises(MqttError):
            async with connect(endpoint, network, DE, identifier=ROUTER_USERNAME):
                pass
        async with (  # the broker still serves
            connect(endpoint, network, ROUTER_USERNAME) as router,
            connect(endpoint, network, DE) as de,
        ):
            await router.subscribe(f"{PREFIX}/submit/+", qos=1)
            await de.publish(SUBMIT_DE, b"control", qos=1)
            assert (await next_message(router)).payload == b"control"
        log = broker.log_path.read_text()
    elapsed = time.monotonic() - started
    denied = re.findall(r"i24net: denied publish by .*", log)
    logins = re.findall(r"i24net: refused login of .*", log)
    assert denied[0] == f"i24net: denied publish by {DE} (client '{DE}') on '{INBOX_FR}'"
    assert logins[0].startswith(f"i24net: refused login of {DE} from 127.0.0.1: client id "
                                f"'{ROUTER_USERNAME}' does not belong to that account")
    for written in (denied, logins):  # the burst, then one a second at most, with the count
        assert LOG_BURST < len(written) <= LOG_BURST + elapsed + 1, (len(written), elapsed)
        assert any(re.search(r"\(and \d+ more not logged\)$", ln) for ln in written)
