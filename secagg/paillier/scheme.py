"""Raw Paillier on integers (Paillier 1999; g = n + 1 as in phe and FATE).

Plaintexts are integers in [0, n); ciphertexts are gmpy2 ``mpz`` in Z*_{n^2}.

* Enc(m; R) = (1 + m n) R mod n^2, where R = r^n mod n^2 is the *obfuscator*
  (see :mod:`.obfuscation` for fast ways to draw it); g^m = (1 + n)^m = 1 + m n mod n^2.
* Dec(c) = CRT(m_p, m_q), m_p = L_p(c^(p-1) mod p^2) h_p mod p (phe's CRT decryption).
* Enc(a) Enc(b) = Enc(a + b);  Enc(a) (1 + b n) = Enc(a + b);  Enc(a)^k = Enc(k a);
  Enc(a)^(-1) = Enc(-a);  Enc(a) R' = Enc(a) freshly re-randomized.
"""

from __future__ import annotations

import gmpy2
from gmpy2 import mpz

from ..errors import InvalidInputError, MalformedMessageError
from .keys import PrivateKey, PublicKey


def check_plaintext(pk: PublicKey, m: int) -> mpz:
    m = mpz(m)
    if not 0 <= m < pk.n:
        raise InvalidInputError(f"plaintext must be an integer in [0, n), got {int(m).bit_length()}-bit value")
    return m


def check_ciphertext(pk: PublicKey, c: int) -> mpz:
    """Return c as mpz if it lies in Z*_{n^2}; else raise MalformedMessageError."""
    c = mpz(c)
    if not 0 < c < pk.nsquare or gmpy2.gcd(c, pk.n) != 1:
        raise MalformedMessageError("ciphertext is not an element of Z*_{n^2} for this key")
    return c


def encrypt_with(pk: PublicKey, m: int, obfuscator: mpz) -> mpz:
    """Enc(m; R) = (1 + m n) R mod n^2 for an obfuscator R = r^n mod n^2."""
    return encrypt_many(pk, [check_plaintext(pk, m)], [obfuscator])[0]


def encrypt_many(pk: PublicKey, plaintexts, obfuscators) -> list[mpz]:
    """Enc(m_i; R_i) = (1 + m_i n) R_i mod n^2 for plaintexts already in [0, n).

    The one place the encryption formula lives (in-process, worker processes and
    :func:`encrypt_with` all call it).
    """
    n, n2 = pk.n, pk.nsquare
    return [(1 + m * n) * r % n2 for m, r in zip(plaintexts, obfuscators)]


def decrypt(sk: PrivateKey, c: mpz) -> mpz:
    """CRT decryption; c must already be a checked ciphertext of ``sk``'s key."""
    mp = (gmpy2.powmod(c, sk.p - 1, sk.psquare) - 1) // sk.p * sk.hp % sk.p
    mq = (gmpy2.powmod(c, sk.q - 1, sk.qsquare) - 1) // sk.q * sk.hq % sk.q
    return sk.crt_combine_n(mp, mq)


def add(pk: PublicKey, c1: mpz, c2: mpz) -> mpz:
    return c1 * c2 % pk.nsquare


def add_plain(pk: PublicKey, c: mpz, m: int) -> mpz:
    """Enc(a) -> Enc(a + m mod n), no exponentiation."""
    return c * (1 + (mpz(m) % pk.n) * pk.n) % pk.nsquare


def mul_scalar(pk: PublicKey, c: mpz, k: int) -> mpz:
    """Enc(a) -> Enc(k a mod n) for any integer k (negative k goes through the inverse)."""
    k = mpz(k)
    if k < 0:
        return gmpy2.powmod(gmpy2.invert(c, pk.nsquare), -k, pk.nsquare)
    return gmpy2.powmod(c, k, pk.nsquare)


def negate(pk: PublicKey, c: mpz) -> mpz:
    """Enc(a) -> Enc(-a mod n): the modular inverse of c."""
    return gmpy2.invert(c, pk.nsquare)


def rerandomize(pk: PublicKey, c: mpz, obfuscator: mpz) -> mpz:
    """Same plaintext, fresh randomness: c R mod n^2."""
    return c * obfuscator % pk.nsquare
