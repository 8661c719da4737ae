"""Fuzz the envelope decoder: ``Envelope.parse``, ``open_envelope``, the routing decision
behind them (``policy.decide`` must return a refusal, never raise) and the precedence peek
the daemons use to order work. Seeds: a plain message, a group diffusion with every optional
header field, a notice, and an H2 forward carrying a signed release (so the release decoder
is reached through ``decide``'s forward rule). Half the mutants are re-signed by the sender,
so mutated headers get past the signature to the field decoders and the policy.
"""

from __future__ import annotations

import functools

import msgpack
import pytest
from fuzzkit import fuzz_settings, mutants
from hypothesis import given
from netfixtures import T0, build, demo_directory, keys_for, parsed

from i24net.core import frames as fr
from i24net.core import keys as k
from i24net.core.envelope import Envelope, open_envelope
from i24net.core.errors import I24Error
from i24net.core.labels import TLP, Evaluation, Handling, HandlingCodes, Precedence
from i24net.core.policy import Decision, PriorMessage, Release, complete_addressing, decide
from i24net.core.wire import pack

pytestmark = pytest.mark.timeout(120)
D = demo_directory()
H2 = HandlingCodes(frozenset({Handling.H2}))
H3 = HandlingCodes(frozenset({Handling.H0, Handling.H3}), "not for court")
FUZZ = fuzz_settings(4)


@functools.cache
def seeds() -> tuple[tuple[bytes, ...], dict[bytes, PriorMessage]]:
    source = build("NCB-DE", complete_addressing("diffusion", ["@EU"], "NCB-DE", D),
                   kind="diffusion", lab="CONFIDENTIAL", handling=H2)
    src = parsed(source)
    release = Release(src.header.id, "NCB-DE", ("NCB-US",), T0).sign(keys_for("NCB-DE"))
    out = (
        build("NCB-FR", ["NCB-DE"]),
        build("NCB-FR", ["@EU", "NCB-US"], lab="RESTRICTED", handling=H3, tlp=TLP.AMBER,
              evaluation=Evaluation.parse("B2"), precedence=Precedence.FLASH, ref=bytes(16)),
        build("GS-LYON", ["@NCB"], kind="notice", lab="OFFICIAL-USE"),
        source,
        build("NCB-FR", ["NCB-US"], lab="CONFIDENTIAL", handling=H2, ref=src.header.id,
              release=release),
    )
    return out, {src.header.id: PriorMessage.of(src)}


def resign(raw: bytes) -> bytes:
    """Re-sign the (mutated) signed part as the sender the seeds use, NCB-FR."""
    magic, version, signed, _ = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    return pack([magic, version, signed, keys_for("NCB-FR").sign(k.DOMAIN_ENVELOPE, signed)])


@FUZZ
@given(raw=mutants(seeds()[0], resign))
def test_envelope_decoder_raises_only_i24error(raw: bytes) -> None:
    try:
        fr.peek_precedence(raw)
    except I24Error:
        pass
    try:
        env = Envelope.parse(raw)
    except I24Error:
        return
    # decide never raises: a refusal is its normal output
    history = seeds()[1]
    d = decide(env, D, T0 + 5, prior=history.get, topic_agency=env.header.sender)
    assert isinstance(d, Decision)
    for me in ("NCB-DE", "NCB-US", "EUROPOL"):
        try:
            opened = open_envelope(env, keys_for(me), D)
        except I24Error:
            continue
        assert opened.header.sender in D.agencies and me in opened.envelope.wraps


@FUZZ
@given(raw=mutants(seeds()[0]))
def test_open_envelope_from_bytes_raises_only_i24error(raw: bytes) -> None:
    try:
        open_envelope(raw, keys_for("NCB-DE"), D)
    except I24Error:
        pass
