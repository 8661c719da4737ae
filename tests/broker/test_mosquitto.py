"""Mosquitto: the generated files, the standard command-line clients, persistence, lifecycle."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import re
import signal
import socket
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiomqtt import MqttError

from i24net.broker import (
    ROUTER_USERNAME,
    BrokerAccount,
    BrokerConfigError,
    BrokerNotInstalledError,
    BrokerStartError,
    MosquittoBroker,
    MosquittoLimits,
    write_mosquitto_config,
)
from i24net.broker.mosquitto import hash_password_pbkdf2, render_acl, render_password_file

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
    requires_mosquitto,
    requires_mosquitto_clients,
)

INBOX_FR = f"{PREFIX}/inbox/{FR}"
SUBMIT_FR = f"{PREFIX}/submit/{FR}"
SUBMIT_DE = f"{PREFIX}/submit/{DE}"

# Known-answer vector made by `mosquitto_passwd -U` (Mosquitto 2.0.11) for user A, password
# "pwA": the salt is in the hash, so the same salt must give the same hash here.
MOSQUITTO_PASSWD_VECTOR = (
    "pwA",
    "$7$101$zGSb8V4FlK824Leo$WXRyRS1TZP9QCB0KUnKFUbsZZucnlGvvIT9Ev1ILqZ5yXYASiVJ9O4j0VjP0dAcjzZNj"
    "Gw1Bam3F+PMd88OOfw==",
)


def endpoint(broker: MosquittoBroker) -> Endpoint:
    return Endpoint("mosquitto", broker.host, broker.port)


# --- generated files (no broker needed) ---------------------------------------------------


def test_password_hash_matches_mosquitto_passwd() -> None:
    password, expected = MOSQUITTO_PASSWD_VECTOR
    salt = base64.b64decode(expected.split("$")[3])
    assert hash_password_pbkdf2(password, salt) == expected
    assert hash_password_pbkdf2("pwB", salt) != expected


def test_password_file_salts_each_account(network: Network) -> None:
    text = render_password_file(network.accounts)
    lines = text.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == [a.username for a in network.accounts]
    salts = {line.split("$")[3] for line in lines}
    assert len(salts) == len(lines)
    assert all(line.split(":", 1)[1].startswith("$7$101$") for line in lines)


def test_acl_lists_each_accounts_topics(network: Network) -> None:
    acl = render_acl([network.account(FR)])
    assert acl.splitlines()[1:] == [
        "",
        f"user {FR}",
        f"topic write {PREFIX}/submit/{FR}",
        f"topic write {PREFIX}/submit/{FR}/to/+",
        f"topic write {PREFIX}/presence/{FR}",
        f"topic read {PREFIX}/inbox/{FR}",
        f"topic read {PREFIX}/directory",
        f"topic read {PREFIX}/presence/+",
    ]
    assert "pattern" not in render_acl(network.accounts)


@pytest.mark.parametrize("hasher", ["builtin", "auto"])
def test_config_files(tmp_path: Path, network: Network, hasher: str) -> None:
    config = write_mosquitto_config(tmp_path / "m", network.accounts, hasher=hasher)  # type: ignore[arg-type]
    conf = config.conf.read_text().splitlines()
    for line in [
        f"listener {config.port} 127.0.0.1",
        "allow_anonymous false",
        "per_listener_settings false",
        f"password_file {config.password_file}",
        f"acl_file {config.acl_file}",
        "persistence true",
        f"persistence_location {config.persistence_dir}/",
        "autosave_interval 1",
        "max_queued_messages 100000",
        "max_inflight_messages 100",
        "use_username_as_clientid false",
    ]:
        assert line in conf
    assert not any(line.startswith("cafile") for line in conf)
    for private in (config.password_file, config.acl_file):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    hashes = dict(line.split(":", 1) for line in config.password_file.read_text().splitlines())
    assert set(hashes) == {a.username for a in network.accounts}
    assert all(h.startswith("$7$") for h in hashes.values())
    assert network.passwords[FR] not in config.password_file.read_text()


def test_config_refuses_unsafe_values(tmp_path: Path, network: Network) -> None:
    with pytest.raises(BrokerConfigError, match="loopback only"):
        write_mosquitto_config(tmp_path, network.accounts, host="0.0.0.0")
    with pytest.raises(BrokerConfigError, match="port"):
        write_mosquitto_config(tmp_path, network.accounts, port=70000)
    with pytest.raises(BrokerConfigError, match="whitespace"):
        write_mosquitto_config(tmp_path / "with space", network.accounts)
    with pytest.raises(BrokerConfigError, match="listed twice"):
        write_mosquitto_config(tmp_path, [*network.accounts, network.account(FR)])
    with pytest.raises(BrokerConfigError, match="max_queued_messages"):
        MosquittoLimits(max_queued_messages=0)


def test_missing_binary_is_a_clear_error(tmp_path: Path, network: Network) -> None:
    broker = MosquittoBroker(tmp_path, network.accounts, executable="/nonexistent/mosquitto")
    with pytest.raises(BrokerNotInstalledError, match="apt-get install mosquitto"):
        broker.start()


# --- a running Mosquitto ------------------------------------------------------------------


@pytest.fixture
async def mosquitto(tmp_path: Path, network: Network) -> AsyncIterator[MosquittoBroker]:
    broker = MosquittoBroker(tmp_path / "mosquitto", network.accounts)
    await asyncio.to_thread(broker.start)
    yield broker
    await asyncio.to_thread(broker.stop)


async def run(*command: str, timeout: float = 10) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def client_args(broker: MosquittoBroker, network: Network, user: str) -> list[str]:
    return [
        "-h",
        HOST,
        "-p",
        str(broker.port),
        "-u",
        user,
        "-P",
        network.passwords[user],
        "-i",
        user,
    ]


@pytest.mark.broker
@requires_mosquitto
@requires_mosquitto_clients
async def test_mosquitto_sub_cannot_read_another_inbox(
    mosquitto: MosquittoBroker, network: Network
) -> None:
    sub = ["mosquitto_sub", "-t", INBOX_FR, "-q", "1", "-C", "1", "-W", "2"]
    spy = asyncio.create_task(run(*sub, *client_args(mosquitto, network, DE)))
    owner = asyncio.create_task(run(*sub, *client_args(mosquitto, network, FR)))
    await asyncio.sleep(0.5)  # both subscribed (they wait up to 2 s)
    async with connect(endpoint(mosquitto), network, ROUTER_USERNAME) as router:
        await router.publish(INBOX_FR, b"for FR only", qos=1)
    spy_code, spy_out, _ = await spy
    owner_code, owner_out, _ = await owner
    assert (owner_code, owner_out) == (0, "for FR only\n")  # the message was really sent
    assert spy_out == ""
    assert spy_code != 0  # -W expired with nothing received


@pytest.mark.broker
@requires_mosquitto
@requires_mosquitto_clients
async def test_mosquitto_pub_cannot_write_another_submit_topic(
    mosquitto: MosquittoBroker, network: Network
) -> None:
    async with connect(endpoint(mosquitto), network, ROUTER_USERNAME) as router:
        await router.subscribe(f"{PREFIX}/submit/+", qos=1)
        de = client_args(mosquitto, network, DE)
        forged = await run("mosquitto_pub", *de, "-t", SUBMIT_FR, "-q", "1", "-m", "forged")
        control = await run("mosquitto_pub", *de, "-t", SUBMIT_DE, "-q", "1", "-m", "control")
        assert forged[0] == 0 and control[0] == 0  # MQTT 3.1.1 acknowledges and drops silently
        first = await next_message(router)
        later = await messages_within(router)
    assert [(str(m.topic), m.payload) for m in [first, *later]] == [(SUBMIT_DE, b"control")]


@pytest.mark.broker
@requires_mosquitto
async def test_queued_message_survives_a_restart(tmp_path: Path, network: Network) -> None:
    broker = MosquittoBroker(tmp_path / "m", network.accounts)
    try:
        await asyncio.to_thread(broker.start)
        where = endpoint(broker)
        async with connect(where, network, FR, clean_session=False) as fr:
            await fr.subscribe(INBOX_FR, qos=1)
        async with connect(where, network, ROUTER_USERNAME) as router:
            await router.publish(INBOX_FR, b"queued across restart", qos=1)
        pid = broker.pid
        await asyncio.to_thread(broker.stop)  # SIGTERM: Mosquitto saves its database
        assert not broker.running
        await asyncio.to_thread(broker.start)
        assert broker.pid != pid and broker.port == where.port
        async with connect(where, network, FR, clean_session=False) as fr:
            message = await next_message(fr)
        assert (message.payload, message.qos) == (b"queued across restart", 1)
    finally:
        await asyncio.to_thread(broker.stop)


def _save_on_disk(db: Path) -> tuple[int, int] | None:
    """Which save of the persistence database is on disk, or None before the first: Mosquitto
    writes each save to a new file and renames it over the last one."""
    try:
        st = db.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns)


async def _next_save(db: Path, after: tuple[int, int] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _save_on_disk(db) == after:
        if time.monotonic() > deadline:
            pytest.fail(f"Mosquitto wrote no autosave of {db} within {timeout} s")
        await asyncio.sleep(0.01)


async def _watch_saves(db: Path, last: tuple[int, int] | None, seen: list[float],
                       stop: asyncio.Event) -> None:
    """Append the time of every save of ``db`` after ``last``; a last look once ``stop``."""
    while True:
        now = _save_on_disk(db)
        if now != last:
            seen.append(time.monotonic())
            last = now
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.01)


# Polling and a loaded machine may see a save a little late.
SAVE_SLACK = 0.75


@pytest.mark.broker
@requires_mosquitto
async def test_autosave_bounds_what_a_crash_loses(tmp_path: Path, network: Network) -> None:
    """SIGKILL skips the shutdown save, so a crash loses exactly the messages queued since
    the last autosave, and none queued before it. The configuration saves on time, not on
    changes, every ``autosave_interval`` = 1 s; Mosquitto saves once *more than* that many
    whole seconds have passed, i.e. every interval + 1 = 2 s: the longest a queued message
    waits for the disk, hence the most a crash can lose."""
    broker = MosquittoBroker(tmp_path / "m", network.accounts)
    watcher: asyncio.Task[None] | None = None
    stop = asyncio.Event()
    before = [f"before-{i}".encode() for i in range(10)]
    after = [f"after-{i}".encode() for i in range(10)]
    seen: list[float] = []
    try:
        await asyncio.to_thread(broker.start)
        conf = broker.config.conf.read_text()
        interval = MosquittoLimits().autosave_interval
        assert interval == 1  # the default i24net.broker.mosquitto argues for
        assert f"\nautosave_interval {interval}\n" in conf
        assert "\nautosave_on_changes false\n" in conf
        period = interval + 1
        db = broker.config.persistence_dir / "mosquitto.db"
        where = endpoint(broker)
        async with connect(where, network, FR, clean_session=False) as fr:
            await fr.subscribe(INBOX_FR, qos=1)
        start = _save_on_disk(db)
        watcher = asyncio.ensure_future(_watch_saves(db, start, seen, stop))
        await _next_save(db, start, 3 * period)
        async with connect(where, network, ROUTER_USERNAME) as router:
            for payload in before:  # each acknowledged, so queued, before the next one
                await router.publish(INBOX_FR, payload, qos=1)
        # the next save begins after the last PUBACK: every "before" message is on disk
        await _next_save(db, _save_on_disk(db), 3 * period)
        last_save = _save_on_disk(db)
        async with connect(where, network, ROUTER_USERNAME) as router:
            for payload in after:
                await router.publish(INBOX_FR, payload, qos=1)
        assert await asyncio.to_thread(broker.kill) == -signal.SIGKILL
        saved_since = _save_on_disk(db) != last_save  # a save between the two batches
        stop.set()
        await watcher  # what is on disk now is final: the broker is dead
        await asyncio.to_thread(broker.start)
        async with connect(where, network, FR, clean_session=False) as fr:
            survivors = [m.payload for m in await messages_within(fr, 1.0)]
    finally:
        if watcher is not None:
            watcher.cancel()
        await asyncio.to_thread(broker.stop)
    assert survivors[: len(before)] == before, survivors  # all of them, once, in order
    lost = after[len(survivors) - len(before):]
    assert survivors[len(before):] == after[: len(after) - len(lost)], survivors  # a snapshot
    if not saved_since:
        assert lost == after, survivors  # no save after them: the crash lost exactly those
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert gaps and max(gaps) <= period + SAVE_SLACK, seen


@pytest.mark.broker
@requires_mosquitto
async def test_builtin_hashes_are_accepted_by_mosquitto(tmp_path: Path, network: Network) -> None:
    async with MosquittoBroker(tmp_path / "m", network.accounts, hasher="builtin") as broker:
        async with connect(endpoint(broker), network, FR) as fr:
            await fr.subscribe(INBOX_FR, qos=1)
        with pytest.raises(MqttError):
            async with connect(endpoint(broker), network, FR, password="not-the-password"):
                pytest.fail("a wrong password was accepted")


@pytest.mark.broker
@requires_mosquitto
async def test_reload_locks_out_a_revoked_account(tmp_path: Path, network: Network) -> None:
    async with MosquittoBroker(tmp_path / "m", network.accounts) as broker:
        async with connect(endpoint(broker), network, DE):
            pass
        remaining = [a for a in network.accounts if a.username != DE]
        await asyncio.to_thread(broker.reload, remaining)
        await asyncio.sleep(0.3)  # Mosquitto rereads its files on its next loop iteration
        with pytest.raises(MqttError):
            async with connect(endpoint(broker), network, DE):
                pytest.fail("a revoked account could still log in")
        async with connect(endpoint(broker), network, FR):
            pass


@pytest.mark.broker
@requires_mosquitto
async def test_bound_client_ids_protect_sessions_from_other_accounts(
    tmp_path: Path, network: Network
) -> None:
    async with MosquittoBroker(tmp_path / "m", network.accounts, bind_client_ids=True) as broker:
        where = endpoint(broker)
        async with connect(where, network, FR, clean_session=False) as fr:
            await fr.subscribe(INBOX_FR, qos=1)
        async with connect(where, network, ROUTER_USERNAME) as router:
            await router.publish(INBOX_FR, b"queued for FR", qos=1)
        async with connect(where, network, DE, identifier=FR, clean_session=True) as de:
            assert await messages_within(de) == []
        async with connect(where, network, FR, clean_session=False) as fr:
            assert (await next_message(fr)).payload == b"queued for FR"


@pytest.mark.broker
@requires_mosquitto
def test_start_failure_names_the_log(tmp_path: Path, network: Network) -> None:
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        broker = MosquittoBroker(tmp_path / "m", network.accounts, port=taken, start_timeout=5)
        # The squatter accepts connections, so readiness must not be judged by the port
        # alone: Mosquitto exits ("Address already in use") and that is what is reported.
        with pytest.raises(BrokerStartError, match=r"mosquitto\.log") as caught:
            broker.start()
    assert "Address already in use" in str(caught.value)
    assert not broker.running


@pytest.mark.broker
@requires_mosquitto
def test_sync_lifecycle(tmp_path: Path) -> None:
    account = BrokerAccount("solo", "solo-password-123", publish=("x",), subscribe=("x",))
    broker = MosquittoBroker(tmp_path / "m", [account])
    with pytest.raises(BrokerStartError, match="not been started"):
        _ = broker.port
    broker.start()
    try:
        first_pid, port = broker.pid, broker.port
        assert broker.running and first_pid is not None
        broker.restart()
        assert broker.running and broker.pid != first_pid and broker.port == port
        assert broker.stop() == 0
        assert broker.pid is None and not broker.running
        assert broker.stop() == 0  # idempotent
    finally:
        broker.stop()


@pytest.mark.broker
@requires_mosquitto
@pytest.mark.parametrize("bind_client_ids", [False, True])
def test_listens_only_on_its_loopback_port(
    tmp_path: Path, network: Network, bind_client_ids: bool
) -> None:
    """A listener option placed before the ``listener`` line makes Mosquitto open its default
    listener on port 1883 of every interface; the log shows every socket it opened."""
    broker = MosquittoBroker(tmp_path / "m", network.accounts, bind_client_ids=bind_client_ids)
    broker.start()
    try:
        opened = re.findall(
            r"Opening (ipv\d) listen socket on port (\d+)", broker.log_path.read_text()
        )
    finally:
        broker.stop()
    assert opened == [("ipv4", str(broker.port))]
