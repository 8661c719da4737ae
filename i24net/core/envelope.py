"""The envelope: a signed, end-to-end encrypted, multi-recipient message (protocol v2).

Theory of operation (the normative text is ``docs/protocol.md``, section 4):

    envelope  = msgpack [ "i24e", 2, signed: bin, signature: bin64 ]
    signed    = msgpack [ header: bin, sending_key: bin32, commitment: bin32,
                          wraps: [[recipient, prekey_id: bin8, wrap: bin48], ...], ciphertext ]
    signature = Ed25519(sender, "i24net/v2/envelope\\0" || signed)

Seal draws a fresh 32-byte content key, commits to it (``commitment``: keyed BLAKE2b over the
id), derives the body key and nonce from it and encrypts the body *once*
(XChaCha20-Poly1305, associated data ``"i24net/v2/body\\0" || header bytes``). For each
recipient it derives a wrap key and nonce: keyed by the static pair key, over the agreement
of the sender's sending key (held in memory only) with the recipient's signed prekey (rotated
and erased), the sending key, the prekey, the id and the recipient's name; the wrap is the
content key under them, with the commitment as associated data. Then it signs the exact bytes.

The receiver verifies the signature over the bytes it received, never over a re-encoding, and
only then reads anything else; it opens its wrap with its prekey and long-term key, and
accepts the content key only if it matches the commitment, so every recipient reads the same
body (a wrap that opens to another key is ``aead.commitment``). The header travels in clear
(the router decides on it) but is bound by the signature and as the body's associated data.
A stolen long-term key alone opens nothing: the agreement also needs the sending key (gone an
hour after first use) or the prekey (erased after its grace period).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions

from i24net.core import keys as k
from i24net.core.directory import Directory
from i24net.core.errors import (
    CryptoError,
    DirectoryError,
    I24Error,
    NotRecipientError,
    WireFormatError,
)
from i24net.core.labels import TLP, Evaluation, HandlingCodes, Label, Precedence
from i24net.core.wire import (
    MAX_BODY,
    MAX_DEPTH,
    MAX_ENVELOPE,
    MAX_RECIPIENTS,
    Fields,
    fail,
    pack,
    unpack,
)

MAGIC = "i24e"
WIRE_VERSION = 2
RETIRED_VERSIONS = {1: "protocol version 1 (static wrap keys, no key commitment, no forward "
                       "secrecy) is no longer accepted"}
ID_SIZE = 16
NONCE_SIZE = 24
CONTENT_KEY_SIZE = 32
COMMIT_SIZE = 32
WRAP_SIZE = CONTENT_KEY_SIZE + 16  # key + Poly1305 tag
_BODY_PERSON = b"i24net-body-v2"  # BLAKE2b personalisations (at most 16 bytes)
_COMMIT_PERSON = b"i24net-cmt-v2"
_WRAP_PERSON = b"i24net-wrap-v2"
_KDF_SIZE = 32 + NONCE_SIZE  # an XChaCha20-Poly1305 key and nonce
MAX_HEADER = 64 * 1024 + MAX_RECIPIENTS * 40  # ids of up to 32 chars, twice (to + addr)
MAX_SUBJECT = 256
MAX_TEXT = 512 * 1024
MAX_RELEASE = 4096  # a signed release is a small token, not a document
MAX_BODY_ITEMS = 1024  # entries per map or array inside a body (Body.decode's limit)
# Header.decode's field limits, checked again by seal (never seal what cannot be opened):
_MAX_AGENCY_ID = 32
_MAX_ADDRESS = 33  # "@" + a group name
_MAX_CAVEATS = 64
_MAX_INT = (1 << 63) - 1

# Who may send which kind is the routing policy's business; the envelope only knows the names.
KINDS = (
    "message",  # agency to agency
    "diffusion",  # NCB straight to chosen recipients, recorded at the GS
    "alert",  # urgent operational alert
    "notice-request",  # NCB asks the GS to publish a notice
    "notice",  # the GS publishes a reviewed notice
    "notice-decision",  # the GS tells a requester: published or refused, and why
    "notice-update",  # the GS updates a published notice
    "notice-cancel-request",  # the owner asks the GS to cancel its notice
    "notice-cancel",  # the GS withdraws a notice from every holder
    "deletion-order",  # the GS orders recipients to delete a non-compliant diffusion
    "release",  # a source allows onward dissemination of an H2 message
)

RandomBytes = Callable[[int], bytes]


def _hex(b: bytes | None) -> str:
    return b.hex() if b else "-"


@dataclass(frozen=True, slots=True)
class Header:
    """Everything the router may see: addresses and labels, never the body."""

    id: bytes
    kind: str
    sender: str
    recipients: tuple[str, ...]
    addressing: tuple[str, ...]
    label: Label
    precedence: Precedence
    created_ms: int
    expires_ms: int
    directory_serial: int
    key_id: bytes
    nonce: bytes
    handling: HandlingCodes = field(default_factory=HandlingCodes)
    tlp: TLP | None = None
    evaluation: Evaluation | None = None
    ref: bytes | None = None
    release: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.id) != ID_SIZE:
            raise WireFormatError(f"message id must be {ID_SIZE} bytes", reason="wire.schema")
        if self.kind not in KINDS:
            raise WireFormatError(f"unknown kind {self.kind!r}; one of {', '.join(KINDS)}",
                                  reason="wire.kind")
        if not self.recipients:
            raise WireFormatError("a message needs at least one recipient",
                                  reason="wire.no-recipients")
        if list(self.recipients) != sorted(set(self.recipients)):
            raise WireFormatError("recipients must be sorted and unique", reason="wire.schema")
        if len(self.recipients) > MAX_RECIPIENTS:
            raise WireFormatError(f"at most {MAX_RECIPIENTS} recipients", reason="wire.schema")
        if not self.addressing:
            raise WireFormatError("addressing must not be empty", reason="wire.schema")
        # decode refuses these, so refuse them here too: never seal what cannot be opened
        if len(set(self.addressing)) != len(self.addressing):
            raise WireFormatError("addressing must not repeat an item", reason="wire.schema")
        if self.release is not None and len(self.release) > MAX_RELEASE:
            raise WireFormatError(f"a release must be at most {MAX_RELEASE} bytes",
                                  reason="wire.schema")
        if self.expires_ms <= self.created_ms:
            raise WireFormatError("a message must expire after it is created",
                                  reason="wire.schema")
        if len(self.nonce) != NONCE_SIZE or len(self.key_id) != k.KEY_ID_SIZE:
            raise WireFormatError("bad nonce or key id size", reason="wire.schema")
        if self.ref is not None and len(self.ref) != ID_SIZE:
            raise WireFormatError(f"reference must be a {ID_SIZE}-byte id", reason="wire.schema")

    @property
    def id_hex(self) -> str:
        return self.id.hex()

    def encode(self) -> bytes:
        return pack(self._doc())

    def _doc(self) -> dict[str, Any]:
        """The header as the map its encoding holds, in key order."""
        return {
            "v": WIRE_VERSION,
            "id": self.id,
            "kind": self.kind,
            "from": self.sender,
            "to": list(self.recipients),
            "addr": list(self.addressing),
            "level": self.label.level,
            "caveats": sorted(self.label.caveats),
            "handling": self.handling.names(),
            "h3": self.handling.h3_text,
            "tlp": self.tlp.value if self.tlp else None,
            "eval": str(self.evaluation) if self.evaluation else None,
            "prec": self.precedence.name,
            "created": self.created_ms,
            "expires": self.expires_ms,
            "ref": self.ref,
            "release": self.release,
            "dir": self.directory_serial,
            "kid": self.key_id,
            "nonce": self.nonce,
        }

    @classmethod
    def decode(cls, data: bytes) -> Header:
        obj = unpack(data, what="header", max_size=MAX_HEADER, max_items=MAX_RECIPIENTS)
        f = Fields(obj, "header")
        version = f.integer("v")
        if version != WIRE_VERSION:
            fail("header", RETIRED_VERSIONS.get(
                version, f"unsupported header version {version} (this build reads "
                f"{WIRE_VERSION})"), reason="wire.version")
        try:
            tlp_raw = f.text("tlp", max_len=16, optional=True)
            eval_raw = f.text("eval", max_len=2, optional=True)
            h = cls(
                id=f.blob("id", size=ID_SIZE),
                kind=f.text("kind", max_len=32),
                sender=f.text("from", max_len=32),
                recipients=tuple(f.text_list("to", max_len=32)),
                addressing=tuple(f.text_list("addr", max_len=33)),
                label=Label(f.text("level", max_len=32),
                            frozenset(f.text_list("caveats", max_items=64, max_len=32))),
                handling=HandlingCodes.parse(f.text_list("handling", max_items=4, max_len=2),
                                             f.text("h3", max_len=512, allow_empty=True)),
                tlp=TLP.parse(tlp_raw) if tlp_raw is not None else None,
                evaluation=Evaluation.parse(eval_raw) if eval_raw is not None else None,
                precedence=Precedence.parse(f.text("prec", max_len=16)),
                created_ms=f.integer("created"),
                expires_ms=f.integer("expires"),
                ref=f.blob("ref", size=ID_SIZE, optional=True),
                release=f.blob("release", max_len=MAX_RELEASE, optional=True),
                directory_serial=f.integer("dir", lo=1),
                key_id=f.blob("kid", size=k.KEY_ID_SIZE),
                nonce=f.blob("nonce", size=NONCE_SIZE),
            )
        except WireFormatError:
            raise
        except Exception as exc:  # label, handling, TLP... validation of untrusted fields
            raise WireFormatError(f"header: {exc}", reason="wire.schema") from exc
        f.done()
        # One spelling per meaning: the parsers above read "flash", "tlp:red" or unsorted
        # caveats leniently, so require what this header encodes back to (an absent optional
        # field and nil being the same, 1.3).
        canonical = h._doc()
        if {**dict.fromkeys(canonical), **obj} != canonical:
            fail("header", "a field is not in its canonical form (enumerations in capitals "
                 "and without prefix, caveats and handling codes sorted)",
                 reason="wire.noncanonical")
        return h

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly view for inspect, logs and reports."""
        return {
            "id": self.id_hex, "kind": self.kind, "from": self.sender,
            "to": list(self.recipients), "addressing": list(self.addressing),
            "label": self.label.marking, "handling": str(self.handling),
            "tlp": self.tlp.marking if self.tlp else None,
            "evaluation": str(self.evaluation) if self.evaluation else None,
            "precedence": self.precedence.name, "created_ms": self.created_ms,
            "expires_ms": self.expires_ms, "ref": _hex(self.ref) if self.ref else None,
            "release": bool(self.release), "directory_serial": self.directory_serial,
            "key_id": self.key_id.hex(),
        }


