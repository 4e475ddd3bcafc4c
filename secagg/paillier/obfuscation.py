"""Obfuscators R (the r^n mod n^2 factor of a Paillier ciphertext): the only costly part of encryption.

Three sources, all drawing randomness from :mod:`secrets` (OS CSPRNG):

* :class:`CRTObfuscator` (private-key holders, e.g. FedMF clients). For r uniform in
  Z*_n, r^n mod n^2 is uniform on H = H_p x H_q, where H_p is the order-(p-1) subgroup of
  Z*_{p^2} (r^n mod p^2 depends only on r mod p, and reduction mod p maps H_p onto Z*_p;
  n is coprime to p - 1). We sample H_p and H_q directly and CRT-combine, so the
  distribution is *exactly* that of textbook Paillier, no extra assumption:

  - with a generator G_p of H_p (our own keys know the factorisation of p - 1):
    G_p^a, a uniform in [0, p - 1), computed with fixed-base window tables mod p^2;
  - otherwise (keys imported from phe): r^p mod p^2 with r uniform in [1, p).

* :class:`DJNObfuscator` (anyone holding only the public key). The short-exponent
  variant of Damgard, Jurik and Nielsen ("A generalization of Paillier's public-key
  system with applications to electronic voting", IJIS 2010, section 4.2): a fixed
  public base h_s = h^n mod n^2 with h = -y^2 mod n for a random y, and R = h_s^a for a
  random exponent a of ``exponent_bits`` bits (default ceil(|n| / 2), as in DJN),
  computed with fixed-base window tables mod n^2. A caller-supplied ``generator`` h
  (e.g. published by the key owner) is checked to be a usable element: 1 < h < n - 1,
  gcd(h, n) = gcd(h +- 1, n) = 1, and no 2^16-smooth order mod p or mod q
  (gcd(h^M - 1, n) = 1 for M the product of all prime powers below 2^16, Pollard's
  p - 1 test). h_s = h^n is computed here, so it is always an n-th residue: a base of
  the trivial forms (1 + n)^j (which would shift the plaintext) or +-1 (R = +-1) cannot
  be supplied.

  Exponent length. The short exponent must be at least twice the key's security
  level (a generic discrete-log attack on a k-bit exponent costs 2^(k/2)). The level
  follows NIST SP 800-57 Part 1 Rev. 5, Table 2 (integer factorisation): 1024-bit n ->
  80 bits, 2048 -> 112, 3072 -> 128, 7680 -> 192, 15360 -> 256; a key between two rows
  gets the lower row. Minimum exponent: 160, 224, 256, 384, 512 bits
  (:func:`min_djn_exponent_bits`).
  A holder of the private key (FedMF's users share it) computes the *same* R = h_s^a
  through CRT: tables of h_s mod p^2 and mod q^2, two short fixed-base powers with
  2048-bit multiplications instead of one with 4096-bit ones, then Garner's
  recombination. R is the same number, so its distribution and the assumption below
  are unchanged; only the cost falls (about 3x at 2048 bits).

  **Security assumption (beyond DCR):** R = h_s^a with a short uniform exponent a is
  computationally indistinguishable from a uniform n-th residue (DJN's assumption, as
  used by e.g. the ``pypaillier`` package). It is *not* implied by DCR alone; use
  :class:`CRTObfuscator` or a pool of textbook obfuscators when you cannot accept it.

* :class:`ObfuscatorPool`: obfuscators precomputed ahead of time (idle time, spare
  cores) by any source above; each is handed out once. Filling time is accumulated in
  :attr:`ObfuscatorPool.fill_seconds` and must be reported, never hidden.

Fixed-base tables (Brickell-Gordon-McCurley-Wilson style, window w of 8 to 12 bits, as
large as 32 MiB per table allows): for a base B and windows i, T[i][d] = B^(d 2^(w i));
B^a is the product of T[i][digit_i(a)], i.e. |a| / w modular multiplications instead of
~1.2 |a| for a powmod.
"""

from __future__ import annotations

import abc
import secrets
import time
from collections import OrderedDict

import gmpy2
from gmpy2 import mpz

from ..errors import InsecureParameterError, InvalidInputError, ProtocolError
from .keys import PrivateKey, PublicKey

