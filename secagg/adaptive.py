"""Adaptive secure aggregation: encrypt only the uploads a personalized mask does not protect.

Our reading of FedMMF's "adaptive secure aggregation protocol" (Yang et al., FL-IJCAI
2022; the abstract only, the mechanism is our reconstruction [R] from that abstract):
every participant masks its targets with a personal local model
(:mod:`secagg.personal_mask`); each round, a **policy** decides per participant whether
its (masked) upload goes out in plaintext or through an encrypting backend. The round's
aggregate is the sum of the two parts:

    A = sum_{i in P} w_i x_i  (plain path)  +  sum_{i in E} w_i x_i  (encrypting path)

so the training loop sees the same weighted sum as with one backend, while the
encryption cost scales with |E| instead of with all participants.

Security of the encrypted cohort. The server learns every plaintext upload, so the
encrypted cohort E must itself be large enough to hide in: if the policy encrypts
fewer than the encrypting backend's ``min_inputs`` (but at least one), the backend
adds the plaintext participants with the highest policy risk to E until it has
``min_inputs`` members (encrypting more never leaks more). With SecAgg the server also
learns sum_E; with Paillier that sum stays encrypted and the server learns only the
plaintext part (``view.aggregate`` is then None).

Policies (``decide(cid, round, vector) -> Decision``; ``record`` is told what went out):

* :class:`CountPolicy`: encrypt when the participant's mask was fitted on fewer than
  ``min_fitted`` samples (a weak local model);
* :class:`SelfAuditPolicy`: the participant runs an injected audit (e.g. the
  gradient-leakage attack on its own would-be plaintext upload plus the plaintext
  uploads the server already holds) that returns the attack's advantage over a
  no-knowledge guess, one per metric; encrypt when any exceeds its ``margin``. The
  audit lives outside ``secagg`` (this package imports no attack code);
* :class:`FixedPolicy`: always (or never) encrypt: the "encrypt everything" peer.

``round`` counts :meth:`AdaptiveBackend.aggregate` calls from 0, so a trainer's setup
aggregation (if it has one) is round 0. The backend is constructed explicitly (it needs
a policy object), not by name through :func:`secagg.make_backend`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .backend import AggregationBackend, RoundCost, RoundResult, ServerView, make_backend
from .errors import InvalidInputError


@dataclass(frozen=True)
class Decision:
    """A policy's verdict on one upload: ``risk`` orders plaintext clients for promotion."""

    encrypt: bool
    risk: float
    reason: str = ""


class UploadPolicy(Protocol):
    def decide(self, cid: int, round: int, vector: np.ndarray) -> Decision:
        """Decide how client ``cid``'s upload for ``round`` travels."""

    def record(self, cid: int, round: int, vector: np.ndarray, encrypted: bool) -> None:
        """Told after the round how the upload actually travelled (after promotion)."""


class Auditor(Protocol):
    """A participant-side leakage audit (see :class:`SelfAuditPolicy`)."""

    def advantage(self, cid: int, round: int, vector: np.ndarray) -> float | Mapping[str, float]:
        """How much the server's best reconstruction beats a no-knowledge guess if
        ``vector`` went out in clear, given the plaintext uploads it already holds: one
        number, or one per metric (+inf when the audit cannot tell: the policy then encrypts)."""

    def sent_in_clear(self, cid: int, round: int, vector: np.ndarray) -> None:
        """The server now holds ``vector`` in clear."""


@dataclass
class FixedPolicy:
    """Encrypt every upload (``encrypt=True``, the FedMF peer) or none (mask only)."""

    encrypt: bool = True

    def decide(self, cid, round, vector):
        return Decision(self.encrypt, 0.0, "fixed")

    def record(self, cid, round, vector, encrypted):
        pass


class CountPolicy:
    """Encrypt client i when its mask was fitted on fewer than ``min_fitted`` samples.

    ``fitted[cid]`` is that count (known on the device; the simulation passes them in).
    Clients without an entry are encrypted.
    """

    def __init__(self, fitted: Mapping[int, int], min_fitted: int) -> None:
        if not isinstance(min_fitted, int | np.integer) or min_fitted < 0:
            raise InvalidInputError(f"min_fitted must be an integer >= 0, got {min_fitted!r}")
        self.fitted = {int(c): int(n) for c, n in fitted.items()}
        self.min_fitted = int(min_fitted)

    def decide(self, cid, round, vector):
        n = self.fitted.get(cid)
        if n is None:
            return Decision(True, float("inf"), "no mask")
        return Decision(n < self.min_fitted, float(self.min_fitted - n), f"fitted on {n}")

    def record(self, cid, round, vector, encrypted):
        pass