@dataclass(frozen=True, slots=True)
class Body:
    """The confidential part: subject, text and structured data (e.g. notice fields)."""

    subject: str
    text: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.subject, str) or not 0 < len(self.subject) <= MAX_SUBJECT:
            raise WireFormatError(f"subject must be 1-{MAX_SUBJECT} characters",
                                  reason="wire.body")
        if not isinstance(self.text, str) or len(self.text) > MAX_TEXT:
            raise WireFormatError(f"text must be at most {MAX_TEXT} characters",
                                  reason="wire.body")

    def encode(self) -> bytes:
        if not isinstance(self.data, Mapping):
            fail("body", f"data must be a map, not {type(self.data).__name__}")
        _check_data(self.data)
        out = pack({"subject": self.subject, "text": self.text, "data": dict(self.data)})
        if len(out) > MAX_BODY:
            raise WireFormatError(f"body is {len(out)} bytes, over the {MAX_BODY}-byte limit",
                                  reason="wire.oversized")
        return out

    @classmethod
    def decode(cls, data: bytes) -> Body:
        # max_str counts bytes and MAX_TEXT characters: cap strings by the body size and
        # let Fields check characters, or a long non-ASCII text would seal but never open.
        obj = unpack(data, what="body", max_size=MAX_BODY, max_str=MAX_BODY,
                     max_items=MAX_BODY_ITEMS)
        f = Fields(obj, "body")
        subject = f.text("subject", max_len=MAX_SUBJECT)
        text = f.text("text", max_len=MAX_TEXT, allow_empty=True)
        d = f.raw("data")
        f.done()
        if not isinstance(d, dict):
            fail("body", "data must be a map")
        return cls(subject, text, d)