#: (modulus bits, security bits) from NIST SP 800-57 Part 1 Rev. 5, Table 2 (IFC rows)
NIST_IFC_STRENGTH = ((1024, 80), (2048, 112), (3072, 128), (7680, 192), (15360, 256))
#: the smoothness bound of the generator's order test (module docstring)
_SMOOTH_BOUND = 1 << 16


def security_bits(key_bits: int) -> int:
    """Security level of a ``key_bits`` modulus: the NIST SP 800-57 row at or below it
    (80 for test keys below 1024 bits)."""
    level = NIST_IFC_STRENGTH[0][1]
    for bits, strength in NIST_IFC_STRENGTH:
        if key_bits >= bits:
            level = strength
    return level


def min_djn_exponent_bits(key_bits: int) -> int:
    """Shortest DJN exponent for a ``key_bits`` modulus: twice its security level."""
    return 2 * security_bits(key_bits)


def _smooth_exponent(bound: int) -> mpz:
    """M = product over primes p < bound of the largest power of p below bound."""
    m = mpz(1)
    p = mpz(2)
    while p < bound:
        pk = p
        while pk * p < bound:
            pk *= p
        m *= pk
        p = gmpy2.next_prime(p)
    return m


_SMOOTH_M = _smooth_exponent(_SMOOTH_BOUND)


class PoolExhaustedError(ProtocolError):
    """An obfuscator pool was asked for more obfuscators than it holds."""


