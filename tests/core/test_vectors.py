"""Known-answer vectors (tests/data/vectors.json, written by tests/data/make_vectors.py).

Three checks per envelope: the code re-seals the recorded inputs to the exact recorded bytes;
every recipient opens it to the recorded body; and an independent re-derivation that uses
only PyNaCl, hashlib and msgpack (the documented construction, not i24net's code) arrives at
the same pair keys, wraps, ciphertext, signature and envelope bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import msgpack
import nacl.bindings as sodium
import nacl.signing
import pytest
from fixednet import Replay

from i24net.core import envelope as env
from i24net.core.directory import Directory, load
from i24net.core.errors import I24Error, NotRecipientError
from i24net.core.keys import AgencyKeys, Prekey
from i24net.core.labels import TLP, Evaluation, HandlingCodes, Label, Precedence

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "data" / "vectors.json").read_text(encoding="utf-8"))
ENVELOPES = VECTORS["envelopes"]
H = bytes.fromhex


def keys_of(agency: str) -> AgencyKeys:
    a = VECTORS["agencies"][agency]
    return AgencyKeys(agency, H(a["sign_seed"]), H(a["enc_secret"]),
                      (Prekey(H(a["prekey_secret"]), VECTORS["directory"]["issued_ms"]),),
                      H(a["sending_secret"]))


@pytest.fixture(scope="module")
def directory() -> Directory:
    return load(H(VECTORS["directory"]["signed"]), H(VECTORS["authority"]["public"]))


def by_name(fn):  # type: ignore[no-untyped-def]
    return pytest.mark.parametrize("v", ENVELOPES, ids=[v["name"] for v in ENVELOPES])(fn)


def test_vectors_cover_the_cases() -> None:
    assert [len(v["recipients"]) for v in ENVELOPES] == [1, 3, 3]
    rich = ENVELOPES[2]
    assert rich["handling"] and rich["h3"] and rich["tlp"] and rich["evaluation"]
    assert rich["ref"] == ENVELOPES[0]["id"]


# -- keys and directory ----------------------------------------------------------------------

def test_agency_keys() -> None:
    for agency, a in VECTORS["agencies"].items():
        assert H(a["sign_seed"]) == hashlib.sha256(f"i24net-vector-{agency}-sign".encode()).digest()
        assert H(a["enc_secret"]) == hashlib.sha256(f"i24net-vector-{agency}-enc".encode()).digest()
        assert H(a["sign_public"]) == bytes(nacl.signing.SigningKey(H(a["sign_seed"])).verify_key)
        assert H(a["enc_public"]) == sodium.crypto_scalarmult_base(H(a["enc_secret"]))
        assert H(a["key_id"]) == hashlib.blake2b(H(a["sign_public"]), digest_size=8,
                                                 person=b"i24net-kid-v1").digest()
        assert H(a["prekey"]) == sodium.crypto_scalarmult_base(H(a["prekey_secret"]))
        assert H(a["prekey_id"]) == hashlib.blake2b(H(a["prekey"]), digest_size=8,
                                                    person=b"i24net-pkid-v2").digest()
        nacl.signing.VerifyKey(H(a["sign_public"])).verify(
            b"i24net/v2/prekey\x00" + H(a["prekey"]) + agency.encode(), H(a["prekey_sig"]))
        assert H(a["sending_public"]) == sodium.crypto_scalarmult_base(H(a["sending_secret"]))
        k = keys_of(agency)
        assert (k.verify_key.hex(), k.encryption_public.hex()) == (a["sign_public"],
                                                                   a["enc_public"])


def test_directory_vector(directory: Directory) -> None:
    v = VECTORS["directory"]
    seed = H(VECTORS["authority"]["seed"])
    assert directory.encode() == H(v["doc"])
    assert directory.sign(seed) == H(v["signed"])
    assert directory.digest == H(v["digest"]) == hashlib.sha256(H(v["doc"])).digest()
    # independently: msgpack [doc, Ed25519(authority, domain || doc)]
    sig = nacl.signing.SigningKey(seed).sign(b"i24net/v1/directory\x00" + H(v["doc"])).signature
    assert msgpack.packb([H(v["doc"]), sig], use_bin_type=True) == H(v["signed"])
    for agency, a in VECTORS["agencies"].items():
        rec = directory.agency(agency)
        assert (rec.sign_key.hex(), rec.enc_key.hex()) == (a["sign_public"], a["enc_public"])
        assert (rec.prekey.hex(), rec.prekey_sig.hex()) == (a["prekey"], a["prekey_sig"])


# -- the code reproduces the vectors ---------------------------------------------------------

def header_from(v: dict[str, Any], directory: Directory) -> env.Header:
    return env.make_header(
        directory, sender=v["sender"], addressing=v["addressing"], kind=v["kind"],
        label=Label(v["level"], frozenset(v["caveats"])), now_ms=v["created_ms"],
        ttl_ms=v["ttl_ms"], random_bytes=Replay(H(v["id"]), H(v["nonce"])),
        precedence=Precedence[v["precedence"]],
        handling=HandlingCodes.parse(v["handling"], v["h3"]),
        tlp=TLP(v["tlp"]) if v["tlp"] else None,
        evaluation=Evaluation.parse(v["evaluation"]) if v["evaluation"] else None,
        ref=H(v["ref"]) if v["ref"] else None,
        release=H(v["release"]) if v["release"] is not None else None)


def body_from(v: dict[str, Any]) -> env.Body:
    return env.Body(v["body"]["subject"], v["body"]["text"], v["body"]["data"])


@by_name
def test_reseal_reproduces_the_bytes(v: dict[str, Any], directory: Directory) -> None:
    header = header_from(v, directory)
    assert list(header.recipients) == v["recipients"]
    assert header.encode() == H(v["header"])
    assert body_from(v).encode() == H(v["body_plain"])
    raw = env.seal(header, body_from(v), keys_of(v["sender"]),
                   env.recipient_keys(directory, header),
                   random_bytes=Replay(H(v["content_key"])))
    assert raw == H(v["envelope"])


@by_name
def test_open_gives_the_body(v: dict[str, Any], directory: Directory) -> None:
    raw = H(v["envelope"])
    for r in v["recipients"]:
        opened = env.open_envelope(raw, keys_of(r), directory)
        assert opened.body == body_from(v)
        assert opened.header.encode() == H(v["header"])
    for other in set(VECTORS["agencies"]) - set(v["recipients"]):
        with pytest.raises(NotRecipientError):
            env.open_envelope(raw, keys_of(other), directory)


@by_name
def test_parse_splits_as_recorded(v: dict[str, Any]) -> None:
    e = env.Envelope.parse(H(v["envelope"]))
    assert e.header_bytes == H(v["header"])
    assert e.signed == H(v["signed"])
    assert e.signature == H(v["signature"])
    assert e.ciphertext == H(v["ciphertext"])
    assert {r: w.hex() for r, w in e.wraps.items()} == v["wraps"]
    assert {r: p.hex() for r, p in e.prekey_ids.items()} == v["prekey_ids"]
    assert (e.sending_key.hex(), e.commitment.hex()) == (v["sending_public"], v["commitment"])
    assert e.header.id.hex() == v["id"] and e.header.nonce.hex() == v["nonce"]
    assert e.header.key_id.hex() == v["key_id"] == VECTORS["agencies"][v["sender"]]["key_id"]


# -- independent re-derivation with PyNaCl ---------------------------------------------------

@by_name
def test_independent_derivation(v: dict[str, Any]) -> None:
    agencies = VECTORS["agencies"]
    sender = agencies[v["sender"]]
    msg_id, nonce, ck = H(v["id"]), H(v["nonce"]), H(v["content_key"])
    header_bytes = H(v["header"])
    header = msgpack.unpackb(header_bytes, raw=False)
    assert (header["v"], header["id"], header["nonce"], header["from"]) == (
        2, msg_id, nonce, v["sender"])
    assert header["to"] == v["recipients"]
    epk = sodium.crypto_scalarmult_base(H(sender["sending_secret"]))
    assert epk.hex() == v["sending_public"] == sender["sending_public"]
    commit = hashlib.blake2b(msg_id, key=ck, digest_size=32, person=b"i24net-cmt-v2").digest()
    assert commit.hex() == v["commitment"]

    wraps = []
    for r in v["recipients"]:
        rec = agencies[r]
        spk, rpk, pre = H(sender["enc_public"]), H(rec["enc_public"]), H(rec["prekey"])
        at_sender = sodium.crypto_scalarmult(H(sender["enc_secret"]), rpk)
        assert at_sender == sodium.crypto_scalarmult(H(rec["enc_secret"]), spk)
        pair = hashlib.blake2b(at_sender + spk + rpk, digest_size=32,
                               person=b"i24net-pair-v1").digest()
        assert pair.hex() == v["pair_keys"][r]
        shared = sodium.crypto_scalarmult(H(sender["sending_secret"]), pre)
        assert shared == sodium.crypto_scalarmult(H(rec["prekey_secret"]), epk)
        assert shared.hex() == v["shared"][r]
        out = hashlib.blake2b(shared + epk + pre + msg_id + r.encode(), key=pair,
                              digest_size=56, person=b"i24net-wrap-v2").digest()
        assert (out[:32].hex(), out[32:].hex()) == (v["wrap_keys"][r], v["wrap_nonces"][r])
        ad = b"i24net/v2/wrap\x00" + commit
        wrap = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(ck, ad, out[32:], out[:32])
        assert wrap.hex() == v["wraps"][r]
        assert sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(wrap, ad, out[32:],
                                                                 out[:32]) == ck
        pid = hashlib.blake2b(pre, digest_size=8, person=b"i24net-pkid-v2").digest()
        assert pid.hex() == v["prekey_ids"][r] == rec["prekey_id"]
        wraps.append([r, pid, wrap])

    plain = msgpack.packb({"subject": v["body"]["subject"], "text": v["body"]["text"],
                           "data": v["body"]["data"]}, use_bin_type=True)
    assert plain == H(v["body_plain"])
    body = hashlib.blake2b(msg_id + nonce, key=ck, digest_size=56,
                           person=b"i24net-body-v2").digest()
    assert (body[:32].hex(), body[32:].hex()) == (v["body_key"], v["body_nonce"])
    ct = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, b"i24net/v2/body\x00" + header_bytes, body[32:], body[:32])
    assert ct.hex() == v["ciphertext"]

    signed = msgpack.packb([header_bytes, epk, commit, wraps, ct], use_bin_type=True)
    assert signed.hex() == v["signed"]
    sig = nacl.signing.SigningKey(H(sender["sign_seed"])).sign(
        b"i24net/v2/envelope\x00" + signed).signature
    assert sig.hex() == v["signature"]
    nacl.signing.VerifyKey(H(sender["sign_public"])).verify(b"i24net/v2/envelope\x00" + signed,
                                                            sig)
    assert msgpack.packb(["i24e", 2, signed, sig], use_bin_type=True).hex() == v["envelope"]


NEGATIVE = VECTORS["negative"]


@pytest.mark.parametrize("v", NEGATIVE, ids=[v["name"] for v in NEGATIVE])
def test_negative_vectors_are_refused_with_their_reason(v: dict[str, Any],
                                                        directory: Directory) -> None:
    with pytest.raises(I24Error) as info:
        env.open_envelope(H(v["envelope"]), keys_of(v["reader"]), directory)
    assert info.value.reason == v["reason"], v["about"]


def test_the_bad_commitment_vector_fools_nobody_else(directory: Directory) -> None:
    """Its signature is genuine and the other recipient opens it: only the committed key
    tells the GS that its copy is not what NCB-DE read."""
    v = next(n for n in NEGATIVE if n["name"] == "bad-commitment")
    raw = H(v["envelope"])
    assert env.open_envelope(raw, keys_of("NCB-DE"), directory).body.subject == "Copy for the GS"
    e = env.Envelope.parse(raw)
    e.verify(directory)  # the sender signed exactly these bytes: the fault is attributable
    assert {n["name"] for n in NEGATIVE} == {"duplicate-key", "bad-commitment", "wrong-prekey",
                                             "version-1"}