def _check_data(data: Mapping[str, Any]) -> None:
    """Refuse body data that ``Body.decode`` would refuse after a successful encode.

    What decode refuses: a map key that is not text, more than ``MAX_BODY_ITEMS`` entries in
    any map or array, and anything (container or scalar) deeper than ``MAX_DEPTH``, where the
    body map is level 1 and ``data`` level 2. Values msgpack cannot encode at all are left
    to ``pack`` (``wire.encode``); the byte size to ``Body.encode``.
    """
    stack: list[tuple[Any, int, str]] = [(data, 2, "data")]
    while stack:
        item, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            fail("body", f"{path} is nested deeper than the {MAX_DEPTH} levels a receiver "
                 "accepts (the body itself is level 1, data level 2)")
        if isinstance(item, Mapping):
            if depth > 2 and not isinstance(item, dict):
                continue  # not encodable: pack says so (wire.encode)
            if len(item) > MAX_BODY_ITEMS:
                fail("body", f"{path} has {len(item)} entries, over the {MAX_BODY_ITEMS} a "
                     "receiver accepts", reason="wire.oversized")
            for key, value in item.items():
                if not isinstance(key, str):
                    fail("body", f"{path} has a key that is not text: {key!r:.40}")
                stack.append((value, depth + 1, f"{path}.{key:.40}"))
        elif isinstance(item, (list, tuple)):
            if len(item) > MAX_BODY_ITEMS:
                fail("body", f"{path} has {len(item)} items, over the {MAX_BODY_ITEMS} a "
                     "receiver accepts", reason="wire.oversized")
            stack.extend((value, depth + 1, f"{path}[{i}]") for i, value in enumerate(item))


