"""Router shards: which router handles which sender, and how shards reach each other.

Theory of operation: with ``K`` shards, every agency belongs to exactly one shard,
``shard_of(agency, K)`` (1-based, a BLAKE2b hash of the agency id, so every router and every
tool computes the same map without talking). Shard ``k`` subscribes to the submit topics of
its own agencies only, so the broker hands each router just its share, and all of one
sender's traffic goes through one router: per-sender order holds, and the retries of a
message reach the router that holds its state.

A shard is a unit of state, not a process: its signing key (``directory.router_keys[k-1]``,
so nodes keep one sequence stream per shard), its store, its audit log and its broker
session (client id ``<router account>:shard-<k>``). A router process serves its own shard
and takes over the shard of a router that died (see ``i24net.shards``), continuing the same
stream from the same state.

Two kinds of frame concern a shard other than the publisher's own: a receipt, which the
sender's shard must record and forward, and a gap request, which names the stream (router
key id) it is about. A node publishes them on ``<prefix>/submit/<AGENCY>/to/<k>`` (its own
topic, so the router still learns the agency from the topic), straight to shard k, which
reads ``submit/+/to/<k>``. One that still lands on another shard (a node holding a directory
with another shard count) is verified there and passed on over ``<prefix>/route/<k>``, a
topic only the router account may use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from i24net.core.errors import ConfigError

MAX_SHARDS = 64  # the directory lists at most 64 router keys


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based: ``1/2`` and ``2/2``)."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS or not 1 <= self.index <= self.count:
            raise ConfigError(f"a shard is k/K with 1 <= k <= K <= {MAX_SHARDS}, not "
                              f"{self.index}/{self.count}", reason="config.shard")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"2/3"`` -> Shard(2, 3); a clear error for anything else."""
        head, sep, tail = text.strip().partition("/")
        if not sep or not head.isdigit() or not tail.isdigit():
            raise ConfigError(f"--shard takes k/K (for example 1/2), not {text!r}",
                              reason="config.shard")
        return cls(int(head), int(tail))

    def owns(self, agency: str) -> bool:
        return shard_of(agency, self.count) == self.index

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def __str__(self) -> str:
        return self.label


def shard_of(agency: str, count: int) -> int:
    """The shard (1..count) that routes ``agency``'s submissions."""
    if count <= 1:
        return 1
    digest = hashlib.blake2b(agency.encode(), digest_size=8, person=b"i24net-shard").digest()
    return int.from_bytes(digest, "big") % count + 1


def shard_count(router_keys: tuple[bytes, ...]) -> int:
    """The shards of a directory: one per listed router key (at least one)."""
    return max(1, len(router_keys))


def to_shard_topic(submit_topic: str, index: int, count: int) -> str:
    """Where a node publishes a receipt or gap request for shard ``index``: its own submit
    topic with one router, else ``<submit topic>/to/<index>``."""
    return submit_topic if count <= 1 else f"{submit_topic}/to/{index}"


def route_topic(prefix: str, index: int) -> str:
    """Router-to-router topic of shard ``index``."""
    return f"{prefix}/route/{index}"


def route_index(prefix: str, topic: str) -> int | None:
    """The shard a route topic names, else None."""
    head = f"{prefix}/route/"
    if not topic.startswith(head):
        return None
    tail = topic[len(head):]
    return int(tail) if tail.isdigit() and 0 < len(tail) <= 3 else None


def router_key_name(index: int) -> str:
    """The key file of shard ``index``: shard 1 keeps the router's historical name."""
    return "i24-router" if index == 1 else f"i24-router-{index}"
