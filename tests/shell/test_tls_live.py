"""TLS end to end: ``i24net broker --engine mosquitto --tls`` with a router and two nodes.

The broker generates a CA and a server certificate into the home (``broker/tls/``) and writes
an endpoint file that points every i24net client at the TLS listener with that CA, so the
router, the nodes and ``publish`` all verify the broker. A client that does not trust the CA
(the system trust store, or plain MQTT on the TLS port) does not get in.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from livekit import cli, running_network

from i24net.broker import generate_tls_files, pick_free_port
from i24net.config.home import Home
from i24net.core.errors import I24Error, TransportError
from i24net.shell.runtime import Endpoint, broker_tls_files, endpoint, make_broker
from i24net.transport.mqtt import MqttTransport

AGENCIES = ("NCB-FR", "NCB-DE")
HAVE_MOSQUITTO = bool(shutil.which("mosquitto")) or Path("/usr/sbin/mosquitto").exists()


def _init(tmp_path: Path, *, tls_in_toml: bool = False) -> Path:
    home = tmp_path / "home"
    assert cli(home, "init", "--preset", "demo").returncode == 0
    spec = home / "network.toml"
    port = pick_free_port()
    while pick_free_port() == port + 1:  # keep port + 1 (the TLS default) likely free
        port = pick_free_port()
    text = spec.read_text().replace("port = 18830", f"port = {port}")
    text = text.replace('engine = "embedded"', 'engine = "mosquitto"')
    if tls_in_toml:
        assert "tls = false" in text
        text = text.replace("tls = false", "tls = true")
    spec.write_text(text)
    return home


@pytest.fixture(params=["flag", "toml"])
def tls_network(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """Broker (TLS from --tls, or from tls = true in network.toml), router, two nodes."""
    if not HAVE_MOSQUITTO:
        pytest.skip("mosquitto is not installed (make install installs it)")
    home = _init(tmp_path, tls_in_toml=request.param == "toml")
    flags = ["--tls"] if request.param == "flag" else []
    with running_network(home, AGENCIES, "--tls-port", "0", *flags):
        yield home


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_publish_over_tls_and_a_client_without_the_ca_stays_out(tls_network: Path) -> None:
    home = tls_network
    ep = json.loads((home / "broker" / "endpoint.json").read_text())
    ca = home / "broker" / "tls" / "ca.crt"
    assert ep["tls_ca"] == str(ca) and ca.exists()
    conf = (home / "broker" / "mosquitto" / "mosquitto.conf").read_text()
    assert f"listener {ep['port']} 127.0.0.1\n" in conf and "certfile" in conf
    assert "TLS" in (home / "logs" / "test-broker.log").read_text()

    sent = cli(home, "publish", "--as", "NCB-DE", "--to", "NCB-FR", "--classification",
               "CONFIDENTIAL", "--caveat", "EU", "--subject", "over TLS", "--text", "x",
               "--wait", "30")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "delivered to 1 recipient(s)" in sent.stdout
    box = json.loads(cli(home, "inbox", "NCB-FR", "--json").stdout)
    assert [i["subject"] for i in box] == ["over TLS"]

    asyncio.run(_outsiders(Home(home), ep["port"]))


async def _outsiders(h: Home, port: int) -> None:
    password = h.broker_passwords()["NCB-FR"]
    # Control: this account and client id get in with the home's CA ...
    ok = MqttTransport("127.0.0.1", port, client_id="NCB-FR:probe", username="NCB-FR",
                       password=password, tls_ca=str(h.broker_dir / "tls" / "ca.crt"),
                       connect_timeout=10.0)
    async with ok:
        assert ok.is_connected
    # ... and every client below is the same but for what it trusts.
    # Right password, but the system trust store does not know the home's CA.
    with pytest.raises(aiomqtt.MqttError, match=r"(?i)certificate verify failed"):
        async with aiomqtt.Client("127.0.0.1", port, username="NCB-FR", password=password,
                                  identifier="NCB-FR:probe", timeout=5,
                                  tls_context=ssl.create_default_context()):
            pytest.fail("connected without trusting the CA")
    # Plain MQTT on the TLS port: no connection at all.
    plain = MqttTransport("127.0.0.1", port, client_id="NCB-FR:probe", username="NCB-FR",
                          password=password, connect_timeout=3.0)
    with pytest.raises(TransportError) as info:
        async with plain:
            pytest.fail("connected in clear to the TLS listener")
    assert info.value.reason in ("transport.connect", "transport.refused")
    # An i24net transport that trusts another CA (as a client misled by an impostor
    # broker would) is refused the handshake as well.
    other = generate_tls_files(h.path.parent / "other-ca")
    wrong = MqttTransport("127.0.0.1", port, client_id="NCB-FR:probe", username="NCB-FR",
                          password=password, tls_ca=str(other.ca_cert), connect_timeout=3.0)
    with pytest.raises(TransportError):
        async with wrong:
            pytest.fail("connected while trusting another CA")


# -- without a broker ------------------------------------------------------------------------

def test_tls_files_are_kept_across_restarts(tmp_path: Path) -> None:
    home = _init(tmp_path)
    h = Home(home)
    first = broker_tls_files(h)
    ca = first.ca_cert.read_bytes()
    assert broker_tls_files(h).ca_cert.read_bytes() == ca  # still valid: the same CA
    assert broker_tls_files(h, min_days_left=365).ca_cert.read_bytes() != ca  # renewed
    assert oct(first.ca_key.stat().st_mode & 0o777) == "0o600"


def test_endpoint_without_a_running_broker_follows_network_toml(tmp_path: Path) -> None:
    home = _init(tmp_path, tls_in_toml=True)
    h = Home(home)
    port = h.spec().broker.port
    assert endpoint(h) == Endpoint("mosquitto", "127.0.0.1", port + 1,
                                   str(home / "broker" / "tls" / "ca.crt"))


def test_tls_on_the_embedded_engine_is_a_clear_error(tmp_path: Path) -> None:
    home = _init(tmp_path)
    with pytest.raises(I24Error, match="--engine mosquitto"):
        make_broker(Home(home), "embedded", tls=True)
    r = cli(home, "broker", "--engine", "embedded", "--tls", timeout=30)
    assert r.returncode == 1
    assert "ERROR:" in r.stderr and "--engine mosquitto" in r.stderr