def _check_header(h: Header, header_bytes: bytes) -> None:
    """Refuse a header that ``Header.decode`` would refuse (``Header`` checks the rest)."""
    if len(header_bytes) > MAX_HEADER:
        fail("header", f"{len(header_bytes)} bytes is over the {MAX_HEADER}-byte limit",
             reason="wire.oversized")
    if not (isinstance(h.sender, str) and 0 < len(h.sender) <= _MAX_AGENCY_ID):
        fail("header", f"sender must be 1-{_MAX_AGENCY_ID} characters")
    if not all(isinstance(r, str) and 0 < len(r) <= _MAX_AGENCY_ID for r in h.recipients):
        fail("header", f"each recipient must be 1-{_MAX_AGENCY_ID} characters")
    if len(h.addressing) > MAX_RECIPIENTS:
        fail("header", f"at most {MAX_RECIPIENTS} addressing items", reason="wire.oversized")
    if not all(isinstance(a, str) and 0 < len(a) <= _MAX_ADDRESS for a in h.addressing):
        fail("header", f"each addressing item must be 1-{_MAX_ADDRESS} characters")
    if len(h.label.caveats) > _MAX_CAVEATS:
        fail("header", f"at most {_MAX_CAVEATS} caveats")
    for name, value, lo in (("created", h.created_ms, 0), ("expires", h.expires_ms, 0),
                            ("directory serial", h.directory_serial, 1)):
        if not (isinstance(value, int) and not isinstance(value, bool)
                and lo <= value <= _MAX_INT):
            fail("header", f"{name} must be an integer in [{lo}, {_MAX_INT}]")


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed envelope whose signature has NOT been checked yet; see ``verify``."""

    raw: bytes = field(repr=False)
    signed: bytes = field(repr=False)
    header_bytes: bytes = field(repr=False)
    header: Header
    wraps: Mapping[str, bytes] = field(repr=False)
    ciphertext: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    sending_key: bytes = field(repr=False, default=b"")  # the sender's X25519 sending key
    commitment: bytes = field(repr=False, default=b"")  # to the content key
    prekey_ids: Mapping[str, bytes] = field(repr=False, default_factory=dict)  # per wrap

    @property
    def digest(self) -> bytes:
        """SHA-256 of the exact envelope bytes: what stamps and receipts refer to."""
        return hashlib.sha256(self.raw).digest()

    @classmethod
    def parse(cls, raw: bytes) -> Envelope:
        """Decode under the wire limits; raises ``WireFormatError`` on anything malformed."""
        outer = unpack(raw, what="envelope", max_size=MAX_ENVELOPE, max_items=8)
        if not (isinstance(outer, list) and len(outer) == 4):
            fail("envelope", "expected [magic, version, signed, signature]")
        magic, version, signed, signature = outer
        if magic != MAGIC:
            fail("envelope", "not an i24net envelope (bad magic)", reason="wire.magic")
        if type(version) is not int or version != WIRE_VERSION:  # True == 1.0 == 1
            fail("envelope", RETIRED_VERSIONS.get(version, f"wire version {version!r} is not "
                 f"supported") + f" (this build reads version {WIRE_VERSION} only)"
                 if type(version) is int else f"wire version {version!r} is not an integer",
                 reason="wire.version")
        if not isinstance(signed, bytes) or not isinstance(signature, bytes) \
                or len(signature) != k.SIG_SIZE:
            fail("envelope", "signed part must be binary and the signature 64 bytes")
        # The frame is not signed: without this, bin16-for-bin8 and the like give one message
        # many encodings, hence many digests, and stamps, receipts and replay checks key on it.
        if pack([MAGIC, WIRE_VERSION, signed, signature]) != raw:
            fail("envelope", "the frame is not in canonical encoding", reason="wire.noncanonical")
        inner = unpack(signed, what="envelope content", max_size=MAX_ENVELOPE,
                       max_items=MAX_RECIPIENTS)
        if not (isinstance(inner, list) and len(inner) == 5):
            fail("envelope content", "expected [header, sending key, commitment, wraps, "
                 "ciphertext]")
        header_bytes, epk, commitment, raw_wraps, ciphertext = inner
        if not isinstance(header_bytes, bytes) or not isinstance(ciphertext, bytes):
            fail("envelope content", "header and ciphertext must be binary")
        if not (isinstance(epk, bytes) and len(epk) == k.KEY_SIZE
                and isinstance(commitment, bytes) and len(commitment) == COMMIT_SIZE):
            fail("envelope content", f"the sending key must be {k.KEY_SIZE} bytes and the "
                 f"commitment {COMMIT_SIZE}")
        if not isinstance(raw_wraps, list):
            fail("envelope content", "wraps must be a list")
        header = Header.decode(header_bytes)
        wraps: dict[str, bytes] = {}
        prekey_ids: dict[str, bytes] = {}
        for w in raw_wraps:
            if not (isinstance(w, list) and len(w) == 3 and isinstance(w[0], str)
                    and isinstance(w[1], bytes) and len(w[1]) == k.KEY_ID_SIZE
                    and isinstance(w[2], bytes) and len(w[2]) == WRAP_SIZE):
                fail("envelope content", f"each wrap must be [recipient, {k.KEY_ID_SIZE}-byte "
                     f"prekey id, {WRAP_SIZE} bytes]")
            if w[0] in wraps:
                fail("envelope content", f"two wraps for {w[0]}")
            wraps[w[0]] = w[2]
            prekey_ids[w[0]] = w[1]
        if list(wraps) != list(header.recipients):
            fail("envelope content", "the wraps do not match the header's recipient list "
                 "(one per recipient, in its order)", reason="wire.wraps")
        return cls(bytes(raw), signed, header_bytes, header, wraps, ciphertext, signature,
                   epk, commitment, prekey_ids)

    def verify(self, directory: Directory) -> None:
        """Check the sender's signature with the key the directory lists for the sender.

        Refuses an unknown or revoked sender and a key id that is not the listed key.
        """
        h = self.header
        try:
            sender = directory.agency(h.sender)
        except DirectoryError as exc:
            raise CryptoError(f"sender {h.sender} is not in the directory (version "
                              f"{directory.serial})", reason="sender.unknown",
                              agency=h.sender, msg_id=h.id_hex) from exc
        if not sender.active:
            raise CryptoError(f"sender {h.sender} is revoked (directory version "
                              f"{directory.serial})", reason="sender.revoked",
                              agency=h.sender, msg_id=h.id_hex)
        if h.key_id != sender.key_id:
            raise CryptoError(
                f"signed with a key of {h.sender} that directory version {directory.serial} "
                "does not list (rotated or forged)", reason="sig.unknown-key",
                agency=h.sender, msg_id=h.id_hex)
        k.verify(sender.sign_key, k.DOMAIN_ENVELOPE, self.signed, self.signature,
                 what=f"message {h.id_hex[:12]}", agency=h.sender)


@dataclass(frozen=True, slots=True)
class Opened:
    envelope: Envelope
    body: Body

    @property
    def header(self) -> Header:
        return self.envelope.header


def _aead_encrypt(key: bytes, nonce: bytes, ad: bytes, plaintext: bytes) -> bytes:
    return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, ad, nonce, key)


def _aead_decrypt(key: bytes, nonce: bytes, ad: bytes, ciphertext: bytes, *, what: str,
                  msg_id: str) -> bytes:
    try:
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, ad, nonce, key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise CryptoError(f"{what} of message {msg_id[:12]} does not decrypt (altered, or "
                          "not meant for this key)", reason="aead.invalid",
                          msg_id=msg_id) from exc


def _body_key(content_key: bytes, h: Header) -> tuple[bytes, bytes]:
    """The body's AEAD key and nonce, derived from the content key (protocol.md 4.5)."""
    out = hashlib.blake2b(h.id + h.nonce, key=content_key, digest_size=_KDF_SIZE,
                          person=_BODY_PERSON).digest()
    return out[:32], out[32:]


