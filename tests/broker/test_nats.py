"""The NATS cluster engine: generated config, topic translation, and a live 3-member cluster.

Live tests start their own cluster on free 127.0.0.1 ports (about 3 s) and are skipped, with
the reason, where nats-server is not installed. Negative checks carry a positive control sent
right after the forbidden message on the same path, as in ``test_isolation.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiomqtt import Client, MqttError
from hypothesis import given
from hypothesis import strategies as st

from i24net.broker import (
    ENGINES,
    ROUTER_USERNAME,
    BrokerAccount,
    BrokerConfigError,
    BrokerNotInstalledError,
    NatsCluster,
    NatsLimits,
    NatsMember,
    NatsPorts,
    accounts_for,
    generate_password,
    generate_tls_files,
    member_addresses,
    nats_ports,
    start_broker,
    topic_matches,
    write_nats_config,
)
from i24net.broker.nats import (
    find_nats_server,
    mqtt_filter_to_subjects,
    mqtt_login_works,
    nats_permissions,
    pick_base_port,
)

from .support import (
    AGENCIES,
    ARRIVAL_TIMEOUT,
    DE,
    FR,
    HOST,
    NATS_SERVER,
    PREFIX,
    Endpoint,
    Network,
    messages_within,
    next_message,
    requires_nats,
)
from .support import connect as connect_once

# the live tests run NATS clusters; one worker runs them in turn (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("nats")

INBOX_FR = f"{PREFIX}/inbox/{FR}"
INBOX_DE = f"{PREFIX}/inbox/{DE}"
SUBMIT_FR = f"{PREFIX}/submit/{FR}"
SUBMIT_DE = f"{PREFIX}/submit/{DE}"
PRESENCE_FR = f"{PREFIX}/presence/{FR}"
PRESENCE_DE = f"{PREFIX}/presence/{DE}"
DIRECTORY = f"{PREFIX}/directory"
SUBACK_FAILURE = 0x80
# A member's death stops what it led until JetStream re-elects (4-9 s measured): enough margin.
FAILOVER_TIMEOUT = 25.0
# A login on NATS writes the session to a replicated stream: its JetStream request alone may
# wait 4 s (nats-server's own timeout) on a loaded machine, so a login gets more than that.
LOGIN_TIMEOUT = 15.0

F = TypeVar("F", bound=Callable[..., Any])


def live(test: F) -> F:
    """A test against a real cluster: marked ``broker``, skipped without nats-server."""
    marked: F = pytest.mark.broker(requires_nats(pytest.mark.timeout(90)(test)))
    return marked


def connect(endpoint: Endpoint, network: Network, username: str, **kwargs: Any) -> Client:
    """``support.connect`` with room for a cluster's slower logins."""
    return connect_once(endpoint, network, username, timeout=LOGIN_TIMEOUT, **kwargs)


# --- ports and addresses --------------------------------------------------------------------


def test_port_layout() -> None:
    assert nats_ports(20000, 1) == NatsPorts(mqtt=20000, client=20001, cluster=20002, monitor=20003)
    assert nats_ports(20000, 3) == NatsPorts(mqtt=20020, client=20021, cluster=20022, monitor=20023)
    assert member_addresses(HOST, 20000, 3) == [(HOST, 20000), (HOST, 20010), (HOST, 20020)]


@pytest.mark.parametrize(
    ("base", "member", "message"),
    [
        (0, 1, "real base port"),
        (20000, 0, "does not exist"),
        (20000, 10, "does not exist"),
        (65530, 2, "lower base port"),
        (70000, 1, "invalid"),
    ],
)
def test_bad_ports_are_refused(base: int, member: int, message: str) -> None:
    with pytest.raises(BrokerConfigError, match=message):
        nats_ports(base, member)


def test_picked_base_port_leaves_every_member_port_free() -> None:
    base = pick_base_port(HOST, 3)
    for k in (1, 2, 3):
        ports = nats_ports(base, k)
        for port in (ports.mqtt, ports.client, ports.cluster, ports.monitor):
            with socket.socket() as sock:
                sock.bind((HOST, port))