class SelfAuditPolicy:
    """Encrypt when the injected audit says the attack would beat a no-knowledge guess
    by more than ``margin`` under ANY of its metrics; plaintext uploads are reported
    back to the auditor, since the server keeps them.

    The audit returns one advantage (a float, compared with a float ``margin``) or one
    per metric (a mapping, e.g. ``{"exact": 0.01, "rmse": 0.2}``: fraction of exactly
    recovered ratings, RMSE gain in rating units). ``margin`` is then a float for every
    metric or a mapping with one margin per metric the audit reports; a metric without a
    margin, a NaN advantage or an empty audit is an error, +inf means "cannot tell" and
    encrypts. The decision's ``risk`` is the largest excess advantage - margin.
    """

    def __init__(self, auditor: Auditor, margin: float | Mapping[str, float]) -> None:
        margins = margin.values() if isinstance(margin, Mapping) else [margin]
        if not margins or not all(isinstance(m, int | float) and np.isfinite(m) for m in margins):
            raise InvalidInputError(f"margin must be finite (one float, or one per metric), got {margin!r}")
        self.auditor = auditor
        self.margin = dict(margin) if isinstance(margin, Mapping) else float(margin)

    def _excess(self, cid: int, advantages: Mapping[str, float]) -> dict[str, float]:
        if not advantages:
            raise InvalidInputError(f"audit of client {cid} returned no metric")
        excess = {}
        for metric, adv in advantages.items():
            adv = float(adv)
            if np.isnan(adv):
                raise InvalidInputError(f"audit of client {cid} returned NaN for {metric!r}")
            if isinstance(self.margin, dict):
                if metric not in self.margin:
                    raise InvalidInputError(f"no margin for audit metric {metric!r} (margins: {sorted(self.margin)})")
                excess[metric] = adv - self.margin[metric]
            else:
                excess[metric] = adv - self.margin
        return excess

    def decide(self, cid, round, vector):
        adv = self.auditor.advantage(cid, round, vector)
        advantages = dict(adv) if isinstance(adv, Mapping) else {"advantage": adv}
        excess = self._excess(cid, advantages)
        risk = max(excess.values())
        reason = ", ".join(f"{m} {float(a):.3g}" for m, a in advantages.items())
        return Decision(risk > 0, risk, f"advantage {reason}")

    def record(self, cid, round, vector, encrypted):
        if not encrypted:
            self.auditor.sent_in_clear(cid, round, vector)


