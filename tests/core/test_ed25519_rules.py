"""Ed25519 verification rules (docs/protocol.md 2.2), pinned with constructed vectors.

``keys.verify`` calls libsodium's ``crypto_sign_open`` (through PyNaCl). Which signatures
that accepts is a choice among several published rule sets, and a libsodium upgrade could
change it silently; these vectors pin it. Each vector is built here from a fixed seed, in the
manner of Wycheproof's EdDSA tests: a valid signature, S + L, small-order R, small-order and
mixed-order public keys, non-canonical encodings of A and R, a mixed-order R, a wrong
message. For each one the test states the verdict under three rule sets and checks it twice:
against an independent model of each rule set written here in plain integer arithmetic, and,
for the rules i24net runs, against ``keys.verify`` itself.

- ``libsodium``: libsodium 1.0.20 as bundled with PyNaCl 1.6 (built without
  ``ED25519_COMPAT``): S < L; A's y coordinate < p; neither A nor R is one of the encodings of
  the 8 small-order points (canonical or not, either sign bit); the **cofactorless** equation
  compared on bytes: encode([S]B - [k]A) == R, which also makes a non-canonical R fail.
- ``rfc8032``: RFC 8032 section 5.1.7: S < L, A and R decoded strictly (5.1.3: y < p, no
  x = 0 with the sign bit set), small orders allowed, the **cofactored** equation
  [8][S]B = [8]R + [8][k]A (the cofactorless one is permitted as an alternative).
- ``zip215``: ZIP 215 (Zcash): S < L; A and R may be non-canonical (y reduced mod p, the sign
  bit of x = 0 ignored); small orders allowed; the cofactored equation.

The directory refuses, when issued and when loaded, every signing key that is not a
canonical point of the prime-order subgroup (``keys.check_public_keys``, 3.3 step 3a): that
is what removes the one case in which libsodium accepts what a careful verifier might not,
a mixed-order public key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache

import nacl.bindings as sodium
import pytest

from i24net.core import keys as k
from i24net.core.errors import CryptoError, WireFormatError

# -- curve arithmetic, independent of libsodium ------------------------------------------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
Point = tuple[int, int]  # affine (x, y)
IDENTITY: Point = (0, 1)  # the identity


def _inv(x: int) -> int:
    return pow(x, P - 2, P)


def add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * _inv(1 + t) % P, (y1 * y2 + x1 * x2) * _inv(1 - t) % P)


def neg(a: Point) -> Point:
    return (-a[0] % P, a[1])


def mul(n: int, a: Point) -> Point:
    out = IDENTITY
    while n:
        if n & 1:
            out = add(out, a)
        a, n = add(a, a), n >> 1
    return out


def _x_of(y: int, sign: int) -> int | None:
    """The x with this sign for y, or None when y is not on the curve (x = 0 keeps sign 0)."""
    x2 = (y * y - 1) * _inv(D * y * y + 1) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    return P - x if x and (x & 1) != sign else x


def decode(b: bytes, *, strict: bool) -> Point | None:
    """RFC 8032 5.1.3 decoding (``strict``), or ZIP 215's (y may be >= p, x = 0 with the sign
    bit set is accepted)."""
    n = int.from_bytes(b, "little")
    y, sign = n & ((1 << 255) - 1), n >> 255
    if y >= P:
        if strict:
            return None
        y -= P
    x = _x_of(y, sign)
    if x is None or (strict and x == 0 and sign):
        return None
    return (x, y)


def encode(a: Point) -> bytes:
    return (a[1] | (a[0] & 1) << 255).to_bytes(32, "little")


B: Point = (_x_of(4 * _inv(5) % P, 0) or 0, 4 * _inv(5) % P)


def small_order(b: bytes) -> bool:
    """Whether the bytes decode (leniently) to one of the 8 points of order dividing 8."""
    pt = decode(b, strict=False)
    return pt is not None and mul(8, pt) == IDENTITY


def challenge(r: bytes, a: bytes, m: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r + a + m).digest(), "little") % L


# -- the three rule sets -----------------------------------------------------------------------

def accepts(rules: str, pk: bytes, m: bytes, sig: bytes) -> bool:
    r, s = sig[:32], int.from_bytes(sig[32:], "little")
    if s >= L:
        return False
    kk = challenge(r, pk, m)
    if rules == "libsodium":
        # sc25519_is_canonical(S) above; ge25519_has_small_order(R) and (A), a blocklist of
        # the small-order encodings with the sign bit masked; ge25519_is_canonical(A), which
        # checks y < p only; then A must decode (x = 0 with the sign bit set only occurs for
        # small-order points, already refused) and the bytes of [S]B - [k]A must be R's.
        if small_order(r) or small_order(pk) or int.from_bytes(pk, "little") % 2**255 >= P:
            return False
        a = decode(pk, strict=False)
        return a is not None and encode(add(mul(s, B), neg(mul(kk, a)))) == r
    strict = rules == "rfc8032"
    a, rp = decode(pk, strict=strict), decode(r, strict=strict)
    if a is None or rp is None:
        return False
    return mul(8, add(mul(s, B), neg(add(rp, mul(kk, a))))) == IDENTITY  # cofactored


# -- the vectors -------------------------------------------------------------------------------

DOMAIN = k.DOMAIN_ENVELOPE
SEED = hashlib.sha256(b"i24net ed25519 rules").digest()
NONCE = int.from_bytes(hashlib.sha512(b"i24net ed25519 nonce").digest(), "little") % L


@dataclass(frozen=True)
class Vector:
    name: str
    comment: str
    pk: bytes
    message: bytes  # what keys.verify gets after the domain
    sig: bytes
    libsodium: bool
    rfc8032: bool
    zip215: bool

    @property
    def signed(self) -> bytes:
        return DOMAIN + self.message


def _scalar(sd: bytes) -> int:
    h = bytearray(hashlib.sha512(sd).digest()[:32])
    h[0] &= 248
    h[31] = (h[31] & 127) | 64
    return int.from_bytes(h, "little")


def _sig(r_bytes: bytes, s: int) -> bytes:
    return r_bytes + (s % L).to_bytes(32, "little")


def _signature(nonce: int, r_point: Point, pk: bytes, a: int, m: bytes) -> bytes:
    """S = nonce + k * a over R = ``r_point`` (which need not be [nonce]B)."""
    rb = encode(r_point)
    return _sig(rb, nonce + challenge(rb, pk, DOMAIN + m) * a)


def _first(cond: object, make: object, tries: int = 256) -> tuple[bytes, bytes]:
    """The first message ``m-<i>`` whose vector ``make(m)`` satisfies ``cond``."""
    for i in range(tries):
        m = b"m-%d" % i
        sig = make(m)  # type: ignore[operator]
        if cond(m, sig):  # type: ignore[operator]
            return m, sig
    raise AssertionError("no message found")


@cache
def torsion() -> tuple[Point, ...]:
    """T8, a point of order 8; the 8 small-order points are its multiples."""
    some = decode((3).to_bytes(32, "little"), strict=True)  # y = 3 is on the curve
    assert some is not None
    t8 = mul(L, some)  # kills the prime-order part
    assert mul(4, t8) != IDENTITY and mul(8, t8) == IDENTITY
    return tuple(mul(i, t8) for i in range(8))


@cache
def vectors() -> tuple[Vector, ...]:
    a = _scalar(SEED)
    pk = encode(mul(a, B))
    t = torsion()
    t8 = t[1]
    msg = b"the message"
    r_point = mul(NONCE, B)
    valid = _signature(NONCE, r_point, pk, a, msg)
    s_valid = int.from_bytes(valid[32:], "little")
    out = [
        Vector("valid", "an RFC 8032 signature by the key's owner", pk, msg, valid,
               True, True, True),
        Vector("wrong-message", "a valid signature, over another message", pk, msg + b".",
               valid, False, False, False),
        Vector("s-plus-l", "S + L in place of S: the same equation, a second encoding",
               pk, msg, valid[:32] + (s_valid + L).to_bytes(32, "little"),
               False, False, False),
        Vector("s-top-bit", "S with bit 255 set", pk, msg,
               valid[:32] + (s_valid | 1 << 255).to_bytes(32, "little"),
               False, False, False),
        Vector("flipped-r", "R with one bit flipped", pk, msg,
               bytes([valid[0] ^ 1]) + valid[1:], False, False, False),
    ]
    # small-order R: S = k * a, so [S]B - [k]A is the identity
    ident = encode(IDENTITY)
    out.append(Vector("small-order-r-identity", "R = the identity (order 1), S = k*a: even "
                      "the cofactorless equation holds", pk, msg, _signature(0, IDENTITY, pk, a, msg),
                      False, True, True))
    out.append(Vector("small-order-r-order-8", "R = T8 (order 8), S = k*a: only the "
                      "cofactored equation holds", pk, msg, _signature(0, t8, pk, a, msg),
                      False, True, True))
    # mixed-order R = [r]B + T8 with an honest S: cofactored holds, cofactorless cannot
    out.append(Vector("mixed-order-r", "R = [r]B + T8, S = r + k*a (prime-order A)", pk, msg,
                      _signature(NONCE, add(r_point, t8), pk, a, msg), False, True, True))
    # small-order public keys: R = [r]B, S = r
    rs = _sig(encode(r_point), NONCE)
    out.append(Vector("small-order-a-identity", "A = the identity, R = [r]B, S = r: verifies "
                      "for every message", ident, msg, rs, False, True, True))
    out.append(Vector("small-order-a-order-2", "A = (0, -1) (order 2), k even: even the "
                      "cofactorless equation holds", encode(t[4]),
                      *_first(lambda m, s: challenge(s[:32], encode(t[4]), DOMAIN + m) % 2
                              == 0, lambda m: rs), False, True, True))
    out.append(Vector("small-order-a-order-8", "A = T8 (order 8)", encode(t8), msg, rs,
                      False, True, True))
    # non-canonical encodings (every encoding that decodes is of a small-order point or of
    # a point nobody knows the discrete log of, so these are the identity)
    nc_ident = (P + 1).to_bytes(32, "little")  # y = p + 1
    nc_signed_ident = (1 | 1 << 255).to_bytes(32, "little")  # x = 0 with the sign bit set
    out.append(Vector("non-canonical-a-y", "A = the identity encoded with y = p + 1", nc_ident,
                      msg, rs, False, False, True))
    out.append(Vector("non-canonical-a-sign", "A = the identity with the sign bit set",
                      nc_signed_ident, msg, rs, False, False, True))
    for name, rb in (("non-canonical-r-y", nc_ident), ("non-canonical-r-sign",
                                                      nc_signed_ident)):
        out.append(Vector(name, f"R = the identity encoded as {rb.hex()[:4]}..{rb.hex()[-2:]},"
                          " S = k*a", pk, msg, _sig(rb, challenge(rb, pk, DOMAIN + msg) * a),
                          False, False, True))
    # mixed-order public key A' = A + T8 (not small order, not in the prime-order subgroup)
    mixed = encode(add(mul(a, B), t8))

    def honest(m: bytes) -> bytes:
        return _signature(NONCE, r_point, mixed, a, m)

    def k_mod8(m: bytes, s: bytes) -> int:
        return challenge(s[:32], mixed, DOMAIN + m) % 8

    out.append(Vector("mixed-order-a-k-0-mod-8", "A + T8 signing honestly, k = 0 mod 8: "
                      "[k]T8 vanishes, so the cofactorless equation holds", mixed,
                      *_first(lambda m, s: k_mod8(m, s) == 0, honest), True, True, True))
    out.append(Vector("mixed-order-a-k-nonzero-mod-8", "A + T8 signing honestly, k != 0 mod "
                      "8: separates cofactored from cofactorless", mixed,
                      *_first(lambda m, s: k_mod8(m, s) != 0, honest), False, True, True))

    def both_mixed(m: bytes) -> bytes:
        """R = [r]B + [j]T8 with j = -k mod 8, so that [S]B - [k]A' = R exactly."""
        for j in range(1, 8):
            sig = _signature(NONCE, add(r_point, t[j]), mixed, a, m)
            if -challenge(sig[:32], mixed, DOMAIN + m) % 8 == j:
                return sig
        return b""

    out.append(Vector("mixed-order-a-and-r", "A + T8 and R = [r]B + [j]T8 with j = -k mod 8: "
                      "the cofactorless equation holds on mixed-order points", mixed,
                      *_first(lambda m, s: bool(s), both_mixed), True, True, True))
    return tuple(out)