# --- topic filters to subjects ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "subjects"),
    [
        (INBOX_FR, ("i24.v1.inbox.NCB-FR",)),
        (f"{PREFIX}/presence/+", ("i24.v1.presence.*",)),
        # MQTT "a/#" also matches "a"; NATS "a.>" does not, so both are granted.
        (f"{PREFIX}/#", ("i24.v1", "i24.v1.>")),
        ("a/+/#", ("a.*", "a.*.>")),
    ],
)
def test_filters_become_subjects(topic_filter: str, subjects: tuple[str, ...]) -> None:
    assert mqtt_filter_to_subjects(topic_filter) == subjects


@pytest.mark.parametrize(
    ("topic_filter", "reason"),
    [
        ("i24/v1/inbox/NCB.FR", "'.'"),
        ("i24/v1/in box", "'.' or ' '"),
        ("#", "first level"),
        ("+/inbox", "first level"),
        ("$SYS/broker", "first level"),
        ("a//b", "empty topic levels"),
        ("a/#/b", "not a valid MQTT topic filter"),
    ],
)
def test_untranslatable_filters_are_refused(topic_filter: str, reason: str) -> None:
    with pytest.raises(BrokerConfigError, match=reason):
        mqtt_filter_to_subjects(topic_filter)


def nats_subject_matches(pattern: str, subject: str) -> bool:
    """NATS matching: '*' fills one token, a final '>' one or more."""
    p_tokens, s_tokens = pattern.split("."), subject.split(".")
    for index, token in enumerate(p_tokens):
        if token == ">":
            return len(s_tokens) > index
        if index >= len(s_tokens) or token not in ("*", s_tokens[index]):
            return False
    return len(p_tokens) == len(s_tokens)


LEVEL = st.sampled_from(["a", "b", "c"])
FILTER_LEVEL = st.sampled_from(["a", "b", "+"])


@given(
    first=LEVEL,
    rest=st.lists(FILTER_LEVEL, max_size=3),
    hash_end=st.booleans(),
    topic=st.lists(LEVEL, min_size=1, max_size=5),
)
def test_translation_grants_exactly_what_mqtt_grants(
    first: str, rest: list[str], hash_end: bool, topic: list[str]
) -> None:
    topic_filter = "/".join([first, *rest, *(["#"] if hash_end else [])])
    subjects = mqtt_filter_to_subjects(topic_filter)
    assert topic_matches(topic_filter, "/".join(topic)) == any(
        nats_subject_matches(subject, ".".join(topic)) for subject in subjects
    )


def test_permissions_of_an_agency_and_the_router(network: Network) -> None:
    assert nats_permissions(network.account(FR)) == {
        "publish": {"allow": ["i24.v1.submit.NCB-FR", "i24.v1.submit.NCB-FR.to.*",
                              "i24.v1.presence.NCB-FR"]},
        "subscribe": {
            "allow": [
                "i24.v1.inbox.NCB-FR",
                "i24.v1.directory",
                "i24.v1.presence.*",
                "$MQTT.sub.>",
            ]
        },
    }
    router = nats_permissions(network.account(ROUTER_USERNAME))
    assert "i24.v1.inbox.*" in router["publish"]["allow"]
    assert "i24.v1.submit.*" in router["subscribe"]["allow"]
    assert "i24.v1.submit.*.to.*" in router["subscribe"]["allow"]
    # The router's shard links (route/<k>) are covered by its own grants.
    for account in network.accounts:
        for grant in account.publish + account.subscribe:
            assert mqtt_filter_to_subjects(grant)


# --- generated files --------------------------------------------------------------------------


