"""A header has one encoding per meaning: the lenient spellings the label parsers accept
from a user ("flash", "tlp:red", unsorted caveats) are refused on the wire, so two readers
cannot disagree about what a signed header says."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from netfixtures import header

from i24net.core.envelope import Header
from i24net.core.errors import WireFormatError
from i24net.core.labels import TLP, HandlingCodes, Label, Precedence
from i24net.core.wire import pack


def fields() -> dict[str, Any]:
    h = header("NCB-FR", ["NCB-DE"], lab=Label("CONFIDENTIAL", frozenset({"EU", "CT"})),
               handling=HandlingCodes.parse(["H1", "H3"], "release to EU only"),
               tlp=TLP.parse("AMBER"), precedence=Precedence.FLASH)
    doc: dict[str, Any] = msgpack.unpackb(h.encode())
    return doc


def test_the_canonical_header_decodes_and_an_absent_optional_equals_nil() -> None:
    doc = fields()
    assert Header.decode(pack(doc)).precedence is Precedence.FLASH
    assert doc["ref"] is None
    del doc["ref"]
    assert Header.decode(pack(doc)).ref is None


@pytest.mark.parametrize("key, value", [
    ("prec", "flash"),
    ("prec", " FLASH"),
    ("tlp", "TLP:AMBER"),
    ("tlp", "amber"),
    ("caveats", ["EU", "CT"]),
    ("handling", ["H3", "H1"]),
    ("handling", ["h1", "H3"]),
    ("level", "confidential"),
])
def test_a_lenient_spelling_is_refused(key: str, value: Any) -> None:
    doc = fields()
    assert doc[key] != value
    doc[key] = value
    with pytest.raises(WireFormatError) as info:
        Header.decode(pack(doc))
    assert info.value.reason in ("wire.noncanonical", "wire.schema"), info.value
    if key != "level":  # an unknown level spelling is refused as a schema error first
        assert info.value.reason == "wire.noncanonical"
