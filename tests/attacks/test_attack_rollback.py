"""Drill: an older directory (rollback). The thief of NCB-BR's keys replays directory
version 1, signed by the genuine authority, in which NCB-BR is still active, hoping a node or
the router adopts it and un-revokes the stolen key; or a second, different version 2 (a
fork, which only a stolen authority key could sign).

Machines refuse an older directory (``directory.rollback``) and a different one under the
serial they hold (``directory.fork``) and keep the one they hold; ``directory.load(held=)``
does the same for the signed file, and the daemons that follow the directory topic drop,
log and audit it as an event.
"""

from __future__ import annotations

import pytest
from attackkit import at_router, kinds, legit_message_flows
from netfixtures import AUTHORITY_SEED, ROUTER, T0, Net, build, keys_for

from i24net.core.directory import load
from i24net.core.errors import I24Error
from i24net.core.keys import AgencyKeys
from i24net.core.node import MemoryNodeStore, NodeMachine
from i24net.core.router import MemoryRouterStore, RouterMachine
from i24net.shell.daemons import NodeDaemon, RouterDaemon
from i24net.transport.memory import MemoryBroker, MemoryTransport

ANCHOR = AgencyKeys("authority", AUTHORITY_SEED, bytes(32)).verify_key


def revoked_net() -> Net:
    """A network whose router and nodes hold version 2, in which NCB-BR is revoked."""
    net = Net()
    v2 = net.directory.revoke("NCB-BR", T0)
    net.directory = v2
    net.router.set_directory(v2)
    for node in net.nodes.values():
        node.set_directory(v2)
    return net


def test_router_and_nodes_refuse_an_older_directory() -> None:
    net = revoked_net()
    v1 = Net().directory  # version 1: NCB-BR active
    machines: list[RouterMachine | NodeMachine] = [net.router, *net.nodes.values()]
    for m in machines:
        with pytest.raises(I24Error) as info:
            m.set_directory(v1)
        assert info.value.reason == "directory.rollback"
        assert m.directory.serial == 2
    # the stolen key stays revoked
    thief = build("NCB-BR", ["NCB-DE"], d=v1, lab="OFFICIAL-USE")
    assert kinds(at_router(net, "NCB-BR", thief)) == [("refuse", "sender.revoked")]
    legit_message_flows(net)


def test_router_and_nodes_refuse_a_fork() -> None:
    net = revoked_net()
    fork = Net().directory.next_version(T0)  # version 2 in which NCB-BR is still active
    assert fork.serial == net.directory.serial and fork.digest != net.directory.digest
    machines: list[RouterMachine | NodeMachine] = [net.router, *net.nodes.values()]
    for m in machines:
        with pytest.raises(I24Error) as info:
            m.set_directory(fork)
        assert info.value.reason == "directory.fork"
        assert m.directory.agency("NCB-BR").status == "revoked"
    legit_message_flows(net)


def test_load_refuses_rollback_and_fork_of_the_signed_file() -> None:
    net = revoked_net()
    held = net.directory
    v1 = Net().directory
    with pytest.raises(I24Error) as info:
        load(v1.sign(AUTHORITY_SEED), ANCHOR, held=held)
    assert info.value.reason == "directory.rollback"
    with pytest.raises(I24Error) as info:
        load(v1.next_version(T0).sign(AUTHORITY_SEED), ANCHOR, held=held)
    assert info.value.reason == "directory.fork"
    assert load(held.sign(AUTHORITY_SEED), ANCHOR, held=held).digest == held.digest
    newer = held.next_version(T0 + 1)
    assert load(newer.sign(AUTHORITY_SEED), ANCHOR, held=held).serial == 3


def test_daemons_following_the_directory_topic_drop_and_record_a_rollback() -> None:
    """The daemons' path (``handle_directory``): the refusal is an event, logged and audited."""
    net = revoked_net()
    v2 = net.directory
    broker = MemoryBroker()
    router = RouterDaemon(RouterMachine(v2, ROUTER, MemoryRouterStore()),
                          MemoryTransport(broker, "i24-router"), directory_anchor=ANCHOR)
    node = NodeDaemon(NodeMachine("NCB-DE", keys_for("NCB-DE"), v2, MemoryNodeStore(),
                                  random_bytes=net.nodes["NCB-DE"].random_bytes),
                      MemoryTransport(broker, "NCB-DE"), directory_anchor=ANCHOR)
    old = Net().directory.sign(AUTHORITY_SEED)
    fork = Net().directory.next_version(T0).sign(AUTHORITY_SEED)
    rogue = v2.next_version(T0).sign(keys_for("not-the-authority").signing_seed)
    for payload, reason in ((old, "directory.rollback"), (fork, "directory.fork"),
                            (rogue, "sig.invalid"), (b"\x92\xc4", "wire.truncated")):
        assert [(e.kind, e.reason) for e in router.handle_directory(payload)] == [
            ("drop", reason)]
        assert [(e.kind, e.reason) for e in node.handle_directory(payload)] == [
            ("drop", reason)]
    assert router.machine.directory is v2 and node.machine.directory is v2