def test_member_config_names_its_ports_routes_and_users(network: Network, tmp_path: Path) -> None:
    config = write_nats_config(tmp_path, network.accounts, member=2, members=3, port=20000)
    assert config.conf == tmp_path.resolve() / "member-2" / "nats.conf"
    assert stat.S_IMODE(config.conf.stat().st_mode) == 0o600
    text = config.conf.read_text()
    secret = (tmp_path / "route-secret").read_text().strip()
    assert stat.S_IMODE((tmp_path / "route-secret").stat().st_mode) == 0o600
    assert 'server_name: "i24-nats-2"' in text
    assert 'listen: "127.0.0.1:20011"' in text
    assert 'http: "127.0.0.1:20013"' in text
    assert 'listen: "127.0.0.1:20010"' in text  # MQTT
    assert 'listen: "127.0.0.1:20012"' in text  # routes
    # Routes to the two other members only, each with the shared secret.
    routes = text.split("routes: ")[1].split("\n")[0]
    assert routes == (
        f'["nats-route://i24-route:{secret}@127.0.0.1:20002", '
        f'"nats-route://i24-route:{secret}@127.0.0.1:20022"]'
    )
    assert "stream_replicas: 3" in text
    assert "max_payload: 8454144" in text  # the directory plus 64 KiB
    assert text.count('allowed_connection_types: ["MQTT"]') == len(network.accounts)
    assert '"i24.v1.inbox.NCB-FR", "i24.v1.directory", "i24.v1.presence.*", "$MQTT.sub.>"' in text
    assert str(tmp_path.resolve() / "member-2") in text  # JetStream store under member-2
    # the passwords themselves are not in the file: bcrypt hashes ("$2a$") are
    import bcrypt

    for account in network.accounts:
        assert account.password not in text
        block = text.split(f'user: "{account.username}"', 1)[1]
        stored = block.split('password: "', 1)[1].split('"', 1)[0]
        assert stored.startswith("$2a$04$")
        assert bcrypt.checkpw(account.password.encode(), stored.encode())
    hashes = tmp_path / "password-hashes.json"
    assert stat.S_IMODE(hashes.stat().st_mode) == 0o600
    # written again, a password unchanged keeps its hash; a changed one gets a new hash
    again = write_nats_config(tmp_path, network.accounts, member=2, members=3, port=20000)
    assert again.conf.read_text() == text
    first, *rest = network.accounts
    changed = [dataclasses.replace(first, password="another-password"), *rest]
    redone = write_nats_config(tmp_path, changed, member=2, members=3, port=20000)
    lines = set(redone.conf.read_text().splitlines()) ^ set(text.splitlines())
    assert len(lines) == 2 and all("password:" in line for line in lines)


def test_with_tls_every_listener_but_the_monitor_speaks_tls(network: Network,
                                                            tmp_path: Path) -> None:
    tls = generate_tls_files(tmp_path / "tls")
    config = write_nats_config(tmp_path, network.accounts, member=2, members=3, port=20000,
                               tls=tls)
    text = config.conf.read_text()
    head, rest = text.split("jetstream {", 1)
    cluster, mqtt = rest.split("cluster {", 1)[1].split("mqtt {", 1)
    # the NATS-protocol listener (whose logins are refused anyway) and MQTT: TLS only
    for block in (head, mqtt):
        assert f'cert_file: "{tls.server_cert}"' in block
        assert f'key_file: "{tls.server_key}"' in block
        assert "verify: true" not in block
    # routes: mutual, each member verifies the other's certificate against the CA
    assert f'ca_file: "{tls.ca_cert}"' in cluster and "verify: true" in cluster
    assert 'http: "127.0.0.1:20013"' in head  # the monitor stays plain, on loopback
    assert "tls {" not in write_nats_config(tmp_path / "plain", network.accounts, member=2,
                                            port=20000).conf.read_text()


def test_members_on_addresses_of_their_own_bind_them_and_route_to_each_other(
        network: Network, tmp_path: Path) -> None:
    hosts = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    config = write_nats_config(tmp_path, network.accounts, member=2, members=3, port=20000,
                               hosts=hosts)
    text = config.conf.read_text()
    assert config.host == "127.0.0.2"
    assert 'listen: "127.0.0.2:20010"' in text and 'listen: "127.0.0.2:20012"' in text
    routes = text.split("routes: ")[1].split("\n")[0]
    assert "@127.0.0.1:20002" in routes and "@127.0.0.3:20022" in routes
    assert member_addresses("127.0.0.1", 20000, 3, hosts) == [
        ("127.0.0.1", 20000), ("127.0.0.2", 20010), ("127.0.0.3", 20020)]
    with pytest.raises(BrokerConfigError, match="loopback"):
        write_nats_config(tmp_path, network.accounts, member=1, port=20000,
                          hosts=("10.0.0.1", "127.0.0.2", "127.0.0.3"))


def test_members_share_one_route_secret(network: Network, tmp_path: Path) -> None:
    first = write_nats_config(tmp_path, network.accounts, member=1, port=20000)
    again = write_nats_config(tmp_path, network.accounts, member=1, port=20000)
    third = write_nats_config(tmp_path, network.accounts, member=3, port=20000)
    secret = (tmp_path / "route-secret").read_text().strip()
    assert len(secret) == 48
    for config in (first, again, third):
        assert secret in config.conf.read_text()


