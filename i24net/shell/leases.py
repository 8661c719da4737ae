"""Router shard leases: which process serves a shard right now, and whether it may still act.

A router shard is state (a signing key, a store, an audit chain, a broker session) that
exactly one process may serve at a time. ``ShardHost`` asks a ``Leases`` for two names per
shard k: ``owner-k``, held for its whole life by the process started as ``--shard k/K``, and
``lease-k``, held by whichever process serves shard k now. Two implementations:

- ``FileLeases``: ``flock`` files in the home's ``state/`` (one machine). The kernel drops a
  dead process's locks at once, so liveness needs no clock; a lock held is valid.
- ``EngineLeases``: keys of a JetStream key-value bucket on the NATS cluster
  (``LEASE_BUCKET``), seen from every machine. ``acquire`` creates the key (refused while it
  exists), the holder renews it every ``RENEW_S`` with an update that names the revision it
  last wrote (refused once anyone else wrote it), and the bucket's age limit removes a key
  nobody renewed for ``LEASE_TTL_S``, after which another router's ``acquire`` succeeds.

Fencing: ``valid(name)`` is true only while the holder's last successful renewal is younger
than ``LEASE_TTL_S - SAFETY_S`` by its own monotonic clock, counted from before the request
left. A router that was frozen (SIGSTOP), cut off from the cluster or slow sees its lease
invalid before the key can have expired anywhere, and ``ShardHost`` refuses its publishes
from then on (``MqttTransport.guard``) and stops the shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from i24net.broker.nats import COUNTER_BUCKET, LEASE_BUCKET, LEASE_INBOX, LEASE_USER
from i24net.config.home import Home

LEASE_TTL_S = 3.0
RENEW_S = 0.75
SAFETY_S = 1.0
REQUEST_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 10.0


class FileLock:
    """An exclusive, non-blocking ``flock`` on ``path``; the file names the holder's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, name_holder: bool = True) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        if name_holder:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def acquire_within(self, seconds: float) -> bool:
        """``acquire``, trying again for up to ``seconds``: another router's ``taken`` holds
        the lock for the moment of its probe, which must not pass for a live holder."""
        deadline = time.monotonic() + seconds
        while not self.acquire():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def taken(self) -> bool:
        """Whether some process (this one included) holds the lock right now."""
        if self._fd is not None:
            return True
        if self.acquire(name_holder=False):  # a probe: the file keeps naming the holder
            self.release()
            return False
        return True

    def holder(self) -> str:
        with contextlib.suppress(OSError):
            return self.path.read_text().strip()
        return "?"


class Leases(Protocol):
    """Named exclusive leases (see the module doc)."""

    async def acquire(self, name: str) -> bool: ...

    async def release(self, name: str) -> None: ...

    async def taken(self, name: str) -> bool: ...

    def valid(self, name: str) -> bool: ...

    async def holder(self, name: str) -> str: ...

    async def announce(self, name: str) -> None:
        """Write ``name`` (no lease: a note that expires), e.g. that this process waits."""

    async def waiting(self, name: str) -> str | None:
        """Who last wrote the note ``name``, if anyone did lately."""

    async def close(self) -> None: ...


class FileLeases:
    """``flock`` files: ``state/router-<k>.owner`` and ``state/router-<k>.lease``."""

    def __init__(self, home: Home) -> None:
        home.state_dir.mkdir(parents=True, exist_ok=True)
        self.home = home
        self._locks: dict[str, FileLock] = {}

    def _lock(self, name: str) -> FileLock:
        if name not in self._locks:
            kind, k = name.split("-", 1)
            self._locks[name] = FileLock(self.home.state_dir / f"router-{k}.{kind}")
        return self._locks[name]

    async def acquire(self, name: str) -> bool:
        return self._lock(name).acquire()

    async def release(self, name: str) -> None:
        self._lock(name).release()

    async def taken(self, name: str) -> bool:
        return self._lock(name).taken()

    def valid(self, name: str) -> bool:
        return self._lock(name).held

    async def holder(self, name: str) -> str:
        return f"pid {self._lock(name).holder()}"

    async def announce(self, name: str) -> None:
        return None  # one machine: a second router of a shard is refused, not kept waiting

    async def waiting(self, name: str) -> str | None:
        return None

    async def close(self) -> None:
        for lock in self._locks.values():
            lock.release()


@dataclass
class _Held:
    revision: int
    renewed: float  # monotonic time just before the request that wrote ``revision`` left


