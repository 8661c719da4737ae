"""``i24net bench``: performance figures, measured side by side with a baseline in one run.

Theory of operation: one run builds a throw-away ``interpol`` home (198 agencies) in a
temporary folder, starts one broker on 127.0.0.1 on a free port (Mosquitto, or the embedded
amqtt broker in a child process so it does not share the measuring event loop) and measures:

1. **Relay against the full pipeline** (``relay_*``, ``secured_*``). The baseline is a plain
   aiomqtt publisher -> broker -> relay client (a child process: subscribes, republishes)
   -> subscriber, QoS 1, 1 KB payloads, no crypto. The secured pipeline is the real thing:
   a ``NodeDaemon`` (NCB-FR) seals and persists to its SQLite outbox -> the broker -> the
   ``RouterDaemon`` (a child process, SQLite store, audit chain) checks and stamps -> the
   broker -> a ``NodeDaemon`` (NCB-DE) verifies, decrypts, persists to its SQLite inbox and
   sends a signed receipt -> router -> sender. Both use aiomqtt on the same broker, both
   keep at most ``WINDOW`` messages between submit and arrival, and their rounds alternate
   (baseline, secured, baseline, ...) so a noisy moment hits both; the figures are medians
   over rounds. A secured round ends when every message is in the recipient's inbox *and*
   every receipt is back at the sender; latency is submit (before sealing) to the inbox.
   One sender stands against one publisher, so the router's per-sender rate limit (100/s)
   is lifted for this phase: otherwise it would measure the limiter. CPU time per message
   of every process (bench, relay or router, broker) is recorded too: on a saturated or
   shared machine it explains the ratio better than wall-clock rates do.
2. **Fan-out** (``seal_us_*``): CPU time of ``envelope.seal`` from GS-LYON to 1, 10 and 196
   NCBs on the interpol directory, warm pair-key cache, interleaved, median.
3. **FLASH under flood** (``flash_*``): FLASH probes NCB-FR -> NCB-DE through the live router,
   first alone, then while a child process floods the router with pre-sealed ROUTINE
   envelopes to NCB-IT (a node child) at several times the measured secured rate. The
   flood comes from many NCBs, each under the router's per-sender rate limit (on again, as
   deployed), since the limit is there to stop one agency from saturating the router.
   Each probe is timed at every stage (sender, broker to router, router queues, check,
   outbound queue, router to inbox) so a miss says where the time went.
4. **Simulation speed** (``sim_*``): the virtual-time simulator (``i24net.sim``), each slice
   in a fresh process, on the interpol preset and on a synthetic 3,000-agency network:
   point-to-point ROUTINE messages between random agencies at SIENA's rate (one every
   17.6 virtual seconds). ``sim_year_minutes`` is the wall time of one SIENA year (1.79M
   messages) extrapolated from the 3,000-agency slice (SIENA connects 3,000+ authorities).
5. **Peak memory** (``router_rss_mb``, ``node_rss_mb``): ``VmHWM`` of the router child and of
   the flooded node child (NCB-IT) at the end of the live phases, i.e. under load at 198
   agencies.

Child processes run ``python -m i24net.bench.pipeline worker ROLE ARGS`` and speak JSON lines: one
command per line on stdin, one answer per line on stdout. Every wait is bounded and every
child is stopped (then killed, by its own pid) on the way out, also on errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import resource
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from i24net.config.logsetup import configure_logging, file_logger
from i24net.core.errors import I24Error
from i24net.core.events import Delivered, Received
from i24net.core.units import percentile
from i24net.transport.mqtt import NODELAY

WINDOW = 64
SIM_TIMEOUT_S = 3600
BODY_BYTES = 1024
SIENA_YEAR_MESSAGES = 1_790_000
SENDER, RECIPIENT = "NCB-FR", "NCB-DE"
FLOOD_RECIPIENT = "NCB-IT"
FLOOD_PER_SENDER = 75.0  # msg/s offered by each flooding NCB: under the router's 100/s
BASELINE_IN, BASELINE_OUT = "bench/relay/in", "bench/relay/out"

Say = Callable[[str], None]

#: The stages of a FLASH probe's way, between two wall-clock timestamps (see _RouterTrace).
FLASH_STAGES = (
    # submit (before sealing) -> the sender daemon hands it to its transport
    ("sender", "created", "sent"),
    # -> the broker's PUBACK to the sender
    ("sender_to_broker_ack", "sent", "acked"),
    # -> the router's transport hands it over: broker queue, socket, aiomqtt's own FIFO
    ("to_router_transport", "sent", "arrival"),
    # -> the router starts on it: the transport's queue and the daemon's precedence queue
    ("router_in_queues", "arrival", "handle_start"),
    # policy check, store, audit
    ("router_check", "handle_start", "handled"),
    # -> stamped and taken by the send loop: the machine's outbound precedence queue
    ("router_out_queue", "handled", "popped"),
    # -> in the recipient's inbox: publish, broker, recipient node (verify, decrypt, store)
    ("router_to_inbox", "popped", "inbox"),
)


class BenchError(I24Error):
    """A benchmark phase could not complete (a child died, a round timed out)."""

    default_reason = "bench"


@dataclass(frozen=True, slots=True)
class Plan:
    """How much to measure: the full run, or the smoke test (``--quick``)."""

    quick: bool
    relay_messages: int  # per round, baseline and secured alike
    relay_rounds: int
    warmup_messages: int
    seal_runs: int
    flash_probes: int
    flash_interval_s: float
    flood_warmup_s: float
    flood_factor: float  # offered flood rate, as a multiple of the measured secured rate
    sim_slice_198: int
    sim_slice_3000: int
    round_timeout_s: float
    unloaded_messages: int  # per round, one at a time: the latency of an idle pipeline

    @classmethod
    def full(cls) -> Plan:
        return cls(False, 3000, 3, 300, 200, 200, 0.05, 2.0, 3.0, 50_000, 50_000, 180.0, 200)

    @classmethod
    def smoke(cls) -> Plan:
        return cls(True, 120, 2, 20, 15, 12, 0.03, 0.5, 3.0, 200, 200, 60.0, 20)


# -- small helpers -----------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def process(pid: int | None) -> psutil.Process | None:
    """A handle on ``pid`` (None if it is gone). psutil records the process's create time:
    a reading through the handle is refused once that process has exited, even when its
    pid has been given to another process since."""
    if pid is None:
        return None
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _running(proc: psutil.Process | None) -> bool:
    try:
        return proc is not None and proc.is_running()
    except psutil.Error:
        return False


def peak_rss_mb(proc: psutil.Process | None = None) -> float:
    """Peak resident set (``VmHWM``) in MiB of ``proc`` (NaN once it has exited), or of this
    process (``getrusage`` when /proc is not there)."""
    if proc is not None and not _running(proc):
        return math.nan
    try:
        for line in Path(f"/proc/{proc.pid if proc else 'self'}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    if proc is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return math.nan


def cpu_seconds(proc: psutil.Process | int | None) -> float:
    """User + system CPU seconds a process has used so far (NaN when unknown or, for a
    handle, once its process has exited). Give a handle (``process``) to compare two
    readings: a bare pid is looked up anew each time."""
    if isinstance(proc, int):
        proc = process(proc)
    if proc is None or not _running(proc):
        return math.nan
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return math.nan
    return float(times.user + times.system)


def machine_info() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu_model": model, "cores": os.cpu_count() or 0,
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_start": os.getloadavg()[0]}


def _filler(n: int) -> str:
    return ("I-24/7 " * (n // 7 + 1))[:n]


# -- 2. fan-out ------------------------------------------------------------------------------

def seal_bench(home: Any, runs: int) -> dict[str, float]:
    """CPU microseconds of one seal from GS-LYON to 1, 10 and 196 NCBs (warm cache)."""
    from i24net.core import envelope as env
    from i24net.core.keys import PairKeyCache
    from i24net.core.labels import Label

    d = home.directory()
    keys = home.keys("GS-LYON")
    cache = PairKeyCache()
    ncbs = d.expand(["@NCB"], "GS-LYON")
    body = env.Body("INTERPOL Red Notice A-1234/5-2026", _filler(BODY_BYTES), {})
    sealed = {}
    for n in (1, 10, 196):
        to = ["@NCB"] if n == 196 else list(ncbs[:n])
        header = env.make_header(d, sender="GS-LYON", addressing=to, kind="notice",
                                 label=Label("UNCLASSIFIED"), now_ms=int(time.time() * 1000),
                                 ttl_ms=3_600_000, random_bytes=os.urandom)
        rk = env.recipient_keys(d, header)
        sealed[n] = (header, rk)
        env.seal(header, body, keys, rk, random_bytes=os.urandom, cache=cache)  # warm
    timings: dict[int, list[float]] = {n: [] for n in sealed}
    for _ in range(runs):
        for n, (header, rk) in sealed.items():  # interleaved: noise hits every size alike
            t0 = time.process_time_ns()
            env.seal(header, body, keys, rk, random_bytes=os.urandom, cache=cache)
            timings[n].append((time.process_time_ns() - t0) / 1000)
    m = {n: median(v) for n, v in timings.items()}
    return {"seal_us_1": m[1], "seal_us_10": m[10], "seal_us_196": m[196],
            "fanout_196_over_1": m[196] / m[1]}


# -- header decoding: the core's strict reader against msgspec --------------------------------

def decode_bench(home: Any, runs: int) -> dict[str, float]:
    """CPU microseconds to decode a GS-LYON header to 1 and to 196 NCBs, three ways, on the
    same bytes, interleaved, median of ``runs`` batches of 50:

    - ``header_decode_us_*``: the core's ``Header.decode`` (what the router and the nodes
      run): ``wire.unpack`` (limits, canonical encoding, no repeated key), ``Fields`` (types,
      sizes, no unknown field) and the canonical-form check;
    - ``header_unpack_us_196``: ``wire.unpack`` alone, the part a faster decoder replaces;
    - ``header_decode_msgspec_us_*``: msgspec's typed msgpack decoder into a ``Struct`` of
      the header's fields (types, no unknown field; neither sizes nor canonical form, and it
      keeps the last of repeated keys, so ``unpack``'s checks would remain).
    """
    import msgspec

    from i24net.core import envelope as env
    from i24net.core import wire
    from i24net.core.labels import Label

    class MsgspecHeader(msgspec.Struct, forbid_unknown_fields=True):
        v: int
        id: bytes
        kind: str
        sender: str = msgspec.field(name="from")
        to: list[str] = msgspec.field(default_factory=list)
        addr: list[str] = msgspec.field(default_factory=list)
        level: str = ""
        caveats: list[str] = msgspec.field(default_factory=list)
        handling: list[str] = msgspec.field(default_factory=list)
        h3: str = ""
        tlp: str | None = None
        eval: str | None = None
        prec: str = ""
        created: int = 0
        expires: int = 0
        ref: bytes | None = None
        release: bytes | None = None
        dir: int = 0
        kid: bytes = b""
        nonce: bytes = b""

    d = home.directory()
    ncbs = d.expand(["@NCB"], "GS-LYON")
    raw = {}
    for n in (1, 196):
        to = ["@NCB"] if n == 196 else list(ncbs[:1])
        raw[n] = env.make_header(d, sender="GS-LYON", addressing=to, kind="notice",
                                 label=Label("UNCLASSIFIED"), now_ms=int(time.time() * 1000),
                                 ttl_ms=3_600_000, random_bytes=os.urandom).encode()
    fast = msgspec.msgpack.Decoder(MsgspecHeader)
    assert fast.decode(raw[196]).to == list(env.Header.decode(raw[196]).recipients)
    ops: dict[str, Callable[[], object]] = {
        "header_decode_us_1": lambda: env.Header.decode(raw[1]),
        "header_decode_us_196": lambda: env.Header.decode(raw[196]),
        "header_unpack_us_196": lambda: wire.unpack(raw[196], what="header",
                                                    max_size=env.MAX_HEADER),
        "header_decode_msgspec_us_1": lambda: fast.decode(raw[1]),
        "header_decode_msgspec_us_196": lambda: fast.decode(raw[196]),
    }
    samples: dict[str, list[float]] = {k: [] for k in ops}
    for _ in range(max(1, runs)):
        for name, op in ops.items():
            t0 = time.process_time_ns()
            for _ in range(50):
                op()
            samples[name].append((time.process_time_ns() - t0) / 50 / 1000)
    out = {k: median(v) for k, v in samples.items()}
    out["header_decode_over_msgspec_196"] = (out["header_decode_us_196"]
                                             / out["header_decode_msgspec_us_196"])
    return out


# -- the crypto floor ------------------------------------------------------------------------

# The libsodium and BLAKE2b work one routed, receipted message to one recipient needs, with
# every cache warm (pair keys, the sender's sending key, the recipient's prekey state): what
# no implementation of the protocol can avoid. (operation, what it covers, count)
FLOOR_OPS: tuple[tuple[str, str, int], ...] = (
    ("sign", "envelope (sender), stamp and report (router), receipt (recipient)", 4),
    ("verify", "envelope and receipt (router), stamp and envelope (recipient), report and "
               "receipt (sender)", 6),
    ("aead_body", "body sealed (sender) and opened (recipient)", 2),
    ("aead_wrap", "the content key wrapped (sender) and unwrapped (recipient)", 2),
    ("blake2b", "body key, commitment and wrap key, at both ends", 6),
)


def crypto_floor(runs: int, body_bytes: int = BODY_BYTES) -> dict[str, Any]:
    """CPU milliseconds of ``FLOOR_OPS``, timed in this process with the same libsodium
    calls the protocol makes, on an envelope of ``body_bytes`` (plus its ~300 bytes of
    header and wraps) and frames of ~160 bytes: the median of ``runs`` batches."""
    import hashlib

    import nacl.bindings as sodium

    _, secret = sodium.crypto_sign_seed_keypair(b"\x01" * 32)
    public = sodium.crypto_sign_ed25519_sk_to_pk(secret)
    envelope = os.urandom(body_bytes + 300)
    frame = os.urandom(160)
    signed_envelope = sodium.crypto_sign(envelope, secret)
    signed_frame = sodium.crypto_sign(frame, secret)
    key, nonce = os.urandom(32), os.urandom(24)
    body = os.urandom(body_bytes)
    sealed_body = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(body, b"ad", nonce, key)
    content_key = os.urandom(32)
    sealed_key = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(content_key, b"ad", nonce,
                                                                   key)
    ops: dict[str, Callable[[], object]] = {
        # half of the signatures and verifications cover an envelope, half a frame
        "sign": lambda: (sodium.crypto_sign(envelope, secret), sodium.crypto_sign(frame, secret)),
        "verify": lambda: (sodium.crypto_sign_open(signed_envelope, public),
                           sodium.crypto_sign_open(signed_frame, public)),
        "aead_body": lambda: (
            sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(body, b"ad", nonce, key),
            sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed_body, b"ad", nonce, key)),
        "aead_wrap": lambda: (
            sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(content_key, b"ad", nonce, key),
            sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed_key, b"ad", nonce, key)),
        "blake2b": lambda: (hashlib.blake2b(envelope[:64], key=key, digest_size=32).digest(),
                            hashlib.blake2b(envelope[:64], key=key, digest_size=32).digest()),
    }
    per_op: dict[str, float] = {}
    for name, _, _ in FLOOR_OPS:
        op, batch = ops[name], 200
        op()  # warm
        samples = []
        for _ in range(max(1, runs)):
            t0 = time.process_time_ns()
            for _ in range(batch):
                op()
            samples.append((time.process_time_ns() - t0) / batch / 2 / 1e6)  # one call, ms
        per_op[name] = median(samples)
    floor = sum(per_op[name] * count for name, _, count in FLOOR_OPS)
    return {"crypto_floor_ms": floor,
            "crypto_floor_ops_us": {name: per_op[name] * 1000 for name in per_op},
            "crypto_floor_counts": {name: count for name, _, count in FLOOR_OPS}}


# -- child processes -------------------------------------------------------------------------

class Child:
    """A worker process (``python -m i24net.bench.pipeline worker ROLE``) spoken to in JSON lines."""

    def __init__(self, role: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.role = role
        self.proc = proc
        self.log = log
        self.process = process(proc.pid)  # for readings that must be this process's

    @classmethod
    async def start(cls, role: str, args: dict[str, Any], log: Path,
                    timeout: float = 60.0) -> Child:
        with log.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "i24net.bench.pipeline", "worker", role, json.dumps(args),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
                limit=64 * 1024 * 1024)
        child = cls(role, proc, log)
        try:
            await child._read(timeout)
        except BaseException:
            await child.stop()
            raise
        return child

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise BenchError(f"the {self.role} worker did not answer within {timeout:.0f} s "
                             f"(log: {self.log})") from None
        if not line:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise BenchError(f"the {self.role} worker exited: {tail}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise BenchError(f"the {self.role} worker failed: {answer['error']}")
        return answer

    async def ask(self, *command: object, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((" ".join(str(c) for c in command) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._read(timeout)

    def rss_mb(self) -> float:
        return peak_rss_mb(self.process) if self.process is not None else math.nan

    async def stop(self, timeout: float = 5.0) -> None:
        if self.proc.returncode is None and self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.write(b"quit\n")
                await self.proc.stdin.drain()
                self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


# -- the live network ------------------------------------------------------------------------

@dataclass
class _Round:
    rate: float
    p50: float
    p99: float
    seconds: float
    latencies: list[float] = field(repr=False, default_factory=list)
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per message, per process
    retries: int = 0  # sends the sender's node repeated (no receipt within its timer)


class _CpuMeter:
    """CPU time per message of each process taking part in a round."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.procs = {name: process(pid) for name, pid in pids.items()}
        self.start = {name: cpu_seconds(proc) for name, proc in self.procs.items()}

    def per_message(self, n: int) -> dict[str, float]:
        out = {name: (cpu_seconds(proc) - self.start[name]) * 1000 / n
               for name, proc in self.procs.items()}
        out["total"] = sum(v for v in out.values() if not math.isnan(v))
        return out


