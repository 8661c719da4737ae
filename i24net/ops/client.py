"""Sending through a node from outside its daemon: the path ``publish`` and scripts use.

The message is sealed and written to the agency's outbox (SQLite, committed) with its next
attempt due now, then the agency's running node is woken over its control socket
(``i24net.shell.control``); it sends the message and retries until every receipt arrives. So a
message is durable before the caller is told it was sent.
"""

from __future__ import annotations

import os
from typing import Any

from i24net.config.home import Home, now_ms
from i24net.core.envelope import Body, Header, make_header
from i24net.core.errors import I24Error
from i24net.core.labels import HandlingCodes, Label, Precedence
from i24net.core.node import NodeMachine, OutboxEntry
from i24net.core.policy import complete_addressing


def open_store(home: Home, agency: str, *, readonly: bool = False) -> Any:
    from i24net.shell.runtime import node_store_path
    from i24net.store import SqliteNodeStore

    home.directory().agency(agency)
    path = node_store_path(home, agency)
    if readonly and not path.exists():
        raise I24Error(f"{agency} has no store yet at {path}: start its node "
                       f"('i24net node {agency}' or 'i24net up')", reason="config.store")
    return SqliteNodeStore(path, readonly=readonly)


def wake(home: Home, agency: str, *, timeout: float = 5.0) -> bool:
    """Tell ``agency``'s running node that its outbox changed, so it sends now (nodes do
    not poll their store). False if no node of that agency answers: the message then
    goes when it starts."""
    return node_state(home, agency, timeout=timeout)[0] == "up"


def node_state(home: Home, agency: str, *, timeout: float = 5.0) -> tuple[str, str]:
    """``(state, detail)`` of ``agency``'s node as its process tells it when woken over its
    control socket: ``up``, ``starting``, ``stopped`` or ``failed`` (a host keeps running
    the agencies it stopped); ``busy`` when a process took the connection but did not
    answer within ``timeout`` (it is there: loaded, or frozen); ``down`` when no process
    listens (none runs it: the network or its host is down; ``detail`` says why). The
    socket of a host started by ``i24net up`` and of an ``i24net node`` started by hand
    are both found (``Supervisor.control_path``). Waking is harmless: a node with nothing
    due sends nothing."""
    from i24net.ops.supervisor import Supervisor
    from i24net.shell.control import ControlError, request

    try:
        answer = request(Supervisor(home).control_path(agency),
                         {"op": "wake", "agency": agency}, timeout=timeout)
    except ControlError as exc:
        return ("busy" if exc.reason == "control.timeout" else "down"), exc.reason
    except I24Error as exc:  # the process answered, but does not run this agency
        return "down", exc.reason
    return str(answer.get("state", "down")), str(answer.get("reason", "") or "")


def enqueue(home: Home, header: Header, body: Body, store: Any | None = None, *,
            notify: bool = True) -> OutboxEntry:
    """Seal ``body`` under ``header`` into the sender's outbox, due for sending now, and
    (``notify``) wake the sender's node."""
    own = store is None
    store = store or open_store(home, header.sender)
    try:
        # sealed with the agency's keys here; sent by its running node, which is woken
        machine = NodeMachine(header.sender, home.keys(header.sender), home.directory(), store,
                              random_bytes=os.urandom)
        machine.submit(header, body, now_ms(), send=False)
        entry: OutboxEntry = store.outbox_get(header.id)
    finally:
        if own:
            store.close()
    if notify:
        wake(home, header.sender)
    return entry


def send(home: Home, sender: str, to: list[str], *, kind: str = "message",
         label: str = "UNCLASSIFIED", subject: str, text: str = "",
         data: dict[str, Any] | None = None, precedence: str = "ROUTINE",
         handling: list[str] | None = None, ref: bytes | None = None,
         release: bytes | None = None, ttl_hours: float = 72,
         store: Any | None = None, h3_text: str = "") -> Header:
    """Compose and enqueue a message; returns its header. ``ref`` names the message this
    one refers to (a forward), ``release`` is the source's signed release of it (H2),
    ``h3_text`` the restriction an H3 handling code states."""
    d = home.directory()
    header = make_header(
        d, sender=sender, addressing=complete_addressing(kind, list(to), sender, d),
        kind=kind, label=Label.parse(label), now_ms=now_ms(),
        ttl_ms=int(ttl_hours * 3600_000), random_bytes=os.urandom,
        precedence=Precedence.parse(precedence),
        handling=HandlingCodes.parse(handling or [], h3_text), ref=ref, release=release)
    enqueue(home, header, Body(subject, text, data or {}), store)
    return header
