"""Fuzz the directory loader: ``directory.load`` (with and without a held version),
``Directory.decode_doc`` and ``peek_serial``. Seeds: the demo preset's directory and the
12-agency test directory with explicit groups. Most mutants are re-signed by the genuine
authority, so the document decoder behind the signature is what gets fuzzed; whatever loads
must survive its own round trip (encode, decode: same digest), or a directory could be
issued that nobody can load.
"""

from __future__ import annotations

import functools

import msgpack
import pytest
from fixednet import build_net
from fuzzkit import fuzz_settings, mutants
from hypothesis import given
from netfixtures import AUTHORITY_SEED, demo_directory

from i24net.core import keys as k
from i24net.core.directory import Directory, load, peek_serial
from i24net.core.errors import I24Error
from i24net.core.keys import AgencyKeys
from i24net.core.wire import pack

pytestmark = pytest.mark.timeout(120)
ANCHOR = AgencyKeys("authority", AUTHORITY_SEED, bytes(32)).verify_key
FUZZ = fuzz_settings(3)


@functools.cache
def seeds() -> tuple[bytes, ...]:
    fixed = build_net().directory
    other = Directory(network=fixed.network, serial=fixed.serial, issued_ms=fixed.issued_ms,
                      scale=fixed.scale, agencies=fixed.agencies, groups=fixed.groups,
                      authority_key=ANCHOR)
    return demo_directory().sign(AUTHORITY_SEED), other.sign(AUTHORITY_SEED)


def resign(raw: bytes) -> bytes:
    doc = msgpack.unpackb(raw, raw=False, strict_map_key=False)[0]
    return pack([doc, k.sign(AUTHORITY_SEED, k.DOMAIN_DIRECTORY, doc)])


@FUZZ
@given(raw=mutants(seeds(), resign))
def test_directory_loader_raises_only_i24error(raw: bytes) -> None:
    try:
        peek_serial(raw)
    except I24Error:
        pass
    for held in (None, demo_directory()):
        try:
            d = load(raw, ANCHOR, held=held)
        except I24Error:
            continue
        again = Directory.decode_doc(d.encode())
        assert again.digest == d.digest
        for agency in list(d.agencies)[:3]:
            d.groups_of(agency)
        for name in d.group_names():
            d.expand([f"@{name}"], "NCB-FR")


@FUZZ
@given(raw=mutants(seeds(), resign))
def test_decode_doc_raises_only_i24error(raw: bytes) -> None:
    try:
        outer = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        doc = outer[0] if isinstance(outer, list) and outer else raw
    except Exception:
        doc = raw
    if not isinstance(doc, bytes):
        doc = raw
    try:
        Directory.decode_doc(doc)
    except I24Error:
        pass
