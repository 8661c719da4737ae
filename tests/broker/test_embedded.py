"""The embedded amqtt broker: its config, its plugins, and running it as its own process."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import signal
import socket
import stat
import sys
from pathlib import Path

import pytest
from aiomqtt import MqttError
from amqtt.contexts import Action, BaseContext
from amqtt.session import Session

from i24net.broker import (
    ROUTER_USERNAME,
    BrokerConfigError,
    BrokerStartError,
    EmbeddedBroker,
    EmbeddedBrokerProcess,
    embedded,
)
from i24net.broker.embedded import (
    AccountsTopicPlugin,
    ClientIdBindingPlugin,
    PasswordAuthPlugin,
    _grants_of,
    _IsolatingBroker,
    amqtt_config,
    read_amqtt_password_file,
    read_embedded_config_file,
    render_amqtt_password_file,
    write_embedded_config_file,
)
from i24net.broker.files import write_file

from .support import (
    DE,
    FR,
    HOST,
    PREFIX,
    Endpoint,
    Network,
    connect,
    messages_within,
    next_message,
)

INBOX_FR = f"{PREFIX}/inbox/{FR}"
DIRECTORY = f"{PREFIX}/directory"


def session(
    username: str | None, client_id: str | None = None, password: str | None = None
) -> Session:
    s = Session()
    s.username = username
    s.client_id = client_id if client_id is not None else username
    s.password = password
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
        "i24net.broker.embedded.AccountsTopicPlugin",
        "i24net.broker.embedded.ClientIdBindingPlugin",
        "i24net.broker.embedded.PasswordAuthPlugin",
    ]
    assert config["plugins"]["i24net.broker.embedded.PasswordAuthPlugin"] == {
        "password_file": str(tmp_path / "passwd")
    }
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


def test_password_file_holds_salted_blake2b_digests(network: Network) -> None:
    text = render_amqtt_password_file(network.accounts)
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == len(network.accounts)
    entries = dict(line.split(":", 1) for line in lines)
    assert set(entries) == {a.username for a in network.accounts}
    for username, entry in entries.items():
        scheme, salt, digest = entry.split("$")
        assert (scheme, len(salt), len(digest)) == ("blake2b", 32, 64)
        expected = hashlib.blake2b(
            network.passwords[username].encode(),
            digest_size=32,
            salt=bytes.fromhex(salt),
            person=b"i24net.broker.pw",
        ).hexdigest()
        assert digest == expected
    assert all(password not in text for password in network.passwords.values())
    salts = [entry.split("$")[1] for entry in entries.values()]
    assert len(set(salts)) == len(salts)  # one fresh salt per account
    # A fresh salt per start: the same accounts never give the same file twice.
    assert render_amqtt_password_file(network.accounts) != text


def test_password_file_salt_comes_from_the_given_source(network: Network) -> None:
    fixed = render_amqtt_password_file(network.accounts, rng_bytes=lambda n: b"\x01" * n)
    assert fixed == render_amqtt_password_file(network.accounts, rng_bytes=lambda n: b"\x01" * n)
    assert f"{FR}:blake2b${'01' * 16}$" in fixed
    with pytest.raises(BrokerConfigError, match="random source"):
        render_amqtt_password_file(network.accounts, rng_bytes=lambda n: b"short")
    with pytest.raises(BrokerConfigError, match="listed twice"):
        render_amqtt_password_file([*network.accounts, network.accounts[0]])


def password_plugin(path: Path) -> PasswordAuthPlugin:
    context = BaseContext()
    context.config = PasswordAuthPlugin.Config(password_file=str(path))
    return PasswordAuthPlugin(context)


@pytest.fixture
def password_file(network: Network, tmp_path: Path) -> Path:
    return write_file(
        tmp_path / "passwd", render_amqtt_password_file(network.accounts), private=True
    )


@pytest.mark.parametrize(
    ("username", "password", "answer"),
    [
        pytest.param(FR, "right", True, id="right-password"),
        pytest.param(ROUTER_USERNAME, "right", True, id="router"),
        pytest.param(FR, "wrong-password", False, id="wrong-password"),
        pytest.param(FR, "other", False, id="another-accounts-password"),
        pytest.param(FR, None, False, id="no-password"),
        pytest.param(FR, "", False, id="empty-password"),
        pytest.param("NCB-XX", "right", False, id="unknown-user"),
        pytest.param(None, None, False, id="anonymous"),
        pytest.param("", "right", False, id="empty-username"),
    ],
)
async def test_password_plugin_decisions(
    network: Network,
    password_file: Path,
    username: str | None,
    password: str | None,
    answer: bool,
) -> None:
    if password == "right":
        password = network.passwords[username if username in network.passwords else FR]
    elif password == "other":
        password = network.passwords[DE]
    plugin = password_plugin(password_file)
    assert await plugin.authenticate(session=session(username, password=password)) is answer


async def test_password_plugin_accepts_bytes_and_refuses_without_session(
    network: Network, password_file: Path
) -> None:
    plugin = password_plugin(password_file)
    raw = network.passwords[DE].encode()
    assert await plugin.authenticate(session=session(DE, password=raw)) is True  # type: ignore[arg-type]
    assert await plugin.authenticate(session=None) is False  # type: ignore[arg-type]


async def test_amqtt_refuses_anonymous_even_with_any_client_id(
    network: Network, tmp_path: Path, password_file: Path
) -> None:
    """With client_id_policy='any' the password plugin is the only auth plugin: a client
    without a username is still refused, by it and by amqtt's combination of answers."""
    config = amqtt_config(
        network.accounts, host=HOST, port=1, password_file=password_file, client_id_policy="any"
    )
    broker = _IsolatingBroker(config, _grants_of(network.accounts))
    assert not await broker._authenticate(session(None), None)
    assert not await broker._authenticate(session(FR, password="wrong-password"), None)
    assert not await broker._authenticate(session("NCB-XX", password=network.passwords[FR]), None)
    assert await broker._authenticate(session(FR, "anything", network.passwords[FR]), None)
    bound = _IsolatingBroker(
        amqtt_config(network.accounts, host=HOST, port=1, password_file=password_file),
        _grants_of(network.accounts),
    )
    assert not await bound._authenticate(session(None), None)
    assert not await bound._authenticate(session(FR, "anything", network.passwords[FR]), None)
    assert await bound._authenticate(session(FR, f"{FR}:1", network.passwords[FR]), None)


