"""A coverage-guided fuzzer (atheris / libFuzzer) for the envelope decoder and everything a
hostile envelope or frame reaches: ``Envelope.parse``, ``policy.decide`` (which must never
raise), ``open_envelope``, ``frames.parse_frame`` + every ``verify_*``, the precedence peek,
and the router and node machines. Not collected by pytest (run it by hand).

Any exception other than an ``I24Error`` is a crash: libFuzzer stops and writes the input to
``crash-<sha1>``. ``-timeout=S`` reports an input that takes longer than S seconds (a hang).

Input layout: byte 0 picks the mode, the rest is the payload.
  mode % 4 == 0: the payload as an envelope;  1: the same, re-signed by NCB-FR first (so the
  mutated header gets past the signature); 2: the payload as a frame; 3: as a frame whose doc
  is re-signed with the key its verifier expects.

    pip install atheris            # in the venv
    .venv/bin/python tests/fuzz/atheris_envelope.py -runs=200000 -timeout=5 /tmp/i24-corpus
    .venv/bin/python tests/fuzz/atheris_envelope.py -max_total_time=600 /tmp/i24-corpus

The corpus folder is seeded with valid envelopes and frames (both modes) when it is empty.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

with atheris.instrument_imports(include=["i24net"]):
    import msgpack
    from netfixtures import (
        ROUTER,
        T0,
        Rng,
        build,
        demo_directory,
        inbox_topic,
        keys_for,
        kid,
        parsed,
        stamp_delivery,
        submit_topic,
    )

    from i24net.core import frames as fr
    from i24net.core import keys as k
    from i24net.core.envelope import Envelope, open_envelope
    from i24net.core.errors import I24Error
    from i24net.core.labels import TLP, Handling, HandlingCodes, Precedence
    from i24net.core.node import MemoryNodeStore, NodeMachine
    from i24net.core.policy import Decision, PriorMessage, Release, complete_addressing, decide
    from i24net.core.router import MemoryRouterStore, RouterMachine
    from i24net.core.wire import pack

D = demo_directory()
FR_KEYS, DE_KEYS = keys_for("NCB-FR"), keys_for("NCB-DE")
SIGNERS = {fr.DELIVERY: (k.DOMAIN_STAMP, ROUTER), fr.REPORT: (fr.DOMAIN_REPORT, ROUTER),
           fr.RECEIPT: (k.DOMAIN_RECEIPT, DE_KEYS), fr.GAP: (fr.DOMAIN_GAP, DE_KEYS)}


def _seeds() -> tuple[list[bytes], list[bytes], dict[bytes, PriorMessage]]:
    h2 = HandlingCodes(frozenset({Handling.H2}))
    source = build("NCB-DE", complete_addressing("diffusion", ["@EU"], "NCB-DE", D),
                   kind="diffusion", lab="CONFIDENTIAL", handling=h2)
    src = parsed(source)
    release = Release(src.header.id, "NCB-DE", ("NCB-US",), T0).sign(DE_KEYS)
    envelopes = [
        build("NCB-FR", ["NCB-DE"]),
        build("NCB-FR", ["@EU", "NCB-US"], tlp=TLP.AMBER, precedence=Precedence.FLASH,
              ref=bytes(16)),
        build("NCB-FR", ["NCB-US"], lab="CONFIDENTIAL", handling=h2, ref=src.header.id,
              release=release),
    ]
    e = parsed(envelopes[0])
    frames = [
        stamp_delivery(envelopes[0], "NCB-DE", 1),
        fr.make_report(fr.Report(e.header.id, e.digest, "NCB-FR", True, "ok", "", ("NCB-DE",),
                                 T0, kid(ROUTER)), ROUTER),
        fr.make_receipt(fr.Receipt(e.header.id, e.digest, "NCB-FR", "NCB-DE", "delivered", "",
                                   T0), DE_KEYS),
        fr.make_gap(fr.GapRequest("NCB-DE", 1, 5, T0), DE_KEYS),
    ]
    return envelopes, frames, {src.header.id: PriorMessage.of(src)}


ENVELOPES, FRAMES, HISTORY = _seeds()
ROUTER_M = RouterMachine(D, ROUTER, MemoryRouterStore())
NODE_M = NodeMachine("NCB-DE", DE_KEYS, D, MemoryNodeStore(), random_bytes=Rng("atheris"))


def resign_envelope(raw: bytes) -> bytes:
    magic, version, signed, _ = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    return pack([magic, version, signed, FR_KEYS.sign(k.DOMAIN_ENVELOPE, signed)])


def resign_frame(raw: bytes) -> bytes:
    parts = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    domain, signer = SIGNERS[parts[0]]
    parts[3] = signer.sign(domain, parts[2])
    return pack(parts)


def envelope_paths(raw: bytes) -> None:
    try:
        fr.peek_precedence(raw)
    except I24Error:
        pass
    try:
        env = Envelope.parse(raw)
    except I24Error:
        return
    d = decide(env, D, T0 + 5, prior=HISTORY.get, topic_agency=env.header.sender)
    assert isinstance(d, Decision)
    for me in (DE_KEYS, keys_for("NCB-US")):
        try:
            open_envelope(env, me, D)
        except I24Error:
            pass


def frame_paths(raw: bytes) -> None:
    fr.peek_magic(raw)
    try:
        frame = fr.parse_frame(raw)
    except I24Error:
        frame = None
    if frame is not None:
        for verify in (lambda f: fr.verify_delivery(f, D, "NCB-DE"),
                       lambda f: fr.verify_report(f, D), lambda f: fr.verify_receipt(f, D),
                       lambda f: fr.verify_gap(f, D)):
            try:
                verify(frame)
            except I24Error:
                pass
    ROUTER_M.handle(submit_topic("NCB-DE"), raw, T0)
    NODE_M.handle(inbox_topic("NCB-DE"), raw, T0)
    ROUTER_M.pop(T0, limit=1000)
    NODE_M.pop(limit=1000)


def TestOneInput(data: bytes) -> None:  # the name atheris' examples use
    if not data:
        return
    mode, payload = data[0] % 4, data[1:]
    if mode in (1, 3):
        try:
            payload = (resign_envelope if mode == 1 else resign_frame)(payload)
        except Exception:  # no structure left to re-sign: fuzz the bytes as they are
            pass
    if mode < 2:
        envelope_paths(payload)
        ROUTER_M.handle(submit_topic("NCB-FR"), payload, T0)
        ROUTER_M.pop(T0, limit=1000)
    else:
        frame_paths(payload)


def seed_corpus(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        return
    for mode, items in ((0, ENVELOPES), (1, ENVELOPES), (2, FRAMES), (3, FRAMES)):
        for raw in items:
            blob = bytes([mode]) + raw
            (folder / hashlib.sha1(blob).hexdigest()).write_bytes(blob)


def main() -> None:
    folders = [a for a in sys.argv[1:] if not a.startswith("-")]
    for folder in folders[:1]:
        seed_corpus(Path(folder))
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
