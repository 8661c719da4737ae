"""A private certificate authority and a server certificate for a local TLS listener.

Clients verify the broker against this CA (not the system's), so a simulation needs no
public certificate and no network access. The server certificate names both ``127.0.0.1``
(as an IP SAN: TLS clients match IP addresses only against IP SANs) and ``localhost``. Keys
are EC P-256: fast to generate in tests and accepted by OpenSSL-based brokers and clients.
Private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from i24net.broker.errors import BrokerConfigError
from i24net.broker.files import ensure_directory, write_file

__all__ = ["TlsFiles", "generate_tls_files"]

DEFAULT_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost")
# Short enough that a leaked test CA is soon worthless, long enough for a long exercise.
DEFAULT_VALID_DAYS = 30
# Certificates start a little in the past so a client whose clock lags slightly accepts them.
_BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Paths of the PEM files: the CA (give ``ca_cert`` to clients) and the server's pair."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    def __post_init__(self) -> None:
        for name in ("ca_cert", "ca_key", "server_cert", "server_key"):
            object.__setattr__(self, name, Path(getattr(self, name)))


def _san_entries(hosts: Sequence[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() for c in host):
                raise BrokerConfigError(f"TLS host name {host!r} is invalid") from None
            entries.append(x509.DNSName(host))
    return entries


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_tls_files(
    directory: Path,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    valid_days: int = DEFAULT_VALID_DAYS,
    now: dt.datetime | None = None,
    common_name: str = "i24net local broker",
) -> TlsFiles:
    """Create ``ca.crt``, ``ca.key``, ``server.crt`` and ``server.key`` in ``directory``.

    ``hosts`` become the server certificate's subject alternative names (IP addresses as IP
    SANs, the rest as DNS names). ``now`` fixes the validity start (pass a clock's reading in
    simulations); it defaults to the current UTC time.
    """
    if not hosts:
        raise BrokerConfigError("generate_tls_files needs at least one host name or IP address")
    if valid_days <= 0:
        raise BrokerConfigError(f"valid_days must be positive, got {valid_days}")
    sans = _san_entries(hosts)
    start = (now or dt.datetime.now(dt.UTC)) - _BACKDATE
    end = start + dt.timedelta(days=valid_days)
    out = ensure_directory(directory)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        # A NATS cluster member presents it on both ends of its routes (mutual TLS).
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(
        ca_cert=out / "ca.crt",
        ca_key=out / "ca.key",
        server_cert=out / "server.crt",
        server_key=out / "server.key",
    )
    write_file(files.ca_key, _key_pem(ca_key), private=True)
    write_file(files.server_key, _key_pem(server_key), private=True)
    write_file(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    write_file(
        files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), private=False
    )
    return files