GOOD_ENTRY = f"{FR}:blake2b${'ab' * 16}${'cd' * 32}"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        pytest.param(f"{FR}:$argon2id$v=19$m=8192,t=1,p=1$c2FsdA$aGFzaA\n", "line 1", id="argon2"),
        pytest.param(f"{GOOD_ENTRY}\n{DE}\n", "line 2", id="no-hash"),
        pytest.param(f"{GOOD_ENTRY}\n\n", "line 2", id="blank-line"),
        pytest.param(f"# accounts\n{GOOD_ENTRY}\n", "line 1", id="comment"),
        pytest.param(f"{FR}:blake2b${'ab' * 15}${'cd' * 32}\n", "line 1", id="short-salt"),
        pytest.param(f"{FR}:blake2b${'ab' * 16}${'cd' * 31}\n", "line 1", id="short-digest"),
        pytest.param(f"{FR}:blake2b${'AB' * 16}${'cd' * 32}\n", "line 1", id="upper-case-hex"),
        pytest.param(f"{FR}:sha256${'ab' * 16}${'cd' * 32}\n", "line 1", id="other-scheme"),
        pytest.param(f"{GOOD_ENTRY}\r\n", "line 1", id="crlf"),
        pytest.param(f" {GOOD_ENTRY}\n", "line 1", id="leading-space"),
        pytest.param(f"{GOOD_ENTRY} \n", "line 1", id="trailing-space"),
        pytest.param(f"bad name:blake2b${'ab' * 16}${'cd' * 32}\n", "line 1", id="bad-username"),
        pytest.param(f"{GOOD_ENTRY}\n{GOOD_ENTRY}\n", "line 2: 'NCB-FR' listed twice", id="twice"),
        pytest.param(GOOD_ENTRY, "does not end with a newline", id="truncated"),
        pytest.param("", "holds no accounts", id="empty"),
    ],
)
def test_malformed_password_file_is_refused(tmp_path: Path, text: str, complaint: str) -> None:
    path = write_file(tmp_path / "passwd", text, private=True)
    with pytest.raises(BrokerConfigError, match=complaint):
        read_amqtt_password_file(path)
    with pytest.raises(BrokerConfigError, match=complaint):
        password_plugin(path)


def test_password_file_must_exist_and_be_private(network: Network, tmp_path: Path) -> None:
    with pytest.raises(BrokerConfigError, match="cannot read password file"):
        read_amqtt_password_file(tmp_path / "missing")
    path = write_file(tmp_path / "passwd", f"{GOOD_ENTRY}\n", private=False)
    with pytest.raises(BrokerConfigError, match="readable by others"):
        read_amqtt_password_file(path)
    path.chmod(0o600)
    assert set(read_amqtt_password_file(path)) == {FR}
    context = BaseContext()
    context.config = PasswordAuthPlugin.Config()
    with pytest.raises(BrokerConfigError, match="password_file"):
        PasswordAuthPlugin(context)