def commitment(content_key: bytes, msg_id: bytes) -> bytes:
    """The envelope's commitment to its content key: a wrap that opens to any other key,
    or a body decrypted under any other key, fails this check (``aead.commitment``)."""
    return hashlib.blake2b(msg_id, key=content_key, digest_size=COMMIT_SIZE,
                           person=_COMMIT_PERSON).digest()


def wrap_key(pair: bytes, shared: bytes, sending_key: bytes, prekey: bytes, msg_id: bytes,
             recipient: str) -> tuple[bytes, bytes]:
    """One recipient's wrap key and nonce: keyed by the static pair key, over the sending
    key / prekey agreement and everything that names this wrap (protocol.md 4.5)."""
    return _derive(_wrap_prefix(pair, shared, sending_key, prekey), msg_id, recipient.encode())


def _wrap_prefix(pair: bytes, shared: bytes, sending_key: bytes, prekey: bytes) -> Any:
    """The keyed BLAKE2b state of ``wrap_key`` after its per-correspondent part; seal and
    open cache it, so per message only the id and the name remain to hash."""
    state = hashlib.blake2b(key=pair, digest_size=_KDF_SIZE, person=_WRAP_PERSON)
    state.update(shared + sending_key + prekey)
    return state


def _derive(state: Any, msg_id: bytes, name: bytes) -> tuple[bytes, bytes]:
    h = state.copy()
    h.update(msg_id + name)
    out = h.digest()
    return out[:32], out[32:]


