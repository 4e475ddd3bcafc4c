"""Paillier key pairs: generation, CRT precomputation, validation, phe conversion.

Scheme (Paillier 1999, with the standard choice g = n + 1): n = p q with p, q
distinct primes of the same size, so gcd(n, (p-1)(q-1)) = 1 and g^m = 1 + m n mod n^2.

Key generation draws candidates from the OS CSPRNG (:mod:`secrets`) and tests them with
gmpy2. Each prime is built as p = 2 r s + 1 with r a large random prime and s a small
random cofactor that we factor completely, so the full factorisation of p - 1 is known
to the key holder. That gives a verified primitive root g_p mod p, hence a generator
G_p = g_p^p mod p^2 of the order-(p-1) subgroup of Z*_{p^2} (reduction mod p maps that
subgroup isomorphically onto Z*_p). The private key holder uses it for exact, fast
CRT obfuscation (:mod:`.obfuscation`). p - 1 keeps a prime factor r of at least
|p| - 40 bits, so Pollard's p - 1 method does not apply; this is the same kind of
structured prime generation as "strong" or safe primes.

Key sizes: 2048-bit n by default, 3072 (or larger) allowed. Anything below 2048 bits
raises :class:`InsecureParameterError` unless ``allow_insecure_small_key=True`` is
passed: that flag exists for fast tests only. The check lives in :class:`PublicKey`
itself, so every way of obtaining a key (generation, the byte and JSON loaders, phe
conversion, worker processes) enforces it; below 256 bits nothing is accepted. A
modulus that is even, a perfect square or has a prime factor below 2^16 is refused
outright (it cannot be a product of two large distinct primes).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

import gmpy2
from gmpy2 import mpz

from ..errors import InsecureParameterError, InvalidInputError, KeyMismatchError

DEFAULT_KEY_BITS = 2048
MIN_SECURE_KEY_BITS = 2048
MIN_TEST_KEY_BITS = 256
_COFACTOR_BITS = 31
_TRIAL_PRIMES = [int(x) for x in range(3, 1 << 16, 2) if gmpy2.is_prime(x)]
_MR_ROUNDS = 40
#: product of the odd primes below 2^16: gcd(n, it) > 1 exposes a small factor of n
_SMALL_PRIMORIAL = gmpy2.mpz(1)
for _p in _TRIAL_PRIMES:
    _SMALL_PRIMORIAL *= _p
del _p


def check_key_bits(bits: int, allow_insecure_small_key: bool) -> int:
    """Validate a requested modulus size; small keys need the explicit opt-in."""
    if not isinstance(bits, int) or isinstance(bits, bool) or bits % 2:
        raise InvalidInputError(f"key bits must be an even integer, got {bits!r}")
    if bits < MIN_TEST_KEY_BITS:
        raise InsecureParameterError(f"key bits {bits} below the hard minimum {MIN_TEST_KEY_BITS}")
    if bits < MIN_SECURE_KEY_BITS and not allow_insecure_small_key:
        raise InsecureParameterError(
            f"a {bits}-bit Paillier modulus is insecure (minimum {MIN_SECURE_KEY_BITS}); "
            "pass allow_insecure_small_key=True only in tests"
        )
    return bits


@dataclass(frozen=True, eq=False)
class PublicKey:
    """Paillier public key (n, g = n + 1).

    Construction checks the size of n (>= 2048 bits unless ``allow_insecure_small_key``,
    never below 256) and refuses moduli that cannot be a product of two large primes
    (even, a perfect square, a prime factor below 2^16), with
    :class:`InsecureParameterError` or :class:`InvalidInputError`.
    """

    n: mpz
    #: test-only opt-in for moduli below 2048 bits (never read from a wire format)
    allow_insecure_small_key: bool = field(default=False, kw_only=True, repr=False)
    nsquare: mpz = field(init=False)
    bits: int = field(init=False)
    #: largest |m| the signed fixed-point codec accepts (phe's convention n // 3 - 1)
    max_int: mpz = field(init=False)
    #: SHA-256 of n, identifies the key in messages and errors
    fingerprint: bytes = field(init=False)

    def __post_init__(self) -> None:
        n = mpz(self.n)
        if n < 3 or n % 2 == 0:
            raise InvalidInputError("Paillier modulus n must be an odd integer > 2")
        bits = int(n.bit_length())
        check_key_bits(bits + bits % 2, bool(self.allow_insecure_small_key))
        if gmpy2.is_square(n) or gmpy2.gcd(n, _SMALL_PRIMORIAL) != 1:
            raise InvalidInputError(
                "Paillier modulus n is a perfect square or has a prime factor below 2^16: "
                "not a product of two large distinct primes"
            )
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "nsquare", n * n)
        object.__setattr__(self, "bits", int(n.bit_length()))
        object.__setattr__(self, "max_int", n // 3 - 1)
        object.__setattr__(self, "fingerprint", hashlib.sha256(self.n_bytes()).digest())

    @property
    def byte_length(self) -> int:
        """Bytes of n; ciphertexts take twice as many."""
        return (self.bits + 7) // 8

    @property
    def ciphertext_bytes(self) -> int:
        return (int(self.nsquare.bit_length()) + 7) // 8

    def n_bytes(self) -> bytes:
        return int(self.n).to_bytes((int(self.n.bit_length()) + 7) // 8, "big")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self.n == other.n

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.bits}, fingerprint={self.fingerprint[:6].hex()})"

    def require_same(self, other: PublicKey, what: str = "ciphertexts") -> None:
        """Raise KeyMismatchError unless ``other`` is this key."""
        if other != self:
            raise KeyMismatchError(
                f"{what} belong to different Paillier keys "
                f"({self.fingerprint[:6].hex()} vs {other.fingerprint[:6].hex()})"
            )

    def check_size(self, allow_insecure_small_key: bool = False) -> None:
        check_key_bits(self.bits + self.bits % 2, allow_insecure_small_key)

    # phe interoperability
    def to_phe(self):
        from phe import paillier

        return paillier.PaillierPublicKey(int(self.n))

    @classmethod
    def from_phe(cls, phe_key, *, allow_insecure_small_key: bool = False) -> PublicKey:
        if phe_key.g != phe_key.n + 1:
            raise InvalidInputError("only phe keys with g = n + 1 are supported")
        return cls(mpz(phe_key.n), allow_insecure_small_key=allow_insecure_small_key)


@dataclass(frozen=True, eq=False)
class PrivateKey:
    """Paillier private key with CRT precomputation (as phe >= 1.3, Paillier 1999 section 7).

    Decryption of c: m_p = L_p(c^(p-1) mod p^2) h_p mod p, m_q likewise, with
    L_p(x) = (x - 1) / p and h_p = L_p(g^(p-1) mod p^2)^(-1) mod p; m is the CRT
    combination of m_p and m_q. ``p_factors``/``q_factors`` are the prime factors of
    p - 1 and q - 1 when known (our own keys), which makes ``gen_p``/``gen_q``
    (generators of the order-(p-1), order-(q-1) subgroups mod p^2, q^2) available.
    """

    public_key: PublicKey
    p: mpz
    q: mpz
    p_factors: tuple[int, ...] | None = None
    q_factors: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        p, q = mpz(self.p), mpz(self.q)
        if p == q:
            raise InvalidInputError("p and q must be distinct")
        if p * q != self.public_key.n:
            raise KeyMismatchError("p * q does not equal the public modulus n")
        if p < q:  # canonical order, as phe
            p, q = q, p
            pf, qf = self.q_factors, self.p_factors
            object.__setattr__(self, "p_factors", pf)
            object.__setattr__(self, "q_factors", qf)
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "q", q)
        if not (gmpy2.is_prime(p, _MR_ROUNDS) and gmpy2.is_prime(q, _MR_ROUNDS)):
            raise InvalidInputError("p and q must be prime")
        if gmpy2.gcd(self.public_key.n, (p - 1) * (q - 1)) != 1:
            raise InvalidInputError("gcd(n, (p-1)(q-1)) must be 1")
        psq, qsq = p * p, q * q
        g = self.public_key.n + 1
        object.__setattr__(self, "psquare", psq)
        object.__setattr__(self, "qsquare", qsq)
        object.__setattr__(self, "hp", _h_function(g, p, psq))
        object.__setattr__(self, "hq", _h_function(g, q, qsq))
        object.__setattr__(self, "q_inv_p", gmpy2.invert(q, p))
        object.__setattr__(self, "qsq_inv_psq", gmpy2.invert(qsq, psq))
        object.__setattr__(self, "gen_p", _subgroup_generator(p, psq, self.p_factors))
        object.__setattr__(self, "gen_q", _subgroup_generator(q, qsq, self.q_factors))

    def __repr__(self) -> str:
        return f"PrivateKey(bits={self.public_key.bits}, fingerprint={self.public_key.fingerprint[:6].hex()})"

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython / hypothesis: never print p, q
        printer.text(repr(self))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKey) and self.p == other.p and self.q == other.q

    def __hash__(self) -> int:
        return hash(self.public_key)

    @property
    def has_generators(self) -> bool:
        return self.gen_p is not None and self.gen_q is not None

    def crt_combine_nsquare(self, xp: mpz, xq: mpz) -> mpz:
        """The x mod n^2 with x = xp mod p^2 and x = xq mod q^2 (Garner)."""
        return xq + ((xp - xq) * self.qsq_inv_psq % self.psquare) * self.qsquare

    def crt_combine_n(self, mp: mpz, mq: mpz) -> mpz:
        return mq + ((mp - mq) * self.q_inv_p % self.p) * self.q

    def to_phe(self):
        from phe import paillier

        return paillier.PaillierPrivateKey(self.public_key.to_phe(), int(self.p), int(self.q))

    @classmethod
    def from_phe(cls, phe_key, *, allow_insecure_small_key: bool = False) -> PrivateKey:
        """Import a phe private key (p - 1 factorisation unknown: no fixed-base CRT path)."""
        pk = PublicKey.from_phe(phe_key.public_key, allow_insecure_small_key=allow_insecure_small_key)
        return cls(pk, mpz(phe_key.p), mpz(phe_key.q))


def _h_function(g: mpz, x: mpz, xsquare: mpz) -> mpz:
    """h_x = L_x(g^(x-1) mod x^2)^(-1) mod x."""
    return gmpy2.invert((gmpy2.powmod(g, x - 1, xsquare) - 1) // x, x)


def _subgroup_generator(p: mpz, psq: mpz, factors: tuple[int, ...] | None) -> mpz | None:
    """G_p = g^p mod p^2 for the least primitive root g mod p, or None without factors.

    The factor list is verified (all prime, product p - 1) before use, so a tampered
    serialized key cannot slip in a base of small order.
    """
    if factors is None:
        return None
    fs = [mpz(f) for f in factors]
    prod = mpz(1)
    for f in fs:
        prod *= f
    if prod != p - 1 or not all(gmpy2.is_prime(f, _MR_ROUNDS) for f in fs):
        raise InvalidInputError("the stated factorisation of p - 1 is wrong")
    distinct = sorted(set(fs))
    g = mpz(2)
    while any(gmpy2.powmod(g, (p - 1) // f, p) == 1 for f in distinct):
        g += 1
    return gmpy2.powmod(g, p, psq)


def _factor_small(s: int) -> list[int]:
    """Complete factorisation of s < 2^32 by trial division (remainder is prime)."""
    out = []
    while s % 2 == 0:
        out.append(2)
        s //= 2
    for f in _TRIAL_PRIMES:
        if f * f > s:
            break
        while s % f == 0:
            out.append(f)
            s //= f
    if s > 1:
        out.append(s)
    return out


def _random_prime(bits: int) -> tuple[mpz, tuple[int, ...]]:
    """A random prime p of exactly ``bits`` bits, top two bits set, with p - 1 factored.

    p = 2 r s + 1, r a random prime of bits - 31 bits (CSPRNG start, next_prime),
    s < 2^31 drawn uniformly from the range that puts p in [3 * 2^(bits-2), 2^bits).
    """
    r_bits = bits - _COFACTOR_BITS
    while True:
        start = mpz(secrets.randbits(r_bits)) | (mpz(1) << (r_bits - 1))
        r = gmpy2.next_prime(start)
        if r.bit_length() != r_bits:
            continue
        lo = -(-(3 * (mpz(1) << (bits - 2)) - 1) // (2 * r))
        hi = ((mpz(1) << bits) - 2) // (2 * r)
        for _ in range(20 * bits):
            s = lo + secrets.randbelow(int(hi - lo + 1))
            p = 2 * r * s + 1
            if gmpy2.is_prime(p, _MR_ROUNDS):
                factors = (2, *_factor_small(int(s)), int(r))
                if gmpy2.is_prime(factors[-2], _MR_ROUNDS):
                    return p, tuple(sorted(factors))


def generate_keypair(
    bits: int = DEFAULT_KEY_BITS, *, allow_insecure_small_key: bool = False
) -> tuple[PublicKey, PrivateKey]:
    """Generate a Paillier key pair with an n of exactly ``bits`` bits.

    p and q are distinct primes of bits/2 bits each (top two bits set, so n has exactly
    ``bits`` bits), drawn from the OS CSPRNG. ``bits`` below 2048 needs
    ``allow_insecure_small_key=True`` (tests only).
    """
    check_key_bits(bits, allow_insecure_small_key)
    while True:
        p, pf = _random_prime(bits // 2)
        q, qf = _random_prime(bits // 2)
        n = p * q
        if p != q and n.bit_length() == bits and gmpy2.gcd(n, (p - 1) * (q - 1)) == 1:
            break
    pk = PublicKey(n, allow_insecure_small_key=allow_insecure_small_key)
    return pk, PrivateKey(pk, p, q, pf, qf)
