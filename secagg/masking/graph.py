"""SecAgg+ communication graphs and the automatic (k, t) finder.

Bell et al. (CCS 2020, section 3) replace the complete graph of Bonawitz et al. by a
sparse random graph. As in Google fcp, we use the Harary graph H(k, n): nodes on a
ring, each joined to its k/2 predecessors and k/2 successors, after a uniformly random
relabelling of the clients. The relabelling is derived from the session id (a hash of
every advertised key), so the server cannot pick it.

Parameter finder [R] -- our reconstruction of the criteria of fcp
``graph_parameter_finder.cc`` from the research note (not its code). With n clients, C
corrupt (= ceil(gamma n)) and D dropped (= floor(delta n)) clients placed by the random
relabelling, try even degrees k = 2, 4, ...; accept the first k with

(a) connectivity: removing the C + D bad nodes disconnects H(k, n) only if two
    disjoint runs of k/2 consecutive bad nodes exist; a union bound over the < n^2/2
    pairs of run positions gives P <= n^2/2 * prod_{i<k} (C + D - i)/(n - i), which must
    be <= 2^-(sigma + 1);
(b) a threshold window: each neighbourhood is a uniform k-subset of the other n - 1
    nodes, so the number of corrupt neighbours X ~ Hypergeometric(n - 1, C, k) and of
    surviving neighbours Y ~ Hypergeometric(n - 1, n - 1 - D, k). t1 = the smallest
    value with P(X > t1) <= 2^-(sigma + 1) / n, t2 = the largest value with
    P(Y < t2) <= 2^-eta / n; need t1 < t2, and t = max(t1 + 1, 2) (a union bound over
    the n nodes gives security failure <= 2^-sigma and correctness failure <= 2^-eta).

Below ``min_sparse_n`` = 65 clients the complete graph is used outright [R]: the note on
fcp reports that its finder falls back to the complete graph for roughly n < 65, and
with so few clients a sparse graph saves little. When no k < n - 1 passes, the complete graph is used with t in (C, n - 1 - D], chosen as
max(C + 1, floor((n - 1)/2) + 1) capped at n - 1 - D (Bonawitz et al. choose t > n/2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InsecureParameterError, InvalidInputError
from .primitives import LABEL_PERMUTATION, hkdf, keystream


@dataclass(frozen=True)
class GraphParams:
    """Chosen SecAgg+ parameters and the bounds they were chosen for."""

    n: int
    k: int  #: neighbours of each client (excluding itself); n - 1 means the complete graph
    t: int  #: Shamir threshold: shares needed to reconstruct a client's secrets
    complete: bool
    security_bits: float  #: -log2 of the bound on the security failure probability
    correctness_bits: float  #: -log2 of the bound on the correctness failure probability
    corrupt_rate: float
    dropout_rate: float

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _log_comb(n: int, k: int) -> float:
    if k < 0 or k > n:
        return -math.inf
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def hypergeom_pmf(population: int, successes: int, draws: int) -> np.ndarray:
    """P(X = x), x = 0..draws, for X ~ Hypergeometric(population, successes, draws)."""
    logs = np.array([
        _log_comb(successes, x) + _log_comb(population - successes, draws - x)
        - _log_comb(population, draws) for x in range(draws + 1)
    ])
    return np.exp(logs)


def _upper_quantile(pmf: np.ndarray, eps: float) -> int:
    """Smallest v with P(X > v) <= eps."""
    tail = np.concatenate([np.cumsum(pmf[::-1])[::-1][1:], [0.0]])  # tail[v] = P(X > v)
    return int(np.argmax(tail <= eps))


def _lower_quantile(pmf: np.ndarray, eps: float) -> int:
    """Largest v with P(X < v) <= eps."""
    below = np.concatenate([[0.0], np.cumsum(pmf)[:-1]])  # below[v] = P(X < v)
    ok = np.nonzero(below <= eps)[0]
    return int(ok[-1])


def _log2_disconnect_bound(n: int, k: int, bad: int) -> float:
    if bad < k:
        return -math.inf
    log_p = sum(math.log2((bad - i) / (n - i)) for i in range(k))
    return math.log2(n * (n - 1) / 2) + log_p


def find_parameters(n: int, *, dropout_rate: float = 0.1, corrupt_rate: float = 0.05,
                    security_bits: float = 40.0, correctness_bits: float = 20.0,
                    min_sparse_n: int = 65) -> GraphParams:
    """Pick (k, t) for n clients (see the module docstring for the criteria)."""
    if not isinstance(n, int | np.integer) or n < 2:
        raise InvalidInputError(f"need at least 2 clients, got n={n!r}")
    for name, rate in (("dropout_rate", dropout_rate), ("corrupt_rate", corrupt_rate)):
        if not 0.0 <= rate < 1.0:
            raise InvalidInputError(f"{name} must be in [0, 1), got {rate}")
    n = int(n)
    corrupt = math.ceil(corrupt_rate * n - 1e-9)
    dropped = math.floor(dropout_rate * n + 1e-9)
    if corrupt + dropped >= n - 1:
        raise InsecureParameterError(
            f"corrupt ({corrupt}) + dropped ({dropped}) clients leave no honest survivors of {n}"
        )
    sec_eps = 2.0 ** -(security_bits + 1)
    for k in range(2, n - 1 if n >= min_sparse_n else 2, 2):
        if _log2_disconnect_bound(n, k, corrupt + dropped) > -(security_bits + 1):
            continue
        t1 = _upper_quantile(hypergeom_pmf(n - 1, corrupt, k), sec_eps / n)
        t2 = _lower_quantile(hypergeom_pmf(n - 1, n - 1 - dropped, k), 2.0**-correctness_bits / n)
        if t1 < t2:
            return GraphParams(n, k, max(t1 + 1, 2), False, security_bits, correctness_bits,
                               corrupt_rate, dropout_rate)
    return complete_parameters(n, dropout_rate=dropout_rate, corrupt_rate=corrupt_rate)


def complete_parameters(n: int, *, dropout_rate: float = 0.1, corrupt_rate: float = 0.05) -> GraphParams:
    """SecAgg on the complete graph: k = n - 1, t = max(C + 1, floor((n-1)/2) + 1) <= n - 1 - D.

    With the complete graph the failure bounds are exact (0): the round succeeds
    whenever at most D clients drop and is secure against up to C corrupt clients.
    """
    if not isinstance(n, int | np.integer) or n < 2:
        raise InvalidInputError(f"need at least 2 clients, got n={n!r}")
    corrupt = math.ceil(corrupt_rate * n - 1e-9)
    dropped = math.floor(dropout_rate * n + 1e-9)
    t = min(max(corrupt + 1, (n - 1) // 2 + 1), n - 1 - dropped)
    if t <= corrupt or t < 1:
        raise InsecureParameterError(
            f"no threshold for n={n}: {corrupt} corrupt and {dropped} dropped clients"
        )
    return GraphParams(int(n), int(n) - 1, t, True, math.inf, math.inf, corrupt_rate, dropout_rate)


def relabelling(session: bytes, clients: list[int]) -> list[int]:
    """The ring order of ``clients``: a uniformly random permutation derived from the session id.

    Sort the (sorted) client ids by 64-bit keys from the AES-CTR stream keyed by
    HKDF(session id, label); ties (probability < n^2 2^-65) fall back to id order.
    Every party computes the same order; the server cannot choose it.
    """
    order = np.array(sorted(clients), dtype=np.int64)
    key = hkdf(session, salt=b"", info=LABEL_PERMUTATION)
    sort_keys = keystream(key, 8 * order.size).view(np.uint64)
    return order[np.argsort(sort_keys, kind="stable")].tolist()


def neighbours_of(session: bytes, clients: list[int], k: int, client: int) -> list[int]:
    """One client's neighbours (sorted, excluding itself) in the relabelled H(k, n)."""
    n = len(clients)
    if k >= n - 1:
        return [v for v in sorted(clients) if v != client]
    if k % 2:
        raise InvalidInputError(f"Harary degree k must be even, got {k}")
    ring = relabelling(session, clients)
    i = ring.index(client)
    return sorted(ring[(i + d) % n] for d in range(-(k // 2), k // 2 + 1) if d != 0)


def neighbours(session: bytes, clients: list[int], k: int) -> dict[int, list[int]]:
    """Every client's neighbours (sorted, excluding itself); k >= n - 1 is the complete graph."""
    n = len(clients)
    if k >= n - 1:
        everyone = sorted(clients)
        return {c: [v for v in everyone if v != c] for c in everyone}
    if k % 2:
        raise InvalidInputError(f"Harary degree k must be even, got {k}")
    ring = relabelling(session, clients)
    half = k // 2
    return {c: sorted(ring[(i + d) % n] for d in range(-half, half + 1) if d != 0)
            for i, c in enumerate(ring)}
