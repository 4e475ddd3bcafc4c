"""Bytes and JSON formats for keys and ciphertext vectors (no pickle).

Binary message: ``b"SPL2"``, one kind byte, then fields in network byte order.

* public key: u16 len + n (big-endian).
* key reference in a vector message: flag byte 1 + public key (the key once per
  message, never per value), or flag 0 + 32-byte SHA-256 fingerprint of n (the receiver
  supplies the key it expects).
* EncryptedVector: key ref, i16 exponent, u32 length, ciphertexts.
* PackedEncryptedVector: key ref, f64 clip, u8 precision bits, u32 max summands,
  u32 length, ciphertexts.
* ciphertexts: fixed width (bytes of n^2) big-endian, concatenated.
* private key: public key, p, q, and the prime factors of p - 1 and q - 1 (count 0 when
  unknown). Keep private-key bytes secret.

JSON mirrors the same fields (integers as hex strings, ciphertexts as one base64 blob);
unknown or missing fields are refused.

No correctness counter travels on the wire (format 2; format 1 carried a ``bound`` and
a ``summands`` count that loaders trusted). A loaded vector counts as the most a fresh
upload under its parameters may hold: ``bound = max_int`` for an EncryptedVector,
``summands = layout.max_summands`` for a packed one, so it decrypts but cannot be
added to. A receiver that knows better, e.g. a server that fixed each client's clip
and weight, states it with ``bound=`` / ``summands=``; it then counts what it adds
itself. Packed ciphertexts also carry their true summand count inside the plaintext
(:mod:`.packing`), so a wrong statement is caught at decryption, never decoded.

Every loader checks lengths, trailing data, parameter ranges, the key size (see
:class:`~.keys.PublicKey`; ``allow_insecure_small_key`` is the test-only opt-in) and
that every ciphertext lies in Z*_{n^2}; violations raise :class:`MalformedMessageError`
(:class:`InsecureParameterError` for a small key).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct

import gmpy2
from gmpy2 import mpz

from ..errors import InsecureParameterError, KeyMismatchError, MalformedMessageError, SecaggError
from ..wire import Reader
from .keys import PrivateKey, PublicKey
from .packing import PackingLayout
from .vector import EncryptedVector, PackedEncryptedVector

MAGIC = b"SPL2"
FORMAT = "secagg.paillier/2"
KIND_PUBLIC, KIND_PRIVATE, KIND_VECTOR, KIND_PACKED = 1, 2, 3, 4
_KIND_NAMES = {KIND_PUBLIC: "PublicKey", KIND_PRIVATE: "PrivateKey",
               KIND_VECTOR: "EncryptedVector", KIND_PACKED: "PackedEncryptedVector"}


def _big(x: int) -> bytes:
    raw = int(x).to_bytes((int(x).bit_length() + 7) // 8, "big")
    if len(raw) > 0xFFFF:
        raise MalformedMessageError("integer too large for the format")
    return struct.pack(">H", len(raw)) + raw


def _header(data: Reader, expected: tuple[int, ...]) -> int:
    if data.take(4, "magic") != MAGIC:
        raise MalformedMessageError("not a secagg.paillier message (bad magic)")
    kind = data.u8("kind")
    if kind not in expected:
        raise MalformedMessageError(
            f"expected {[_KIND_NAMES[k] for k in expected]}, got kind {_KIND_NAMES.get(kind, kind)}"
        )
    return kind


def _guard(fn):
    """Turn any failure while parsing untrusted data into MalformedMessageError."""

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SecaggError as exc:
            if isinstance(exc, MalformedMessageError | KeyMismatchError | InsecureParameterError):
                raise
            raise MalformedMessageError(f"invalid message: {exc}") from exc
        except (ValueError, TypeError, KeyError, struct.error, binascii.Error, OverflowError) as exc:
            raise MalformedMessageError(f"invalid message: {exc!r}") from exc

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


# ---- keys ---------------------------------------------------------------------------

def public_key_to_bytes(pk: PublicKey) -> bytes:
    return MAGIC + bytes([KIND_PUBLIC]) + _big(pk.n)


@_guard
def public_key_from_bytes(data: bytes, *, allow_insecure_small_key: bool = False) -> PublicKey:
    r = Reader(data, "PublicKey")
    _header(r, (KIND_PUBLIC,))
    pk = PublicKey(mpz(r.big("n")), allow_insecure_small_key=allow_insecure_small_key)
    r.done()
    return pk


def private_key_to_bytes(sk: PrivateKey) -> bytes:
    out = [MAGIC, bytes([KIND_PRIVATE]), _big(sk.public_key.n), _big(sk.p), _big(sk.q)]
    for factors in (sk.p_factors, sk.q_factors):
        fs = factors or ()
        out.append(struct.pack(">H", len(fs)))
        out.extend(_big(f) for f in fs)
    return b"".join(out)


@_guard
def private_key_from_bytes(data: bytes, *, allow_insecure_small_key: bool = False) -> PrivateKey:
    r = Reader(data, "PrivateKey")
    _header(r, (KIND_PRIVATE,))
    pk = PublicKey(mpz(r.big("n")), allow_insecure_small_key=allow_insecure_small_key)
    p, q = mpz(r.big("p")), mpz(r.big("q"))
    factor_lists = []
    for _ in range(2):
        count = r.u16("factor count")
        factor_lists.append(tuple(r.big("factor") for _ in range(count)) or None)
    r.done()
    return PrivateKey(pk, p, q, factor_lists[0], factor_lists[1])


def public_key_to_json(pk: PublicKey) -> str:
    return json.dumps({"format": FORMAT, "kind": "PublicKey", "n": _hex(pk.n)})


@_guard
def public_key_from_json(text: str, *, allow_insecure_small_key: bool = False) -> PublicKey:
    d = _load_json(text, "PublicKey", ("n",))
    return PublicKey(_unhex(d["n"]), allow_insecure_small_key=allow_insecure_small_key)


def private_key_to_json(sk: PrivateKey) -> str:
    return json.dumps({
        "format": FORMAT, "kind": "PrivateKey", "n": _hex(sk.public_key.n),
        "p": _hex(sk.p), "q": _hex(sk.q),
        "p_factors": [_hex(f) for f in sk.p_factors] if sk.p_factors else None,
        "q_factors": [_hex(f) for f in sk.q_factors] if sk.q_factors else None,
    })


@_guard
def private_key_from_json(text: str, *, allow_insecure_small_key: bool = False) -> PrivateKey:
    d = _load_json(text, "PrivateKey", ("n", "p", "q", "p_factors", "q_factors"))
    pk = PublicKey(_unhex(d["n"]), allow_insecure_small_key=allow_insecure_small_key)
    pf = tuple(int(_unhex(f)) for f in d["p_factors"]) if d["p_factors"] else None
    qf = tuple(int(_unhex(f)) for f in d["q_factors"]) if d["q_factors"] else None
    return PrivateKey(pk, _unhex(d["p"]), _unhex(d["q"]), pf, qf)


# ---- ciphertext vectors ----------------------------------------------------------------

def ciphertexts_to_bytes(pk: PublicKey, cts: list[mpz]) -> bytes:
    width = pk.ciphertext_bytes
    return b"".join(int(c).to_bytes(width, "big") for c in cts)


def ciphertexts_from_bytes(pk: PublicKey, raw: bytes, count: int, *, check_group: bool = True) -> list[mpz]:
    """Parse ``count`` fixed-width ciphertexts, check 0 < c < n^2 and (by default) c in Z*_{n^2}."""
    width = pk.ciphertext_bytes
    if len(raw) != width * count:
        raise MalformedMessageError(f"expected {count} ciphertexts of {width} bytes, got {len(raw)} bytes")
    n2 = pk.nsquare
    cts = [mpz(int.from_bytes(raw[i:i + width], "big")) for i in range(0, len(raw), width)]
    for c in cts:
        if not 0 < c < n2:
            raise MalformedMessageError("ciphertext out of range [1, n^2)")
    if check_group:
        check_group_membership(pk, cts)
    return cts


def check_group_membership(pk: PublicKey, cts: list[mpz]) -> None:
    """Raise unless every c is coprime to n, with one gcd for the whole list.

    gcd(prod c mod n, n) = 1 iff every c is coprime to n (p or q divides the product
    iff it divides a factor). A homomorphic sum inherits any bad factor, so a server
    may also check only the aggregate.
    """
    n = pk.n
    acc = mpz(1)
    for c in cts:
        acc = acc * c % n
    if gmpy2.gcd(acc, n) != 1:
        raise MalformedMessageError("a ciphertext is not in Z*_{n^2} (shares a factor with n)")


def _key_ref(pk: PublicKey, include_key: bool) -> bytes:
    if include_key:
        return b"\x01" + _big(pk.n)
    return b"\x00" + pk.fingerprint


def _read_key_ref(r: Reader, expected: PublicKey | None, allow_insecure_small_key: bool) -> PublicKey:
    flag = r.u8("key flag")
    if flag == 1:
        return _message_key(mpz(r.big("n")), expected, allow_insecure_small_key)
    if flag == 0:
        fp = r.take(32, "key fingerprint")
        if expected is None:
            raise MalformedMessageError("message names its key by fingerprint: pass public_key=")
        if fp != expected.fingerprint:
            raise KeyMismatchError("message was encrypted under a different key")
        return expected
    raise MalformedMessageError(f"bad key flag {flag}")


def _message_key(n: mpz, expected: PublicKey | None, allow_insecure_small_key: bool) -> PublicKey:
    """The key a message names in full: ``expected`` if given (must match), else n checked."""
    if expected is not None:
        if n != expected.n:
            raise KeyMismatchError("message was encrypted under a different key")
        return expected
    return PublicKey(n, allow_insecure_small_key=allow_insecure_small_key)


def vector_to_bytes(v: EncryptedVector | PackedEncryptedVector, *, include_key: bool = True) -> bytes:
    pk = v.public_key
    if isinstance(v, EncryptedVector):
        head = bytes([KIND_VECTOR]) + _key_ref(pk, include_key)
        head += struct.pack(">hI", v.exponent, len(v))
    else:
        lay = v.layout
        head = bytes([KIND_PACKED]) + _key_ref(pk, include_key)
        head += struct.pack(">dBII", lay.clip, lay.precision_bits, lay.max_summands, v.length)
    return MAGIC + head + ciphertexts_to_bytes(pk, v.ciphertexts)


@_guard
def vector_from_bytes(
    data: bytes,
    public_key: PublicKey | None = None,
    *,
    check_group: bool = True,
    bound: int | None = None,
    summands: int | None = None,
    allow_insecure_small_key: bool = False,
):
    """Load an EncryptedVector or PackedEncryptedVector; ``public_key`` is checked if given.

    ``bound`` (EncryptedVector) and ``summands`` (packed) are what the *receiver* vouches
    the message holds; by default the most a fresh upload may hold (module docstring).
    ``check_group=False`` skips the Z*_{n^2} membership test (range is still checked);
    the caller must then run :func:`check_group_membership` on the result or its sum.
    """
    r = Reader(data, "ciphertext vector")
    kind = _header(r, (KIND_VECTOR, KIND_PACKED))
    pk = _read_key_ref(r, public_key, allow_insecure_small_key)
    if kind == KIND_VECTOR:
        exponent, length = r.unpack(">hI", "exponent, length")
        cts = ciphertexts_from_bytes(pk, r.rest(), length, check_group=check_group)
        return _vector(pk, cts, exponent, bound, summands)
    clip, bits, max_summands, length = r.unpack(">dBII", "layout, length")
    layout = PackingLayout(clip, bits, max_summands, pk.bits)
    cts = ciphertexts_from_bytes(pk, r.rest(), layout.ciphertexts_for(length), check_group=check_group)
    return _packed(pk, cts, layout, length, bound, summands)


def _vector(pk, cts, exponent, bound, summands) -> EncryptedVector:
    if summands is not None:
        raise MalformedMessageError("summands= applies to packed vectors; this is an EncryptedVector")
    return EncryptedVector(pk, cts, exponent, int(pk.max_int) if bound is None else bound)


def _packed(pk, cts, layout, length, bound, summands) -> PackedEncryptedVector:
    if bound is not None:
        raise MalformedMessageError("bound= applies to EncryptedVector; this is a packed vector")
    count = layout.max_summands if summands is None else summands
    return PackedEncryptedVector(pk, cts, layout, length, count)


def vector_to_json(v: EncryptedVector | PackedEncryptedVector) -> str:
    pk = v.public_key
    d = {"format": FORMAT, "public_key": {"n": _hex(pk.n)}}
    if isinstance(v, EncryptedVector):
        d.update(kind="EncryptedVector", exponent=v.exponent, length=len(v))
    else:
        lay = v.layout
        d.update(kind="PackedEncryptedVector", length=v.length,
                 layout={"clip": lay.clip, "precision_bits": lay.precision_bits,
                         "max_summands": lay.max_summands})
    d["ciphertexts"] = base64.b64encode(ciphertexts_to_bytes(pk, v.ciphertexts)).decode("ascii")
    return json.dumps(d)


_VECTOR_FIELDS = {
    "EncryptedVector": ("public_key", "exponent", "length", "ciphertexts"),
    "PackedEncryptedVector": ("public_key", "layout", "length", "ciphertexts"),
}


@_guard
def vector_from_json(
    text: str,
    public_key: PublicKey | None = None,
    *,
    bound: int | None = None,
    summands: int | None = None,
    allow_insecure_small_key: bool = False,
):
    """JSON twin of :func:`vector_from_bytes` (same checks, same receiver-side counts)."""
    d = _load_json(text, tuple(_VECTOR_FIELDS), fields=_VECTOR_FIELDS)
    _fields(d["public_key"], ("n",), "public_key")
    pk = _message_key(_unhex(d["public_key"]["n"]), public_key, allow_insecure_small_key)
    raw = base64.b64decode(d["ciphertexts"], validate=True)
    length = _count(d["length"], "length")
    if d["kind"] == "EncryptedVector":
        cts = ciphertexts_from_bytes(pk, raw, length)
        return _vector(pk, cts, _int(d["exponent"]), bound, summands)
    lay = _fields(d["layout"], ("clip", "precision_bits", "max_summands"), "layout")
    if isinstance(lay["clip"], bool) or not isinstance(lay["clip"], int | float):
        raise MalformedMessageError(f"layout clip must be a number, got {lay['clip']!r}")
    layout = PackingLayout(float(lay["clip"]), _count(lay["precision_bits"], "precision_bits"),
                           _count(lay["max_summands"], "max_summands"), pk.bits)
    cts = ciphertexts_from_bytes(pk, raw, layout.ciphertexts_for(length))
    return _packed(pk, cts, layout, length, bound, summands)


def _hex(x: int) -> str:
    return format(int(x), "x")


def _unhex(s) -> mpz:
    if not isinstance(s, str):
        raise MalformedMessageError("expected a hex string")
    return mpz(int(s, 16))


def _int(x) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < -(2**15) or x >= 2**15:
        raise MalformedMessageError(f"expected a 16-bit signed integer, got {x!r}")
    return x


def _count(x, what: str) -> int:
    """A non-negative 32-bit integer field (as the binary format's u32)."""
    if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < 2**32:
        raise MalformedMessageError(f"{what} must be an integer in [0, 2^32), got {x!r}")
    return x


def _fields(d, names: tuple[str, ...], what: str) -> dict:
    """``d`` as a JSON object with exactly the fields ``names``."""
    if not isinstance(d, dict) or set(d) != set(names):
        got = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise MalformedMessageError(f"{what} must have exactly the fields {sorted(names)}, got {got}")
    return d


def _load_json(text: str, kinds, fields=None) -> dict:
    """A ``FORMAT`` object of one of ``kinds`` with exactly its fields (plus format, kind)."""
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise MalformedMessageError(f"not valid JSON: {exc}") from None
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("kind") not in kinds:
        raise MalformedMessageError(f"expected a {FORMAT} {'/'.join(kinds)} object")
    if fields is not None:
        names = fields if isinstance(fields, tuple) else fields[d["kind"]]
        _fields(d, ("format", "kind", *names), d["kind"])
    return d
