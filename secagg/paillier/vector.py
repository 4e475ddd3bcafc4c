"""Ciphertext arrays: :class:`EncryptedVector` (one value per ciphertext) and
:class:`PackedEncryptedVector` (BatchCrypt-style, many slots per ciphertext).

Both hold gmpy2 ``mpz`` ciphertexts of one public key and implement the Paillier
homomorphisms of :mod:`.scheme` element-wise (ciphertext product mod n^2 = plaintext
sum). Both track a public bound that makes overflow an error instead of a silent wrap:

* EncryptedVector: ``bound`` >= max |int_rep| of any element; operations whose bound
  would exceed max_int = n // 3 - 1 raise :class:`HeadroomExceededError`.
* PackedEncryptedVector: ``summands`` = how many summands the ciphertexts absorbed
  (scalar multiplication by k counts k); exceeding ``layout.max_summands`` raises.
  The true count also travels inside the ciphertexts (the layout's count slot) and is
  what decryption uses, so a wrong public counter is refused, never decoded.

Both counters are kept by the party holding the object: they count what it encrypted
or added itself. Nothing read from a message sets them (see :mod:`.serialization`).
"""

from __future__ import annotations

import math
import time

import gmpy2
import numpy as np
from gmpy2 import mpz

from ..errors import HeadroomExceededError, InvalidInputError, KeyMismatchError
from . import scheme
from .codec import BASE, FixedPointCodec
from .keys import PrivateKey, PublicKey
from .obfuscation import Obfuscator, default_obfuscator
from .packing import PackingLayout
from .parallel import check_workers, parallel_decrypt_timed, parallel_encrypt


def _public(key: PublicKey | PrivateKey) -> PublicKey:
    if isinstance(key, PrivateKey):
        return key.public_key
    if isinstance(key, PublicKey):
        return key
    raise InvalidInputError(f"expected a PublicKey or PrivateKey, got {type(key).__name__}")


def encrypt_integers(
    key: PublicKey | PrivateKey,
    plaintexts: list[int],
    *,
    obfuscator: Obfuscator | None = None,
    workers: int | None = None,
) -> list[mpz]:
    """Enc(m) = (1 + m n) R mod n^2 for plaintexts already reduced to [0, n)."""
    pk = _public(key)
    obf = obfuscator if obfuscator is not None else default_obfuscator(key)
    obf.public_key.require_same(pk, "obfuscator and key")
    w = check_workers(workers)
    if w > 1 and obf.name in ("crt", "djn") and len(plaintexts) >= 2 * w:
        return parallel_encrypt(obf, plaintexts, w)
    return scheme.encrypt_many(pk, plaintexts, obf.draw(len(plaintexts)))


def decrypt_integers(sk: PrivateKey, ciphertexts: list[mpz], *, workers: int | None = None) -> list[mpz]:
    return decrypt_integers_timed(sk, ciphertexts, workers=workers)[0]


def decrypt_integers_timed(
    sk: PrivateKey, ciphertexts: list[mpz], *, workers: int | None = None
) -> tuple[list[mpz], float]:
    """Plaintexts and the seconds one process spends decrypting them (with ``workers`` > 1
    the sum of the workers' chunk times, not the shorter wall time)."""
    w = check_workers(workers)
    if w > 1 and len(ciphertexts) >= 2 * w:
        return parallel_decrypt_timed(sk, ciphertexts, w)
    t0 = time.perf_counter()
    out = [scheme.decrypt(sk, c) for c in ciphertexts]
    return out, time.perf_counter() - t0


def product_mod(pk: PublicKey, columns: list[list[mpz]]) -> list[mpz]:
    """Element-wise product mod n^2 of equally long ciphertext lists (homomorphic sum)."""
    n2 = pk.nsquare
    acc = list(columns[0])
    for col in columns[1:]:
        acc = [a * c % n2 for a, c in zip(acc, col)]
    return acc


def _check_private(sk: PrivateKey, pk: PublicKey) -> None:
    if not isinstance(sk, PrivateKey):
        raise InvalidInputError(f"decryption needs a PrivateKey, got {type(sk).__name__}")
    pk.require_same(sk.public_key, "ciphertexts and private key")