def _ids() -> list[str]:
    return [v.name for v in vectors()]


def _by_name(name: str) -> Vector:
    return next(v for v in vectors() if v.name == name)


# -- tests -------------------------------------------------------------------------------------

def test_the_model_curve_agrees_with_libsodium() -> None:
    """The arithmetic above is the curve libsodium uses: same public key, same signature,
    same point addition."""
    a = _scalar(SEED)
    pk, _sk = sodium.crypto_sign_seed_keypair(SEED)
    assert encode(mul(a, B)) == pk
    prefix = hashlib.sha512(SEED).digest()[32:]
    r = int.from_bytes(hashlib.sha512(prefix + DOMAIN + b"x").digest(), "little") % L
    assert _signature(r, mul(r, B), pk, a, b"x") == k.sign(SEED, DOMAIN, b"x")
    t8 = encode(torsion()[1])
    assert sodium.crypto_core_ed25519_add(pk, t8) == encode(add(mul(a, B), torsion()[1]))
    small = {encode(p) for p in torsion()}
    assert len(small) == 8 and all(small_order(e) for e in small)


@pytest.mark.parametrize("name", _ids())
def test_vector_meets_its_description_under_each_rule_set(name: str) -> None:
    v = _by_name(name)
    got = {rules: accepts(rules, v.pk, v.signed, v.sig)
           for rules in ("libsodium", "rfc8032", "zip215")}
    assert got == {"libsodium": v.libsodium, "rfc8032": v.rfc8032, "zip215": v.zip215}, \
        v.comment