class AdaptiveBackend(AggregationBackend):
    """Route each upload through a plain or an encrypting backend, as a policy decides.

    Parameters
    ----------
    encrypted:
        The encrypting backend (instance or registered name, e.g. ``"paillier_packed"``,
        ``"secagg"``); its ``min_inputs`` is the smallest encrypted cohort.
    policy:
        An :class:`UploadPolicy`.
    plain:
        The plaintext path (default: a plain backend with ``min_inputs=1`` and this
        backend's ``record_view``). A given plain backend must record its view when
        ``record_view`` is True (it is not reconfigured here).

    The value range is each path's own (``clip=None`` here); ``info["clipped"]`` sums
    both paths'. Sparse rounds go to both paths with the caller's ``dense_fallback``.
    """

    name = "adaptive"
    sparse_capable = True
    #: plaintext-path uploads reach the server in clear
    hides_updates = False

    def __init__(self, encrypted: str | AggregationBackend, policy: UploadPolicy, *,
                 plain: str | AggregationBackend | None = None, min_inputs: int = 2,
                 record_view: bool = False) -> None:
        super().__init__(min_inputs=min_inputs, record_view=record_view, clip=None)
        self.encrypted = make_backend(encrypted)
        if plain is None:
            self.plain = make_backend("plain", min_inputs=1, record_view=record_view)
        else:
            self.plain = make_backend(plain)
        if self.encrypted is self.plain:
            raise InvalidInputError("the plain and the encrypting path must be different backends")
        if record_view and not self.plain.record_view:
            raise InvalidInputError(
                "record_view=True needs a plain path built with record_view=True "
                "(backends are configured by their constructors)"
            )
        self.policy = policy
        self.server_learns_aggregate = self.encrypted.server_learns_aggregate
        self.round = 0

    def _route(self, vectors, dropped):
        """Split the clients into (plaintext, encrypted) lists; return them, the decisions
        and the seconds each client's policy took (client-side work: an audit runs on the device)."""
        decisions, seconds = {}, {}
        for cid, x in vectors.items():
            t0 = time.perf_counter()
            decisions[cid] = self.policy.decide(cid, self.round, x)
            seconds[cid] = time.perf_counter() - t0
        enc = [c for c in vectors if decisions[c].encrypt]
        plain = [c for c in vectors if not decisions[c].encrypt]
        alive = lambda ids: sum(c not in dropped for c in ids)
        need = self.encrypted.min_inputs
        if enc and alive(enc) < need:
            plain.sort(key=lambda c: (c in dropped, -decisions[c].risk))
            while plain and alive(enc) < need:
                enc.append(plain.pop(0))
        if plain and alive(plain) < self.plain.min_inputs:
            enc += plain
            plain = []
        return sorted(plain), sorted(enc), decisions, seconds

    def close(self) -> None:
        self.encrypted.close()
        self.plain.close()

    def _run_round(self, vectors, weights, dropped, progress):
        return self._split_round(vectors, weights, dropped, None, 1, False, progress)

    def _run_sparse_round(self, vectors, weights, dropped, support, block_size, dense_fallback, progress):
        return self._split_round(vectors, weights, dropped, support, block_size, dense_fallback, progress)

    def _split_round(self, vectors, weights, dropped, support, block_size, dense_fallback, progress):
        dropped_set = set(dropped)
        plain_ids, enc_ids, decisions, policy_seconds = self._route(vectors, dropped_set)
        parts = {}
        for path, ids, backend in (("plain", plain_ids, self.plain), ("encrypted", enc_ids, self.encrypted)):
            if not ids:
                continue
            sub = {
                "weights": {c: weights[c] for c in ids},
                "dropped": [c for c in ids if c in dropped_set],
                "progress": progress,
            }
            if support is not None:
                sub.update(support={c: support[c] for c in ids}, block_size=block_size,
                           dense_fallback=dense_fallback)
            parts[path] = backend.aggregate({c: vectors[c] for c in ids}, **sub)
        result = self._combine(parts, vectors, decisions, plain_ids, enc_ids)
        for cid in result.included:
            result.cost.client_seconds[cid] = result.cost.client_seconds.get(cid, 0.0) + policy_seconds[cid]
        result.info["policy_client_seconds"] = float(sum(policy_seconds.values()))
        for cid in vectors:
            self.policy.record(cid, self.round, vectors[cid], cid in set(enc_ids))
        self.round += 1
        return result

    def _combine(self, parts, vectors, decisions, plain_ids, enc_ids):
        length = next(iter(vectors.values())).shape[0]
        aggregate = np.zeros(length)
        cost = RoundCost()
        view = ServerView(aggregate=np.zeros(length))
        included, total_weight, info = [], 0.0, {}
        for path, res in parts.items():
            aggregate += res.aggregate
            total_weight += res.total_weight
            included += res.included
            cost.client_seconds.update(res.cost.client_seconds)
            cost.bytes_up.update(res.cost.bytes_up)
            cost.bytes_down.update(res.cost.bytes_down)
            cost.server_seconds += res.cost.server_seconds
            cost.setup_seconds += res.cost.setup_seconds
            if self.record_view:
                view.per_client.update(res.view.per_client)
            if res.view.aggregate is None:
                view.aggregate = None
            elif view.aggregate is not None:
                view.aggregate += res.view.aggregate
            info[f"{path}_info"] = res.info
            info[f"{path}_cost"] = _cost_summary(res.cost)
            info["clipped"] = info.get("clipped", 0) + int(res.info["clipped"])
        for path in ("plain", "encrypted"):
            info.setdefault(f"{path}_cost", _cost_summary(RoundCost()))
        promoted = [c for c in enc_ids if not decisions[c].encrypt]
        info.update(
            plaintext=plain_ids, encrypted=enc_ids, promoted=promoted,
            encrypted_fraction=len(enc_ids) / len(vectors),
            risk={c: decisions[c].risk for c in vectors},
        )
        return RoundResult(aggregate, total_weight, sorted(included), view, cost, info)


def _cost_summary(cost: RoundCost) -> dict[str, float]:
    """Totals of one path's cost (sums over its clients)."""
    return {
        "clients": len(cost.bytes_up),
        "client_seconds": float(sum(cost.client_seconds.values())),
        "server_seconds": float(cost.server_seconds),
        "bytes_up": float(sum(cost.bytes_up.values())),
        "bytes_down": float(sum(cost.bytes_down.values())),
        "setup_seconds": float(cost.setup_seconds),
    }