class FixedBaseTable:
    """Precomputed powers of one base for fast B^a mod m with a < 2^exponent_bits.

    Window w: T[i][d] = B^(d 2^(w i)) for d < 2^w, so B^a is one multiplication per
    non-zero w-bit digit of a. w is the largest in [8, 12] whose table fits in
    ``max_bytes`` (a short DJN exponent affords w = 12, a 1024-bit CRT one w = 8 or 9).
    """

    MIN_WINDOW, MAX_WINDOW = 8, 12
    MAX_BYTES = 32 << 20

    def __init__(self, base: mpz, modulus: mpz, exponent_bits: int, max_bytes: int = MAX_BYTES) -> None:
        self.modulus = modulus
        entry = (int(modulus.bit_length()) + 7) // 8
        self.window = max(
            [w for w in range(self.MIN_WINDOW + 1, self.MAX_WINDOW + 1)
             if -(-exponent_bits // w) * (1 << w) * entry <= max_bytes] + [self.MIN_WINDOW]
        )
        self.n_windows = -(-exponent_bits // self.window)
        rows = []
        b = mpz(base) % modulus
        for _ in range(self.n_windows):
            row = [mpz(1), b]
            for _ in range(2, 1 << self.window):
                row.append(row[-1] * b % modulus)
            rows.append(tuple(row))
            b = row[-1] * b % modulus
        self.rows = tuple(rows)

    def pow(self, a: int) -> mpz:
        """B^a mod m, one multiplication per non-zero w-bit digit of a."""
        if not 0 <= a < 1 << (self.window * self.n_windows):
            raise InvalidInputError("fixed-base exponent out of the table's range")
        m, w = self.modulus, self.window
        mask = (1 << w) - 1
        a = int(a)
        acc = mpz(1)
        for row in self.rows:
            d = a & mask
            if d:
                acc = acc * row[d] % m
            a >>= w
        return acc

    @property
    def nbytes(self) -> int:
        return sum(len(r) for r in self.rows) * ((int(self.modulus.bit_length()) + 7) // 8)


class Obfuscator(abc.ABC):
    """A source of obfuscators R for one public key."""

    name = "abstract"
    #: the security assumption the distribution of R rests on
    assumption = ""

    def __init__(self, public_key: PublicKey) -> None:
        self.public_key = public_key
        #: seconds spent building tables (one-off set-up cost, report it)
        self.setup_seconds = 0.0

    @abc.abstractmethod
    def draw_one(self) -> mpz:
        """One fresh obfuscator."""

    def draw(self, count: int) -> list[mpz]:
        return [self.draw_one() for _ in range(count)]

    def spec(self) -> dict:
        """What a worker process needs to rebuild this source (no secrets beyond the key)."""
        return {"name": self.name}


class CRTObfuscator(Obfuscator):
    """Exact textbook obfuscators for a private-key holder, through CRT (see module doc)."""

    name = "crt"
    assumption = "DCR only (R has exactly the distribution of r^n mod n^2)"

    def __init__(self, private_key: PrivateKey) -> None:
        super().__init__(private_key.public_key)
        self.private_key = sk = private_key
        t0 = time.perf_counter()
        if sk.has_generators:
            self._tp = FixedBaseTable(sk.gen_p, sk.psquare, int(sk.p.bit_length()))
            self._tq = FixedBaseTable(sk.gen_q, sk.qsquare, int(sk.q.bit_length()))
            self.method = "fixed-base"
        else:
            self._tp = self._tq = None
            self.method = "powmod"
        self.setup_seconds = time.perf_counter() - t0

    def draw_one(self) -> mpz:
        sk = self.private_key
        if self._tp is not None:
            xp = self._tp.pow(secrets.randbelow(int(sk.p) - 1))
            xq = self._tq.pow(secrets.randbelow(int(sk.q) - 1))
        else:
            xp = gmpy2.powmod(1 + secrets.randbelow(int(sk.p) - 1), sk.p, sk.psquare)
            xq = gmpy2.powmod(1 + secrets.randbelow(int(sk.q) - 1), sk.q, sk.qsquare)
        return sk.crt_combine_nsquare(xp, xq)


class DJNObfuscator(Obfuscator):
    """Public-key fast path: R = h_s^a, short random a, fixed-base tables (see module doc).

    Security rests on DCR **plus** the DJN short-exponent assumption stated in the
    module docstring. ``generator`` (h) may be published by the key owner; by default a
    fresh one is derived from a CSPRNG y. With ``private_key`` (a holder of the key), R
    is computed through CRT: the same value, faster.
    """

    name = "djn"
    assumption = (
        "DCR + short-exponent indistinguishability (Damgard-Jurik-Nielsen 2010, sec. 4.2)"
    )

    def __init__(
        self,
        public_key: PublicKey,
        *,
        exponent_bits: int | None = None,
        generator: int | None = None,
        private_key: PrivateKey | None = None,
    ) -> None:
        super().__init__(public_key)
        if private_key is not None and private_key.public_key != public_key:
            raise InvalidInputError("DJN private_key does not belong to public_key")
        self.private_key = private_key
        pk = public_key
        least = min_djn_exponent_bits(pk.bits)
        bits = exponent_bits if exponent_bits is not None else max(-(-pk.bits // 2), least)
        if isinstance(bits, bool) or not isinstance(bits, int) or bits < least:
            raise InsecureParameterError(
                f"DJN exponent_bits must be an integer >= {least} for a {pk.bits}-bit key "
                f"(twice its {security_bits(pk.bits)}-bit security level, NIST SP 800-57), got {bits!r}"
            )
        self.exponent_bits = bits
        t0 = time.perf_counter()
        if generator is None:  # fresh h = -y^2: of large order with overwhelming probability
            y = mpz(secrets.randbelow(int(pk.n) - 2) + 2)
            self.generator = (-y * y) % pk.n
        else:  # supplied (published by someone else): checked, about 0.2 s at 2048 bits
            self.generator = check_djn_generator(pk, generator)
        #: h_s = h^n mod n^2, an n-th residue by construction
        self.base = gmpy2.powmod(self.generator, pk.n, pk.nsquare)
        if private_key is None:
            self._tables = (FixedBaseTable(self.base, pk.nsquare, bits),)
        else:  # h_s mod p^2 and mod q^2: R = h_s^a recombined by CRT (same value)
            sk = private_key
            self._tables = (FixedBaseTable(self.base, sk.psquare, bits),
                            FixedBaseTable(self.base, sk.qsquare, bits))
        self.setup_seconds = time.perf_counter() - t0

    def draw_one(self) -> mpz:
        a = secrets.randbits(self.exponent_bits)
        if self.private_key is None:
            return self._tables[0].pow(a)
        return self.private_key.crt_combine_nsquare(self._tables[0].pow(a), self._tables[1].pow(a))

    def spec(self) -> dict:
        return {"name": self.name, "exponent_bits": self.exponent_bits, "generator": int(self.generator)}


def check_djn_generator(pk: PublicKey, h: int) -> mpz:
    """h as mpz if it is a usable DJN generator for ``pk`` (module docstring), else raise.

    Refused with :class:`InsecureParameterError`: h outside (1, n - 1), h sharing a
    factor with n, h of order 2 (gcd(h +- 1, n) > 1), or h whose order mod p or mod q is
    2^16-smooth (h^M = 1 mod p or q). A random h = -y^2 passes with overwhelming
    probability; these are the bases that would make R predictable or of small order.
    """
    if isinstance(h, bool) or not isinstance(h, int) and not isinstance(h, type(mpz(0))):
        raise InvalidInputError(f"DJN generator must be an integer, got {type(h).__name__}")
    h = mpz(h)
    n = pk.n
    if not 1 < h < n - 1:
        raise InsecureParameterError(
            "DJN generator h must lie in (1, n - 1): h = +-1 gives R = +-1, and h_s = h^n mod n^2 "
            "is derived from h (pass h in Z*_n, not h_s)"
        )
    if any(gmpy2.gcd(v, n) != 1 for v in (h, h - 1, h + 1)):
        raise InsecureParameterError("DJN generator h shares a factor with n or has order 2 modulo a factor of n")
    if gmpy2.gcd(gmpy2.powmod(h, _SMOOTH_M, n) - 1, n) != 1:
        raise InsecureParameterError(
            f"DJN generator h has an order mod p or q that divides the {_SMOOTH_BOUND}-smooth "
            "number M (small order): R = h_s^a would take few values"
        )
    return h


class ObfuscatorPool(Obfuscator):
    """Obfuscators precomputed by ``source``; each handed out once, filling cost recorded."""

    name = "pool"

    def __init__(self, source: Obfuscator) -> None:
        super().__init__(source.public_key)
        self.source = source
        self.assumption = source.assumption
        self._items: list[mpz] = []
        #: total seconds spent in :meth:`fill` (offline cost: report it)
        self.fill_seconds = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def fill(self, count: int, *, workers: int | None = None) -> float:
        """Precompute ``count`` more obfuscators; return the seconds this took."""
        if not isinstance(count, int) or count < 0:
            raise InvalidInputError(f"count must be an integer >= 0, got {count!r}")
        t0 = time.perf_counter()
        if workers and workers > 1:
            from .parallel import draw_obfuscators

            self._items.extend(draw_obfuscators(self.source, count, workers))
        else:
            self._items.extend(self.source.draw(count))
        dt = time.perf_counter() - t0
        self.fill_seconds += dt
        return dt

    def draw_one(self) -> mpz:
        return self.draw(1)[0]

    def draw(self, count: int) -> list[mpz]:
        if count > len(self._items):
            raise PoolExhaustedError(
                f"obfuscator pool holds {len(self._items)}, {count} requested; fill() it first"
            )
        out = self._items[len(self._items) - count:]
        del self._items[len(self._items) - count:]
        return out


def default_obfuscator(key: PublicKey | PrivateKey) -> Obfuscator:
    """CRT (exact, fastest) for a private key, DJN for a public key.

    Cached for the last ``DEFAULT_CACHE_KEYS`` keys only (least recently used first out):
    each entry holds fixed-base tables of up to 64 MiB for a 2048-bit key. Callers
    that encrypt under many keys should build and own their obfuscators instead;
    :func:`clear_default_obfuscators` empties the cache.
    """
    cached = _DEFAULT_CACHE.get(id(key))
    if cached is not None and cached[0] is key:
        _DEFAULT_CACHE.move_to_end(id(key))
        return cached[1]
    obf = CRTObfuscator(key) if isinstance(key, PrivateKey) else DJNObfuscator(key)
    _DEFAULT_CACHE[id(key)] = (key, obf)
    while len(_DEFAULT_CACHE) > DEFAULT_CACHE_KEYS:
        _DEFAULT_CACHE.popitem(last=False)
    return obf


def clear_default_obfuscators() -> None:
    """Drop every cached default obfuscator (and its tables)."""
    _DEFAULT_CACHE.clear()


#: how many keys' default obfuscators :func:`default_obfuscator` keeps
DEFAULT_CACHE_KEYS = 2
_DEFAULT_CACHE: OrderedDict[int, tuple[object, Obfuscator]] = OrderedDict()