@pytest.mark.parametrize("name", _ids())
def test_keys_verify_follows_the_libsodium_rules(name: str) -> None:
    """The exact accept/refuse of ``keys.verify``: a change here is a change of libsodium's
    rules, to be reflected in docs/protocol.md 2.2."""
    v = _by_name(name)
    if v.libsodium:
        k.verify(v.pk, DOMAIN, v.message, v.sig, what="vector")
    else:
        with pytest.raises(CryptoError) as info:
            k.verify(v.pk, DOMAIN, v.message, v.sig, what="vector")
        assert info.value.reason == "sig.invalid"


def test_libsodium_is_cofactorless_and_refuses_small_orders() -> None:
    """The rules that set libsodium apart, each shown by the vector that separates them."""
    refused_only_by_libsodium = {v.name for v in vectors()
                                 if not v.libsodium and v.rfc8032 and v.zip215}
    assert refused_only_by_libsodium == {
        "small-order-r-identity", "small-order-r-order-8", "mixed-order-r",
        "small-order-a-identity", "small-order-a-order-2", "small-order-a-order-8",
        "mixed-order-a-k-nonzero-mod-8"}
    accepted_only_by_zip215 = {v.name for v in vectors() if v.zip215 and not v.rfc8032}
    assert accepted_only_by_zip215 == {"non-canonical-a-y", "non-canonical-a-sign",
                                       "non-canonical-r-y", "non-canonical-r-sign"}


