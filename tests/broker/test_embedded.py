"""The embedded amqtt broker: its config, its plugins, and running it as its own process."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import stat
import sys
from pathlib import Path

import pytest
from amqtt.contexts import Action, BaseContext
from amqtt.session import Session
from pwdlib.hashers.argon2 import Argon2Hasher

from i24net.broker import (
    ROUTER_USERNAME,
    BrokerConfigError,
    BrokerStartError,
    EmbeddedBroker,
    EmbeddedBrokerProcess,
)
from i24net.broker.embedded import (
    AccountsTopicPlugin,
    ClientIdBindingPlugin,
    amqtt_config,
    read_embedded_config_file,
    render_amqtt_password_file,
    write_embedded_config_file,
)

from .support import DE, FR, HOST, PREFIX, Endpoint, Network, connect, next_message

INBOX_FR = f"{PREFIX}/inbox/{FR}"


def session(username: str | None, client_id: str | None = None) -> Session:
    s = Session()
    s.username = username
    s.client_id = client_id if client_id is not None else username
    return s


# --- configuration and plugins, no network ------------------------------------------------


def test_config_binds_loopback_and_loads_only_our_plugins(network: Network, tmp_path: Path) -> None:
    config = amqtt_config(
        network.accounts, host=HOST, port=18830, password_file=tmp_path / "passwd"
    )
    assert config["listeners"] == {
        "default": {"type": "tcp", "bind": "127.0.0.1:18830", "max_connections": 0}
    }
    # amqtt's defaults (anonymous auth, $SYS, packet logging) are replaced, not extended.
    assert sorted(config["plugins"]) == [
        "amqtt.plugins.authentication.FileAuthPlugin",
        "i24net.broker.embedded.AccountsTopicPlugin",
        "i24net.broker.embedded.ClientIdBindingPlugin",
    ]
    assert config["plugins"]["i24net.broker.embedded.AccountsTopicPlugin"]["subscribe"][FR] == [
        f"{PREFIX}/inbox/{FR}",
        f"{PREFIX}/directory",
        f"{PREFIX}/presence/+",
    ]
    loose = amqtt_config(
        network.accounts, host=HOST, port=1, password_file=tmp_path, client_id_policy="any"
    )
    assert "i24net.broker.embedded.ClientIdBindingPlugin" not in loose["plugins"]
    with pytest.raises(BrokerConfigError, match="client_id_policy"):
        amqtt_config(
            network.accounts,
            host=HOST,
            port=1,
            password_file=tmp_path,
            client_id_policy="x",  # type: ignore[arg-type]
        )


def test_password_file_is_argon2_that_amqtt_verifies(network: Network) -> None:
    lines = render_amqtt_password_file(network.accounts).splitlines()
    hashes = dict(line.split(":", 1) for line in lines)
    assert set(hashes) == {a.username for a in network.accounts}
    assert all(h.startswith("$argon2id$v=19$m=8192,t=1,p=1$") for h in hashes.values())
    verifier = Argon2Hasher()  # default parameters: verification reads them from the hash
    assert verifier.verify(network.passwords[FR], hashes[FR])
    assert not verifier.verify(network.passwords[DE], hashes[FR])


def topic_plugin(network: Network) -> AccountsTopicPlugin:
    context = BaseContext()
    context.config = AccountsTopicPlugin.Config(
        publish={a.username: list(a.publish) for a in network.accounts},
        subscribe={a.username: list(a.subscribe) for a in network.accounts},
    )
    return AccountsTopicPlugin(context)


@pytest.mark.parametrize(
    ("username", "action", "topic", "allowed"),
    [
        (FR, Action.PUBLISH, f"{PREFIX}/submit/{FR}", True),
        (FR, Action.PUBLISH, f"{PREFIX}/submit/{DE}", False),
        (FR, Action.SUBSCRIBE, INBOX_FR, True),
        (FR, Action.SUBSCRIBE, f"{PREFIX}/inbox/+", False),
        (FR, Action.RECEIVE, INBOX_FR, True),
        (DE, Action.RECEIVE, INBOX_FR, False),
        (ROUTER_USERNAME, Action.PUBLISH, INBOX_FR, True),
        (ROUTER_USERNAME, Action.RECEIVE, INBOX_FR, False),
        ("stranger", Action.PUBLISH, f"{PREFIX}/submit/stranger", False),
        (None, Action.SUBSCRIBE, "#", False),
    ],
)
async def test_topic_plugin_decisions(
    network: Network, username: str | None, action: Action, topic: str, allowed: bool
) -> None:
    plugin = topic_plugin(network)
    assert (
        await plugin.topic_filtering(session=session(username), topic=topic, action=action)
        is allowed
    )


async def test_topic_plugin_refuses_without_session(network: Network) -> None:
    plugin = topic_plugin(network)
    assert (
        await plugin.topic_filtering(session=None, topic=INBOX_FR, action=Action.RECEIVE) is False
    )


@pytest.mark.parametrize(
    ("username", "client_id", "answer"),
    [(FR, FR, True), (FR, f"{FR}:2", True), (DE, FR, False), (None, FR, None)],
)
async def test_client_id_binding_plugin(
    username: str | None, client_id: str, answer: bool | None
) -> None:
    context = BaseContext()
    context.config = ClientIdBindingPlugin.Config()
    plugin = ClientIdBindingPlugin(context)
    assert await plugin.authenticate(session=session(username, client_id)) is answer


def test_config_file_round_trip_and_errors(network: Network, tmp_path: Path) -> None:
    path = write_embedded_config_file(
        tmp_path / "b.json", network.accounts, data_dir=tmp_path / "data", port=1884
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds plaintext passwords
    parsed = read_embedded_config_file(path)
    assert (parsed.host, parsed.port, parsed.data_dir) == (HOST, 1884, tmp_path / "data")
    assert parsed.accounts == network.accounts
    bad = tmp_path / "bad.json"
    for text, complaint in [
        ("{", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"data_dir": "x", "accounts": [], "extra": 1}', "unknown keys \\['extra'\\]"),
        ('{"accounts": []}', "missing keys \\['data_dir'\\]"),
        ('{"data_dir": "x", "accounts": [], "host": "0.0.0.0"}', "loopback only"),
    ]:
        bad.write_text(text)
        with pytest.raises(BrokerConfigError, match=complaint):
            read_embedded_config_file(bad)


# --- running brokers ----------------------------------------------------------------------


@pytest.mark.broker
@pytest.mark.timeout(30)
async def test_in_process_lifecycle(network: Network, tmp_path: Path) -> None:
    broker = EmbeddedBroker(network.accounts, tmp_path / "data")
    with pytest.raises(BrokerStartError, match="not been started"):
        _ = broker.port
    async with broker:
        assert broker.running
        assert stat.S_IMODE(broker.password_file.stat().st_mode) == 0o600
        assert logging.getLogger("amqtt").getEffectiveLevel() >= logging.WARNING
        port = broker.port
    assert not broker.running
    async with broker:  # a restart reuses the port
        assert broker.port == port


@pytest.mark.broker
@pytest.mark.timeout(30)
async def test_port_in_use_is_a_clear_error(network: Network, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(BrokerStartError, match=f"could not listen on 127.0.0.1:{taken}"):
            async with EmbeddedBroker(network.accounts, tmp_path, port=taken):
                pytest.fail("started on a port that is in use")


def test_refuses_non_loopback_hosts(network: Network, tmp_path: Path) -> None:
    with pytest.raises(BrokerConfigError, match="loopback only"):
        EmbeddedBroker(network.accounts, tmp_path, host="0.0.0.0")
    with pytest.raises(BrokerConfigError, match="no broker accounts"):
        EmbeddedBroker([], tmp_path)


@pytest.mark.broker
@pytest.mark.timeout(30)
async def test_module_runs_until_sigterm(network: Network, tmp_path: Path) -> None:
    config = write_embedded_config_file(tmp_path / "b.json", network.accounts, data_dir=tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "i24net.broker.embedded",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(20):
            line = (await process.stdout.readline()).decode()  # type: ignore[union-attr]
        word, address = line.split()
        host, port = address.rsplit(":", 1)
        assert (word, host) == ("ready", HOST)
        where = Endpoint("embedded", host, int(port))
        async with (
            connect(where, network, FR) as fr,
            connect(where, network, ROUTER_USERNAME) as router,
        ):
            await fr.subscribe(INBOX_FR, qos=1)
            await router.publish(INBOX_FR, b"from another process", qos=1)
            assert (await next_message(fr)).payload == b"from another process"
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.timeout(30)
async def test_module_reports_a_bad_config(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text(json.dumps({"data_dir": str(tmp_path), "accounts": [{}]}))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "i24net.broker.embedded",
        "--config",
        str(tmp_path / "b.json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        out, err = await process.communicate()
    assert process.returncode == 1
    assert out == b""
    assert err.decode().startswith("ERROR: a broker account needs exactly the keys")


@pytest.mark.broker
@pytest.mark.timeout(40)
def test_child_process_kill_and_restart(network: Network, tmp_path: Path) -> None:
    broker = EmbeddedBrokerProcess(tmp_path / "embedded", network.accounts)
    broker.start()
    try:
        pid, port = broker.pid, broker.port
        assert broker.running and pid is not None
        assert broker.kill() == -signal.SIGKILL
        assert not broker.running
        broker.start()
        assert broker.pid != pid and broker.port == port
        assert broker.stop() == 0  # SIGTERM is a clean exit
        assert "ready 127.0.0.1:" in broker.log_path.read_text()
    finally:
        broker.stop()
