"""Generate ``vectors.json``: known-answer vectors for the directory and the envelope.

Run from the repository root (``.venv/bin/python tests/data/make_vectors.py``) after a
deliberate change to the wire format, review the diff, and commit the new file. Everything is
derived from fixed labels, so two runs write byte-identical files:

* agency keys: Ed25519 seed = SHA-256("i24net-vector-<AGENCY>-sign"), X25519 secret =
  SHA-256("i24net-vector-<AGENCY>-enc"), prekey secret = SHA-256("i24net-vector-<AGENCY>-
  prekey"), sending key = SHA-256("i24net-vector-<AGENCY>-sending"); the authority seed is
  SHA-256("i24net-vector-authority");
* "random" bytes: SHA-256("i24net-vector-rng" || counter as 8 bytes big-endian), consumed in
  order (message id, nonce, content key for each envelope); the consumed bytes are recorded.
* negative vectors: envelopes a reader must refuse, each with the reason code.

``tests/core/test_vectors.py`` re-seals from these inputs, opens, and re-derives every
intermediate value with PyNaCl directly.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import msgpack
import nacl.bindings as sodium
import nacl.signing

from i24net.core import envelope as env
from i24net.core import keys as k
from i24net.core.directory import AgencyRecord, Directory
from i24net.core.keys import AgencyKeys, PairKeyCache, Prekey
from i24net.core.labels import (
    TLP,
    ClassificationScale,
    Evaluation,
    HandlingCodes,
    Label,
    Precedence,
)
from i24net.core.wire import pack

OUT = Path(__file__).with_name("vectors.json")
ISSUED_MS = 1_717_200_000_000  # 2024-06-01T00:00:00Z
CREATED_MS = 1_717_243_200_000  # 2024-06-01T12:00:00Z

AGENCIES = (  # id, kind, region, level, caveats, roles
    ("GS-LYON", "gs", "EUROPE", "SECRET", ("CT", "EU", "FIN"),
     ("directory-authority", "notice-authority")),
    ("EUROPOL", "europol", "EUROPE", "SECRET", ("EU",), ()),
    ("NCB-DE", "ncb", "EUROPE", "CONFIDENTIAL", ("EU",), ()),
    ("NCB-FR", "ncb", "EUROPE", "CONFIDENTIAL", ("CT", "EU"), ()),
    ("NCB-US", "ncb", "AMERICAS", "SECRET", ("CT",), ()),
)
GROUPS = {"EU": ("EUROPOL", "NCB-DE", "NCB-FR")}


def sha(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


class VectorRandom:
    def __init__(self) -> None:
        self.counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(b"i24net-vector-rng" + self.counter.to_bytes(8, "big")).digest()
            self.counter += 1
        return out[:n]


def agency_keys(agency: str) -> AgencyKeys:
    return AgencyKeys(agency, sha(f"i24net-vector-{agency}-sign"),
                      sha(f"i24net-vector-{agency}-enc"),
                      (Prekey(sha(f"i24net-vector-{agency}-prekey"), ISSUED_MS),),
                      sha(f"i24net-vector-{agency}-sending"))


def build_directory(keys: dict[str, AgencyKeys], anchor: bytes) -> Directory:
    pubs = {a: kk.public() for a, kk in keys.items()}
    records = {
        a: AgencyRecord(a, f"{a} (vector)", kind, region, Label(level, frozenset(caveats)),
                        frozenset(roles), pubs[a].sign_key, pubs[a].enc_key,
                        prekey=pubs[a].prekey, prekey_sig=pubs[a].prekey_sig)
        for a, kind, region, level, caveats, roles in AGENCIES
    }
    return Directory(network="vectors", serial=1, issued_ms=ISSUED_MS,
                     scale=ClassificationScale(caveats=frozenset({"EU", "CT", "FIN"})),
                     agencies=records, groups=GROUPS, authority_key=anchor)


def envelope_specs() -> list[dict[str, Any]]:
    return [
        dict(name="one-recipient", sender="NCB-FR", addressing=["NCB-DE"], kind="message",
             label=Label("UNCLASSIFIED"), precedence=Precedence.ROUTINE, ttl_ms=3_600_000,
             body=env.Body("Hello", "One recipient, no optional fields.", {})),
        dict(name="three-recipients", sender="NCB-FR", addressing=["@EU", "NCB-US"],
             kind="diffusion", label=Label("RESTRICTED"), precedence=Precedence.IMMEDIATE,
             ttl_ms=72 * 3_600_000, handling=HandlingCodes.parse(["H2"]), tlp=TLP.AMBER,
             evaluation=Evaluation("B", 2),
             body=env.Body("Wanted: J. Doe", "Seen at Gare de Lyon, 11:40.",
                           {"case": "FR-2024-117", "count": 3})),
        dict(name="labelled-reply", sender="NCB-DE", addressing=["NCB-FR", "GS-LYON", "NCB-US"],
             kind="alert", label=Label("CONFIDENTIAL", frozenset({"CT"})),
             precedence=Precedence.FLASH, ttl_ms=600_000,
             handling=HandlingCodes.parse(["H1", "H3"], "not before the hearing of 3 June"),
             tlp=TLP.AMBER_STRICT, evaluation=Evaluation("A", 1), ref="id of one-recipient",
             release=b"release-token",
             body=env.Body("Re: Wanted: J. Doe — confirmé",
                           "Identité confirmée. 確認済み.",
                           {"ref": "FR-2024-117", "negative": -1, "big": 2**63})),
    ]


def build() -> dict[str, Any]:
    keys = {a[0]: agency_keys(a[0]) for a in AGENCIES}
    authority_seed = sha("i24net-vector-authority")
    anchor = bytes(nacl.signing.SigningKey(authority_seed).verify_key)
    d = build_directory(keys, anchor)
    signed_dir = d.sign(authority_seed)
    rng = VectorRandom()
    out: dict[str, Any] = {
        "about": "i24net known-answer vectors; generated by tests/data/make_vectors.py",
        "construction": {
            "pair_key": "BLAKE2b-256(X25519(secret, peer) || sender_enc_pk || recipient_enc_pk, "
                        "person='i24net-pair-v1')",
            "prekey_sig": "Ed25519(agency seed, 'i24net/v2/prekey\\0' || prekey || agency id)",
            "prekey_id": "BLAKE2b-64(prekey, person='i24net-pkid-v2')",
            "shared": "X25519(sending secret, recipient prekey) = X25519(prekey secret, "
                      "sending public)",
            "wrap_key_nonce": "BLAKE2b-448(shared || sending_pk || prekey || id || "
                              "recipient; key=pair_key, person='i24net-wrap-v2'): 32 + 24",
            "commitment": "BLAKE2b-256(id, key=content_key, person='i24net-cmt-v2')",
            "body_key_nonce": "BLAKE2b-448(id || nonce, key=content_key, "
                              "person='i24net-body-v2'): 32 + 24",
            "wrap": "XChaCha20-Poly1305(wrap_key, wrap_nonce, ad='i24net/v2/wrap\\0' || "
                    "commitment, content_key)",
            "body": "XChaCha20-Poly1305(body_key, body_nonce, ad='i24net/v2/body\\0' || "
                    "header, body)",
            "signed": "msgpack [header, sending_pk, commitment, [[recipient, prekey_id, wrap], "
                      "...], ciphertext]",
            "envelope": "msgpack ['i24e', 2, signed, Ed25519(sender, 'i24net/v2/envelope\\0' "
                        "|| signed)]",
            "directory": "msgpack [doc, Ed25519(authority, 'i24net/v1/directory\\0' || doc)]",
        },
        "authority": {"seed": authority_seed.hex(), "public": anchor.hex()},
        "agencies": {
            a: {"sign_seed": kk.signing_seed.hex(), "enc_secret": kk.encryption_secret.hex(),
                "sign_public": kk.verify_key.hex(), "enc_public": kk.encryption_public.hex(),
                "key_id": k.key_id(kk.verify_key).hex(),
                "prekey_secret": kk.current_prekey.secret.hex(),
                "prekey": kk.current_prekey.public.hex(),
                "prekey_id": kk.current_prekey.id.hex(),
                "prekey_sig": kk.public().prekey_sig.hex(),
                "sending_secret": (kk.sending_secret or b"").hex(),
                "sending_public": kk.sending_public.hex()}
            for a, kk in keys.items()
        },
        "directory": {"serial": d.serial, "issued_ms": d.issued_ms, "doc": d.encode().hex(),
                      "signed": signed_dir.hex(), "digest": d.digest.hex()},
        "envelopes": [],
    }
    first_id: list[bytes] = []
    for spec in envelope_specs():
        if spec.get("ref") == "id of one-recipient":
            spec["ref"] = first_id[0]
        name, body, ttl = spec.pop("name"), spec.pop("body"), spec.pop("ttl_ms")
        sender = spec["sender"]
        msg_id, nonce = rng(env.ID_SIZE), rng(env.NONCE_SIZE)
        replay = iter([msg_id, nonce])
        header = env.make_header(d, now_ms=CREATED_MS, ttl_ms=ttl,
                                 random_bytes=lambda n, it=replay: next(it), **spec)
        content_key = rng(env.CONTENT_KEY_SIZE)
        raw = env.seal(header, body, keys[sender], env.recipient_keys(d, header),
                       random_bytes=lambda n, ck=content_key: ck)
        first_id.append(msg_id)
        e = env.Envelope.parse(raw)
        cache = PairKeyCache()
        sk = keys[sender]
        sp = sk.encryption_public
        pair = {r: cache.get(sk, sp, keys[r].encryption_public, i_am_sender=True)
                for r in header.recipients}
        shared = {r: k.x25519(sk.sending_secret or b"", keys[r].current_prekey.public)
                  for r in header.recipients}
        derived = {r: env.wrap_key(pair[r], shared[r], sk.sending_public,
                                   keys[r].current_prekey.public, msg_id, r)
                   for r in header.recipients}
        body_out = hashlib.blake2b(msg_id + nonce, key=content_key, digest_size=56,
                                   person=b"i24net-body-v2").digest()
        out["envelopes"].append({
            "name": name,
            "sender": sender,
            "addressing": list(header.addressing),
            "recipients": list(header.recipients),
            "kind": header.kind,
            "level": header.label.level,
            "caveats": sorted(header.label.caveats),
            "handling": header.handling.names(),
            "h3": header.handling.h3_text,
            "tlp": header.tlp.value if header.tlp else None,
            "evaluation": str(header.evaluation) if header.evaluation else None,
            "precedence": header.precedence.name,
            "created_ms": header.created_ms,
            "expires_ms": header.expires_ms,
            "ttl_ms": ttl,
            "ref": header.ref.hex() if header.ref else None,
            "release": header.release.hex() if header.release is not None else None,
            "directory_serial": header.directory_serial,
            "key_id": header.key_id.hex(),
            "id": msg_id.hex(),
            "nonce": nonce.hex(),
            "content_key": content_key.hex(),
            "commitment": e.commitment.hex(),
            "body_key": body_out[:32].hex(),
            "body_nonce": body_out[32:].hex(),
            "sending_public": e.sending_key.hex(),
            "body": {"subject": body.subject, "text": body.text, "data": dict(body.data)},
            "body_plain": body.encode().hex(),
            "header": e.header_bytes.hex(),
            "pair_keys": {r: pair[r].hex() for r in header.recipients},
            "shared": {r: shared[r].hex() for r in header.recipients},
            "wrap_keys": {r: derived[r][0].hex() for r in header.recipients},
            "wrap_nonces": {r: derived[r][1].hex() for r in header.recipients},
            "prekey_ids": {r: e.prekey_ids[r].hex() for r in header.recipients},
            "wraps": {r: w.hex() for r, w in e.wraps.items()},
            "ciphertext": e.ciphertext.hex(),
            "signed": e.signed.hex(),
            "signature": e.signature.hex(),
            "envelope": raw.hex(),
        })
    out["negative"] = negative_vectors(d, keys, rng, H=bytes.fromhex,
                                       good=out["envelopes"][0])
    return out


def _resign(keys: AgencyKeys, header_bytes: bytes, epk: bytes, commit: bytes,
            wraps: list[list[Any]], ct: bytes, *, version: int = env.WIRE_VERSION) -> bytes:
    signed = pack([header_bytes, epk, commit, wraps, ct])
    return pack(["i24e", version, signed, keys.sign(k.DOMAIN_ENVELOPE, signed)])


def negative_vectors(d: Directory, keys: dict[str, AgencyKeys], rng: VectorRandom, *,
                     H: Any, good: dict[str, Any]) -> list[dict[str, Any]]:
    """Envelopes a reader must refuse, each signed by its genuine sender (so the signature
    alone does not refuse them) and named with the reason code."""
    fr = keys["NCB-FR"]
    out = []
    e = env.Envelope.parse(H(good["envelope"]))
    wraps = [[r, e.prekey_ids[r], e.wraps[r]] for r in e.header.recipients]
    # 1. the same header with a repeated key: "level" twice, the last one lower
    doc = msgpack.unpackb(e.header_bytes, raw=False)
    items = list(doc.items())
    at = [key for key, _ in items].index("level")
    dup = (b"\xde" + (len(items) + 1).to_bytes(2, "big")  # map16: the header has 20 keys
           + b"".join(pack(key) + pack(value) for key, value in items[:at + 1])
           + pack("level") + pack("UNCLASSIFIED")
           + b"".join(pack(key) + pack(value) for key, value in items[at + 1:]))
    out.append({"name": "duplicate-key", "reader": "NCB-DE", "reason": "wire.duplicate-key",
                "about": "the header map holds 'level' twice",
                "envelope": _resign(fr, dup, e.sending_key, e.commitment, wraps,
                                    e.ciphertext).hex()})
    # 2. a wrap that opens to a key the envelope does not commit to
    h = env.make_header(d, sender="NCB-FR", addressing=["NCB-DE", "GS-LYON"], kind="diffusion",
                        label=Label("RESTRICTED"), now_ms=CREATED_MS, ttl_ms=3_600_000,
                        random_bytes=rng)
    ck = rng(env.CONTENT_KEY_SIZE)
    raw = env.seal(h, env.Body("Copy for the GS", "the GS gets another key"), fr,
                   env.recipient_keys(d, h), random_bytes=lambda n: ck)
    g = env.Envelope.parse(raw)
    gs = keys["GS-LYON"]
    cache = PairKeyCache()
    pair = cache.get(fr, fr.encryption_public, gs.encryption_public, i_am_sender=True)
    wk, wn = env.wrap_key(pair, k.x25519(fr.sending_secret or b"", gs.current_prekey.public),
                          fr.sending_public, gs.current_prekey.public, h.id, "GS-LYON")
    other = rng(env.CONTENT_KEY_SIZE)
    bad_wrap = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        other, k.DOMAIN_WRAP + g.commitment, wn, wk)
    bad_wraps = [[r, g.prekey_ids[r], bad_wrap if r == "GS-LYON" else g.wraps[r]]
                 for r in h.recipients]
    out.append({"name": "bad-commitment", "reader": "GS-LYON", "reason": "aead.commitment",
                "about": "GS-LYON's wrap opens, to a content key other than the committed one; "
                         "NCB-DE opens the same envelope",
                "other_key": other.hex(),
                "envelope": _resign(fr, g.header_bytes, g.sending_key, g.commitment, bad_wraps,
                                    g.ciphertext).hex()})
    # 3. NCB-DE's wrap names a prekey NCB-DE does not hold
    stale = k.prekey_id(k.x25519(sha("i24net-vector-stale-prekey"), bytes([9]) + bytes(31)))
    stale_wraps = [[r, stale, w] for r, _, w in wraps]
    out.append({"name": "wrong-prekey", "reader": "NCB-DE", "reason": "prekey.unknown",
                "about": "the wrap names a prekey id the reader does not hold",
                "envelope": _resign(fr, e.header_bytes, e.sending_key, e.commitment,
                                    stale_wraps, e.ciphertext).hex()})
    # 4. the retired version
    out.append({"name": "version-1", "reader": "NCB-DE", "reason": "wire.version",
                "about": "outer version 1",
                "envelope": _resign(fr, e.header_bytes, e.sending_key, e.commitment, wraps,
                                    e.ciphertext, version=1).hex()})
    return out


def main() -> None:
    OUT.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