def test_the_directory_refuses_every_public_key_libsodium_would_misjudge() -> None:
    """Small-order, non-canonical and mixed-order signing keys never reach ``verify``:
    ``check_public_keys`` (directory issue and load) refuses them, including the mixed-order
    key under which libsodium accepts some signatures."""
    accepted_keys = {v.pk for v in vectors() if v.libsodium}
    honest = encode(mul(_scalar(SEED), B))
    k.check_public_keys(honest, None, who="vector")
    for pk in {v.pk for v in vectors()} - {honest}:
        with pytest.raises(CryptoError) as info:
            k.check_public_keys(pk, None, who="vector")
        assert info.value.reason == "key.low-order"
    assert accepted_keys - {honest} == {_by_name("mixed-order-a-and-r").pk}
    # a non-canonical encoding of a point that is on the curve and of large order
    large = (P + 3).to_bytes(32, "little")
    assert decode(large, strict=False) is not None and not small_order(large)
    with pytest.raises(CryptoError):
        k.check_public_keys(large, None, who="vector")


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_a_public_key_of_the_wrong_size_is_refused_before_libsodium(size: int) -> None:
    """libsodium reads exactly 32 bytes of the key: a shorter one must never reach it."""
    v = _by_name("valid")
    with pytest.raises(CryptoError) as info:
        k.verify((v.pk * 3)[:size], DOMAIN, v.message, v.sig, what="vector")
    assert info.value.reason == "sig.invalid"
    assert f"{size} bytes, not 32" in info.value.message


@pytest.mark.parametrize("size", [0, 63, 65, 128])
def test_a_signature_of_the_wrong_size_is_a_schema_error(size: int) -> None:
    v = _by_name("valid")
    with pytest.raises(WireFormatError) as info:
        k.verify(v.pk, DOMAIN, v.message, (v.sig * 2)[:size], what="vector")
    assert info.value.reason == "wire.schema"


def test_the_domain_is_part_of_the_signed_bytes() -> None:
    v = _by_name("valid")
    with pytest.raises(CryptoError):
        k.verify(v.pk, k.DOMAIN_RECEIPT, v.message, v.sig, what="vector")
    k.verify(v.pk, b"", v.signed, v.sig, what="vector")