def seal(
    header: Header,
    body: Body,
    sender: k.AgencyKeys,
    recipient_keys: Mapping[str, tuple[bytes, bytes]],
    *,
    random_bytes: RandomBytes,
    cache: k.PairKeyCache | None = None,
) -> bytes:
    """Encrypt ``body`` to every recipient of ``header`` and sign the whole; return the bytes.

    ``recipient_keys`` maps each recipient to its (X25519 public key, prekey) from the
    directory; ``random_bytes`` supplies the content key (tests pass a fixed source), and a
    sending key for this message alone if ``sender`` holds none.
    """
    if header.sender != sender.agency:
        raise CryptoError(f"header names {header.sender} but the keys are {sender.agency}'s",
                          reason="seal.sender")
    missing = [r for r in header.recipients if r not in recipient_keys]
    if missing:
        raise DirectoryError(f"no encryption key for {', '.join(missing)}",
                             reason="directory.unknown-agency", agencies=tuple(missing))
    cache = cache if cache is not None else k.PairKeyCache()
    esk = sender.sending_secret
    one_off = esk is None  # no sending key held: a fresh one for this message alone
    if esk is None:
        esk = random_bytes(k.KEY_SIZE)
    epk = sodium.crypto_scalarmult_base(esk) if one_off else sender.sending_public
    header_bytes = header.encode()
    _check_header(header, header_bytes)
    content_key = random_bytes(CONTENT_KEY_SIZE)
    commit = commitment(content_key, header.id)
    bkey, bnonce = _body_key(content_key, header)
    ciphertext = _aead_encrypt(bkey, bnonce, k.DOMAIN_BODY + header_bytes, body.encode())
    my_public = sender.encryption_public
    wrap_ad = k.DOMAIN_WRAP + commit
    wraps = []
    msg_id = header.id
    encrypt = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt
    for r in header.recipients:
        enc_key, prekey = recipient_keys[r]
        if one_off:  # nothing to cache: the sending key serves this message only
            pair = cache.get(sender, my_public, enc_key, i_am_sender=True)
            wk, wn = wrap_key(pair, k.x25519(esk, prekey), epk, prekey, msg_id, r)
            pid = k.prekey_id(prekey)
        else:
            # the per-correspondent prefix of the derivation, computed once (2.4, 2.7)
            ctx = ("seal", my_public, enc_key, epk, prekey, r)
            got = cache.lookup(ctx)
            if got is None:
                got = cache.memo(ctx, partial(_sender_state, cache, sender, esk, epk, enc_key,
                                              prekey, r))
            state, pid, name = got
            wk, wn = _derive(state, msg_id, name)
        wraps.append([r, pid, encrypt(content_key, wrap_ad, wn, wk)])
    signed = pack([header_bytes, epk, commit, wraps, ciphertext])
    raw = pack([MAGIC, WIRE_VERSION, signed, sender.sign(k.DOMAIN_ENVELOPE, signed)])
    # Each part can be within its own limit and the whole still over the envelope's (a body
    # near MAX_BODY to thousands of recipients); Envelope.parse would refuse it.
    if len(raw) > MAX_ENVELOPE:
        fail("envelope", f"{len(raw)} bytes is over the {MAX_ENVELOPE}-byte limit: send a "
             "smaller body or fewer recipients", reason="wire.oversized")
    return raw