def test_a_lone_member_has_no_cluster(network: Network, tmp_path: Path) -> None:
    config = write_nats_config(tmp_path, network.accounts, member=1, members=1, port=20000)
    text = config.conf.read_text()
    assert "cluster {" not in text
    assert "stream_replicas: 1" in text
    assert not (tmp_path / "route-secret").exists()


@requires_nats
@pytest.mark.parametrize("members", [1, 3])
def test_nats_server_accepts_the_config(network: Network, tmp_path: Path, members: int) -> None:
    config = write_nats_config(tmp_path, network.accounts, member=1, members=members, port=20000)
    assert NATS_SERVER is not None
    result = subprocess.run(
        [NATS_SERVER, "-t", "-c", str(config.conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dotted_agency_ids_are_refused(tmp_path: Path) -> None:
    account = BrokerAccount("NCB.FR", "x" * 32, (f"{PREFIX}/submit/NCB.FR",), ())
    with pytest.raises(BrokerConfigError, match=r"cannot carry '\.'"):
        write_nats_config(tmp_path, [account], member=1, port=20000)


def test_limits_are_checked() -> None:
    assert NatsLimits().replicas_for(3) == 3
    assert NatsLimits().replicas_for(2) == 2
    assert NatsLimits().replicas_for(9) == 3
    with pytest.raises(BrokerConfigError, match="exceeds the 2 members"):
        NatsLimits(stream_replicas=3).replicas_for(2)
    with pytest.raises(BrokerConfigError, match="64 MiB"):
        NatsLimits(max_payload=65 * 1024 * 1024)
    with pytest.raises(BrokerConfigError, match="positive integer"):
        NatsLimits(ack_wait_seconds=0)


def test_start_broker_builds_a_cluster_or_one_member(network: Network, tmp_path: Path) -> None:
    assert "nats" in ENGINES
    cluster = start_broker("nats", tmp_path, network.accounts, port=20000)
    assert isinstance(cluster, NatsCluster)
    assert cluster.addresses == member_addresses(HOST, 20000, 3)
    member = start_broker("nats", tmp_path, network.accounts, port=20000, member=2)
    assert isinstance(member, NatsMember)
    assert (member.host, member.port) == (HOST, 20010)
    assert member.addresses == cluster.addresses
    with pytest.raises(BrokerConfigError, match="base port"):
        start_broker("nats", tmp_path, network.accounts, member=2)
    tls = generate_tls_files(tmp_path / "t")
    assert isinstance(start_broker("nats", tmp_path, network.accounts, tls=tls), NatsCluster)
    with pytest.raises(BrokerConfigError, match="TLS"):
        start_broker("embedded", tmp_path, network.accounts, tls=tls)
    with pytest.raises(BrokerConfigError, match="member= is for nats"):
        start_broker("mosquitto", tmp_path, network.accounts, member=1)


def test_missing_nats_server_says_what_to_install() -> None:
    with pytest.raises(BrokerNotInstalledError, match="apt-get install nats-server"):
        find_nats_server("/nonexistent/nats-server")


# --- helpers for the live tests ---------------------------------------------------------------


@pytest.fixture(scope="module")
def network() -> Network:
    """One network for the module: the shared cluster serves its accounts."""
    passwords = {name: generate_password(os.urandom) for name in (*AGENCIES, ROUTER_USERNAME)}
    return Network(tuple(accounts_for(AGENCIES, passwords, PREFIX)), passwords)


@pytest.fixture(scope="module")
def shared_cluster(network: Network,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """One 3-member cluster for the tests that leave it as they found it: each uses its own
    client ids and waits for the exact retained payload it published."""
    running = NatsCluster(tmp_path_factory.mktemp("nats") / "nats", network.accounts)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def cluster(shared_cluster: NatsCluster) -> NatsCluster:
    assert shared_cluster.running, "an earlier test left the shared cluster broken"
    return shared_cluster


@pytest.fixture
async def fresh_cluster(network: Network, tmp_path: Path) -> AsyncIterator[NatsCluster]:
    """A cluster of its own, for a test that kills members."""
    async with NatsCluster(tmp_path / "nats", network.accounts) as running:
        yield running


def at(cluster: NatsCluster, k: int) -> Endpoint:
    return Endpoint("nats", cluster.host, cluster.member(k).port)


@contextlib.asynccontextmanager
async def connect_retrying(
    endpoint: Endpoint, network: Network, username: str, **kwargs: Any
) -> AsyncIterator[Client]:
    """Connect, retrying while the cluster re-elects after a member's death."""
    deadline = time.monotonic() + FAILOVER_TIMEOUT
    while True:
        client = connect(endpoint, network, username, **kwargs)
        try:
            await client.__aenter__()
            break
        except MqttError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        yield client
    finally:
        await client.__aexit__(None, None, None)


async def publish_retrying(
    endpoint: Endpoint, network: Network, topic: str, payloads: list[bytes]
) -> None:
    """Publish each payload at QoS 1 from the router until the broker acknowledges it."""
    deadline = time.monotonic() + FAILOVER_TIMEOUT
    pending = list(payloads)
    while pending:
        try:
            async with connect(
                endpoint, network, ROUTER_USERNAME, identifier=f"{ROUTER_USERNAME}:test"
            ) as router:
                while pending:
                    await router.publish(topic, pending[0], qos=1)
                    pending.pop(0)
        except MqttError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return len(data).to_bytes(2, "big") + data


def _packet(kind: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes([kind]) + bytes(encoded) + body


class RawMqtt:
    """A bare MQTT 3.1.1 client on a blocking socket, for what aiomqtt hides: wills sent by
    a connection that just drops, and PUBLISH packets left unacknowledged."""

    def __init__(self, endpoint: Endpoint, network: Network, username: str, client_id: str,
                 *, clean: bool = True, will: tuple[str, bytes] | None = None) -> None:
        flags = 0xC0 | (0x02 if clean else 0)
        payload = _string(client_id)
        if will is not None:
            flags |= 0x04 | (1 << 3)  # will at QoS 1
            payload += _string(will[0]) + _string(will[1])
        payload += _string(username) + _string(network.passwords[username])
        body = _string("MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big") + payload
        self.sock = socket.create_connection((endpoint.host, endpoint.port), timeout=10)
        self.sock.sendall(_packet(0x10, body))
        self.connack = self._read_exactly(4)

    @property
    def accepted(self) -> bool:
        return self.connack[0] == 0x20 and self.connack[3] == 0

    @property
    def session_present(self) -> bool:
        return bool(self.connack[2] & 1)

    def _read_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return data

    def subscribe(self, topic_filter: str) -> int:
        self.sock.sendall(_packet(0x82, (1).to_bytes(2, "big") + _string(topic_filter) + b"\x01"))
        return self._read_exactly(5)[4]

    def read_publish(self, timeout: float) -> dict[str, Any]:
        self.sock.settimeout(timeout)
        header = self._read_exactly(1)[0]
        length, shift = 0, 0
        while True:
            byte = self._read_exactly(1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        data = self._read_exactly(length)
        topic_length = int.from_bytes(data[:2], "big")
        return {
            "type": header >> 4,
            "dup": bool(header & 0x08),
            "topic": data[2 : 2 + topic_length].decode(),
            "packet_id": int.from_bytes(data[2 + topic_length : 4 + topic_length], "big"),
            "payload": data[4 + topic_length :],
        }

    def drop(self) -> None:
        """Close the socket without DISCONNECT, as a crashed client would."""
        self.sock.close()


# --- the live cluster -------------------------------------------------------------------------


@live
async def test_cluster_starts_with_replicated_mqtt_streams(cluster: NatsCluster) -> None:
    assert cluster.running and len(cluster.members) == 3
    assert cluster.startup_seconds is not None and cluster.startup_seconds < 30
    assert cluster.port == cluster.addresses[0][1]
    leaders = {member.meta_leader() for member in cluster.members}
    assert len(leaders) == 1 and None not in leaders
    report = cluster.member(1).jsz("streams=true&config=true")
    assert report is not None
    streams = {s["name"]: s for s in report["account_details"][0]["stream_detail"]}
    assert set(streams) == {"$MQTT_sess", "$MQTT_msgs", "$MQTT_rmsgs"}
    for stream in streams.values():
        assert stream["config"]["num_replicas"] == 3
        assert stream["config"]["storage"] == "file"
    for member in cluster.members:
        assert member.directory.joinpath("jetstream").is_dir()


@live
async def test_qos1_message_crosses_members(cluster: NatsCluster, network: Network) -> None:
    async with (
        connect(at(cluster, 3), network, FR) as fr,
        connect(at(cluster, 1), network, ROUTER_USERNAME) as router,
    ):
        await fr.subscribe(INBOX_FR, qos=1)
        await router.publish(INBOX_FR, b"diffusion-1", qos=1)
        message = await next_message(fr)
    assert (str(message.topic), message.payload, message.qos) == (INBOX_FR, b"diffusion-1", 1)


@live
async def test_agencies_are_isolated(cluster: NatsCluster, network: Network) -> None:
    async with (
        connect(at(cluster, 1), network, FR) as fr,
        connect(at(cluster, 2), network, ROUTER_USERNAME) as router,
    ):
        # Reading another inbox: refused outright, whatever the filter's shape.
        for topic_filter in (INBOX_DE, f"{PREFIX}/inbox/+", f"{PREFIX}/#", "$MQTT/sub/#"):
            reason_codes = await fr.subscribe(topic_filter, qos=1)
            assert [code.value for code in reason_codes] == [SUBACK_FAILURE], topic_filter
        await fr.subscribe(INBOX_FR, qos=1)
        await router.publish(INBOX_DE, b"for-de-only", qos=1)
        await router.publish(INBOX_FR, b"control", qos=1)
        assert (await next_message(fr)).payload == b"control"
        assert await messages_within(fr) == []

        # Submitting as another agency: acknowledged, then dropped.
        await router.subscribe(f"{PREFIX}/submit/+", qos=1)
        await fr.publish(SUBMIT_DE, b"forged", qos=1)
        await fr.publish(SUBMIT_FR, b"genuine", qos=1)
        message = await next_message(router)
        assert (str(message.topic), message.payload) == (SUBMIT_FR, b"genuine")
        assert await messages_within(router) == []


@live
async def test_nats_protocol_logins_are_refused(cluster: NatsCluster, network: Network) -> None:
    # A NATS client could subscribe to every session's delivery subjects; only MQTT may log in.
    port = cluster.member(1).ports.client
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.recv(4096)  # INFO
        credentials = f'"user":"{FR}","pass":"{network.passwords[FR]}"'
        sock.sendall(f'CONNECT {{{credentials},"verbose":false}}\r\nPING\r\n'.encode())
        reply = sock.recv(4096)
    assert b"-ERR" in reply and b"Authorization Violation" in reply
    account = network.account(FR)
    assert mqtt_login_works(HOST, cluster.member(1).port, account, f"{FR}:probe")


@live
async def test_retained_message_reaches_a_new_subscriber_elsewhere(
    cluster: NatsCluster, network: Network
) -> None:
    async with connect(at(cluster, 1), network, ROUTER_USERNAME) as router:
        await router.publish(DIRECTORY, b"directory-v7", qos=1, retain=True)
    # Members learn retained messages through JetStream, a moment after the publisher's.
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while True:
        async with connect(at(cluster, 2), network, DE) as de:
            await de.subscribe(DIRECTORY, qos=1)
            received = await messages_within(de, 0.5)
        # a member may still hold the value retained before this one, for a moment
        if [m.payload for m in received] == [b"directory-v7"] or \
                time.monotonic() > deadline:
            break
    assert [(m.payload, m.retain) for m in received] == [(b"directory-v7", True)]


@live
async def test_large_retained_directory(cluster: NatsCluster, network: Network) -> None:
    directory = os.urandom(6 * 1024 * 1024)  # a signed directory of thousands of agencies
    async with connect(at(cluster, 1), network, ROUTER_USERNAME) as router:
        await router.publish(DIRECTORY, directory, qos=1, retain=True)
    deadline = time.monotonic() + 10
    while True:
        async with connect(at(cluster, 3), network, FR) as fr:
            await fr.subscribe(DIRECTORY, qos=1)
            received = await messages_within(fr, 1.0)
        if [m.payload for m in received] == [directory] or time.monotonic() > deadline:
            break
    assert len(received) == 1 and received[0].payload == directory


@live
async def test_wills_are_published_and_checked(cluster: NatsCluster, network: Network) -> None:
    async with connect(at(cluster, 1), network, ROUTER_USERNAME) as router:
        await router.subscribe(f"{PREFIX}/presence/+", qos=1)
        crashed = RawMqtt(at(cluster, 2), network, FR, f"{FR}:node",
                          will=(PRESENCE_FR, b"offline"))
        assert crashed.accepted
        crashed.drop()
        message = await next_message(router)
        assert (str(message.topic), message.payload) == (PRESENCE_FR, b"offline")

        # A will on another agency's topic is dropped like any forged publish.
        spoof = RawMqtt(at(cluster, 3), network, FR, f"{FR}:a", will=(PRESENCE_DE, b"spoof"))
        control = RawMqtt(at(cluster, 3), network, FR, f"{FR}:b", will=(PRESENCE_FR, b"ctl"))
        assert spoof.accepted and control.accepted
        spoof.drop()
        await asyncio.sleep(0.2)
        control.drop()
        message = await next_message(router)
        assert (str(message.topic), message.payload) == (PRESENCE_FR, b"ctl")
        assert await messages_within(router) == []


@live
async def test_unacknowledged_message_is_redelivered_on_another_member(
    network: Network, tmp_path: Path
) -> None:
    # 2.9.10 resends an unacknowledged QoS 1 message when its consumer's ack_wait runs out
    # (counted from the first delivery), not as soon as the session reconnects.
    ack_wait = 2
    limits = NatsLimits(ack_wait_seconds=ack_wait)
    async with NatsCluster(tmp_path / "nats", network.accounts, limits=limits) as cluster:
        node = await asyncio.to_thread(
            RawMqtt, at(cluster, 1), network, FR, f"{FR}:raw", clean=False
        )
        assert await asyncio.to_thread(node.subscribe, INBOX_FR) == 1
        await publish_retrying(at(cluster, 2), network, INBOX_FR, [b"must-arrive"])
        first = await asyncio.to_thread(node.read_publish, ARRIVAL_TIMEOUT)
        assert (first["payload"], first["dup"]) == (b"must-arrive", False)
        node.drop()  # no PUBACK

        again = await asyncio.to_thread(
            RawMqtt, at(cluster, 3), network, FR, f"{FR}:raw", clean=False
        )
        assert again.session_present
        redelivered = await asyncio.to_thread(again.read_publish, ack_wait + ARRIVAL_TIMEOUT)
        again.drop()
    assert (redelivered["payload"], redelivered["dup"]) == (b"must-arrive", True)


@live
async def test_client_id_moves_to_another_member(cluster: NatsCluster, network: Network) -> None:
    client_id = f"{DE}:moves"
    async with connect(at(cluster, 1), network, DE, identifier=client_id,
                       clean_session=False) as first:
        await first.subscribe(INBOX_DE, qos=1)
    async with (
        connect(at(cluster, 1), network, DE, identifier=client_id, clean_session=False) as old,
        connect(at(cluster, 2), network, DE, identifier=client_id, clean_session=False) as new,
    ):
        # MQTT-3.1.4-2: the broker closes the existing connection, on whatever member.
        with pytest.raises(MqttError, match="Disconnected"):
            async with asyncio.timeout(ARRIVAL_TIMEOUT):
                await anext(aiter(old.messages))
        await publish_retrying(at(cluster, 3), network, INBOX_DE, [b"to-the-new-one"])
        message = await next_message(new)
    assert message.payload == b"to-the-new-one"


@live
async def test_another_account_cannot_read_a_session_by_its_client_id(
    cluster: NatsCluster, network: Network
) -> None:
    client_id = f"{FR}:stolen"
    async with connect(at(cluster, 1), network, FR, identifier=client_id, clean_session=False) as fr:
        await fr.subscribe(INBOX_FR, qos=1)
    await publish_retrying(at(cluster, 2), network, INBOX_FR, [b"queued-for-fr"])
    async with connect(at(cluster, 3), network, DE, identifier=client_id,
                       clean_session=False) as thief:
        assert await messages_within(thief, 1.0) == []
    await asyncio.sleep(1.1)  # NATS refuses a client id taken over less than 1 s ago
    async with connect(at(cluster, 1), network, FR, identifier=client_id,
                       clean_session=False) as fr:
        message = await next_message(fr)
    assert message.payload == b"queued-for-fr"


@live
async def test_persistent_session_survives_a_member_crash(
    fresh_cluster: NatsCluster, network: Network
) -> None:
    cluster = fresh_cluster
    client_id = f"{FR}:node"
    async with connect(at(cluster, 1), network, FR, identifier=client_id, clean_session=False) as fr:
        await fr.subscribe(INBOX_FR, qos=1)
    assert cluster.kill_member(1) == -9
    payloads = [f"while-member-1-is-down-{i}".encode() for i in range(5)]
    await publish_retrying(at(cluster, 2), network, INBOX_FR, payloads)
    received: list[tuple[str, bytes, int]] = []
    async with connect_retrying(
        at(cluster, 3), network, FR, identifier=client_id, clean_session=False
    ) as fr:
        while {payload for _, payload, _ in received} != set(payloads):
            m = await next_message(fr, FAILOVER_TIMEOUT)  # fails the test when none comes
            received.append((str(m.topic), m.payload, m.qos))
        # whatever else the session still held for FR
        received += [(str(m.topic), m.payload, m.qos) for m in await messages_within(fr)]
    # QoS 1 allows a redelivery of these, nothing else: each one came first in the order it
    # was published, on FR's inbox, at QoS 1, and nothing arrived that was not published.
    assert list(dict.fromkeys(payload for _, payload, _ in received)) == payloads, received
    assert {(topic, qos) for topic, _, qos in received} == {(INBOX_FR, 1)}, received


@live
async def test_killed_member_restarts_and_serves(fresh_cluster: NatsCluster,
                                                 network: Network) -> None:
    cluster = fresh_cluster
    async with connect(at(cluster, 2), network, ROUTER_USERNAME) as router:
        await router.publish(DIRECTORY, b"before-the-crash", qos=1, retain=True)
    store = cluster.member(2).directory / "jetstream"
    cluster.kill_member(2)
    assert not cluster.member(2).running and store.is_dir()
    await asyncio.to_thread(cluster.wait_for_leaders, FAILOVER_TIMEOUT)
    seconds = await asyncio.to_thread(cluster.restart_member, 2)
    assert cluster.member(2).running and seconds < 30
    async with (
        connect(at(cluster, 2), network, DE) as de,
        connect(at(cluster, 2), network, ROUTER_USERNAME) as router,
    ):
        await de.subscribe(DIRECTORY, qos=1)
        retained = await next_message(de)
        await de.subscribe(INBOX_DE, qos=1)
        await router.publish(INBOX_DE, b"after-the-restart", qos=1)
        live_message = await next_message(de)
    assert (retained.payload, retained.retain) == (b"before-the-crash", True)
    assert live_message.payload == b"after-the-restart"


@live
async def test_a_tls_cluster_refuses_plain_logins_and_routes_over_tls(
        network: Network, tmp_path: Path) -> None:
    import ssl

    tls = generate_tls_files(tmp_path / "tls")
    async with NatsCluster(tmp_path / "nats", network.accounts, tls=tls) as cluster:
        fr = network.account(FR)
        assert not mqtt_login_works(HOST, cluster.member(1).port, fr, f"{FR}:plain")
        assert mqtt_login_works(HOST, cluster.member(1).port, fr, f"{FR}:tls", ca=tls.ca_cert)
        # a client that trusts another CA does not log in
        other = generate_tls_files(tmp_path / "other")
        assert not mqtt_login_works(HOST, cluster.member(1).port, fr, f"{FR}:x",
                                    ca=other.ca_cert)
        # the route port demands TLS with a certificate the CA signed: a TLS client without
        # one is turned away in the handshake (a plain one waits there until it times out)
        context = ssl.create_default_context(cafile=str(tls.ca_cert))
        route = (HOST, cluster.member(2).ports.cluster)
        with socket.create_connection(route, timeout=5) as s, \
                pytest.raises(ssl.SSLError, match="CERTIFICATE"):
            context.wrap_socket(s, server_hostname=HOST).recv(1)
        async with (
            connect_once(at(cluster, 3), network, FR, timeout=LOGIN_TIMEOUT,
                         tls_context=context) as subscriber,
            connect_once(at(cluster, 1), network, ROUTER_USERNAME, timeout=LOGIN_TIMEOUT,
                         tls_context=context) as router,
        ):
            await subscriber.subscribe(INBOX_FR, qos=1)
            await router.publish(INBOX_FR, b"over-tls", qos=1)  # member 1 -> 3: a route
            message = await next_message(subscriber)
        assert message.payload == b"over-tls"
