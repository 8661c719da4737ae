"""``start_broker``: one factory, three engines, the same accounts."""

from __future__ import annotations

from pathlib import Path

import pytest

import i24net.broker as broker_package
from i24net.broker import (
    ENGINES,
    Broker,
    BrokerConfigError,
    EmbeddedBroker,
    EmbeddedBrokerProcess,
    MosquittoBroker,
    generate_tls_files,
    start_broker,
)

from .support import Network


def test_every_public_name_resolves() -> None:
    for name in broker_package.__all__:
        assert getattr(broker_package, name) is not None


@pytest.mark.parametrize(
    ("engine", "kind"),
    [
        ("embedded", EmbeddedBroker),
        ("embedded-process", EmbeddedBrokerProcess),
        ("mosquitto", MosquittoBroker),
    ],
)
def test_engine_choice(engine: str, kind: type, network: Network, tmp_path: Path) -> None:
    assert engine in ENGINES
    assert isinstance(start_broker(engine, tmp_path, network.accounts), kind)


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_is_a_broker(engine: str, network: Network, tmp_path: Path) -> None:
    broker = start_broker(engine, tmp_path, network.accounts)
    protocol = {name for name in vars(Broker) if not name.startswith("_")}
    assert protocol >= {"host", "port", "addresses", "accounts", "apply_accounts", "pid"}
    for name in protocol | {"__aenter__", "__aexit__"}:  # mypy checks the signatures
        assert callable(getattr(type(broker), name, None)) or \
            isinstance(getattr(type(broker), name, None), property), (engine, name)
    assert not broker.running and broker.pid is None  # nothing started yet
    assert {a.username for a in broker.accounts} == {a.username for a in network.accounts}


def test_unknown_engine_names_the_choices(network: Network, tmp_path: Path) -> None:
    with pytest.raises(
        BrokerConfigError, match="choose one of embedded, embedded-process, mosquitto"
    ):
        start_broker("rabbitmq", tmp_path, network.accounts)


def test_tls_needs_mosquitto(network: Network, tmp_path: Path) -> None:
    files = generate_tls_files(tmp_path / "tls")
    with pytest.raises(BrokerConfigError, match="use --engine mosquitto for TLS"):
        start_broker("embedded", tmp_path, network.accounts, tls=files)
    assert isinstance(
        start_broker("mosquitto", tmp_path, network.accounts, tls=files), MosquittoBroker
    )


def test_broker_errors_join_the_package_error_tree() -> None:
    from i24net.core.errors import I24Error, TransportError

    error = BrokerConfigError("bad port", agency="NCB-FR")
    assert isinstance(error, TransportError) and isinstance(error, I24Error)
    assert (error.reason, error.agency, str(error)) == ("broker.config", "NCB-FR", "bad port")
