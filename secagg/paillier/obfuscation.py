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
  computed with fixed-base window tables mod n^2.
  **Security assumption (beyond DCR):** R = h_s^a with a short uniform exponent a is
  computationally indistinguishable from a uniform n-th residue (DJN's assumption, as
  used by e.g. the ``pypaillier`` package). It is *not* implied by DCR alone; use
  :class:`CRTObfuscator` or a pool of textbook obfuscators when you cannot accept it.

* :class:`ObfuscatorPool`: obfuscators precomputed ahead of time (idle time, spare
  cores) by any source above; each is handed out once. Filling time is accumulated in
  :attr:`ObfuscatorPool.fill_seconds` and must be reported, never hidden.

Fixed-base tables (Brickell-Gordon-McCurley-Wilson style, window w = 8 bits): for a
base B and windows i, T[i][d] = B^(d 2^(8 i)); B^a is the product of T[i][byte_i(a)],
i.e. |a| / 8 modular multiplications instead of ~1.2 |a| for a powmod.
"""

from __future__ import annotations

import abc
import secrets
import time

import gmpy2
from gmpy2 import mpz

from ..errors import InsecureParameterError, InvalidInputError, ProtocolError
from .keys import PrivateKey, PublicKey

#: minimum DJN exponent length: twice the 112-bit security level of a 2048-bit modulus
MIN_DJN_EXPONENT_BITS = 224


class PoolExhaustedError(ProtocolError):
    """An obfuscator pool was asked for more obfuscators than it holds."""


class FixedBaseTable:
    """Precomputed powers of one base for fast B^a mod m with a < 2^exponent_bits."""

    WINDOW = 8

    def __init__(self, base: mpz, modulus: mpz, exponent_bits: int) -> None:
        self.modulus = modulus
        self.n_windows = -(-exponent_bits // self.WINDOW)
        self.exponent_bytes = self.n_windows
        rows = []
        b = mpz(base) % modulus
        for _ in range(self.n_windows):
            row = [mpz(1), b]
            for _ in range(2, 1 << self.WINDOW):
                row.append(row[-1] * b % modulus)
            rows.append(tuple(row))
            b = row[-1] * b % modulus
        self.rows = tuple(rows)

    def pow(self, a: int) -> mpz:
        """B^a mod m, one multiplication per non-zero byte of a."""
        m = self.modulus
        acc = mpz(1)
        for row, d in zip(self.rows, int(a).to_bytes(self.exponent_bytes, "little")):
            if d:
                acc = acc * row[d] % m
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
    module docstring. ``base`` (h_s) may be published by the key owner; by default a
    fresh one is derived from a CSPRNG y.
    """

    name = "djn"
    assumption = (
        "DCR + short-exponent indistinguishability (Damgard-Jurik-Nielsen 2010, sec. 4.2)"
    )

    def __init__(
        self, public_key: PublicKey, *, exponent_bits: int | None = None, base: int | None = None
    ) -> None:
        super().__init__(public_key)
        pk = public_key
        bits = exponent_bits if exponent_bits is not None else -(-pk.bits // 2)
        if not isinstance(bits, int) or bits < MIN_DJN_EXPONENT_BITS:
            raise InsecureParameterError(
                f"DJN exponent_bits must be an integer >= {MIN_DJN_EXPONENT_BITS}, got {bits!r}"
            )
        self.exponent_bits = bits
        t0 = time.perf_counter()
        if base is None:
            y = mpz(secrets.randbelow(int(pk.n) - 2) + 2)
            h = (-y * y) % pk.n
            base = gmpy2.powmod(h, pk.n, pk.nsquare)
        base = mpz(base)
        if not 0 < base < pk.nsquare or gmpy2.gcd(base, pk.n) != 1:
            raise InvalidInputError("DJN base must be an element of Z*_{n^2}")
        self.base = base
        self._table = FixedBaseTable(base, pk.nsquare, bits)
        self.setup_seconds = time.perf_counter() - t0

    def draw_one(self) -> mpz:
        return self._table.pow(secrets.randbits(self.exponent_bits))

    def spec(self) -> dict:
        return {"name": self.name, "exponent_bits": self.exponent_bits, "base": int(self.base)}


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
    """CRT (exact, fastest) for a private key, DJN for a public key. Cached per key."""
    cached = _DEFAULT_CACHE.get(id(key))
    if cached is not None and cached[0] is key:
        return cached[1]
    obf = CRTObfuscator(key) if isinstance(key, PrivateKey) else DJNObfuscator(key)
    _DEFAULT_CACHE[id(key)] = (key, obf)
    return obf


_DEFAULT_CACHE: dict[int, tuple[object, Obfuscator]] = {}
