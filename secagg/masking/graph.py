"""SecAgg+ communication graphs and the automatic (k, t) finder.

Bell et al. (CCS 2020, section 3) replace the complete graph of Bonawitz et al. by a
sparse random graph. As in Google fcp, we use the Harary graph H(k, n): nodes on a
ring, each joined to its k/2 predecessors and k/2 successors, after a uniformly random
relabelling of the clients. The relabelling is derived from the session id (a hash of
every advertised key), so the server cannot pick it directly.

Parameter finder [R] -- our reconstruction of the criteria of fcp
``fcp/secagg/server/graph_parameter_finder.cc`` (Google's federated-compute
repository) as we read it, not a port of its code. With n clients, C
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

Active variant (``active=True``). An actively malicious server can show survivor list
U to some of a victim v's k neighbours and U minus v to the others: the first group
releases shares of v's self-mask seed b_v, the second of its mask key s_v^SK, and with
t of each the server unmasks x_v. Each honest neighbour releases one kind of share per
peer, at most; the c_k corrupt neighbours release both. So two groups A, B of honest
neighbours with |A| + c_k >= t and |B| + c_k >= t exist, whatever the signatures say,
iff 2t - c_k <= k. We therefore require

    2t - k > c_k    (on the complete graph, k = n - 1 holders and c_k = C),

the count behind the active-adversary analysis of Bonawitz et al. 2017 (t > 2n/3 with
fewer than n/3 corrupt clients: any two sets of t signers of conflicting lists meet in
an honest client) and its per-neighbourhood form
for SecAgg+ (Bell et al. 2020, malicious variant); Google fcp's semi-malicious finder
raises t to ceil((t1 + k - 1.25) / 2) + 1 (as we read its code), which equals our
t = floor((k + c_k) / 2) + 1 (check_threshold). The argument above is ours [R]: it
counts shares, so it holds whatever the server does with the signatures. With
active=True both finders compute c_k = t1 over the n - D clients left if all D
dropouts happen before AdvertiseKeys, choose that t, and need t <= t2;
``GraphParams.tolerated_dropout_rate`` reports the dropout rate the chosen (k, t) still
survives. A malicious server cannot pick the relabelling, but it can grind it by
choosing which advertised clients enter U1: c_k does not cover that (README, threat
model).

Below ``min_sparse_n`` = 65 clients the complete graph is used outright [R]: as we read
fcp's finder, it falls back to the complete graph for roughly n < 65, and
with so few clients a sparse graph saves little. When no k < n - 1 passes, the complete
graph is used with t in (C, n - 1 - D], chosen as max(C + 1, 2, floor((n - 1)/2) + 1)
capped at n - 1 - D (Bonawitz et al. choose t > n/2).
"""

from __future__ import annotations

import functools
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
    corrupt_neighbours: int = 0  #: c_k: bound on one client's corrupt neighbours (check_threshold)
    tolerated_dropout_rate: float = math.nan  #: the dropout rate (k, t) still survives
    active: bool = False  #: chosen for the active variant (2t - k > c_k)

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


DEFAULT_CORRUPT_RATE = 0.05
DEFAULT_SECURITY_BITS = 40.0
DEFAULT_CORRECTNESS_BITS = 20.0


def corrupt_count(n: int, corrupt_rate: float) -> int:
    """C = ceil(corrupt_rate n): the corrupt clients assumed among n."""
    if not 0.0 <= corrupt_rate < 1.0:
        raise InvalidInputError(f"corrupt_rate must be in [0, 1), got {corrupt_rate}")
    return math.ceil(corrupt_rate * n - 1e-9)


@functools.lru_cache(maxsize=256)
def corrupt_neighbour_bound(n: int, k: int, corrupt: int,
                            security_bits: float = DEFAULT_SECURITY_BITS) -> int:
    """c_k: a client's corrupt neighbours exceed it with probability <= 2^-(sigma+1) / n.

    Complete graph (k >= n - 1): every corrupt client is a neighbour, c_k = min(C, n - 1).
    Relabelled Harary graph: the upper quantile t1 of Hypergeometric(n - 1, C, k).
    """
    if k >= n - 1:
        return min(corrupt, n - 1)
    eps = 2.0 ** -(security_bits + 1) / n
    return _upper_quantile(hypergeom_pmf(n - 1, min(corrupt, n - 1), k), eps)


def active_threshold(k: int, c_k: int) -> int:
    """The least t with 2t - k > c_k: floor((k + c_k) / 2) + 1 (module docstring)."""
    return (k + c_k) // 2 + 1


