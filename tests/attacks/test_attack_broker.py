"""Drill: the broker, attacked with the standard Mosquitto command-line clients.

Anonymous, wrong-password, unknown-user and borrowed-password logins are refused at CONNECT
("not authorised", exit 5). An authenticated agency (NCB-DE) that subscribes to what is not
its own (another inbox, every submit topic, ``#``, ``$SYS/#``) receives nothing of it, and
what it publishes where it may not (another inbox as if it were the router, the directory,
another agency's submit or presence topic) reaches no one (MQTT 3.1.1 acknowledges and drops
it silently). Every check is paired with a control message on an allowed path, sent last, so
"the first message is the control" proves the forbidden one was refused, not slow. The
broker stays up throughout. The ACLs are generated from the directory (docs/protocol.md 6.2); the
same on both engines through aiomqtt is tests/broker/test_isolation.py.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker.support import (
    DE,
    FR,
    PREFIX,
    Network,
    requires_mosquitto,
    requires_mosquitto_clients,
)

from i24net.broker import ROUTER_USERNAME, MosquittoBroker, accounts_for, generate_password

pytestmark = [pytest.mark.broker, requires_mosquitto, requires_mosquitto_clients,
              pytest.mark.timeout(60)]

INBOX_FR, INBOX_DE = f"{PREFIX}/inbox/{FR}", f"{PREFIX}/inbox/{DE}"
SUBMIT_FR, SUBMIT_DE = f"{PREFIX}/submit/{FR}", f"{PREFIX}/submit/{DE}"
DIRECTORY = f"{PREFIX}/directory"
SETTLE_S = 0.5  # for a background mosquitto_sub to connect and subscribe
NOT_AUTHORISED = 5  # mosquitto_pub/sub exit code for a refused CONNECT


@pytest.fixture(scope="module")
def network() -> Network:
    passwords = {name: generate_password(os.urandom) for name in (FR, DE, ROUTER_USERNAME)}
    return Network(tuple(accounts_for((FR, DE), passwords, PREFIX)), passwords)


@pytest.fixture(scope="module")
def mosquitto(network: Network, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(Path(tmp_path_factory.mktemp("mosquitto")), network.accounts)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Clients:
    """mosquitto_pub / mosquitto_sub against the test broker."""

    def __init__(self, broker: MosquittoBroker, network: Network) -> None:
        self.broker, self.network = broker, network
        self._n = 0

    def login(self, user: str | None, password: str | None = None) -> list[str]:
        self._n += 1
        args = ["-h", self.broker.host, "-p", str(self.broker.port), "-q", "1"]
        if user is not None:
            pw = password if password is not None else self.network.passwords.get(user, "x")
            args += ["-u", user, "-P", pw, "-i", f"{user}:drill-{self._n}"]
        else:
            args += ["-i", f"anonymous-{self._n}"]
        return args

    def pub(self, user: str | None, topic: str, message: str, *, password: str | None = None,
            retain: bool = False) -> subprocess.CompletedProcess[str]:
        cmd = ["mosquitto_pub", *self.login(user, password), "-t", topic, "-m", message]
        return subprocess.run(cmd + (["-r"] if retain else []), capture_output=True,
                              text=True, timeout=15)

    def sub(self, user: str | None, *topics: str, count: int = 1, wait: int = 8,
            password: str | None = None) -> subprocess.Popen[str]:
        cmd = ["mosquitto_sub", *self.login(user, password), "-v", "-C", str(count),
               "-W", str(wait)]
        for t in topics:
            cmd += ["-t", t]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)


@pytest.fixture
def clients(mosquitto: MosquittoBroker, network: Network) -> Clients:
    return Clients(mosquitto, network)


def received(p: subprocess.Popen[str]) -> tuple[int, list[str]]:
    out, _ = p.communicate(timeout=20)
    return p.returncode, out.splitlines()


def broker_still_serves(clients: Clients) -> None:
    spy = clients.sub(FR, INBOX_FR)
    time.sleep(SETTLE_S)
    assert clients.pub(ROUTER_USERNAME, INBOX_FR, "still up").returncode == 0
    assert received(spy) == (0, [f"{INBOX_FR} still up"])
    assert clients.broker.running


@pytest.mark.parametrize("who", ["anonymous", "wrong-password", "unknown-user",
                                 "empty-password", "another-agencys-password"])
def test_bad_logins_are_refused(clients: Clients, network: Network, who: str) -> None:
    user, password = {
        "anonymous": (None, None),
        "wrong-password": (FR, "not-the-password"),
        "unknown-user": ("NCB-XX", "whatever-123"),
        "empty-password": (FR, ""),
        "another-agencys-password": (FR, network.passwords[DE]),
    }[who]
    pub = clients.pub(user, SUBMIT_FR, "forged", password=password)
    assert pub.returncode == NOT_AUTHORISED, pub.stderr
    assert "not authorised" in pub.stderr
    sub = clients.sub(user, INBOX_FR, password=password, wait=3)
    code, lines = received(sub)
    assert code == NOT_AUTHORISED and lines == []
    broker_still_serves(clients)


def test_unauthorized_subscriptions_receive_nothing(clients: Clients) -> None:
    spy = clients.sub(DE, INBOX_FR, f"{PREFIX}/inbox/+", f"{PREFIX}/submit/+", SUBMIT_FR,
                      "#", "$SYS/#", f"{PREFIX}/#", INBOX_DE)
    owner = clients.sub(FR, INBOX_FR)
    time.sleep(SETTLE_S)
    assert clients.pub(ROUTER_USERNAME, INBOX_FR, "for FR only").returncode == 0
    assert clients.pub(FR, SUBMIT_FR, "FR's submission").returncode == 0
    assert clients.pub(ROUTER_USERNAME, INBOX_DE, "control").returncode == 0
    assert received(owner) == (0, [f"{INBOX_FR} for FR only"])  # it was really sent
    assert received(spy) == (0, [f"{INBOX_DE} control"])  # and the spy got only its own
    broker_still_serves(clients)


def test_unauthorized_publishes_reach_no_one(clients: Clients) -> None:
    victim = clients.sub(FR, INBOX_FR, DIRECTORY, f"{PREFIX}/presence/+")
    router = clients.sub(ROUTER_USERNAME, f"{PREFIX}/submit/+")
    time.sleep(SETTLE_S)
    for topic, message, retain in (
        (INBOX_FR, "a delivery, as if from the router", False),
        (DIRECTORY, "a forged directory", True),
        (SUBMIT_FR, "a message as NCB-FR", False),
        (f"{PREFIX}/presence/{FR}", "offline", True),
    ):
        forged = clients.pub(DE, topic, message, retain=retain)
        assert forged.returncode == 0, forged.stderr  # acknowledged, and dropped
    assert clients.pub(DE, SUBMIT_DE, "control").returncode == 0
    assert clients.pub(DE, f"{PREFIX}/presence/{DE}", "online").returncode == 0
    assert received(router) == (0, [f"{SUBMIT_DE} control"])
    assert received(victim) == (0, [f"{PREFIX}/presence/{DE} online"])
    # nothing forged was retained for later subscribers either
    late = clients.sub(FR, DIRECTORY, f"{PREFIX}/presence/{FR}", wait=2)
    assert received(late) == (27, [])  # -W expired, nothing received
    broker_still_serves(clients)