def _check_scalar(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise InvalidInputError(f"ciphertexts multiply by integer scalars only, got {k!r}")
    return int(k)


class _Serializable:
    """Bytes and JSON round trips, shared by both vector kinds (see :mod:`.serialization`)."""

    def to_bytes(self, *, include_key: bool = True) -> bytes:
        from .serialization import vector_to_bytes

        return vector_to_bytes(self, include_key=include_key)

    def to_json(self) -> str:
        from .serialization import vector_to_json

        return vector_to_json(self)

    @staticmethod
    def from_bytes(data: bytes, public_key: PublicKey | None = None, **options):
        """:func:`.serialization.vector_from_bytes` (``bound=``, ``summands=``, ... as there)."""
        from .serialization import vector_from_bytes

        return vector_from_bytes(data, public_key, **options)

    @staticmethod
    def from_json(text: str, public_key: PublicKey | None = None, **options):
        """:func:`.serialization.vector_from_json` (``bound=``, ``summands=``, ... as there)."""
        from .serialization import vector_from_json

        return vector_from_json(text, public_key, **options)


class EncryptedVector(_Serializable):
    """Paillier ciphertexts of a float vector under one fixed-point codec (no per-value exponent)."""

    __slots__ = ("public_key", "ciphertexts", "exponent", "bound")

    def __init__(self, public_key: PublicKey, ciphertexts: list[mpz], exponent: int, bound: int) -> None:
        self.public_key = public_key
        self.ciphertexts = ciphertexts
        self.exponent = int(FixedPointCodec(exponent).exponent)  # checks [-64, 0]
        if isinstance(bound, bool) or not isinstance(bound, int | np.integer) or bound < 0:
            raise InvalidInputError(f"bound must be an integer >= 0, got {bound!r}")
        self.bound = int(bound)
        if self.bound > public_key.max_int:
            raise HeadroomExceededError(
                f"plaintext bound {self.bound} exceeds max_int = n // 3 - 1: the result could wrap"
            )

    @property
    def codec(self) -> FixedPointCodec:
        return FixedPointCodec(self.exponent)

    def __len__(self) -> int:
        return len(self.ciphertexts)

    def __repr__(self) -> str:
        return f"EncryptedVector(len={len(self)}, exponent={self.exponent}, key={self.public_key!r})"

    @classmethod
    def encrypt(
        cls,
        key: PublicKey | PrivateKey,
        values,
        *,
        codec: FixedPointCodec | None = None,
        obfuscator: Obfuscator | None = None,
        workers: int | None = None,
    ) -> EncryptedVector:
        """Encrypt a 1-D float array; a PrivateKey selects the exact CRT fast path."""
        pk = _public(key)
        codec = codec or FixedPointCodec()
        ints = codec.encode(values, int(pk.max_int))
        bound = max((abs(v) for v in ints), default=0)
        n = int(pk.n)
        cts = encrypt_integers(key, [v % n for v in ints], obfuscator=obfuscator, workers=workers)
        return cls(pk, cts, codec.exponent, bound)

    def decrypt(self, sk: PrivateKey, *, workers: int | None = None) -> np.ndarray:
        _check_private(sk, self.public_key)
        return self.decode_plaintexts(decrypt_integers(sk, self.ciphertexts, workers=workers))

    def decode_plaintexts(self, plaintexts: list) -> np.ndarray:
        """Floats from this vector's decrypted plaintexts (signed by max_int, then the codec)."""
        n, max_int = self.public_key.n, self.public_key.max_int
        signed = []
        for m in plaintexts:
            if m <= max_int:
                signed.append(int(m))
            elif m >= n - max_int:
                signed.append(int(m - n))
            else:
                raise HeadroomExceededError("decrypted value lies in the overflow band (n/3, 2n/3)")
        return self.codec.decode(signed)

    def _compatible(self, other: EncryptedVector) -> None:
        self.public_key.require_same(other.public_key)
        if len(other) != len(self):
            raise InvalidInputError(f"length mismatch: {len(self)} vs {len(other)}")
        if other.exponent != self.exponent:
            raise InvalidInputError(f"codec exponent mismatch: {self.exponent} vs {other.exponent}")

    def __add__(self, other) -> EncryptedVector:
        pk = self.public_key
        if isinstance(other, EncryptedVector):
            self._compatible(other)
            cts = product_mod(pk, [self.ciphertexts, other.ciphertexts])
            return EncryptedVector(pk, cts, self.exponent, self.bound + other.bound)
        if isinstance(other, PackedEncryptedVector):
            raise InvalidInputError("cannot add a packed vector to an unpacked one")
        try:
            plain = np.broadcast_to(np.asarray(other, dtype=np.float64), (len(self),))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"cannot add {type(other).__name__} to an encrypted vector: {exc}") from None
        ints = self.codec.encode(np.ascontiguousarray(plain), int(pk.max_int))
        bound = self.bound + max((abs(v) for v in ints), default=0)
        cts = [scheme.add_plain(pk, c, m) for c, m in zip(self.ciphertexts, ints)]
        return EncryptedVector(pk, cts, self.exponent, bound)

    __radd__ = __add__

    def __neg__(self) -> EncryptedVector:
        n2 = self.public_key.nsquare
        return EncryptedVector(
            self.public_key, [gmpy2.invert(c, n2) for c in self.ciphertexts], self.exponent, self.bound
        )

    def __sub__(self, other) -> EncryptedVector:
        if isinstance(other, EncryptedVector):
            return self + (-other)
        return self + (-np.asarray(other, dtype=np.float64))

    def __rsub__(self, other) -> EncryptedVector:
        return (-self) + other

    def __mul__(self, k) -> EncryptedVector:
        k = _check_scalar(k)
        pk = self.public_key
        bound = self.bound * abs(k)
        if bound > pk.max_int:
            raise HeadroomExceededError(f"multiplying by {k} could overflow the plaintext space")
        cts = [scheme.mul_scalar(pk, c, k) for c in self.ciphertexts]
        return EncryptedVector(pk, cts, self.exponent, bound)

    __rmul__ = __mul__

    @staticmethod
    def sum(vectors: list[EncryptedVector]) -> EncryptedVector:
        """Homomorphic sum of many vectors (one product per element)."""
        if not vectors:
            raise InvalidInputError("sum of no vectors")
        first = vectors[0]
        for v in vectors[1:]:
            first._compatible(v)
        bound = sum(v.bound for v in vectors)
        cts = product_mod(first.public_key, [v.ciphertexts for v in vectors])
        return EncryptedVector(first.public_key, cts, first.exponent, bound)

    def rerandomize(self, obfuscator: Obfuscator | None = None) -> EncryptedVector:
        pk = self.public_key
        obf = obfuscator if obfuscator is not None else default_obfuscator(pk)
        obf.public_key.require_same(pk, "obfuscator and ciphertexts")
        cts = product_mod(pk, [self.ciphertexts, obf.draw(len(self))])
        return EncryptedVector(pk, cts, self.exponent, self.bound)

    # phe interoperability
    def to_phe(self) -> list:
        """phe ``EncryptedNumber`` objects (same exponent), decryptable by phe."""
        from phe import paillier

        phe_pk = self.public_key.to_phe()
        return [paillier.EncryptedNumber(phe_pk, int(c), self.exponent) for c in self.ciphertexts]

    @classmethod
    def from_phe(
        cls, numbers: list, *, max_abs: float | None = None, allow_insecure_small_key: bool = False
    ) -> EncryptedVector:
        """Import phe ``EncryptedNumber`` objects of one key, refusing what would not decrypt.

        Our codec supports exponents in [-64, 0]: numbers outside are refused
        (:class:`InvalidInputError`). Numbers that share one exponent convert as they
        are; the bound is phe's max_int (phe gives no tighter public bound), so they
        decrypt but take no further additions. Different exponents need alignment to
        the smallest, which multiplies a plaintext by 16^k and could wrap mod n for a
        large one: it is done only when the caller states ``max_abs`` >= |every value|
        and max_abs * 16^(-exponent) fits max_int, and the bound is then that product.
        """
        if not numbers:
            raise InvalidInputError("no phe numbers given")
        pk = PublicKey.from_phe(numbers[0].public_key, allow_insecure_small_key=allow_insecure_small_key)
        exponents = sorted({x.exponent for x in numbers})
        if not (-64 <= exponents[0] and exponents[-1] <= 0):
            raise InvalidInputError(
                f"phe exponents {exponents[0]}..{exponents[-1]} lie outside [-64, 0], the range "
                "our fixed-point codec decodes; re-encode those values with a precision in range"
            )
        exponent = exponents[0]
        bound = int(pk.max_int)
        if max_abs is not None:
            if not (isinstance(max_abs, int | float) and math.isfinite(max_abs) and max_abs >= 0):
                raise InvalidInputError(f"max_abs must be a finite number >= 0, got {max_abs!r}")
            bound = math.floor(max_abs * BASE ** -exponent) + 1  # + 1: phe rounds to the grid
            if bound > pk.max_int:
                raise HeadroomExceededError(
                    f"values up to {max_abs} at exponent {exponent} exceed max_int = n // 3 - 1"
                )
        elif len(exponents) > 1:
            raise InvalidInputError(
                f"phe numbers have different exponents {exponents}: aligning them multiplies "
                "plaintexts by powers of 16, which may wrap mod n; pass max_abs= (a bound on "
                "|value|) to align safely, or convert numbers that share one exponent"
            )
        cts = []
        for x in numbers:
            if x.public_key != numbers[0].public_key:
                raise KeyMismatchError("phe numbers belong to different keys")
            aligned = x.decrease_exponent_to(exponent) if x.exponent != exponent else x
            cts.append(scheme.check_ciphertext(pk, aligned.ciphertext(be_secure=False)))
        return cls(pk, cts, exponent, bound)