async def test_broker_start_refuses_a_malformed_password_file(
    network: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def damaged(accounts: object) -> str:
        return f"{GOOD_ENTRY}\n{DE}:blake2b$not-hex\n"

    monkeypatch.setattr(embedded, "render_amqtt_password_file", damaged)
    broker = EmbeddedBroker(network.accounts, tmp_path / "data")
    with pytest.raises(BrokerConfigError, match="passwd, line 2: expected"):
        await broker.start()
    assert not broker.running


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


FILTERS = [
    INBOX_FR,
    f"{PREFIX}/inbox/{DE}",
    f"{PREFIX}/inbox/+",
    f"{PREFIX}/presence/+",
    f"{PREFIX}/#",
    "+/v1/inbox/NCB-FR",
    "#",
    "+",
    "+/+",
    "$SYS/broker",
    "$SYS/#",
    "a/b",
    "a/+/c",
]
TOPICS = [
    INBOX_FR,
    f"{PREFIX}/presence/{DE}",
    f"{PREFIX}/inbox/{FR}/extra",
    PREFIX,
    "i24",
    "$SYS/broker",
    "a/b",
    "a/x/c",
    "a",
    "a/+",
]


async def test_broadcast_matching_is_a_lookup_with_amqtts_answers(
    network: Network, password_file: Path
) -> None:
    """The broker looks a message's exact filter up and matches only wildcard filters; the
    filters it finds must be exactly those amqtt's own scan over every filter finds."""
    broker = _IsolatingBroker(
        amqtt_config(network.accounts, host=HOST, port=1, password_file=password_file),
        _grants_of(network.accounts),
    )
    table = broker._subscriptions
    for topic_filter in FILTERS:
        table[topic_filter] = [(session(FR), 1)]
    assert list(table.wildcards) == [f for f in FILTERS if "+" in f or "#" in f]
    for topic in TOPICS:
        found = broker._filters_matching(topic)
        assert sorted(found) == sorted(f for f in table if broker._matches(topic, f)), topic
        assert len(found) == len(set(found)), topic
    assert broker._filters_matching(None) == []
    assert "2 subscription" not in repr(table) and repr(table) == f"<{len(FILTERS)} subscription filters>"


def test_subscription_table_keeps_its_wildcards_in_step() -> None:
    table = embedded._SubscriptionTable()
    table["a/+"] = []
    table["a/b"] = []
    table.setdefault("a/#", [])
    table.update({"c/+": [], "c": []})
    table |= {"d/#": []}
    assert list(table.wildcards) == ["a/+", "a/#", "c/+", "d/#"]
    del table["a/+"]
    assert table.pop("c/+") == []
    assert table.pop("missing", None) is None
    assert list(table.wildcards) == ["a/#", "d/#"]
    key, _ = table.popitem()
    assert key == "d/#" and list(table.wildcards) == ["a/#"]
    table.clear()
    assert (dict(table), table.wildcards) == ({}, {})


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


@pytest.mark.broker
@pytest.mark.timeout(30)
async def test_retained_messages_come_with_subscriptions_not_with_connect(
    network: Network, tmp_path: Path
) -> None:
    """A new session gets a retained message when it subscribes, not at CONNECT because some
    other client subscribed a matching filter (amqtt 0.12 sent it at CONNECT too)."""
    async with EmbeddedBroker(network.accounts, tmp_path / "data") as broker:
        where = Endpoint("embedded", broker.host, broker.port)
        async with (
            connect(where, network, FR) as fr,
            connect(where, network, ROUTER_USERNAME) as router,
        ):
            await fr.subscribe(DIRECTORY, qos=1)
            await router.publish(DIRECTORY, b"directory v1", qos=1, retain=True)
            assert (await next_message(fr)).payload == b"directory v1"
            async with connect(where, network, DE) as de:
                assert await messages_within(de) == []
                await de.subscribe(DIRECTORY, qos=1)
                message = await next_message(de)
                assert (message.payload, message.retain) == (b"directory v1", True)
                assert await messages_within(de) == []


@pytest.mark.broker
@pytest.mark.timeout(30)
async def test_resumed_session_gets_retained_messages_of_its_own_subscriptions(
    network: Network, tmp_path: Path
) -> None:
    async with EmbeddedBroker(network.accounts, tmp_path / "data") as broker:
        where = Endpoint("embedded", broker.host, broker.port)
        async with connect(where, network, FR, clean_session=False) as fr:
            # QoS 0: nothing is queued for the offline session, so only the retained copy,
            # sent because the resumed session holds this subscription, can reach it.
            await fr.subscribe(DIRECTORY, qos=0)
        async with connect(where, network, ROUTER_USERNAME) as router:
            await router.publish(DIRECTORY, b"directory v2", qos=0, retain=True)
            await router.publish(f"{PREFIX}/inbox/{DE}", b"for DE", qos=0, retain=True)
        async with connect(where, network, FR, clean_session=False) as fr:
            message = await next_message(fr)
            assert (str(message.topic), message.payload, message.retain) == (
                DIRECTORY,
                b"directory v2",
                True,
            )
            assert await messages_within(fr) == []
        with pytest.raises(MqttError):  # a wrong password leaves the session alone
            async with connect(where, network, FR, password="wrong-password"):
                pytest.fail("a wrong password was accepted")