class EngineLeases:
    """Leases in the cluster's JetStream key-value bucket ``LEASE_BUCKET`` (module doc).

    ``servers`` are the members' NATS-protocol addresses; ``identity`` names this process
    in every key it writes (``holder``). ``clock`` is monotonic seconds (tests pass their
    own)."""

    def __init__(self, servers: Sequence[tuple[str, int]], password: str, *, identity: str,
                 tls_ca: str | None = None, replicas: int = 1, ttl_s: float = LEASE_TTL_S,
                 logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.servers = list(servers)
        self.password = password
        self.identity = identity
        self.tls_ca = tls_ca
        self.replicas = replicas
        self.ttl_s = ttl_s
        self.log = logger or logging.getLogger("i24net.router")
        self.clock = clock
        self._held: dict[str, _Held] = {}
        self._nc: Any = None
        self._kv: Any = None
        self.counters_kv: Any = None  # the shards' delivery counters (EngineCounters)
        self._renewer: asyncio.Task[None] | None = None

    async def open(self) -> EngineLeases:
        import nats
        from nats.js.api import StorageType
        from nats.js.errors import BucketNotFoundError, NotFoundError

        scheme = "tls" if self.tls_ca else "nats"
        context = ssl.create_default_context(cafile=self.tls_ca) if self.tls_ca else None
        # Reconnects go on for ever (a member dies, another serves); the first connect is
        # bounded, since nats-py would retry it for ever too.
        self._nc = await asyncio.wait_for(nats.connect(
            servers=[f"{scheme}://{h}:{p}" for h, p in self.servers], user=LEASE_USER,
            password=self.password, tls=context, inbox_prefix=LEASE_INBOX,
            name=self.identity, connect_timeout=2, max_reconnect_attempts=-1,
            reconnect_time_wait=0.2, error_cb=self._nats_error), CONNECT_TIMEOUT_S)
        js = self._nc.jetstream(timeout=REQUEST_TIMEOUT_S * 5)

        async def bucket(name: str, ttl: float | None) -> Any:
            """The bucket ``name``, made on first use (the first router of the cluster)."""
            try:
                return await js.key_value(name)
            except (BucketNotFoundError, NotFoundError):
                return await js.create_key_value(bucket=name, ttl=ttl, history=1,
                                                 replicas=self.replicas,
                                                 storage=StorageType.FILE)

        self._kv = await bucket(LEASE_BUCKET, self.ttl_s)
        self.counters_kv = await bucket(COUNTER_BUCKET, None)
        self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
        return self

    async def _nats_error(self, exc: Exception) -> None:
        self.log.debug("leases: %s", exc)

    def _value(self) -> bytes:
        return json.dumps({"holder": self.identity}).encode()

    async def acquire(self, name: str) -> bool:
        from nats.js.errors import KeyWrongLastSequenceError

        if name in self._held:
            return True
        started = self.clock()
        try:
            revision = await asyncio.wait_for(self._kv.create(name, self._value()),
                                              REQUEST_TIMEOUT_S)
        except KeyWrongLastSequenceError:
            return False  # someone holds it
        except Exception as exc:  # no quorum, disconnected, timed out: not acquired
            self.log.debug("leases: acquiring %s failed: %s", name, exc)
            return False
        self._held[name] = _Held(revision, started)
        return True

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(RENEW_S)
            await asyncio.gather(*(self.renew(name) for name in list(self._held)))

    async def renew(self, name: str) -> None:
        """Renew ``name`` now, if held (the renewal loop does every ``RENEW_S``); a refusal
        means someone else holds it: it is dropped."""
        from nats.js.errors import KeyWrongLastSequenceError

        held = self._held.get(name)
        if held is None:
            return
        started = self.clock()
        try:
            revision = await asyncio.wait_for(
                self._kv.update(name, self._value(), last=held.revision), REQUEST_TIMEOUT_S)
        except KeyWrongLastSequenceError:
            # expired and taken (or written) by someone else: it is theirs now
            if self._held.pop(name, None) is not None:
                self.log.warning("lease %s is lost: another process holds it now", name)
            return
        except Exception as exc:  # unreachable for now: valid() runs out on its own
            self.log.debug("leases: renewing %s failed: %s", name, exc)
            return
        if self._held.get(name) is held:
            held.revision, held.renewed = revision, started

    def holds(self, name: str) -> bool:
        """Whether this process still counts ``name`` as its own (valid or not)."""
        return name in self._held

    async def stop_renewing(self) -> None:
        """Renew nothing from now on, as a frozen or cut-off process would not (drills)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None

    def valid(self, name: str) -> bool:
        held = self._held.get(name)
        return held is not None and self.clock() - held.renewed < self.ttl_s - SAFETY_S

    def age(self, name: str) -> float | None:
        """Seconds since the last renewal of ``name`` took effect, if held."""
        held = self._held.get(name)
        return None if held is None else self.clock() - held.renewed

    async def taken(self, name: str) -> bool:
        from nats.js.errors import KeyNotFoundError

        try:
            await asyncio.wait_for(self._kv.get(name), REQUEST_TIMEOUT_S)
        except KeyNotFoundError:
            return False
        except Exception:
            return True  # cannot tell: fail closed (nobody takes a shard over on a guess)
        return True

    async def holder(self, name: str) -> str:
        try:
            entry = await asyncio.wait_for(self._kv.get(name), REQUEST_TIMEOUT_S)
            return str(json.loads(entry.value)["holder"])
        except Exception:
            return "nobody"

    async def announce(self, name: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._kv.put(name, self._value()), REQUEST_TIMEOUT_S)

    async def waiting(self, name: str) -> str | None:
        holder = await self.holder(name)
        return None if holder == "nobody" else holder

    async def release(self, name: str) -> None:
        held = self._held.pop(name, None)
        if held is None:
            return
        try:
            await asyncio.wait_for(self._kv.delete(name, last=held.revision),
                                   REQUEST_TIMEOUT_S)
            return
        except Exception:  # a renewal in flight moved the revision, or a timeout
            pass
        with contextlib.suppress(Exception):  # still ours: delete what is there now
            entry = await asyncio.wait_for(self._kv.get(name), REQUEST_TIMEOUT_S)
            if entry.value == self._value():
                await asyncio.wait_for(self._kv.delete(name, last=entry.revision),
                                       REQUEST_TIMEOUT_S)

    async def close(self) -> None:
        await self.stop_renewing()
        for name in list(self._held):
            await self.release(name)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()


class EngineCounters:
    """Each shard's delivery counters (the last number given to each recipient) in the
    cluster's key-value bucket ``COUNTER_BUCKET``, beside the leases: key
    ``s<k>.<recipient>``. The holder of shard k's lease writes them before anything it
    numbered is published (``push``, called from the daemon's durability gate); a router
    that starts serving shard k raises its own counters to them first (``load``), so a
    recipient's numbering goes on from the last router's, on whatever machine it ran, and
    the recipient's node still sees every gap."""

    def __init__(self, leases: EngineLeases) -> None:
        self.leases = leases

    async def load(self, shard: int, recipients: list[str]) -> dict[str, int]:
        """The counters of ``recipients`` in shard ``shard`` (those never written: absent)."""
        from nats.js.errors import KeyNotFoundError

        kv = self.leases.counters_kv

        async def one(recipient: str) -> tuple[str, int] | None:
            try:
                entry = await asyncio.wait_for(kv.get(f"s{shard}.{recipient}"),
                                               REQUEST_TIMEOUT_S * 5)
            except KeyNotFoundError:
                return None
            return recipient, int(entry.value)

        found = await asyncio.gather(*(one(r) for r in recipients))
        return dict(item for item in found if item is not None)

    async def push(self, shard: int, lasts: dict[str, int]) -> None:
        """Write ``lasts`` (raises on any failure: the caller publishes nothing meanwhile)."""
        kv = self.leases.counters_kv
        await asyncio.gather(*(asyncio.wait_for(kv.put(f"s{shard}.{r}", str(n).encode()),
                                                REQUEST_TIMEOUT_S * 5)
                               for r, n in sorted(lasts.items())))


def lease_identity(home: Home) -> str:
    """Who holds a lease, as other machines' logs show it: host name, pid and home."""
    return f"{socket.gethostname()}:{os.getpid()}:{Path(home.path).name}"


OPEN_TIMEOUT_S = 60.0


async def open_leases(home: Home, ep: Any, logger: logging.Logger) -> Leases:
    """The leases for routers of the broker at ``ep`` (a ``runtime.Endpoint``): on the
    cluster engine (NATS) its key-value bucket, reached on each member's NATS-protocol port
    (the port after its MQTT port, ``broker.nats.nats_ports``) with the router account's
    password; on a single broker the file leases of this home. Waits for a cluster that is
    still electing (at most ``OPEN_TIMEOUT_S``); a router never serves without its leases."""
    from i24net.config.home import ROUTER_ACCOUNT
    from i24net.core.errors import ConfigError
    from i24net.core.netspec import CLUSTER_ENGINES

    if ep.engine not in CLUSTER_ENGINES:
        return FileLeases(home)
    servers = [(host, port + 1) for host, port in ep.members]
    leases = EngineLeases(servers, home.broker_passwords()[ROUTER_ACCOUNT],
                          identity=lease_identity(home), tls_ca=ep.tls_ca,
                          replicas=min(3, len(servers)), logger=logger)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + OPEN_TIMEOUT_S
    while True:
        try:
            return await leases.open()
        except Exception as exc:
            if loop.time() > deadline:
                raise ConfigError(f"the cluster's lease bucket {LEASE_BUCKET} was not "
                                  f"reachable within {OPEN_TIMEOUT_S:.0f} s "
                                  f"({', '.join(f'{h}:{p}' for h, p in servers)}): {exc}",
                                  reason="router.leases") from exc
            logger.info("waiting for the cluster's lease bucket: %s", exc)
            await leases.close()
            await asyncio.sleep(1.0)