def _sender_state(cache: k.PairKeyCache, sender: k.AgencyKeys, esk: bytes, epk: bytes,
                  enc_key: bytes, prekey: bytes, recipient: str) -> tuple[Any, bytes, bytes]:
    pair = cache.get(sender, sender.encryption_public, enc_key, i_am_sender=True)
    return (_wrap_prefix(pair, k.x25519(esk, prekey), epk, prekey), k.prekey_id(prekey),
            recipient.encode())


def open_envelope(
    raw: bytes | Envelope,
    me: k.AgencyKeys,
    directory: Directory,
    *,
    cache: k.PairKeyCache | None = None,
) -> Opened:
    """Parse, verify, check that ``me`` is a recipient, unwrap and decrypt.

    Order matters: nothing from the envelope is acted on before its signature verified.
    """
    env = raw if isinstance(raw, Envelope) else Envelope.parse(raw)
    env.verify(directory)
    return open_verified(env, me, directory, cache=cache)


def open_verified(env: Envelope, me: k.AgencyKeys, directory: Directory, *,
                  cache: k.PairKeyCache | None = None) -> Opened:
    """``open_envelope`` after ``env.verify(directory)`` passed: whatever fails from here
    on was signed by the sender, so a receiver can answer it (a signed refusal)."""
    h = env.header
    if me.agency not in env.wraps:
        raise NotRecipientError(
            f"{me.agency} is not a recipient of message {h.id_hex[:12]} (sent by {h.sender} "
            f"to {', '.join(h.recipients[:8])}{' ...' if len(h.recipients) > 8 else ''})",
            reason="not-recipient", agency=me.agency, msg_id=h.id_hex)
    return Opened(env, Body.decode(decrypt_body(env, unwrap(env, me, directory,
                                                             cache=cache))))


def unwrap(env: Envelope, me: k.AgencyKeys, directory: Directory, *,
           cache: k.PairKeyCache | None = None) -> bytes:
    """``me``'s content key of a verified envelope, checked against its commitment."""
    h = env.header
    pre = me.prekey(env.prekey_ids[me.agency])
    if pre is None:
        raise CryptoError(
            f"message {h.id_hex[:12]} from {h.sender} was sealed to a prekey "
            f"{env.prekey_ids[me.agency].hex()} that {me.agency} no longer holds (erased "
            "after its grace period, or never issued)", reason="prekey.unknown",
            agency=me.agency, msg_id=h.id_hex)
    cache = cache if cache is not None else k.PairKeyCache()
    sender_enc = directory.agency(h.sender).enc_key
    epk = env.sending_key

    def make() -> Any:
        pair = cache.get(me, me.encryption_public, sender_enc, i_am_sender=False)
        return _wrap_prefix(pair, k.x25519(pre.secret, epk), epk, pre.public)

    state = cache.memo(("open", me.encryption_public, sender_enc, epk, pre.public), make)
    wk, wn = _derive(state, h.id, me.agency.encode())
    content_key = _aead_decrypt(wk, wn, k.DOMAIN_WRAP + env.commitment, env.wraps[me.agency],
                                what="key wrap", msg_id=h.id_hex)
    if not hmac.compare_digest(commitment(content_key, h.id), env.commitment):
        raise CryptoError(f"the key wrap of message {h.id_hex[:12]} opens to a key the "
                          f"envelope does not commit to: {h.sender} gave {me.agency} a "
                          "different key than the other recipients", reason="aead.commitment",
                          agency=h.sender, msg_id=h.id_hex)
    return content_key


def open_as_sender(env: Envelope, sender: k.AgencyKeys, directory: Directory,
                   prekeys: Mapping[bytes, bytes], *,
                   cache: k.PairKeyCache | None = None) -> Opened:
    """What the holder of the sender's keys reads of a message the sender sealed: only
    while those keys still hold the sending key the envelope names (2.7); ``prekeys`` maps
    prekey ids to the public prekeys of any directory version (public knowledge). For drills
    that measure what a key thief can read."""
    h = env.header
    if sender.sending_secret is None or sender.sending_public != env.sending_key:
        raise CryptoError(f"message {h.id_hex[:12]} was sealed with a sending key "
                          f"{sender.agency} no longer holds", reason="key.sending",
                          agency=sender.agency, msg_id=h.id_hex)
    r = h.recipients[0]
    prekey = prekeys.get(env.prekey_ids[r])
    if prekey is None:
        raise CryptoError(f"prekey {env.prekey_ids[r].hex()} is in no known directory",
                          reason="prekey.unknown", msg_id=h.id_hex)
    cache = cache if cache is not None else k.PairKeyCache()
    pair = cache.get(sender, sender.encryption_public, directory.agency(r).enc_key,
                     i_am_sender=True)
    wk, wn = wrap_key(pair, k.x25519(sender.sending_secret, prekey), env.sending_key, prekey,
                      h.id, r)
    content_key = _aead_decrypt(wk, wn, k.DOMAIN_WRAP + env.commitment, env.wraps[r],
                                what="key wrap", msg_id=h.id_hex)
    if not hmac.compare_digest(commitment(content_key, h.id), env.commitment):
        raise CryptoError("the wrap opens to an uncommitted key", reason="aead.commitment",
                          msg_id=h.id_hex)
    return Opened(env, Body.decode(decrypt_body(env, content_key)))


