"""Drill: label downgrade. An insider who received CONFIDENTIAL//EU data passes it on under a
lower label (so that less-cleared agencies get it), or anyone on the path rewrites the
label of a signed message.

Onward messages (``ref`` to a message the router routed from another source) must carry a
label that dominates the source's (``forward.label-downgrade``); the label is part of the
signed header and of the body's associated data, so rewriting it breaks the signature
(``sig.invalid`` at the router and at the nodes) and decryption.
"""

from __future__ import annotations

import pytest
from attackkit import (
    at_node,
    at_router,
    decrypt_skipping_the_signature,
    kinds,
    legit_message_flows,
    rogue_delivery,
    tamper,
)
from netfixtures import Net, keys_for

from i24net.core.errors import CryptoError

SOURCE_LABEL = "CONFIDENTIAL//EU"


def source(net: Net) -> bytes:
    """NCB-DE's CONFIDENTIAL//EU message to NCB-FR, delivered: the data being leaked."""
    mid = net.send("NCB-DE", ["NCB-FR"], lab=SOURCE_LABEL)
    net.settle()
    assert net.holders(mid) == {"NCB-FR"}
    return mid


@pytest.mark.parametrize("lower", ["CONFIDENTIAL", "RESTRICTED//EU", "UNCLASSIFIED"])
def test_forward_at_a_lower_label_is_refused(lower: str) -> None:
    net = Net()
    src = source(net)
    fwd = net.send("NCB-FR", ["EUROPOL"], lab=lower, ref=src)
    net.pump()
    entry = net.store("NCB-FR").outbox[fwd]
    assert (entry.state, entry.reason) == ("refused", "forward.label-downgrade")
    assert net.router.counters["refuse.forward.label-downgrade"] == 1
    assert net.inbox("EUROPOL") == set()
    legit_message_flows(net)


def test_forward_at_the_source_label_goes_through() -> None:
    net = Net()
    src = source(net)
    fwd = net.send("NCB-FR", ["EUROPOL"], lab=SOURCE_LABEL, ref=src)
    net.settle()
    assert net.holders(fwd) == {"EUROPOL"}
    assert "refuse.forward.label-downgrade" not in net.router.counters


def test_relabelling_a_signed_header_breaks_the_signature() -> None:
    net = Net()
    mid = net.send("NCB-FR", ["NCB-DE"], lab=SOURCE_LABEL)
    raw = net.store("NCB-FR").outbox[mid].raw
    relabelled = tamper(raw, header={"level": "UNCLASSIFIED", "caveats": []})
    assert kinds(at_router(net, "NCB-FR", relabelled)) == [("refuse", "sig.invalid")]
    assert net.router.counters == {"refuse.sig.invalid": 1}
    # a router that stamped it anyway: the node re-verifies
    assert kinds(at_node(net, "NCB-DE", rogue_delivery(net, relabelled, "NCB-DE"))) == [
        ("drop", "sig.invalid")]
    assert net.nodes["NCB-DE"].counters == {"drop.sig.invalid": 1}
    # and a receiver that skipped the signature still could not decrypt under the new label
    assert decrypt_skipping_the_signature(raw, keys_for("NCB-DE"), net.directory)
    with pytest.raises(CryptoError) as info:
        decrypt_skipping_the_signature(relabelled, keys_for("NCB-DE"), net.directory)
    assert info.value.reason == "aead.invalid"
    net.settle()  # the genuine message still goes through
    assert net.holders(mid) == {"NCB-DE"}
    legit_message_flows(net)