def check_threshold(n: int, k: int, t: int, corrupt: int, *, active: bool,
                    allow_insecure_threshold: bool = False,
                    security_bits: float = DEFAULT_SECURITY_BITS) -> int:
    """Refuse a threshold that is insecure for C = ``corrupt`` of n clients; returns c_k.

    * every variant: t >= 2 when n > 1 and t > c_k (fewer than t shares of any secret
      sit with corrupt neighbours) -- waived only by ``allow_insecure_threshold=True``;
    * active variant: 2t - k > c_k (split-view bound, module docstring); never waived.
    """
    k_eff = min(k, n - 1)
    c_k = corrupt_neighbour_bound(n, k_eff, corrupt, security_bits)
    if active and 2 * t - k_eff <= c_k:
        raise InsecureParameterError(
            f"active variant needs 2t - k > c_k (Bonawitz et al. 2017, active adversary; Bell et "
            f"al. 2020): t={t}, k={k_eff}, c_k={c_k} corrupt neighbours (C={corrupt} of n={n}) let a "
            f"server showing two survivor lists to two groups of a client's neighbours rebuild "
            f"both of its secrets; need t >= {active_threshold(k_eff, c_k)}"
        )
    if allow_insecure_threshold:
        return c_k
    if n > 1 and t < 2:
        raise InsecureParameterError(
            f"threshold t={t} with n={n} clients: any one holder reveals a secret; "
            "pass allow_insecure_threshold=True to run it anyway"
        )
    if t <= c_k:
        raise InsecureParameterError(
            f"threshold t={t} <= c_k={c_k} corrupt neighbours (C={corrupt} of n={n}, k={k_eff}): "
            "corrupt clients alone could rebuild secrets; pass allow_insecure_threshold=True "
            "to run it anyway"
        )
    return c_k


def tolerated_dropouts(n: int, k: int, t: int, correctness_bits: float) -> int:
    """The most dropouts D' for which every client keeps >= t live holders w.p. >= 1 - 2^-eta."""
    if k >= n - 1:
        return max(n - 1 - t, 0)
    eps = 2.0 ** -correctness_bits / n

    def survives(d: int) -> bool:  # monotone in d: bisect
        return _lower_quantile(hypergeom_pmf(n - 1, n - 1 - d, k), eps) >= t

    lo, hi = 0, n - 1  # survives(lo) is assumed; find the largest such d
    if not survives(0):
        return 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if survives(mid) else (lo, mid - 1)
    return lo


def find_parameters(n: int, *, dropout_rate: float = 0.1, corrupt_rate: float = DEFAULT_CORRUPT_RATE,
                    security_bits: float = DEFAULT_SECURITY_BITS,
                    correctness_bits: float = DEFAULT_CORRECTNESS_BITS,
                    min_sparse_n: int = 65, active: bool = False) -> GraphParams:
    """Pick (k, t) for n clients (see the module docstring for the criteria).

    ``active=True`` picks t = floor((k + c_k) / 2) + 1 (split-view bound) and needs it
    to stay <= t2; if no sparse k does, the complete graph, and if that fails too,
    InsecureParameterError naming the bound.
    """
    if not isinstance(n, int | np.integer) or n < 2:
        raise InvalidInputError(f"need at least 2 clients, got n={n!r}")
    if not 0.0 <= dropout_rate < 1.0:
        raise InvalidInputError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
    n = int(n)
    corrupt = corrupt_count(n, corrupt_rate)
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
        t = max(t1 + 1, 2)
        if active:  # c_k over the n - D clients left if every dropout happens before U1
            t1 = corrupt_neighbour_bound(n - dropped, k, corrupt, security_bits)
            t = active_threshold(k, t1)
        if t <= t2:
            d = tolerated_dropouts(n, k, t, correctness_bits)
            return GraphParams(n, k, t, False, security_bits, correctness_bits, corrupt_rate,
                               dropout_rate, t1, d / n, active)
    return complete_parameters(n, dropout_rate=dropout_rate, corrupt_rate=corrupt_rate, active=active)


def complete_parameters(n: int, *, dropout_rate: float = 0.1, corrupt_rate: float = DEFAULT_CORRUPT_RATE,
                        active: bool = False) -> GraphParams:
    """SecAgg on the complete graph: k = n - 1 and t <= n - 1 - D, where
    t = max(C + 1, 2, floor((n-1)/2) + 1), or with ``active`` t = floor((n - 1 + C)/2) + 1.

    With the complete graph the failure bounds are exact (0): the round succeeds
    whenever at most n - 1 - t clients drop and is secure against up to C corrupt clients.
    """
    if not isinstance(n, int | np.integer) or n < 2:
        raise InvalidInputError(f"need at least 2 clients, got n={n!r}")
    n = int(n)
    corrupt = corrupt_count(n, corrupt_rate)
    dropped = math.floor(dropout_rate * n + 1e-9)
    if active:
        t = active_threshold(n - 1, corrupt)
        if t > n - 1 - dropped:
            raise InsecureParameterError(
                f"active variant on n={n} clients: 2t - (n - 1) > C={corrupt} needs t >= {t}, "
                f"but {dropped} dropouts (dropout_rate={dropout_rate}) need t <= {n - 1 - dropped}"
            )
    else:
        t = min(max(corrupt + 1, 2, (n - 1) // 2 + 1), n - 1 - dropped)
    if t <= corrupt or t < 2:
        raise InsecureParameterError(
            f"no threshold for n={n}: {corrupt} corrupt and {dropped} dropped clients leave t={t}"
        )
    return GraphParams(n, n - 1, t, True, math.inf, math.inf, corrupt_rate, dropout_rate,
                       corrupt, (n - 1 - t) / n, active)


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
