"""Vectorised t-of-n Shamir secret sharing over the prime field F_p, p = 2^31 - 1.

Shamir (CACM 1979): a secret s is the constant term of a random polynomial f of degree
t - 1; share j is (x_j, f(x_j)); any t shares give s = sum_j lambda_j f(x_j) with the
Lagrange coefficients lambda_j = prod_{m != j} x_m / (x_m - x_j), and fewer than t
shares are independent of s.

As in Google fcp's ``shamir_secret_sharing`` (which uses p = 2^31 + 11 and 31-bit
sub-secrets), a 32-byte secret is cut into nine 30-bit limbs, each shared with its own
polynomial, so every product fits in 62 bits and the arithmetic runs in numba on int64.
Many secrets are shared in one call (all limbs of all secrets at once), and the Lagrange
coefficients of each set of share indices are computed once and cached (Bonawitz et al.
2017, section 7: reconstruction of many secrets from the same index set is O(t^2 + t L)).
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable

import numpy as np
from numba import njit

from ..errors import InvalidInputError, MalformedMessageError, RoundAbortedError

PRIME = (1 << 31) - 1
LIMB_BITS = 30
SECRET_BYTES = 32
LIMBS_PER_SECRET = -(-8 * SECRET_BYTES // LIMB_BITS)  # 9
#: bytes of one share of one 32-byte secret on the wire (nine uint32 field elements)
SHARE_BYTES = 4 * LIMBS_PER_SECRET


def secrets_to_limbs(secrets: list[bytes]) -> np.ndarray:
    """Cut 32-byte secrets into 30-bit limbs (little-endian): int64 array (len * 9,)."""
    out = np.empty(len(secrets) * LIMBS_PER_SECRET, dtype=np.int64)
    mask = (1 << LIMB_BITS) - 1
    for i, s in enumerate(secrets):
        if len(s) != SECRET_BYTES:
            raise InvalidInputError(f"Shamir secrets must be {SECRET_BYTES} bytes, got {len(s)}")
        v = int.from_bytes(s, "little")
        for j in range(LIMBS_PER_SECRET):
            out[i * LIMBS_PER_SECRET + j] = (v >> (LIMB_BITS * j)) & mask
    return out


def limbs_to_secrets(limbs: np.ndarray) -> list[bytes]:
    """Inverse of :func:`secrets_to_limbs`; a limb >= 2^30 or overflow means bad shares."""
    if limbs.size % LIMBS_PER_SECRET:
        raise InvalidInputError("limb count is not a multiple of the limbs per secret")
    out = []
    for i in range(0, limbs.size, LIMBS_PER_SECRET):
        v = 0
        for j in range(LIMBS_PER_SECRET):
            limb = int(limbs[i + j])
            if limb >> LIMB_BITS:
                raise RoundAbortedError("reconstructed a limb outside 30 bits: inconsistent shares")
            v |= limb << (LIMB_BITS * j)
        if v >> (8 * SECRET_BYTES):
            raise RoundAbortedError("reconstructed secret exceeds 256 bits: inconsistent shares")
        out.append(v.to_bytes(SECRET_BYTES, "little"))
    return out


def _random_field(count: int) -> np.ndarray:
    """``count`` elements uniform in F_p from os.urandom (rejects the single value p)."""
    out = np.frombuffer(os.urandom(4 * count), dtype=np.uint32) & np.uint32(0x7FFFFFFF)
    out = out.astype(np.int64)
    bad = out == PRIME
    while bad.any():
        out[bad] = _random_field(int(bad.sum()))
        bad = out == PRIME
    return out


@njit(cache=True)
def _eval_shares(limbs, coeffs, xs, p):
    """shares[j, l] = limbs[l] + sum_d coeffs[d, l] xs[j]^(d+1) mod p (Horner)."""
    n = xs.shape[0]
    deg = coeffs.shape[0]
    nl = limbs.shape[0]
    out = np.empty((n, nl), dtype=np.int64)
    for j in range(n):
        x = xs[j]
        for l in range(nl):
            acc = 0
            for d in range(deg - 1, -1, -1):
                acc = (acc + coeffs[d, l]) % p
                acc = (acc * x) % p
            out[j, l] = (acc + limbs[l]) % p
    return out


def share(secrets: list[bytes], xs: np.ndarray | list[int], t: int) -> np.ndarray:
    """Share every secret t-of-len(xs) at evaluation points ``xs`` (distinct, in [1, p)).

    Returns uint32 (len(xs), len(secrets) * 9): row j holds all limbs of all secrets for
    the holder of x_j.
    """
    xs = np.asarray(xs, dtype=np.int64)
    if not 1 <= t <= xs.size:
        raise InvalidInputError(f"threshold t={t} must be in [1, number of shares={xs.size}]")
    if np.unique(xs).size != xs.size or xs.min() < 1 or xs.max() >= PRIME:
        raise InvalidInputError("share indices must be distinct and in [1, p)")
    limbs = secrets_to_limbs(secrets)
    coeffs = _random_field((t - 1) * limbs.size).reshape(t - 1, limbs.size)
    return _eval_shares(limbs, coeffs, xs, PRIME).astype(np.uint32)


@njit(cache=True)
def _powmod(a, e, p):
    r = 1
    a %= p
    while e:
        if e & 1:
            r = (r * a) % p
        a = (a * a) % p
        e >>= 1
    return r


@njit(cache=True)
def _lagrange_at(xs, x0, p):
    """lambda_j(x0) = prod_{m != j} (x0 - x_m) / (x_j - x_m) mod p."""
    t = xs.shape[0]
    lam = np.empty(t, dtype=np.int64)
    for j in range(t):
        num = 1
        den = 1
        for m in range(t):
            if m != j:
                num = (num * ((x0 - xs[m]) % p)) % p
                den = (den * ((xs[j] - xs[m]) % p)) % p
        lam[j] = (num * _powmod(den, p - 2, p)) % p
    return lam


@functools.lru_cache(maxsize=4096)
def lagrange_coefficients(xs: tuple[int, ...]) -> np.ndarray:
    """Cached Lagrange coefficients at 0 for the share-index set ``xs``."""
    return _lagrange_at(np.asarray(xs, dtype=np.int64), 0, PRIME)


@njit(cache=True)
def _combine(lam, shares, p):
    t, nl = shares.shape
    out = np.zeros(nl, dtype=np.int64)
    for j in range(t):
        lj = lam[j]
        for l in range(nl):
            out[l] = (out[l] + lj * shares[j, l]) % p
    return out


def reconstruct(xs: list[int] | tuple[int, ...], shares: np.ndarray) -> list[bytes]:
    """Recover the secrets from t shares: ``shares[j]`` is the row held at ``xs[j]``.

    Exactly the first t shares are used by the caller; extra shares are not needed.
    """
    xs = tuple(int(x) for x in xs)
    shares = np.asarray(shares)
    if shares.ndim != 2 or shares.shape[0] != len(xs):
        raise InvalidInputError("need one share row per share index")
    if len(set(xs)) != len(xs):
        raise InvalidInputError("share indices must be distinct")
    if shares.size and int(shares.max()) >= PRIME:
        raise MalformedMessageError("a share is not a field element (>= p)")
    lam = lagrange_coefficients(xs)
    return limbs_to_secrets(_combine(lam, shares.astype(np.int64), PRIME))


def _on_polynomial(xs: tuple[int, ...], rows: np.ndarray, x: int, row: np.ndarray) -> bool:
    """True when the share ``row`` at ``x`` lies on the polynomials through (xs, rows)."""
    lam = _lagrange_at(np.asarray(xs, dtype=np.int64), int(x), PRIME)
    return bool(np.array_equal(_combine(lam, rows.astype(np.int64), PRIME), row.astype(np.int64)))


def reconstruct_verified(xs: list[int], rows: np.ndarray, t: int, verify: Callable[[bytes], bool], *,
                         max_tries: int = 4096) -> tuple[bytes, list[int]]:
    """One 32-byte secret from m >= t shares, any of which may be wrong; returns (secret, bad xs).

    ``verify`` recognises the true secret (a commitment or a public key). The first t
    shares are tried first (the honest path: one interpolation). If they fail, e = 1,
    2, ... shares among the first t + e are left out in turn until a t-subset yields a
    verified secret -- this corrects up to m - t wrong shares within ``max_tries``
    interpolations. After a correction the shares off the verified polynomial are
    returned as faulty (when the first t verify, the rest are not examined). No
    verified secret: RoundAbortedError (nothing unverified is ever returned).
    """
    m = len(xs)
    if m < t:
        raise RoundAbortedError(f"{m} shares, fewer than t={t}")
    rows = np.asarray(rows)
    tries = 0
    for e in range(m - t + 1):
        for left_out in itertools.combinations(range(t + e), e):
            keep = [i for i in range(t + e) if i not in left_out]
            kx = tuple(int(xs[i]) for i in keep)
            try:
                secret = reconstruct(kx, rows[keep])[0]
            except (RoundAbortedError, MalformedMessageError):
                secret = None
            if secret is not None and verify(secret):
                bad = [] if e == 0 else [  # shares that were never needed are not examined
                    int(xs[j]) for j in range(m)
                    if j not in keep and not _on_polynomial(kx, rows[keep], xs[j], rows[j])]
                return secret, bad
            tries += 1
            if tries >= max_tries:
                raise RoundAbortedError(
                    f"no t={t} of {m} shares gave the committed secret within {max_tries} tries")
    raise RoundAbortedError(
        f"no t={t} of {m} shares gave the committed secret: more than {m - t} shares are wrong "
        "(or the owner's commitment is)")
