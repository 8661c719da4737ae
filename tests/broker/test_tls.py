"""The local CA and server certificate, and Mosquitto's TLS listener verified against it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import ssl
import stat
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from i24net.broker import ROUTER_USERNAME, BrokerConfigError, MosquittoBroker, generate_tls_files

from .support import FR, HOST, PREFIX, Network, next_message, requires_mosquitto


def test_files_modes_and_names(tmp_path: Path) -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    files = generate_tls_files(tmp_path / "tls", now=now, valid_days=7)
    for key in (files.ca_key, files.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert b"PRIVATE KEY" in key.read_bytes()
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.issuer == ca.subject
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    # server, and client on a NATS cluster's routes (mutual TLS between members)
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert server.not_valid_before_utc < now < server.not_valid_after_utc
    assert server.not_valid_after_utc - server.not_valid_before_utc == dt.timedelta(days=7)
    assert isinstance(server.public_key(), ec.EllipticCurvePublicKey)


def test_python_ssl_accepts_the_chain_for_127_0_0_1(tmp_path: Path) -> None:
    files = generate_tls_files(tmp_path)
    client = ssl.create_default_context(cafile=str(files.ca_cert))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.server_cert, files.server_key)
    client_side, server_side = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client.wrap_bio(server_side, client_side, server_hostname=HOST)
    c2s, s2c = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_server = server.wrap_bio(c2s, s2c, server_side=True)
    for _ in range(10):  # pump the handshake between the two in-memory ends
        for end in (tls_client, tls_server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        c2s.write(client_side.read())
        server_side.write(s2c.read())
    assert tls_client.getpeercert() is not None
    assert tls_client.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"hosts": ()}, "at least one host"),
        ({"hosts": ("bad host",)}, "invalid"),
        ({"valid_days": 0}, "positive"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object], complaint: str) -> None:
    with pytest.raises(BrokerConfigError, match=complaint):
        generate_tls_files(tmp_path, **kwargs)  # type: ignore[arg-type]


@pytest.mark.broker
@requires_mosquitto
@pytest.mark.timeout(30)
async def test_mosquitto_tls_listener(tmp_path: Path, network: Network) -> None:
    files = generate_tls_files(tmp_path / "tls")
    async with MosquittoBroker(tmp_path / "m", network.accounts, tls=files) as broker:
        assert broker.tls_port is not None and broker.tls_port != broker.port
        opened = re.findall(r"listen socket on port (\d+)", broker.log_path.read_text())
        assert sorted(map(int, opened)) == sorted([broker.port, broker.tls_port])

        def client(user: str, context: ssl.SSLContext) -> aiomqtt.Client:
            return aiomqtt.Client(
                HOST,
                broker.tls_port,  # type: ignore[arg-type]
                username=user,
                password=network.passwords[user],
                identifier=user,
                tls_context=context,
                timeout=5,
            )

        verifying = ssl.create_default_context(cafile=str(files.ca_cert))
        inbox = f"{PREFIX}/inbox/{FR}"
        async with client(FR, verifying) as fr, client(ROUTER_USERNAME, verifying) as router:
            await fr.subscribe(inbox, qos=1)
            await router.publish(inbox, b"over TLS", qos=1)
            assert (await next_message(fr)).payload == b"over TLS"

        # The system trust store does not know our CA: the handshake must fail.
        with pytest.raises(aiomqtt.MqttError, match=r"(?i)certificate verify failed"):
            async with client(FR, ssl.create_default_context()):
                pytest.fail("connected without trusting the CA")
