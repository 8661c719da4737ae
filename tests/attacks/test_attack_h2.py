"""Drill: onward dissemination of H2 data without the source's permission.

NCB-DE diffuses CONFIDENTIAL data marked H2 ("no dissemination without the provider's
permission") to @EU and the GS. NCB-FR forwards it to NCB-US, which the source did not
choose: without a release signed by NCB-DE (``handling.h2-release``), with a release it forged
or that does not cover NCB-US (``handling.release-invalid``), or by quietly dropping the H2
mark (``forward.handling-dropped``). With NCB-DE's genuine release it goes through. The
table of reason codes is tested in tests/core/test_policy.py; this is the same through the
nodes and the router's memory of the source.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from attackkit import legit_message_flows
from netfixtures import Net, keys_for

from i24net.core.labels import Handling, HandlingCodes
from i24net.core.policy import Release, complete_addressing

H2 = HandlingCodes(frozenset({Handling.H2}))
LABEL = "CONFIDENTIAL"


def h2_source(net: Net) -> bytes:
    to = complete_addressing("diffusion", ["@EU"], "NCB-DE", net.directory)
    mid = net.send("NCB-DE", to, kind="diffusion", lab=LABEL, handling=H2)
    net.settle()
    assert net.holders(mid) == {"NCB-FR", "EUROPOL", "GS-LYON"}
    return mid


def forward(net: Net, src: bytes, **kw: object) -> tuple[bytes, str, str]:
    kw.setdefault("handling", H2)
    mid = net.send("NCB-FR", ["NCB-US"], lab=LABEL, ref=src, **kw)  # type: ignore[arg-type]
    net.settle()
    entry = net.store("NCB-FR").outbox[mid]
    return mid, entry.state, entry.reason


RELEASES: dict[str, Callable[[bytes], bytes]] = {
    "forged by the forwarder": lambda m: Release(m, "NCB-DE", ("NCB-US",), 0).sign(
        keys_for("NCB-FR")),
    "issued by the forwarder": lambda m: Release(m, "NCB-FR", ("NCB-US",), 0).sign(
        keys_for("NCB-FR")),
    "for another agency": lambda m: Release(m, "NCB-DE", ("NCB-JP",), 0).sign(
        keys_for("NCB-DE")),
    "for another message": lambda m: Release(bytes(16), "NCB-DE", ("NCB-US",), 0).sign(
        keys_for("NCB-DE")),
    "garbage": lambda m: b"\x92\xc4\x01x\xc4\x01y",
}


def test_forward_without_release_is_refused() -> None:
    net = Net()
    src = h2_source(net)
    mid, state, reason = forward(net, src)
    assert (state, reason) == ("refused", "handling.h2-release")
    assert net.router.counters["refuse.handling.h2-release"] == 1
    assert net.holders(mid) == set()
    legit_message_flows(net, "NCB-FR", "NCB-US")


@pytest.mark.parametrize("how", sorted(RELEASES))
def test_forward_with_an_invalid_release_is_refused(how: str) -> None:
    net = Net()
    src = h2_source(net)
    mid, state, reason = forward(net, src, release=RELEASES[how](src))
    assert (state, reason) == ("refused", "handling.release-invalid")
    assert net.router.counters["refuse.handling.release-invalid"] == 1
    assert net.holders(mid) == set()
    legit_message_flows(net, "NCB-FR", "NCB-US")


def test_dropping_the_h2_mark_is_refused() -> None:
    net = Net()
    src = h2_source(net)
    mid, state, reason = forward(net, src, handling=HandlingCodes())
    assert (state, reason) == ("refused", "forward.handling-dropped")
    assert net.router.counters["refuse.forward.handling-dropped"] == 1
    assert net.holders(mid) == set()


def test_forward_with_the_sources_release_goes_through() -> None:
    net = Net()
    src = h2_source(net)
    release = Release(src, "NCB-DE", ("NCB-US",), net.now).sign(keys_for("NCB-DE"))
    mid, state, _ = forward(net, src, release=release)
    assert state == "delivered"
    assert net.holders(mid) == {"NCB-US"}
    assert not any(name.startswith("refuse.") for name in net.router.counters)