class PackedEncryptedVector(_Serializable):
    """BatchCrypt-style packed ciphertexts: ``layout.slots`` quantized values per ciphertext."""

    __slots__ = ("public_key", "ciphertexts", "layout", "length", "summands", "clipped")

    def __init__(
        self, public_key: PublicKey, ciphertexts: list[mpz], layout: PackingLayout, length: int,
        summands: int, clipped: int = 0,
    ) -> None:
        if layout.key_bits != public_key.bits:
            raise KeyMismatchError(f"layout is for {layout.key_bits}-bit keys, key has {public_key.bits}")
        if len(ciphertexts) != layout.ciphertexts_for(length):
            raise InvalidInputError(
                f"{length} values need {layout.ciphertexts_for(length)} ciphertexts, got {len(ciphertexts)}"
            )
        if isinstance(summands, bool) or not isinstance(summands, int | np.integer):
            raise InvalidInputError(f"summands must be an integer, got {summands!r}")
        if not 1 <= summands <= layout.max_summands:
            raise HeadroomExceededError(
                f"ciphertexts would hold {summands} summands, above the declared headroom "
                f"max_summands={layout.max_summands}: a slot could overflow into its neighbour"
            )
        self.public_key = public_key
        self.ciphertexts = ciphertexts
        self.layout = layout
        self.length = int(length)
        self.summands = int(summands)
        #: values clipped to the layout's range when this vector was encrypted (client-side)
        self.clipped = int(clipped)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (
            f"PackedEncryptedVector(len={self.length}, ciphertexts={len(self.ciphertexts)}, "
            f"summands={self.summands}/{self.layout.max_summands})"
        )

    @classmethod
    def encrypt(
        cls,
        key: PublicKey | PrivateKey,
        values,
        layout: PackingLayout,
        *,
        summands: int = 1,
        obfuscator: Obfuscator | None = None,
        workers: int | None = None,
    ) -> PackedEncryptedVector:
        """Clip to |x| <= summands * clip, quantize, pack, encrypt one plaintext per ``layout.slots``.

        ``summands`` = c lets one upload stand for c unit summands (a client weight up to c).
        """
        pk = _public(key)
        if layout.key_bits != pk.bits:
            raise KeyMismatchError(f"layout is for {layout.key_bits}-bit keys, key has {pk.bits}")
        slots, clipped = layout.quantize(values, summands)
        length = int(np.shape(values)[0])
        cts = encrypt_integers(key, layout.pack(slots, summands), obfuscator=obfuscator, workers=workers)
        return cls(pk, cts, layout, length, summands, clipped)

    def decrypt_integers(self, sk: PrivateKey, *, workers: int | None = None) -> np.ndarray:
        """Exact per-slot sums of the quantized values (int64), decoded with the encrypted count.

        Raises :class:`HeadroomExceededError` when the count slots say the ciphertexts
        absorbed more than ``layout.max_summands`` summands (or disagree), or more than
        this object's own counter allows: a counter was wrong, the sum is not decoded.
        """
        _check_private(sk, self.public_key)
        plain = decrypt_integers(sk, self.ciphertexts, workers=workers)
        slots, counts = self.layout.unpack_counted(plain)
        true_count = self.layout.check_counts(counts)
        if true_count > self.summands:
            raise HeadroomExceededError(
                f"the ciphertexts absorbed {true_count} summands, more than the {self.summands} "
                "counted for them: a summand count was understated (e.g. by a forged message)"
            )
        return self.layout.slot_sums(slots, self.length, true_count or self.summands)

    def decrypt(self, sk: PrivateKey, *, workers: int | None = None) -> np.ndarray:
        """Sum of the encrypted float vectors, up to quantization error (<= summands * step)."""
        return self.layout.dequantize(self.decrypt_integers(sk, workers=workers))

    def _compatible(self, other: PackedEncryptedVector) -> None:
        if not isinstance(other, PackedEncryptedVector):
            raise InvalidInputError(f"cannot add {type(other).__name__} to a packed vector")
        self.public_key.require_same(other.public_key)
        if other.layout != self.layout:
            raise InvalidInputError("packed vectors use different layouts")
        if other.length != self.length:
            raise InvalidInputError(f"length mismatch: {self.length} vs {other.length}")

    def __add__(self, other: PackedEncryptedVector) -> PackedEncryptedVector:
        return PackedEncryptedVector.sum([self, other])

    def __mul__(self, k) -> PackedEncryptedVector:
        """Multiply every slot by a positive integer k (absorbs k times the summands)."""
        k = _check_scalar(k)
        if k < 1:
            raise InvalidInputError("packed (offset-binary) slots multiply by positive integers only")
        total = self.summands * k
        if total > self.layout.max_summands:
            raise HeadroomExceededError(
                f"multiplying by {k} gives {total} summands, above max_summands={self.layout.max_summands}"
            )
        n2 = self.public_key.nsquare
        cts = [gmpy2.powmod(c, k, n2) for c in self.ciphertexts]
        return PackedEncryptedVector(self.public_key, cts, self.layout, self.length, total)

    __rmul__ = __mul__

    @staticmethod
    def sum(vectors: list[PackedEncryptedVector]) -> PackedEncryptedVector:
        """Homomorphic sum; raises HeadroomExceededError beyond ``max_summands`` (checked first)."""
        if not vectors:
            raise InvalidInputError("sum of no vectors")
        first = vectors[0]
        for v in vectors[1:]:
            first._compatible(v)
        total = sum(v.summands for v in vectors)
        if total > first.layout.max_summands:
            raise HeadroomExceededError(
                f"sum would absorb {total} summands, above the declared headroom "
                f"max_summands={first.layout.max_summands}: a slot could overflow into its neighbour"
            )
        cts = product_mod(first.public_key, [v.ciphertexts for v in vectors])
        return PackedEncryptedVector(first.public_key, cts, first.layout, first.length, total)

    def rerandomize(self, obfuscator: Obfuscator | None = None) -> PackedEncryptedVector:
        pk = self.public_key
        obf = obfuscator if obfuscator is not None else default_obfuscator(pk)
        obf.public_key.require_same(pk, "obfuscator and ciphertexts")
        cts = product_mod(pk, [self.ciphertexts, obf.draw(len(self.ciphertexts))])
        return PackedEncryptedVector(pk, cts, self.layout, self.length, self.summands)


