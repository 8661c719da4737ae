#!/usr/bin/env python3
"""Measure a 3-member clustered MQTT broker the same way for every engine.

    .venv/bin/python brokers/trial/probe.py --engine rabbitmq --json out.json
    .venv/bin/python brokers/trial/probe.py --engine rabbitmq --queue-type classic --json out.json
    .venv/bin/python brokers/trial/probe.py --engine nats --json out.json

Everything runs on 127.0.0.1, every loop is bounded in count and in time, and every process
the probe starts is stopped at the end (also on Ctrl-C). Measurements (each repeated
``--runs`` times, medians reported):

1. setup: wall time from an empty folder to 3 members that each accept an MQTT CONNECT.
2. throughput: QoS 1, 1 KiB payloads, N messages; publisher on member 1 and a persistent
   (clean_session=False, QoS 1) subscriber on member 2, then both on member 1; at most 64
   publishes in flight (asyncio.Semaphore); msg/s = N / (last receipt - first publish).
3. session: client X subscribes on member 1 (clean_session=False, QoS 1) and disconnects;
   member 1 is SIGKILLed; 200 messages are published via member 2; X reconnects on member 3
   the way i24net's transport does (re-SUBSCRIBE only if CONNACK says no session): how many
   arrive, how long the reconnect took; then member 1 is restarted and late arrivals counted.
4. midstream: X's session is created on member 1 and resumed on member 3 (so the session's
   state was created where the kill happens); a publisher on member 2 sends at a steady rate;
   member 1 is SIGKILLed mid-stream: lost / duplicated / longest gap / subscriber reconnects;
   then member 1 comes back and whatever arrives after that is counted.

Topics and accounts follow i24net's rules: the publisher is the router account publishing to
``i24/v1/inbox/<AGENCY>``, the subscriber is the agency's account, with client ids
``<account>:<suffix>``; every measurement uses its own agency so no leftovers can leak in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import itertools
import json
import logging
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RABBIT_SCRIPT = REPO / "brokers" / "rabbitmq" / "cluster.sh"
PAYLOAD_SIZE = 1024
INFLIGHT = 64
ROUTER = "i24-router"
PREFIX = "i24/v1"

log = logging.getLogger("probe")


def now() -> float:
    return time.perf_counter()


def median(values: list[Any]) -> float | None:
    clean = [v for v in values if v is not None]
    return round(statistics.median(clean), 3) if clean else None


def payload(seq: int) -> bytes:
    head = seq.to_bytes(8, "big")
    return head + b"x" * (PAYLOAD_SIZE - len(head))


def topic_of(agency: str) -> str:
    return f"{PREFIX}/inbox/{agency}"


def code_lines(path: Path) -> int:
    """Non-blank lines that are not comments (# for shell/config, docstrings not counted)."""
    count = 0
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            count += 1
    return count


# --------------------------------------------------------------------------- engines


class Engine:
    """A 3-member cluster: start/stop, kill/restart a member, credentials per role."""

    name = "?"
    members = 3

    def __init__(self, workdir: Path, base_port: int) -> None:
        self.workdir = workdir
        self.base_port = base_port
        self.addresses: list[tuple[str, int]] = []
        self.notes: list[str] = []

    def port(self, member: int) -> int:
        return self.addresses[member - 1][1]

    def creds(self, account: str) -> tuple[str | None, str | None]:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def kill(self, member: int) -> None:
        raise NotImplementedError

    async def restart(self, member: int) -> None:
        raise NotImplementedError

    def effort(self) -> dict[str, Any]:
        return {}

    def agencies(self) -> list[str]:
        return AGENCIES


AGENCIES = (
    [f"TPX{i}" for i in range(1, 6)]
    + [f"TPS{i}" for i in range(1, 6)]
    + [f"SES{i}" for i in range(1, 6)]
    + [f"MID{i}" for i in range(1, 6)]
    + ["WARM", "PING", "RET"]
)


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Await ``fn(*args)``: directly if it is a coroutine function, else in a thread (a
    blocking kill or restart must not freeze the receivers' timings)."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    result = await asyncio.to_thread(fn, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def run_cmd(*argv: str, timeout: float = 240) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"{' '.join(argv)} timed out after {timeout}s") from None
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {text[-2000:]}")
    return text


class RabbitEngine(Engine):
    name = "rabbitmq"

    def __init__(self, workdir: Path, base_port: int, queue_type: str) -> None:
        super().__init__(workdir, base_port)
        self.queue_type = queue_type
        self.addresses = [(HOST, base_port + 10 * k) for k in range(self.members)]
        self._user: tuple[str, str] | None = None

    def creds(self, account: str) -> tuple[str | None, str | None]:
        if self._user is None:
            user, password = (self.workdir / "credentials").read_text().split()
            self._user = (user, password)
        return self._user

    async def start(self) -> None:
        await run_cmd(
            "bash",
            str(RABBIT_SCRIPT),
            "start",
            str(self.workdir),
            str(self.base_port),
            self.queue_type,
        )

    async def stop(self) -> None:
        if (self.workdir / "baseport").exists():
            await run_cmd("bash", str(RABBIT_SCRIPT), "stop", str(self.workdir), timeout=120)

    async def kill(self, member: int) -> None:
        await run_cmd("bash", str(RABBIT_SCRIPT), "kill", str(self.workdir), str(member))

    async def restart(self, member: int) -> None:
        await run_cmd("bash", str(RABBIT_SCRIPT), "restart", str(self.workdir), str(member))

    def effort(self) -> dict[str, Any]:
        node = self.workdir / "node-1"
        conf = [node / "rabbitmq.conf", node / "enabled_plugins"]
        return {
            "script": str(RABBIT_SCRIPT.relative_to(REPO)),
            "script_code_lines": code_lines(RABBIT_SCRIPT),
            "config_lines_per_member": sum(code_lines(p) for p in conf if p.exists()),
            # epmd, 3 x rabbitmq-server, 2 x (stop_app, join_cluster, start_app),
            # add_user, set_permissions, delete_user (readiness waits not counted)
            "admin_commands": 1 + 3 + 6 + 3,
            "queue_type": self.queue_type,
        }


class NatsEngine(Engine):
    """i24net.broker.nats.NatsCluster if it can be imported, else a minimal config here."""

    name = "nats"

    def __init__(self, workdir: Path, base_port: int, *, force_minimal: bool = False) -> None:
        super().__init__(workdir, base_port)
        self.addresses = [(HOST, base_port + 10 * k) for k in range(self.members)]
        self._cluster: Any = None
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._accounts: dict[str, tuple[str, str]] = {}
        self.module: Any = None
        if not force_minimal:
            try:
                self.module = importlib.import_module("i24net.broker.nats")
            except ImportError as exc:
                self.notes.append(f"i24net.broker.nats not importable ({exc}): minimal config")
        else:
            self.notes.append("--nats-minimal: minimal config written by the probe, no auth")

    def creds(self, account: str) -> tuple[str | None, str | None]:
        if self.module is None:
            return None, None
        return self._accounts[account]

    async def start(self) -> None:
        if self.module is not None:
            await self._start_module()
        else:
            await self._start_minimal()

    async def _start_module(self) -> None:
        from i24net.broker.accounts import accounts_for, generate_password

        names = [*self.agencies(), ROUTER]
        passwords = {n: generate_password(os.urandom) for n in names}
        accounts = accounts_for(self.agencies(), passwords)
        self._accounts = {a.username: (a.username, a.password) for a in accounts}
        cls = self.module.NatsCluster
        self._cluster = cls(
            self.workdir,
            accounts,
            members=self.members,
            host=HOST,
            port=self.base_port,
            logger=logging.getLogger("probe.nats"),
        )
        await self._cluster.__aenter__()
        addresses = list(getattr(self._cluster, "addresses", []) or [])
        if addresses:
            self.addresses = [(str(h), int(p)) for h, p in addresses]

    async def _start_minimal(self) -> None:
        exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
        for k in range(1, self.members + 1):
            (self.workdir / f"n{k}" / "js").mkdir(parents=True, exist_ok=True)
            (self.workdir / f"n{k}.conf").write_text(self._minimal_conf(k))
        for k in range(1, self.members + 1):
            self._spawn(exe, k)

    def _minimal_ports(self, k: int) -> tuple[int, int, int]:
        b = self.base_port + 10 * (k - 1)
        return b, b + 1, b + 2  # mqtt, client, route

    def _minimal_conf(self, k: int) -> str:
        mqtt, client, route = self._minimal_ports(k)
        routes = ", ".join(
            f"nats-route://127.0.0.1:{self._minimal_ports(j)[2]}"
            for j in range(1, self.members + 1)
            if j != k
        )
        store = self.workdir / f"n{k}" / "js"
        return (
            f"server_name: n{k}\nlisten: 127.0.0.1:{client}\n"
            f'jetstream {{ store_dir: "{store}" }}\n'
            f"cluster {{ name: trial, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n"
            f"mqtt {{ listen: 127.0.0.1:{mqtt} }}\n"
        )

    def _spawn(self, exe: str, k: int) -> None:
        logf = open(self.workdir / f"n{k}.log", "ab")  # noqa: SIM115 - closed with the process
        self._procs[k] = subprocess.Popen(
            [exe, "-c", str(self.workdir / f"n{k}.conf")],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        logf.close()

    async def stop(self) -> None:
        if self._cluster is not None:
            cluster, self._cluster = self._cluster, None
            await cluster.__aexit__(None, None, None)
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        self._procs.clear()

    async def kill(self, member: int) -> None:
        if self._cluster is not None:
            await call(self._cluster.kill_member, member)
            return
        proc = self._procs[member]
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)

    async def restart(self, member: int) -> None:
        if self._cluster is not None:
            await call(self._cluster.restart_member, member)
        else:
            self._spawn(shutil.which("nats-server") or "/usr/sbin/nats-server", member)
        await wait_mqtt(self, member, 60)

    def effort(self) -> dict[str, Any]:
        if self.module is not None:
            confs = sorted(self.workdir.rglob("*.conf"))
            mod = Path(self.module.__file__)
            return {
                "module": str(mod.relative_to(REPO)) if mod.is_relative_to(REPO) else str(mod),
                "module_code_lines": code_lines(mod),
                "config_files": [str(p.relative_to(self.workdir)) for p in confs],
                "config_lines_per_member": (
                    round(sum(code_lines(p) for p in confs) / self.members, 1) if confs else None
                ),
                "admin_commands": self.members,  # one nats-server per member, nothing else
                # what a hand-written cluster needs (no accounts): probe.py's minimal config
                "minimal_config_lines_per_member": len(self._minimal_conf(1).splitlines()),
            }
        conf = self.workdir / "n1.conf"
        return {
            "config": "minimal, written by probe.py (no auth)",
            "config_lines_per_member": code_lines(conf) if conf.exists() else None,
            "admin_commands": self.members,
        }


# --------------------------------------------------------------------------- MQTT helpers


@dataclass
class Connack:
    session_present: bool | None = None


def make_client(
    engine: Engine,
    member: int,
    account: str,
    suffix: str,
    *,
    clean: bool,
    connack: Connack | None = None,
    timeout: float = 10,
) -> aiomqtt.Client:
    user, password = engine.creds(account)
    client = aiomqtt.Client(
        HOST,
        engine.port(member),
        username=user,
        password=password,
        identifier=f"{account}:{suffix}",
        clean_session=clean,
        protocol=aiomqtt.ProtocolVersion.V311,
        timeout=timeout,
        keepalive=10,
        max_inflight_messages=INFLIGHT,
        logger=logging.getLogger("probe.aiomqtt"),
    )
    client.pending_calls_threshold = INFLIGHT * 2
    if connack is not None:
        inner = client._client  # same hook as i24net.transport.mqtt
        installed: Callable[..., None] = inner.on_connect  # type: ignore[assignment]

        def on_connect(
            pc: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None
        ) -> None:
            connack.session_present = bool(flags.session_present)
            installed(pc, userdata, flags, rc, props)

        inner.on_connect = on_connect
    return client


async def wait_mqtt(engine: Engine, member: int, limit: float) -> float:
    """Seconds until member accepts an MQTT CONNECT (PING account, clean session)."""
    t0 = now()
    last: Exception | None = None
    while now() - t0 < limit:
        try:
            async with make_client(engine, member, "PING", f"ping{member}", clean=True, timeout=3):
                return now() - t0
        except (aiomqtt.MqttError, OSError) as exc:
            last = exc
            await asyncio.sleep(0.2)
    raise RuntimeError(f"member {member} never accepted MQTT within {limit}s: {last}")


class Receiver:
    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.times: list[tuple[float, int]] = []
        self.last = now()

    def take(self, data: bytes | bytearray) -> None:
        seq = int.from_bytes(bytes(data[:8]), "big")
        self.counts[seq] += 1
        self.last = now()
        self.times.append((self.last, seq))

    @property
    def unique(self) -> int:
        return len(self.counts)

    @property
    def duplicates(self) -> int:
        return sum(c - 1 for c in self.counts.values())


async def consume(client: aiomqtt.Client, rx: Receiver) -> None:
    async for message in client.messages:
        payload_ = message.payload
        if isinstance(payload_, bytes | bytearray):
            rx.take(payload_)


async def wait_for(pred: Callable[[], bool], rx: Receiver, *, idle: float, limit: float) -> float:
    """Wait until pred(), or nothing arrived for ``idle`` s, or ``limit`` s passed."""
    t0 = now()
    while not pred():
        t = now()
        if t - t0 > limit or t - max(t0, rx.last) > idle:
            break
        await asyncio.sleep(0.05)
    return now() - t0


async def clear_session(engine: Engine, member: int, account: str, suffix: str) -> None:
    """Connect with clean_session=True so the broker drops the persistent session."""
    with contextlib.suppress(aiomqtt.MqttError, OSError):
        async with make_client(engine, member, account, suffix, clean=True, timeout=5):
            pass


class Publisher:
    """QoS 1 publishes, at most INFLIGHT unacknowledged, as i24net's transport sends them.

    Each publish races its PUBACK against the link's loss (aiomqtt alone would wait for the
    full timeout on a dead link); a publish cut off by a disconnect or a timeout is sent again
    on the next link, up to ``attempts`` times, so a receiver may see it twice.
    """

    def __init__(
        self, engine: Engine, member: int, suffix: str, *, timeout: float = 10, attempts: int = 3
    ) -> None:
        self.engine, self.member, self.suffix = engine, member, suffix
        self.timeout, self.attempts = timeout, attempts
        self.sem = asyncio.Semaphore(INFLIGHT)
        self.acked: set[int] = set()
        self.failed: list[int] = []
        self.retried = 0
        self.errors: Counter[str] = Counter()
        self.tasks: set[asyncio.Task[None]] = set()
        self.client: aiomqtt.Client | None = None
        self.reconnects = 0
        self.connect_failures = 0
        self.connect_seconds: list[float] = []  # per successful CONNECT, retries included
        self._lock = asyncio.Lock()

    async def connect(self, limit: float = 60) -> aiomqtt.Client:
        """The live link, or a new one: CONNECT is retried (every 0.5 s, ``limit`` s in all),
        since right after a member dies a CONNECT to a surviving member can time out."""
        async with self._lock:
            t0 = now()
            while self.client is None:
                client = make_client(self.engine, self.member, ROUTER, self.suffix, clean=True)
                try:
                    await client.__aenter__()
                except (aiomqtt.MqttError, OSError) as exc:
                    self.connect_failures += 1
                    self.errors[f"connect {type(exc).__name__}: {str(exc)[:60]}"] += 1
                    if now() - t0 > limit:
                        raise
                    await asyncio.sleep(0.5)
                    continue
                self.client = client
                self.connect_seconds.append(round(now() - t0, 3))
            return self.client

    async def _drop(self, client: aiomqtt.Client) -> None:
        async with self._lock:
            if self.client is client:
                self.client = None
                self.reconnects += 1
                with contextlib.suppress(Exception):
                    await client.__aexit__(None, None, None)

    async def send(self, topic: str, seq: int) -> None:
        await self.sem.acquire()
        task = asyncio.create_task(self._one(topic, seq))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _publish(self, client: aiomqtt.Client, topic: str, seq: int) -> None:
        lost: asyncio.Future[Any] = client._disconnected  # as i24net.transport.mqtt does
        sending = asyncio.ensure_future(
            client.publish(topic, payload(seq), qos=1, timeout=self.timeout + 1)
        )
        done, _ = await asyncio.wait(
            {sending, lost}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if sending in done:
            sending.result()
            return
        sending.cancel()
        with contextlib.suppress(BaseException):
            await sending
        if lost in done:
            raise aiomqtt.MqttError(
                f"link lost: {lost.exception() if not lost.cancelled() else ''}"
            )
        raise TimeoutError("no PUBACK")

    async def _one(self, topic: str, seq: int) -> None:
        try:
            for attempt in range(self.attempts):
                if attempt:
                    self.retried += 1
                    await asyncio.sleep(0.2)
                client = None
                try:
                    client = await self.connect()
                    await self._publish(client, topic, seq)
                    self.acked.add(seq)
                    return
                except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                    self.errors[f"{type(exc).__name__}: {str(exc)[:70]}"] += 1
                    if client is not None and not isinstance(exc, TimeoutError):
                        await self._drop(client)
            self.failed.append(seq)
        finally:
            self.sem.release()

    async def drain(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.__aexit__(None, None, None)
            self.client = None


# --------------------------------------------------------------------------- measurements


async def measure_setup(engine: Engine, limit: float = 240) -> dict[str, Any]:
    t0 = now()
    await asyncio.wait_for(engine.start(), limit)
    t_started = now() - t0
    per_member = []
    for k in range(1, engine.members + 1):
        await wait_mqtt(engine, k, 60)
        per_member.append(round(now() - t0, 2))
    total = now() - t0
    return {
        "seconds": round(total, 2),
        "start_returned_after": round(t_started, 2),
        "mqtt_ready_after": per_member,
    }


async def measure_throughput(
    engine: Engine, pub_member: int, sub_member: int, agency: str, n: int, limit: float
) -> dict[str, Any]:
    topic = topic_of(agency)
    rx = Receiver()
    done = asyncio.Event()
    sub = make_client(engine, sub_member, agency, "sub", clean=False)
    pub = Publisher(engine, pub_member, f"pub-{agency}")
    result: dict[str, Any] = {"n": n, "pub_member": pub_member, "sub_member": sub_member}
    async with sub:
        await sub.subscribe(topic, qos=1)

        async def count() -> None:
            async for message in sub.messages:
                if isinstance(message.payload, bytes | bytearray):
                    rx.take(message.payload)
                    if rx.unique >= n:
                        done.set()

        counter = asyncio.create_task(count())
        await pub.connect()
        t0 = now()
        deadline = t0 + limit
        try:
            for seq in range(n):
                if now() > deadline:
                    break
                await pub.send(topic, seq)
            await asyncio.wait_for(pub.drain(), max(1.0, deadline - now()))
            t_pub = now() - t0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), max(1.0, deadline - now()))
        except TimeoutError:
            t_pub = None
        t_last = (rx.times[-1][0] - t0) if rx.times else None
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await counter
        await pub.close()
    await clear_session(engine, sub_member, agency, "sub")
    result.update(
        published_acked=len(pub.acked),
        publish_failed=len(pub.failed),
        publish_retries=pub.retried,
        received=rx.unique,
        duplicates=rx.duplicates,
        publish_seconds=round(t_pub, 3) if t_pub else None,
        last_receipt_seconds=round(t_last, 3) if t_last else None,
        msg_per_s=round(rx.unique / t_last, 1) if t_last and rx.unique >= n else None,
        complete=rx.unique >= n,
    )
    return result


@dataclass
class Resumed:
    """X's session resumed on a member, as i24net's transport does it."""

    client: aiomqtt.Client | None
    consumer: asyncio.Task[None] | None
    seconds: float | None
    attempts: int
    errors: list[str]
    session_present: bool | None
    resubscribed: bool | None = None
    subscribe_error: str | None = None

    async def close(self) -> None:
        if self.consumer is not None:
            self.consumer.cancel()
            with contextlib.suppress(BaseException):
                await self.consumer
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.__aexit__(None, None, None)

    @property
    def alive(self) -> bool:
        return self.consumer is not None and not self.consumer.done()


async def resume(engine: Engine, member: int, agency: str, rx: Receiver, limit: float) -> Resumed:
    """Connect X (clean_session=False), re-SUBSCRIBE only if CONNACK says no session."""
    connack = Connack()
    attempts, errors = 0, []
    t0 = now()
    while now() - t0 < limit:
        attempts += 1
        candidate = make_client(engine, member, agency, "X", clean=False, connack=connack)
        try:
            await candidate.__aenter__()
        except (aiomqtt.MqttError, OSError) as exc:
            errors.append(str(exc)[:120])
            await asyncio.sleep(0.5)
            continue
        out = Resumed(
            candidate,
            asyncio.create_task(consume(candidate, rx)),
            now() - t0,
            attempts,
            errors,
            connack.session_present,
        )
        if connack.session_present is not True:
            out.resubscribed = True
            try:
                await candidate.subscribe(topic_of(agency), qos=1)
            except aiomqtt.MqttError as exc:
                out.subscribe_error = str(exc)[:120]
        else:
            out.resubscribed = False
        return out
    return Resumed(None, None, None, attempts, errors, None)


async def measure_session(engine: Engine, agency: str, count: int = 200) -> dict[str, Any]:
    topic = topic_of(agency)
    res: dict[str, Any] = {"published": count}
    # X subscribes on member 1, persistent session, then disconnects.
    async with make_client(engine, 1, agency, "X", clean=False) as c:
        await c.subscribe(topic, qos=1)
    await asyncio.sleep(0.5)
    t = now()
    await engine.kill(1)
    res["kill_seconds"] = round(now() - t, 2)
    # 200 messages via member 2 (bounded: each attempt waits 10 s at most, 3 attempts).
    pub = Publisher(engine, 2, f"pub-{agency}")
    t = now()
    try:
        await pub.connect()
        for seq in range(count):
            await pub.send(topic, seq)
        await asyncio.wait_for(pub.drain(), 90)
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        res["publish_error"] = repr(exc)[:200]
    res["publish_seconds"] = round(now() - t, 2)
    res["published_acked"] = len(pub.acked)
    res["publish_failed"] = len(pub.failed)
    res["publish_retries"] = pub.retried
    res["publish_errors"] = dict(pub.errors)
    res["publisher_connect_seconds"] = pub.connect_seconds
    res["publisher_connect_failures"] = pub.connect_failures
    await pub.close()
    # X comes back on member 3.
    rx = Receiver()
    got_all = lambda: rx.unique >= count  # noqa: E731
    first = await resume(engine, 3, agency, rx, 60)
    res["reconnect_seconds"] = round(first.seconds, 3) if first.seconds is not None else None
    res["reconnect_attempts"] = first.attempts
    res["reconnect_errors"] = Counter(first.errors).most_common(3)
    res["session_present"] = first.session_present
    res["resubscribed"] = first.resubscribed
    if first.subscribe_error:
        res["subscribe_error"] = first.subscribe_error
    t_conn = now() - (first.seconds or 0)
    again: Resumed | None = None
    try:
        if first.client is not None:
            res["wait_seconds"] = round(await wait_for(got_all, rx, idle=5, limit=20), 2)
        res["received_before_restart"] = rx.unique
        res["first_message_after_reconnect_s"] = (
            round(rx.times[0][0] - t_conn, 3) if rx.times else None
        )
        res["subscriber_alive_before_restart"] = first.alive
        # Member 1 comes back: does anything else arrive (e.g. from a queue that lived there)?
        t = now()
        await engine.restart(1)
        res["restart_seconds"] = round(now() - t, 2)
        if not first.alive:
            # The broker dropped X (or it never got in): reconnect, as i24net would.
            await first.close()
            again = await resume(engine, 3, agency, rx, 30)
            res["after_restart_session_present"] = again.session_present
            res["after_restart_subscribe_error"] = again.subscribe_error
        await wait_for(got_all, rx, idle=8, limit=20)
        res["received_after_restart"] = rx.unique
        res["duplicates"] = rx.duplicates
    finally:
        await first.close()
        if again is not None:
            await again.close()
    await clear_session(engine, 3, agency, "X")
    return res


async def measure_retained(engine: Engine) -> dict[str, Any]:
    """Is a retained message seen on every member? i24net keeps its signed directory retained
    on ``<prefix>/directory`` and nodes subscribe ``<prefix>/presence/+`` (a wildcard)."""
    token = os.urandom(8).hex().encode()
    cases = {
        "exact": (f"{PREFIX}/directory", f"{PREFIX}/directory"),
        "wildcard": (f"{PREFIX}/presence/RET", f"{PREFIX}/presence/+"),
    }
    pub = make_client(engine, 1, ROUTER, "pub-RET", clean=True)
    async with pub:
        for topic, _ in cases.values():
            await pub.publish(topic, token, qos=1, retain=True, timeout=10)
    await asyncio.sleep(1.0)
    out: dict[str, Any] = {"published_via_member": 1}
    for name, (_, filter_) in cases.items():
        seen = {}
        for member in range(1, engine.members + 1):
            got = False
            async with make_client(engine, member, "RET", f"r{member}", clean=True) as c:
                await c.subscribe(filter_, qos=1)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(3):
                        async for message in c.messages:
                            if message.payload == token:
                                got = True
                                break
            seen[f"member_{member}"] = got
        out[f"{name} ({filter_})"] = seen
    return out


async def measure_midstream(
    engine: Engine, agency: str, *, rate: int, seconds: float, kill_at: float
) -> dict[str, Any]:
    topic = topic_of(agency)
    total = int(rate * seconds)
    res: dict[str, Any] = {"rate": rate, "messages": total, "kill_at_s": kill_at}
    # The session is created on member 1 (where the kill happens) and resumed on member 3.
    async with make_client(engine, 1, agency, "X", clean=False) as c:
        await c.subscribe(topic, qos=1)
    rx = Receiver()
    stop = asyncio.Event()
    events: list[tuple[str, float, str]] = []
    connected = asyncio.Event()
    t_base = now()

    async def subscriber() -> None:
        while not stop.is_set():
            connack = Connack()
            try:
                async with make_client(engine, 3, agency, "X", clean=False, connack=connack) as c:
                    events.append(
                        ("connected", now() - t_base, f"session_present={connack.session_present}")
                    )
                    if connack.session_present is not True:
                        await c.subscribe(topic, qos=1)
                    connected.set()
                    consumer = asyncio.create_task(consume(c, rx))
                    stopper = asyncio.create_task(stop.wait())
                    finished, _ = await asyncio.wait(
                        {consumer, stopper}, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in (consumer, stopper):
                        task.cancel()
                    if consumer in finished and not consumer.cancelled() and consumer.exception():
                        raise consumer.exception()  # type: ignore[misc]
            except (aiomqtt.MqttError, OSError) as exc:
                events.append(("lost", now() - t_base, str(exc)[:120]))
                await asyncio.sleep(0.5)

    sub_task = asyncio.create_task(subscriber())
    await asyncio.wait_for(connected.wait(), 60)
    pub = Publisher(engine, 2, f"pub-{agency}")
    await pub.connect()
    lateness = 0.0
    t0 = now()
    kill_task: asyncio.Task[None] | None = None
    t_kill = None

    async def killer() -> None:
        nonlocal t_kill
        t_kill = now()
        await engine.kill(1)

    for seq in range(total):
        target = t0 + seq / rate
        if kill_task is None and now() - t0 >= kill_at:
            kill_task = asyncio.create_task(killer())
        delay = target - now()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness = max(lateness, now() - target)
        if now() - t0 > seconds + 60:
            break  # bounded even if publishing stalls for long
        await pub.send(topic, seq)
    if kill_task is not None:
        await kill_task
    try:
        await asyncio.wait_for(pub.drain(), 60)
    except TimeoutError:
        res["publish_drain_timeout"] = True
    t_pub_end = now()
    res["publish_seconds"] = round(t_pub_end - t0, 2)
    res["publisher_max_lateness_s"] = round(lateness, 3)
    res["published_acked"] = len(pub.acked)
    res["publish_failed"] = len(pub.failed)
    res["publish_retries"] = pub.retried
    res["publish_errors"] = dict(pub.errors.most_common(3))
    res["publisher_reconnects"] = pub.reconnects
    res["publisher_connect_seconds"] = pub.connect_seconds
    res["publisher_connect_failures"] = pub.connect_failures
    acked = set(pub.acked)
    all_acked = lambda: acked.issubset(rx.counts.keys())  # noqa: E731
    await wait_for(all_acked, rx, idle=10, limit=30)
    got = set(rx.counts)
    res["received_before_restart"] = len(got)
    res["lost_acked_before_restart"] = len(acked - got)
    res["duplicates_before_restart"] = rx.duplicates
    # Longest gap between receipts from the kill until the end of publishing (a stall).
    if t_kill is not None:
        res["kill_at_actual_s"] = round(t_kill - t0, 2)
        times = [t for t, _ in rx.times if t >= t_kill - 0.5]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        res["max_gap_after_kill_s"] = round(max(gaps), 3) if gaps else None
        after = [t for t, _ in rx.times if t > t_kill]
        res["first_receipt_after_kill_s"] = round(after[0] - t_kill, 3) if after else None
        # Delivery resumed: the first receipt of a message published after the kill.
        seq_kill = int((t_kill - t0) * rate)
        fresh = [t for t, seq in rx.times if seq > seq_kill]
        res["first_new_message_after_kill_s"] = round(min(fresh) - t_kill, 3) if fresh else None
    n_before = len(rx.times)
    t = now()
    await engine.restart(1)
    res["restart_seconds"] = round(now() - t, 2)
    await wait_for(all_acked, rx, idle=8, limit=20)
    got = set(rx.counts)
    res["received_after_restart"] = len(got)
    res["arrived_after_restart"] = len(rx.times) - n_before
    res["lost_acked_final"] = len(acked - got)
    res["received_unacked"] = len(got - acked)
    res["duplicates_final"] = rx.duplicates
    res["subscriber_events"] = [(e, round(t, 2), d) for e, t, d in events]
    res["subscriber_reconnects"] = sum(1 for e in events if e[0] == "lost")
    stop.set()
    await pub.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(sub_task, 15)
    sub_task.cancel()
    await clear_session(engine, 3, agency, "X")
    return res


# --------------------------------------------------------------------------- main


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_base(start: int) -> int:
    base = start
    while base < 60000:
        if all(port_free(base + i) for i in range(40)):
            return base
        base += 100
    raise RuntimeError("no free port block")


def versions(engine: str) -> dict[str, str]:
    out = {"python": platform.python_version(), "aiomqtt": getattr(aiomqtt, "__version__", "?")}
    with contextlib.suppress(Exception):
        if engine == "rabbitmq":
            out["rabbitmq"] = "3.10.8 (rabbitmq-server, Debian)"
            out["erlang"] = subprocess.run(
                [
                    "erl",
                    "-noshell",
                    "-eval",
                    'io:format("~s",[erlang:system_info(otp_release)]),halt().',
                ],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout
        else:
            out["nats-server"] = subprocess.run(
                ["nats-server", "--version"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
    return out


def make_engine(args: argparse.Namespace, workdir: Path, base: int) -> Engine:
    if args.engine == "rabbitmq":
        return RabbitEngine(workdir, base, args.queue_type)
    return NatsEngine(workdir, base, force_minimal=args.nats_minimal)


async def guarded(label: str, coro: Awaitable[dict[str, Any]], limit: float) -> dict[str, Any]:
    t = now()
    try:
        out = await asyncio.wait_for(coro, limit)
    except Exception as exc:  # a failed measurement is a result
        log.exception("%s failed", label)
        out = {"error": f"{type(exc).__name__}: {exc}"[:400]}
    out["elapsed_s"] = round(now() - t, 2)
    log.info("%s: %s", label, json.dumps(out)[:600])
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "engine": args.engine,
        "command": " ".join([".venv/bin/python", "brokers/trial/probe.py", *sys.argv[1:]]),
        "versions": versions(args.engine),
        "parameters": {
            "runs": args.runs,
            "setup_runs": args.setup_runs,
            "n": args.n,
            "payload_bytes": PAYLOAD_SIZE,
            "inflight": INFLIGHT,
            "midstream_rate": args.rate,
            "midstream_seconds": args.seconds,
        },
    }
    if args.engine == "rabbitmq":
        report["queue_type"] = args.queue_type
    root = Path(tempfile.mkdtemp(prefix=f"i24-trial-{args.engine}-"))
    engine: Engine | None = None
    base = pick_base(args.base_port)
    try:
        # 1. setup, args.runs times from an empty folder; the last cluster stays up.
        setups = []
        for run in range(args.setup_runs):
            workdir = root / f"cluster-{run}"
            workdir.mkdir()
            engine = make_engine(args, workdir, base)
            setups.append(await guarded(f"setup {run + 1}", measure_setup(engine), 300))
            if "error" in setups[-1]:
                raise RuntimeError(f"setup failed: {setups[-1]['error']}")
            if run < args.setup_runs - 1:
                await engine.stop()
                engine = None
        assert engine is not None
        report["setup"] = {
            "runs": setups,
            "median_seconds": median([s.get("seconds") for s in setups]),
            "effort": engine.effort(),
        }
        report["notes"] = engine.notes
        # warm-up (not reported): connections, queues, JIT-less but caches warm
        await guarded("warm-up", measure_throughput(engine, 1, 2, "WARM", 500, 30), 60)
        if "retained" not in args.skip:
            report["retained"] = await guarded("retained", measure_retained(engine), 60)
        if "throughput" not in args.skip:
            cross, same = [], []
            for run in range(args.runs):
                cross.append(
                    await guarded(
                        f"throughput cross {run + 1}",
                        measure_throughput(engine, 1, 2, f"TPX{run + 1}", args.n, 60),
                        90,
                    )
                )
                same.append(
                    await guarded(
                        f"throughput same {run + 1}",
                        measure_throughput(engine, 1, 1, f"TPS{run + 1}", args.n, 60),
                        90,
                    )
                )
            report["throughput"] = {
                "cross_member": {
                    "runs": cross,
                    "median_msg_per_s": median([r.get("msg_per_s") for r in cross]),
                },
                "same_member": {
                    "runs": same,
                    "median_msg_per_s": median([r.get("msg_per_s") for r in same]),
                },
            }
        if "session" not in args.skip:
            runs = []
            for run in range(args.runs):
                runs.append(
                    await guarded(
                        f"session {run + 1}", measure_session(engine, f"SES{run + 1}"), 240
                    )
                )
                await ensure_all_up(engine)
            report["session"] = {
                "runs": runs,
                "median_received_before_restart": median(
                    [r.get("received_before_restart") for r in runs]
                ),
                "median_received_after_restart": median(
                    [r.get("received_after_restart") for r in runs]
                ),
                "median_reconnect_seconds": median([r.get("reconnect_seconds") for r in runs]),
            }
        if "midstream" not in args.skip:
            runs = []
            for run in range(args.runs):
                runs.append(
                    await guarded(
                        f"midstream {run + 1}",
                        measure_midstream(
                            engine,
                            f"MID{run + 1}",
                            rate=args.rate,
                            seconds=args.seconds,
                            kill_at=args.seconds / 3,
                        ),
                        300,
                    )
                )
                await ensure_all_up(engine)
            keys = [
                "lost_acked_before_restart",
                "lost_acked_final",
                "duplicates_final",
                "max_gap_after_kill_s",
                "first_receipt_after_kill_s",
                "first_new_message_after_kill_s",
                "subscriber_reconnects",
                "publisher_max_lateness_s",
                "publish_failed",
                "restart_seconds",
            ]
            report["midstream"] = {
                "runs": runs,
                "medians": {k: median([r.get(k) for r in runs]) for k in keys},
            }
    finally:
        if engine is not None:
            with contextlib.suppress(Exception):
                await engine.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            report["workdir"] = str(root)
    return report


async def ensure_all_up(engine: Engine) -> None:
    """After a failed run, restart member 1 if it is still down so the next run is fair."""
    try:
        await wait_mqtt(engine, 1, 3)
    except RuntimeError:
        with contextlib.suppress(Exception):
            await engine.restart(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["rabbitmq", "nats"], required=True)
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each measurement")
    parser.add_argument("--setup-runs", type=int, help="cluster starts to time (default: --runs)")
    parser.add_argument("-n", type=int, default=5000, help="messages per throughput run")
    parser.add_argument("--rate", type=int, default=100, help="midstream messages per second")
    parser.add_argument("--seconds", type=float, default=15, help="midstream duration")
    parser.add_argument(
        "--queue-type",
        choices=["classic", "quorum"],
        default="quorum",
        help="RabbitMQ mqtt.durable_queue_type",
    )
    parser.add_argument(
        "--nats-minimal",
        action="store_true",
        help="NATS: use the probe's minimal config, not i24net.broker.nats",
    )
    parser.add_argument("--base-port", type=int, default=21800)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["retained", "throughput", "session", "midstream"]
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    args.runs = max(1, min(args.runs, 5))
    args.setup_runs = max(1, min(args.setup_runs or args.runs, 5))
    args.n = max(1, min(args.n, 20000))
    args.seconds = max(3.0, min(args.seconds, 60.0))
    args.rate = max(1, min(args.rate, 1000))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("probe.aiomqtt").setLevel(logging.ERROR)
    report = asyncio.run(main_async(args))
    text = json.dumps(report, indent=2, default=str)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