def exposure(recorded: Mapping[str, bytes], agency: str, keys: k.AgencyKeys,
             directory: Directory, published: Iterable[Directory]
             ) -> tuple[list[str], dict[str, str]]:
    """What a thief holding ``keys`` (``agency``'s, stolen) reads of ``recorded`` traffic
    (message id hex -> envelope bytes): the ids of the envelopes to or from ``agency`` it
    opens, as a recipient or as their sender, and for the others the reason they stay shut
    (``prekey.unknown``, ``key.sending``, ...). Envelopes neither to nor from ``agency`` are
    left out. ``published``: every directory version published so far, whose prekeys an
    envelope the agency sent may have been sealed to. The drills' forward-secrecy measure
    (``unreadable-to-thief``), in both modes."""
    prekeys = {r.prekey_id: r.prekey for v in published for r in v.agencies.values()}
    readable: list[str] = []
    shut: dict[str, str] = {}
    for mid, raw in recorded.items():
        env = Envelope.parse(raw)
        h = env.header
        if agency not in h.recipients and agency != h.sender:
            continue
        try:
            if agency in h.recipients:
                open_envelope(env, keys, directory)
            else:
                open_as_sender(env, keys, directory, prekeys)
            readable.append(mid)
        except I24Error as exc:
            shut[mid] = exc.reason
    return readable, shut


def decrypt_body(env: Envelope, content_key: bytes) -> bytes:
    """The body plaintext under a content key that ``unwrap`` checked."""
    bkey, bnonce = _body_key(content_key, env.header)
    return _aead_decrypt(bkey, bnonce, k.DOMAIN_BODY + env.header_bytes, env.ciphertext,
                         what="body", msg_id=env.header.id_hex)


def make_header(
    directory: Directory,
    *,
    sender: str,
    addressing: tuple[str, ...] | list[str],
    kind: str,
    label: Label,
    now_ms: int,
    ttl_ms: int,
    random_bytes: RandomBytes,
    precedence: Precedence = Precedence.ROUTINE,
    handling: HandlingCodes | None = None,
    tlp: TLP | None = None,
    evaluation: Evaluation | None = None,
    ref: bytes | None = None,
    release: bytes | None = None,
) -> Header:
    """A header addressed through the directory: recipients are the expansion of
    ``addressing`` for ``sender`` at this directory version."""
    rec = directory.agency(sender)
    directory.scale.validate(label)
    addressing = tuple(dict.fromkeys(addressing))  # "--to A,A" means A once
    recipients = directory.expand(addressing, sender)
    if not recipients:
        raise DirectoryError(f"addressing {', '.join(addressing)} names no recipient",
                             reason="addressing.empty")
    return Header(
        id=random_bytes(ID_SIZE), kind=kind, sender=sender, recipients=recipients,
        addressing=tuple(addressing), label=label, precedence=precedence,
        created_ms=now_ms, expires_ms=now_ms + ttl_ms, directory_serial=directory.serial,
        key_id=rec.key_id, nonce=random_bytes(NONCE_SIZE),
        handling=handling or HandlingCodes(), tlp=tlp, evaluation=evaluation, ref=ref,
        release=release,
    )


def recipient_keys(directory: Directory, header: Header) -> dict[str, tuple[bytes, bytes]]:
    """(X25519 public key, prekey) of each of the header's recipients the directory knows."""
    out = {}
    for r in header.recipients:
        rec = directory.agencies.get(r)
        if rec is not None:
            out[r] = (rec.enc_key, rec.prekey)
    return out


def check_freshness(header: Header, now_ms: int, max_skew_ms: int) -> str | None:
    """None when the message is fresh at ``now_ms``; otherwise a reason code.

    A message is too new if created more than the skew bound in the future, and expired once
    ``now`` passes its expiry (plus the skew bound, so a slow clock is not punished).
    """
    if header.created_ms > now_ms + max_skew_ms:
        return "time.future"
    if now_ms > header.expires_ms + max_skew_ms:
        return "time.expired"
    return None