class LiveNet:
    """Broker, router child, relay child, sender and recipient nodes, baseline clients."""

    def __init__(self, home: Any, engine: str, work: Path, plan: Plan, say: Say) -> None:
        self.home = home
        self.engine = engine
        self.work = work
        self.plan = plan
        self.say = say
        self.stack = contextlib.AsyncExitStack()
        self.children: list[Child] = []
        self.d = home.directory()
        self.body_text = _filler(BODY_BYTES)
        # what the event hooks report into, reset per round
        self._arrived: Callable[[float, int], None] = lambda lat, prec: None
        self._delivered: Callable[[], None] = lambda: None
        self._sink: Callable[[bytes], None] = lambda payload: None
        self.flash_sent: dict[str, int] = {}
        self.flash_inbox: dict[str, int] = {}
        self.flash_acked: dict[str, int] = {}
        self.flash_resent = 0

    # -- setup --------------------------------------------------------------------------
    async def __aenter__(self) -> LiveNet:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for child in reversed(self.children):
            await child.stop()
        self.children.clear()
        await self.stack.aclose()

    async def _start(self) -> None:
        from i24net.broker import BrokerAccount, accounts_for, generate_password, start_broker
        from i24net.shell.runtime import Endpoint, make_node, make_transport
        from i24net.transport.base import Will

        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.logs = logs
        self.passwords = {u: generate_password(os.urandom)
                          for u in ("bench-pub", "bench-relay", "bench-sub")}
        accounts = accounts_for(sorted(self.d.agencies), self.home.broker_passwords(),
                                prefix=self.d.prefix)
        accounts += [
            BrokerAccount("bench-pub", self.passwords["bench-pub"], (BASELINE_IN,), ()),
            BrokerAccount("bench-relay", self.passwords["bench-relay"], (BASELINE_OUT,),
                          (BASELINE_IN,)),
            BrokerAccount("bench-sub", self.passwords["bench-sub"], (), (BASELINE_OUT,)),
        ]
        # The embedded engine runs in its own process: in ours it would share the event
        # loop that does the measuring.
        engine = "embedded-process" if self.engine == "embedded" else self.engine
        broker = start_broker(engine, self.work / "broker", accounts,
                              logger=file_logger(logs / "broker.log", "i24net.bench.broker"))
        await self.stack.enter_async_context(broker)
        self.host, self.port = broker.host, broker.port
        self.broker_pid = broker.pid
        self.ep = Endpoint(self.engine, self.host, self.port)
        self.say(f"broker {self.engine} on {self.host}:{self.port}")

        common = {"home": str(self.home.path), "host": self.host, "port": self.port}
        self.router = await self._child("router", common)
        self.relay = await self._child("relay", {
            "host": self.host, "port": self.port, "user": "bench-relay",
            "password": self.passwords["bench-relay"], "in": BASELINE_IN,
            "out": BASELINE_OUT, "window": WINDOW})

        self.nodes = {}
        for agency in (SENDER, RECIPIENT):
            log = file_logger(logs / f"node-{agency}.log", f"i24net.bench.node-{agency}")
            will = Will(f"{self.d.prefix}/presence/{agency}", b"offline", True)
            t = make_transport(self.home, agency, ep=self.ep, logger=log, will=will)
            await self.stack.enter_async_context(t)
            node = make_node(self.home, agency, logger=log, transport=t)
            await self.stack.enter_async_context(node)
            self.nodes[agency] = node
        self.nodes[RECIPIENT].on_event = self._on_recipient_event
        self.nodes[SENDER].on_event = self._on_sender_event

        self.pub = await self._raw_client("bench-pub")
        self.sub = await self._raw_client("bench-sub")
        await self.sub.subscribe(BASELINE_OUT, qos=1)
        sink = asyncio.get_running_loop().create_task(self._sink_loop(), name="bench-sink")
        self.stack.push_async_callback(_cancel, sink)

    async def _child(self, role: str, args: dict[str, Any], name: str | None = None,
                     timeout: float = 60.0) -> Child:
        child = await Child.start(role, args, self.logs / f"{name or role}.log", timeout)
        self.children.append(child)
        return child

    async def _raw_client(self, user: str) -> Any:
        import aiomqtt

        client = aiomqtt.Client(self.host, self.port, username=user,
                                password=self.passwords[user], identifier=user,
                                protocol=aiomqtt.ProtocolVersion.V311, clean_session=True,
                                max_inflight_messages=WINDOW, max_queued_incoming_messages=0,
                                socket_options=(NODELAY,))  # as i24net's transport
        client.pending_calls_threshold = WINDOW + 16
        await self.stack.enter_async_context(client)
        return client

    async def _sink_loop(self) -> None:
        async for m in self.sub.messages:
            self._sink(bytes(m.payload))

    def _on_recipient_event(self, ev: Any) -> None:
        if isinstance(ev, Received) and ev.detail.startswith("t="):
            if ev.precedence == 0:
                self.flash_inbox[ev.msg_id] = time.time_ns()
            self._arrived((time.monotonic_ns() - int(ev.detail[2:])) / 1e6, ev.precedence)

    def _trace_sender(self) -> None:
        """Note when the sender's daemon hands each FLASH envelope to its transport and when
        the broker acknowledged it (the daemon's ``observer`` hook)."""
        from i24net.core import frames as fr
        from i24net.core.envelope import Envelope

        node = self.nodes[SENDER]
        pending: dict[int, str] = {}

        def stage(step: str, payload: bytes) -> None:
            if step == "publish" and fr.peek_magic(payload) == fr.ENVELOPE:
                h = Envelope.parse(payload).header
                if h.precedence == 0:  # the first send; a retry is counted, not timed
                    if h.id_hex in self.flash_sent:
                        self.flash_resent += 1
                    else:
                        pending[id(payload)] = h.id_hex
                        self.flash_sent[h.id_hex] = time.time_ns()
            elif step == "published":
                first = pending.pop(id(payload), None)
                if first is not None:
                    self.flash_acked[first] = time.time_ns()

        node.observer = stage

    def breakdown(self, router_trace: dict[str, dict[str, float]]) -> dict[str, Any]:
        """Median and p99 (ms) of each stage of the FLASH probes' way, wall clock."""
        spans: dict[str, list[float]] = {name: [] for name, _, _ in FLASH_STAGES}
        for msg, rec in router_trace.items():
            rec = {**rec, "sent": self.flash_sent.get(msg),  # type: ignore[dict-item]
                   "inbox": self.flash_inbox.get(msg),  # type: ignore[dict-item]
                   "acked": self.flash_acked.get(msg)}  # type: ignore[dict-item]
            for name, a, b in FLASH_STAGES:
                if rec.get(a) is not None and rec.get(b) is not None:
                    spans[name].append((rec[b] - rec[a]) / 1e6)
        return {name: {"p50": percentile(v, 50), "p99": percentile(v, 99), "n": len(v)}
                for name, v in spans.items()}

    def _on_sender_event(self, ev: Any) -> None:
        if isinstance(ev, Delivered):
            self._delivered()

    # -- 1. relay against the pipeline -----------------------------------------------------
    async def baseline_round(self, n: int, tag: int, window_size: int = WINDOW) -> _Round:
        window = asyncio.Semaphore(window_size)
        lat: list[float] = []
        done = asyncio.Event()
        last = [0]
        filler = self.body_text.encode()[:BODY_BYTES - 12]

        def arrived(payload: bytes) -> None:
            got_tag, sent = struct.unpack_from(">IQ", payload)
            if got_tag != tag:
                return  # a straggler of an earlier round
            now = time.monotonic_ns()
            lat.append((now - sent) / 1e6)
            last[0] = now
            window.release()
            if len(lat) >= n:
                done.set()

        self._sink = arrived
        publishes: set[asyncio.Task[None]] = set()
        meter = _CpuMeter({"bench (publisher + subscriber)": os.getpid(),
                           "relay": self.relay.pid, "broker": self.broker_pid})
        t0 = time.monotonic_ns()
        for _ in range(n):
            await window.acquire()
            payload = struct.pack(">IQ", tag, time.monotonic_ns()) + filler
            task = asyncio.get_running_loop().create_task(
                self.pub.publish(BASELINE_IN, payload, qos=1))
            publishes.add(task)
            task.add_done_callback(publishes.discard)
        await self._bounded(done.wait(), f"baseline round {tag}")
        self._sink = lambda payload: None
        seconds = (last[0] - t0) / 1e9
        return _Round(n / seconds, percentile(lat, 50), percentile(lat, 99), seconds, lat,
                      meter.per_message(n))

    def _submit(self, precedence: Any) -> None:
        from i24net.core.envelope import Body, make_header
        from i24net.core.labels import Label

        node = self.nodes[SENDER]
        now = int(time.time() * 1000)
        header = make_header(self.d, sender=SENDER, addressing=[RECIPIENT], kind="message",
                             label=Label("UNCLASSIFIED"), now_ms=now, ttl_ms=3_600_000,
                             random_bytes=os.urandom, precedence=precedence)
        body = Body(f"t={time.monotonic_ns()}", self.body_text, {})
        node.machine.submit(header, body, now)  # seal + SQLite outbox, as a node does
        node.kick()

    async def secured_round(self, n: int, tag: int, window_size: int = WINDOW) -> _Round:
        from i24net.core.labels import Precedence

        window = asyncio.Semaphore(window_size)
        lat: list[float] = []
        receipts = [0]
        done = asyncio.Event()
        last = [0]

        def check() -> None:
            if len(lat) >= n and receipts[0] >= n:
                last[0] = time.monotonic_ns()
                done.set()

        def arrived(latency: float, precedence: int) -> None:
            lat.append(latency)
            check()

        def delivered() -> None:
            # The window closes on the receipt: the sender's own end of the loop. Closing it
            # on inbox arrival would let un-receipted messages pile up past the node's 2 s
            # retry timer, and the retries would then measure a retry storm.
            receipts[0] += 1
            window.release()
            check()

        self._arrived, self._delivered = arrived, delivered
        meter = _CpuMeter({"bench (sender + recipient nodes)": os.getpid(),
                           "router": self.router.pid, "broker": self.broker_pid})
        retries = self.nodes[SENDER].machine.counters.get("retry", 0)
        t0 = time.monotonic_ns()
        for _ in range(n):
            await window.acquire()
            self._submit(Precedence.ROUTINE)
        await self._bounded(done.wait(), f"secured round {tag}")
        self._arrived, self._delivered = (lambda lat, prec: None), (lambda: None)
        seconds = (last[0] - t0) / 1e9
        return _Round(n / seconds, percentile(lat, 50), percentile(lat, 99), seconds, lat,
                      meter.per_message(n),
                      self.nodes[SENDER].machine.counters.get("retry", 0) - retries)

    async def _bounded(self, aw: Any, what: str) -> None:
        try:
            await asyncio.wait_for(aw, self.plan.round_timeout_s)
        except TimeoutError:
            raise BenchError(f"{what} did not finish within {self.plan.round_timeout_s:.0f} s "
                             f"(logs in {self.logs})") from None

    async def relay_phase(self) -> dict[str, Any]:
        plan = self.plan
        # One sender against one publisher: the router's per-sender rate limit (100/s) would
        # measure the limiter, not the pipeline. Lifted here, on again for the FLASH phase.
        await self.router.ask("limit", "off")
        self.say(f"relay vs pipeline: warm-up ({plan.warmup_messages} each)")
        await self.baseline_round(plan.warmup_messages, 1)
        await self.secured_round(plan.warmup_messages, 1)
        base: list[_Round] = []
        sec: list[_Round] = []
        for r in range(plan.relay_rounds):
            await asyncio.sleep(0.3)
            base.append(await self.baseline_round(plan.relay_messages, 10 + r))
            await asyncio.sleep(0.3)
            sec.append(await self.secured_round(plan.relay_messages, 10 + r))
            self.say(f"  round {r + 1}/{plan.relay_rounds}: baseline {base[-1].rate:,.0f} "
                     f"msg/s, secured {sec[-1].rate:,.0f} msg/s ({sec[-1].retries} retries)")
        relay = median([b.rate for b in base])
        secured = median([s.rate for s in sec])
        # One message at a time (a window of one): what a message costs in time when
        # nothing else is in flight, the secured pipeline against the plain relay.
        self.say(f"unloaded: one message at a time ({plan.unloaded_messages} each, "
                 f"{plan.relay_rounds} rounds)")
        idle_base: list[_Round] = []
        idle_sec: list[_Round] = []
        for r in range(plan.relay_rounds):
            await asyncio.sleep(0.3)
            idle_base.append(await self.baseline_round(plan.unloaded_messages, 50 + r, 1))
            await asyncio.sleep(0.3)
            idle_sec.append(await self.secured_round(plan.unloaded_messages, 50 + r, 1))
        unloaded_relay = median([b.p50 for b in idle_base])
        unloaded_secured = median([s.p50 for s in idle_sec])
        return {
            "unloaded_relay_p50_ms": unloaded_relay,
            "unloaded_secured_p50_ms": unloaded_secured,
            "unloaded_p50_ratio": unloaded_secured / unloaded_relay,
            "relay_msgs_per_s": relay,
            "secured_msgs_per_s": secured,
            "relay_ratio": secured / relay,
            "relay_p50_ms": median([b.p50 for b in base]),
            "relay_p99_ms": median([b.p99 for b in base]),
            "secured_p50_ms": median([s.p50 for s in sec]),
            "secured_p99_ms": median([s.p99 for s in sec]),
            "relay_rounds": [{"baseline_msgs_per_s": b.rate, "secured_msgs_per_s": s.rate,
                              "baseline_p99_ms": b.p99, "secured_p99_ms": s.p99,
                              "secured_retries": s.retries}
                             for b, s in zip(base, sec, strict=True)],
            "relay_messages_per_round": plan.relay_messages,
            "relay_router_rate_limit": "lifted (one sender; the default is 100/s per sender)",
            # CPU per message, per process (median over rounds): what a saturated machine
            # divides its cores by; less noisy than wall-clock rates on a shared machine
            "relay_cpu_ms_per_msg": _median_dicts([b.cpu_ms for b in base]),
            "secured_cpu_ms_per_msg": _median_dicts([s.cpu_ms for s in sec]),
        }

    # -- 3. FLASH under a ROUTINE flood ----------------------------------------------------
    async def probes(self, count: int, interval: float) -> tuple[list[float],
                                                                 asyncio.Event]:
        """Send ``count`` FLASH probes ``interval`` apart. Returns the list their latencies
        arrive in (it keeps filling until ``stop_probes``) and an event set once all have."""
        from i24net.core.labels import Precedence

        lat: list[float] = []
        done = asyncio.Event()

        def arrived(latency: float, precedence: int) -> None:
            if precedence == int(Precedence.FLASH):
                lat.append(latency)
                if len(lat) >= count:
                    done.set()

        self._arrived = arrived
        start = time.monotonic()
        for k in range(count):
            self._submit(Precedence.FLASH)
            await asyncio.sleep(max(0.0, start + (k + 1) * interval - time.monotonic()))
        return lat, done

    async def stop_probes(self, done: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
        self._arrived = lambda lat, prec: None

    async def flash_phase(self, secured_rate: float) -> dict[str, Any]:
        plan = self.plan
        wait = 30.0 if not plan.quick else 10.0
        n = plan.flash_probes
        self.say(f"FLASH alone: {n} probes")
        self._trace_sender()
        await self.router.ask("trace")  # start from a clean trace
        idle, done = await self.probes(n, plan.flash_interval_s)
        await self.stop_probes(done, wait)
        idle_lost = n - len(idle)
        idle_where = self.breakdown((await self.router.ask("trace"))["flash"])

        rate = max(500.0, plan.flood_factor * secured_rate)
        span = plan.flood_warmup_s + n * plan.flash_interval_s + 1.0
        count = int(rate * span)
        # The router's per-sender rate limit (on again, as deployed) throttles one flooding
        # agency; a flood that saturates the router comes from many, each under its limit.
        senders = [a for a in self.d.expand(["@NCB"], SENDER)
                   if a not in (SENDER, RECIPIENT, FLOOD_RECIPIENT)]
        senders = senders[:max(1, min(len(senders), math.ceil(rate / FLOOD_PER_SENDER)))]
        common = {"home": str(self.home.path), "host": self.host, "port": self.port}
        self.say(f"FLASH under flood: sealing {count:,} ROUTINE envelopes from "
                 f"{len(senders)} NCBs to {FLOOD_RECIPIENT}")
        await self.router.ask("limit", "default")
        self.flood_node = await self._child("node", {**common, "agency": FLOOD_RECIPIENT},
                                            name=f"node-{FLOOD_RECIPIENT}")
        blaster = await self._child("blast", {**common, "senders": senders,
                                              "recipient": FLOOD_RECIPIENT, "count": count,
                                              "text": self.body_text}, timeout=300.0)
        await blaster.ask("go", rate)
        await asyncio.sleep(plan.flood_warmup_s)
        during = await self.router.ask("stats")
        pids = {"bench (FLASH sender + recipient)": os.getpid(), "router": self.router.pid,
                "broker": self.broker_pid, "flood senders": blaster.pid,
                f"flood recipient {FLOOD_RECIPIENT}": self.flood_node.pid}
        procs = {k: process(p) for k, p in pids.items()}
        cpu0 = {k: cpu_seconds(p) for k, p in procs.items()}
        t_probe = time.monotonic()
        self.say(f"  flooding at {rate:,.0f} msg/s offered; {n} FLASH probes")
        flooded, done = await self.probes(n, plan.flash_interval_s)
        sent = await blaster.ask("stats")
        after = await self.router.ask("stats")
        busy = {k: (cpu_seconds(p) - cpu0[k]) / (time.monotonic() - t_probe)
                for k, p in procs.items()}
        sink = await self.flood_node.ask("stats")
        await blaster.ask("stop")
        await self.stop_probes(done, wait)  # the stragglers: bounded, else timeouts
        flood_where = self.breakdown((await self.router.ask("trace"))["flash"])
        flooded = list(flooded)
        flooded_lost = n - len(flooded)
        routed_s = max(1e-9, after["t"] - during["t"])
        p99_idle = percentile(idle, 99)
        p99_flood = percentile(flooded + [wait * 1000] * flooded_lost, 99)
        return {
            "flash_p99_ms_idle": p99_idle,
            "flash_p99_ms_flooded": p99_flood,
            "flash_p99_ratio": p99_flood / p99_idle,
            "flash_p50_ms_idle": percentile(idle, 50),
            "flash_p50_ms_flooded": percentile(flooded, 50),
            "flash_probes": n,
            "flash_timeouts": idle_lost + flooded_lost,
            "flash_resent_by_sender": self.flash_resent,
            "flood_offered_msgs_per_s": rate,
            "flood_senders": len(senders),
            "flood_published": sent["published"],
            "flood_cpu_share": busy,  # CPU seconds per second of each process while probing
            "flood_router_in_frames_per_s": (after["received"] - during["received"]) / routed_s,
            "flood_recipient_received": sink["received"],
            "flood_router_queues": {"during": during, "after": after},
            "flash_breakdown_ms": {"idle": idle_where, "flooded": flood_where},
        }

    # -- 5. memory ------------------------------------------------------------------------
    def rss(self) -> dict[str, float]:
        node = getattr(self, "flood_node", None)
        return {"router_rss_mb": self.router.rss_mb(),
                "node_rss_mb": node.rss_mb() if node is not None else math.nan}


def _median_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    return {k: median([d[k] for d in dicts]) for k in dicts[0]} if dicts else {}


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


# -- 4. simulation speed ---------------------------------------------------------------------

def sim_bench(plan: Plan, say: Say) -> dict[str, Any]:
    """Virtual-time simulator speed on 198 and 3,000 agencies, and one SIENA year."""
    try:
        from i24net.sim import Simulation  # noqa: F401
    except ImportError as exc:
        say(f"simulation: not measured ({exc})")
        return {"sim_msgs_per_s_198": math.nan, "sim_msgs_per_s_3000": math.nan,
                "sim_year_minutes": math.nan, "sim_crypto_share": math.nan,
                "sim_note": f"not measured: i24net.sim.Simulation is not available ({exc})"}
    r198 = _sim_in_child(plan.sim_slice_198, None, say)
    r3000 = _sim_in_child(plan.sim_slice_3000, 3000, say)
    note = (f"SIENA year (1.79M messages) extrapolated from a measured {plan.sim_slice_3000:,}"
            f"-message slice on 3,000 agencies"
            + (" (--quick: a small slice, not the 50,000 a real estimate needs)"
               if plan.quick else ""))
    return {
        "sim_msgs_per_s_198": r198["msgs_per_s"],
        "sim_msgs_per_s_3000": r3000["msgs_per_s"],
        "sim_3000_over_198": r3000["msgs_per_s"] / r198["msgs_per_s"],
        "sim_year_minutes": SIENA_YEAR_MESSAGES / r3000["msgs_per_s"] / 60,
        "sim_year_minutes_198": SIENA_YEAR_MESSAGES / r198["msgs_per_s"] / 60,
        # wall time per message in libsodium against the rest (ours), 3,000 agencies
        "sim_crypto_share": r3000["crypto_share"],
        "sim_crypto_ms_per_msg": r3000["crypto_ms_per_msg"],
        "sim_ours_ms_per_msg": r3000["ours_ms_per_msg"],
        "sim_slice_messages": plan.sim_slice_3000,
        "sim_note": note,
        "sim_detail": {"198": r198, "3000": r3000},
    }


def _sim_in_child(messages: int, agencies: int | None, say: Say) -> dict[str, Any]:
    """``sim_rate`` in a fresh process: clean heap, and its peak RSS is the simulation's."""
    import subprocess

    name = "interpol (198)" if agencies is None else f"synthetic ({agencies:,})"
    say(f"simulation: {name}, {messages:,} messages")
    args = json.dumps({"messages": messages, "agencies": agencies})
    try:
        done = subprocess.run([sys.executable, "-m", "i24net.bench.pipeline", "sim", args],
                              capture_output=True, text=True, timeout=SIM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BenchError(f"the {name} simulation of {messages:,} messages took more than "
                         f"{SIM_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise BenchError(f"the {name} simulation failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@dataclass
class CryptoClock:
    """Wall time and calls spent in libsodium while ``timed_crypto`` is on."""

    ns: int = 0
    calls: int = 0


@contextlib.contextmanager
def timed_crypto() -> Iterator[CryptoClock]:
    """For the block, every ``crypto_*`` function of ``nacl.bindings`` (what the core calls
    for signatures, verifications, boxes and AEAD) adds its wall time to the clock. The
    core looks the functions up on the module at each call, so wrapping them there times
    every call; each wrapper adds about 0.2 us against the 22-95 us of a signature or a
    verification. Meant for a measuring child process (the bench's ``sim`` worker)."""
    import nacl.bindings as sodium

    clock = CryptoClock()
    timer = time.perf_counter_ns
    saved = {name: getattr(sodium, name) for name in dir(sodium)
             if name.startswith("crypto_") and callable(getattr(sodium, name))}

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = timer()
            try:
                return fn(*args, **kwargs)
            finally:
                clock.ns += timer() - t
                clock.calls += 1
        return timed

    for name, fn in saved.items():
        setattr(sodium, name, wrap(fn))
    try:
        yield clock
    finally:
        for name, fn in saved.items():
            setattr(sodium, name, fn)


def sim_rate(messages: int, agencies: int | None, seed: int = 1) -> dict[str, Any]:
    """Wall-clock messages per second of a SIENA-like slice in virtual time.

    ``messages`` point-to-point ROUTINE messages with 1 KB bodies between random pairs of
    agencies, spaced at SIENA's yearly rate (1.79M a year, one every 17.6 virtual seconds),
    scripted and run to completion. The rate counts scripting and running (what a year
    costs), not building the network (reported apart).
    """
    import random

    from i24net.sim import Simulation

    t0 = time.perf_counter()
    try:
        sim = (Simulation.from_preset("interpol", seed=seed, keep_bodies=False)
               if agencies is None else
               Simulation.synthetic(agencies, seed=seed, keep_bodies=False))
    except TypeError:  # an API without keep_bodies
        sim = (Simulation.from_preset("interpol", seed=seed) if agencies is None
               else Simulation.synthetic(agencies, seed=seed))
    t1 = time.perf_counter()
    rng = random.Random(seed)
    everyone = list(sim.agencies)
    gap = 365 * 86_400 / SIENA_YEAR_MESSAGES
    text = _filler(BODY_BYTES)
    sent = []
    for i in range(messages):
        a, b = rng.sample(everyone, 2)
        sent.append(sim.send(i * gap, a, b, subject=f"siena {i}", text=text))
    t2 = time.perf_counter()
    with timed_crypto() as crypto:
        sim.run()
    t3 = time.perf_counter()
    delivered = sum(1 for h in sent if sim.state(h) == "delivered")
    per_msg_ms = (t3 - t1) * 1000 / messages
    crypto_ms = crypto.ns / 1e6 / messages
    return {"agencies": len(everyone), "messages": messages, "delivered": delivered,
            "build_s": t1 - t0, "script_s": t2 - t1, "run_s": t3 - t2,
            "virtual_days": sim.now / 86_400, "msgs_per_s": messages / (t3 - t1),
            "ms_per_msg": per_msg_ms, "crypto_ms_per_msg": crypto_ms,
            "ours_ms_per_msg": per_msg_ms - crypto_ms, "crypto_share": crypto_ms / per_msg_ms,
            "crypto_calls_per_msg": crypto.calls / messages, "peak_rss_mb": peak_rss_mb()}


# -- the whole run ---------------------------------------------------------------------------

async def run_live(home: Any, plan: Plan, engine: str, work: Path, say: Say) -> dict[str, Any]:
    results: dict[str, Any] = {}
    phases = results.setdefault("phase_seconds", {})
    t = time.monotonic()
    async with LiveNet(home, engine, work, plan, say) as net:
        phases["live_setup"] = time.monotonic() - t
        results.update(await net.relay_phase())
        phases["relay"] = time.monotonic() - t - phases["live_setup"]
        t = time.monotonic()
        results.update(await net.flash_phase(results["secured_msgs_per_s"]))
        phases["flash"] = time.monotonic() - t
        results.update(net.rss())
    return results


def run(plan: Plan, engine: str = "mosquitto", say: Say = lambda s: None,
        keep: Path | None = None) -> dict[str, Any]:
    """Every figure of the benchmark as one dict (see the module docstring)."""
    from i24net.config.home import Home
    from i24net.config.presets import preset_toml

    if engine == "mosquitto":
        from i24net.broker import find_mosquitto

        if find_mosquitto() is None:
            raise BenchError("mosquitto is not installed (make install installs it); "
                             "or use --engine embedded", reason="bench.broker")
    started = time.monotonic()
    results: dict[str, Any] = {"quick": plan.quick, "engine": engine, "store": "sqlite",
                               **machine_info(), "window": WINDOW, "body_bytes": BODY_BYTES}
    work = Path(tempfile.mkdtemp(prefix="i24net-bench-", dir=keep))
    try:
        home = Home(work / "home")
        home.init(preset_toml("interpol"))
        say(f"fan-out: sealing to 1, 10, 196 NCBs ({plan.seal_runs} runs each)")
        results.update(seal_bench(home, plan.seal_runs))
        say("header decoding: the core's reader against msgspec")
        results.update(decode_bench(home, plan.seal_runs))
        say("crypto floor: the libsodium work of one routed, receipted message")
        results.update(crypto_floor(max(3, plan.seal_runs // 20)))
        results.update(asyncio.run(run_live(home, plan, engine, work, say)))
        secured = results.get("secured_cpu_ms_per_msg", {}).get("total", math.nan)
        results["cpu_ms_per_msg"] = secured
        results["cpu_over_crypto_floor"] = secured / results["crypto_floor_ms"]
        t = time.monotonic()
        results.update(sim_bench(plan, say))
        results["phase_seconds"]["sim"] = time.monotonic() - t
    finally:
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("i24net.bench."):
                for h in list(logging.getLogger(name).handlers):
                    logging.getLogger(name).removeHandler(h)
                    h.close()
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"kept the work folder {work}")
    results["seconds"] = time.monotonic() - started
    results["loadavg_end"] = os.getloadavg()[0]
    return results


# -- goals and reporting -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Figure:
    key: str
    label: str
    unit: str
    goal: str = ""
    check: Callable[[dict[str, Any]], bool] | None = None


def _ok(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


FIGURES: tuple[Figure, ...] = (
    Figure("relay_msgs_per_s", "baseline relay throughput", "msg/s"),
    Figure("secured_msgs_per_s", "i24net pipeline throughput", "msg/s"),
    Figure("relay_ratio", "pipeline / baseline", "x", ">= 0.5",
           lambda r: r["relay_ratio"] >= 0.5),
    Figure("relay_p50_ms", "baseline latency p50", "ms"),
    Figure("relay_p99_ms", "baseline latency p99", "ms"),
    Figure("secured_p50_ms", "pipeline latency p50 (submit->inbox)", "ms"),
    Figure("secured_p99_ms", "pipeline latency p99 (submit->inbox)", "ms"),
    Figure("unloaded_relay_p50_ms", "baseline latency p50, one at a time", "ms"),
    Figure("unloaded_secured_p50_ms", "pipeline latency p50, one at a time", "ms"),
    Figure("unloaded_p50_ratio", "unloaded p50 pipeline / baseline", "x", "<= 5",
           lambda r: r["unloaded_p50_ratio"] <= 5),
    Figure("crypto_floor_ms", "crypto floor, one routed receipted message", "ms"),
    Figure("cpu_ms_per_msg", "pipeline CPU per message, every process", "ms"),
    Figure("cpu_over_crypto_floor", "pipeline CPU per message / crypto floor", "x", "<= 2.5",
           lambda r: r["cpu_over_crypto_floor"] <= 2.5),
    Figure("seal_us_1", "seal, 1 recipient", "us"),
    Figure("seal_us_10", "seal, 10 recipients", "us"),
    Figure("seal_us_196", "seal, 196 recipients", "us"),
    Figure("fanout_196_over_1", "fan-out cost 196 / 1", "x", "<= 8",
           lambda r: r["fanout_196_over_1"] <= 8),
    Figure("header_decode_us_196", "header decode, 196 recipients (core)", "us"),
    Figure("header_decode_msgspec_us_196", "header decode, 196 recipients (msgspec)", "us"),
    Figure("header_decode_over_msgspec_196", "core / msgspec header decode, 196", "x"),
    Figure("flash_p99_ms_idle", "FLASH p99, router idle", "ms"),
    Figure("flash_p99_ms_flooded", "FLASH p99, ROUTINE flood", "ms"),
    Figure("flash_p99_ratio", "FLASH p99 flooded / idle", "x", "<= 2",
           lambda r: r["flash_p99_ratio"] <= 2),
    Figure("sim_msgs_per_s_198", "simulation, 198 agencies", "msg/s"),
    Figure("sim_msgs_per_s_3000", "simulation, 3,000 agencies", "msg/s"),
    Figure("sim_3000_over_198", "simulation 3,000 / 198 agencies", "x", ">= 0.9",
           lambda r: r["sim_3000_over_198"] >= 0.9),
    Figure("sim_year_minutes", "one SIENA year (1.79M msgs)", "min", "<= 15",
           lambda r: r["sim_year_minutes"] <= 15),
    Figure("sim_crypto_share", "simulation wall time in libsodium", "x"),
    Figure("router_rss_mb", "router peak RSS, 198 agencies", "MiB"),
    Figure("node_rss_mb", "node peak RSS, 198 agencies", "MiB"),
)

REQUIRED_KEYS: tuple[str, ...] = tuple(f.key for f in FIGURES)


def status(fig: Figure, results: dict[str, Any]) -> str:
    """``met``, ``MISSED``, ``n/a`` (not measured) or ``""`` (no goal)."""
    if fig.check is None:
        return ""
    if not _ok(results.get(fig.key)):
        return "n/a"
    try:
        return "met" if fig.check(results) else "MISSED"
    except (KeyError, TypeError):
        return "n/a"


def fmt(value: Any) -> str:
    if not _ok(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def notes(results: dict[str, Any]) -> list[str]:
    """What a reader needs to know to trust (or not) the figures."""
    out = []
    if results.get("quick"):
        out.append("QUICK smoke run: small counts, figures are not measurements.")
    if results.get("relay_router_rate_limit"):
        out.append("Relay phase: one sender against one publisher, so the router's per-sender "
                   "rate limit (100/s) is lifted there; the FLASH phase runs with it, the "
                   f"flood coming from {results.get('flood_senders', '?')} NCBs under it.")
    if results.get("sim_note"):
        out.append(f"Simulation: {results['sim_note']}.")
    if results.get("flash_timeouts"):
        out.append(f"{results['flash_timeouts']} FLASH probe(s) timed out; they count at the "
                   "timeout in the flooded p99.")
    return out


def markdown(results: dict[str, Any], command: str) -> str:
    """The results as markdown: the figures, then where the time goes."""
    lines = [
        "# i24net benchmark results",
        "",
        f"Command: `{command}` ({'quick smoke run' if results.get('quick') else 'full run'}, "
        f"{results.get('seconds', 0):.0f} s)  ",
        f"Machine: {results.get('cpu_model')}, {results.get('cores')} cores, Python "
        f"{results.get('python')}, {results.get('platform')}; load average (1 min) "
        f"{fmt(results.get('loadavg_start'))} at the start, {fmt(results.get('loadavg_end'))} "
        "at the end (other processes share these cores)  ",
        f"Broker: {results.get('engine')} on 127.0.0.1; stores: SQLite (WAL) as the daemons "
        f"use; {results.get('body_bytes')}-byte bodies; at most {results.get('window')} "
        "messages outstanding end to end.",
        "",
        "| figure | key | value | goal | status |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for fig in FIGURES:
        lines.append(f"| {fig.label} | `{fig.key}` | {fmt(results.get(fig.key))} {fig.unit} "
                     f"| {fig.goal} | {status(fig, results)} |")
    lines += ["", *(f"- {n}" for n in notes(results))]
    base, sec = results.get("relay_cpu_ms_per_msg"), results.get("secured_cpu_ms_per_msg")
    if base and sec:
        lines += ["", "## CPU per message (ms, median over rounds)", "",
                  "| baseline process | ms | i24net process | ms |", "| --- | ---: | --- | ---: |"]
        for (bk, bv), (sk, sv) in zip(base.items(), sec.items(), strict=False):
            lines.append(f"| {bk} | {fmt(bv)} | {sk} | {fmt(sv)} |")
    where = results.get("flash_breakdown_ms")
    if where:
        lines += ["", "## Where a FLASH message spends its time (ms, p50 / p99)", "",
                  "| stage | router idle | ROUTINE flood |", "| --- | ---: | ---: |"]
        for stage, _, _ in FLASH_STAGES:
            i, f = where["idle"].get(stage, {}), where["flooded"].get(stage, {})
            lines.append(f"| {stage} | {fmt(i.get('p50'))} / {fmt(i.get('p99'))} | "
                         f"{fmt(f.get('p50'))} / {fmt(f.get('p99'))} |")
    sim = results.get("sim_detail")
    if sim:
        lines += ["", "## Simulation slices", "",
                  "| agencies | messages | delivered | build s | run s | msg/s | ms per msg "
                  "| libsodium ms | ours ms | libsodium share |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in sim.values():
            lines.append(f"| {r['agencies']:,} | {r['messages']:,} | {r['delivered']:,} | "
                         f"{fmt(r['build_s'])} | {fmt(r['script_s'] + r['run_s'])} | "
                         f"{fmt(r['msgs_per_s'])} | {fmt(r.get('ms_per_msg'))} | "
                         f"{fmt(r.get('crypto_ms_per_msg'))} | "
                         f"{fmt(r.get('ours_ms_per_msg'))} | {fmt(r.get('crypto_share'))} |")
    return "\n".join(lines) + "\n"


def to_json(results: dict[str, Any]) -> str:
    """JSON with NaN written as null (strict JSON has no NaN)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(results), indent=2, sort_keys=True) + "\n"


# -- worker side (child processes) -------------------------------------------------------

def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _commands() -> AsyncIterator[list[str]]:
    """Commands from the parent, one per line, until ``quit`` or EOF (the parent is gone)."""
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line or line.strip() == "quit":
            return
        words = line.split()
        if words:
            yield words


async def _serve(answer: Callable[[list[str]], Any]) -> None:
    _emit({"ready": True, "pid": os.getpid()})
    async for words in _commands():
        try:
            if words[0] == "rss":
                out: dict[str, Any] = {"rss_mb": peak_rss_mb()}
            else:
                out = await answer(words)
        except Exception as exc:  # answer, do not die: the parent decides
            out = {"error": f"{words[0]}: {exc!r}"}
        out["t"] = time.monotonic()
        _emit(out)


def _endpoint(args: dict[str, Any]) -> Any:
    from i24net.shell.runtime import Endpoint

    return Endpoint("bench", args["host"], int(args["port"]))


async def _worker_router(args: dict[str, Any]) -> None:
    from i24net.config.home import ROUTER_ACCOUNT, Home
    from i24net.shell.runtime import make_router, make_transport

    home = Home(args["home"])
    log = logging.getLogger("i24net.bench.router")
    t = make_transport(home, ROUTER_ACCOUNT, ep=_endpoint(args), logger=log)
    async with t, make_router(home, logger=log, transport=t) as router:
        trace = _RouterTrace(router, t)

        async def answer(words: list[str]) -> dict[str, Any]:
            if words[0] == "trace":
                return {"flash": trace.take()}
            if words[0] == "limit":  # the per-sender rate limit: "off" or "default"
                from i24net.core.router import DEFAULT_RATE_LIMIT

                router.machine.set_rate_limit(None if words[1] == "off"
                                              else DEFAULT_RATE_LIMIT)
                return {"rate_limit": repr(router.machine.rate_limit)}
            # where a backlog sits: aiomqtt's message queue and the transport's hand-over
            # queue (both FIFO), the daemon's priority queue, the machine's outbound queue
            # (sampled when the router's loop is free to answer)
            return {"received": t.received, **t.backlog(),
                    "inbound": router.inbound.qsize(), "outbound": router.machine.pending(),
                    "counters": dict(router.machine.counters)}

        await _serve(answer)


class _RouterTrace:
    """Wall-clock timestamps of each FLASH message's way through the router daemon.

    Read through the public measurement hooks: the transport's ``on_arrival`` (arrival off
    the socket) and the daemon's ``observer`` (policy check and queueing, stamping when the
    send loop takes it, the broker's PUBACK). Only FLASH frames are kept; the cost is one
    extra header parse per inbound frame (~15 us).
    """

    def __init__(self, router: Any, transport: Any) -> None:
        from i24net.core import frames as fr
        from i24net.core.envelope import Envelope
        from i24net.core.frames import frame_priority

        self.records: dict[str, dict[str, float]] = {}
        arrival: dict[int, int] = {}
        # (arrival, start) of the frame being handled: "handle" and "handled" of one frame
        # come back to back (the policy check does not yield)
        current: tuple[int | None, int] = (None, 0)
        flash_out: dict[int, str] = {}

        def arrived(payload: bytes) -> None:
            arrival[id(payload)] = time.time_ns()

        def stage(step: str, payload: bytes) -> None:
            nonlocal current
            now = time.time_ns()
            if step == "handle":
                current = (arrival.pop(id(payload), None), now)
            elif step == "handled":
                (came, start), current = current, (None, 0)
                if came is not None and frame_priority(payload) == 0 \
                        and fr.peek_magic(payload) == fr.ENVELOPE:
                    h = Envelope.parse(payload).header
                    if h.id_hex not in self.records:  # the first copy; not a retry's
                        self.records[h.id_hex] = {"created": h.created_ms * 1e6,
                                                  "arrival": came, "handle_start": start,
                                                  "handled": now}
            elif step == "popped":
                if frame_priority(payload) == 0 and fr.peek_magic(payload) == fr.DELIVERY:
                    msg = Envelope.parse(fr.parse_frame(payload).extra).header.id_hex
                    if msg in self.records and "popped" not in self.records[msg]:
                        self.records[msg]["popped"] = now
                        flash_out[id(payload)] = msg
            elif step == "published":
                acked = flash_out.pop(id(payload), None)
                if acked is not None and acked in self.records:
                    self.records[acked].setdefault("puback", now)

        transport.on_arrival = arrived
        router.observer = stage

    def take(self) -> dict[str, dict[str, float]]:
        out, self.records = self.records, {}
        return out


async def _worker_node(args: dict[str, Any]) -> None:
    from i24net.config.home import Home
    from i24net.shell.runtime import make_node, make_transport
    from i24net.transport.base import Will

    home = Home(args["home"])
    agency = args["agency"]
    log = logging.getLogger(f"i24net.bench.node-{agency}")
    will = Will(f"{home.directory().prefix}/presence/{agency}", b"offline", True)
    received: list[float] = []
    async with make_transport(home, agency, ep=_endpoint(args), logger=log, will=will) as t:
        node = make_node(home, agency, logger=log, transport=t)

        def on_event(ev: Any) -> None:
            if isinstance(ev, Received):
                received.append(ev.latency_ms)

        node.on_event = on_event
        async with node:
            async def answer(words: list[str]) -> dict[str, Any]:
                return {"received": len(received), "transport_received": t.received,
                        "inbound": node.inbound.qsize()}
            await _serve(answer)


async def _worker_relay(args: dict[str, Any]) -> None:
    import aiomqtt

    window = asyncio.Semaphore(int(args["window"]))
    relayed = [0]
    tasks: set[asyncio.Task[None]] = set()
    async with aiomqtt.Client(args["host"], int(args["port"]), username=args["user"],
                              password=args["password"], identifier=args["user"],
                              protocol=aiomqtt.ProtocolVersion.V311, clean_session=True,
                              max_inflight_messages=int(args["window"]),
                              max_queued_incoming_messages=0,
                              socket_options=(NODELAY,)) as client:
        client.pending_calls_threshold = int(args["window"]) + 16
        await client.subscribe(args["in"], qos=1)

        async def forward(payload: bytes) -> None:
            try:
                await client.publish(args["out"], payload, qos=1)
                relayed[0] += 1
            finally:
                window.release()

        async def pump() -> None:
            async for m in client.messages:
                await window.acquire()
                task = asyncio.get_running_loop().create_task(forward(bytes(m.payload)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        pumper = asyncio.get_running_loop().create_task(pump())

        async def answer(words: list[str]) -> dict[str, Any]:
            return {"relayed": relayed[0]}

        try:
            await _serve(answer)
        finally:
            await _cancel(pumper)


async def _worker_blast(args: dict[str, Any]) -> None:
    """Pre-seal ROUTINE envelopes from several senders to one recipient, then publish them
    at a fixed total rate on ``go``, each sender on its own broker account and topic."""
    from i24net.config.home import Home
    from i24net.core import envelope as env
    from i24net.core.keys import PairKeyCache
    from i24net.core.labels import Label
    from i24net.shell.runtime import make_transport

    home = Home(args["home"])
    d = home.directory()
    senders, recipient = list(args["senders"]), args["recipient"]
    per_sender = int(args["count"]) // len(senders) + 1
    cache = PairKeyCache()
    body = env.Body("flood", args["text"], {})
    sealed: dict[str, list[bytes]] = {}
    for sender in senders:
        keys = home.keys(sender)
        sealed[sender] = []
        for _ in range(per_sender):
            now = int(time.time() * 1000)
            h = env.make_header(d, sender=sender, addressing=[recipient], kind="message",
                                label=Label("UNCLASSIFIED"), now_ms=now, ttl_ms=3_600_000,
                                random_bytes=os.urandom)
            sealed[sender].append(env.seal(h, body, keys, env.recipient_keys(d, h),
                                           random_bytes=os.urandom, cache=cache))
    published = [0]
    log = logging.getLogger("i24net.bench.blast")
    async with contextlib.AsyncExitStack() as stack:
        transports = {}
        for sender in senders:
            transports[sender] = await stack.enter_async_context(
                make_transport(home, sender, client_suffix="blast", ep=_endpoint(args),
                               logger=log))
        runners: list[asyncio.Task[None]] = []

        async def blast(sender: str, rate: float) -> None:
            t = transports[sender]
            topic = f"{d.prefix}/submit/{sender}"
            window = asyncio.Semaphore(16)
            tasks: set[asyncio.Task[None]] = set()
            start = time.monotonic()

            async def one(payload: bytes) -> None:
                try:
                    await t.publish(topic, payload)
                    published[0] += 1
                finally:
                    window.release()

            for i, payload in enumerate(sealed[sender]):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await window.acquire()
                task = asyncio.get_running_loop().create_task(one(payload))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        async def answer(words: list[str]) -> dict[str, Any]:
            if words[0] == "go":
                each = float(words[1]) / len(senders)
                runners.extend(asyncio.get_running_loop().create_task(blast(a, each))
                               for a in senders)
            elif words[0] == "stop":
                for r in runners:
                    await _cancel(r)
            return {"published": published[0],
                    "sealed": sum(len(v) for v in sealed.values())}

        try:
            await _serve(answer)
        finally:
            for r in runners:
                await _cancel(r)


_WORKERS = {"router": _worker_router, "node": _worker_node, "relay": _worker_relay,
            "blast": _worker_blast}


def worker_main(argv: list[str]) -> int:
    """``python -m i24net.bench.pipeline worker ROLE JSON``: one child of a benchmark run;
    ``python -m i24net.bench.pipeline sim JSON``: one simulation slice, its figures as JSON."""
    if len(argv) == 2 and argv[0] == "sim":
        args = json.loads(argv[1])
        print(json.dumps(sim_rate(int(args["messages"]), args.get("agencies"))))
        return 0
    if len(argv) != 3 or argv[0] != "worker" or argv[1] not in _WORKERS:
        print("usage: python -m i24net.bench.pipeline worker {router|node|relay|blast} JSON",
              file=sys.stderr)
        return 2
    configure_logging(logging.WARNING, stream=sys.stderr)
    try:
        asyncio.run(_WORKERS[argv[1]](json.loads(argv[2])))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        logging.getLogger("i24net.bench.pipeline").exception("worker %s failed", argv[1])
        _emit({"error": repr(exc)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
