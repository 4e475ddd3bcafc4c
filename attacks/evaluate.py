"""Evaluation of the gradient-leakage attack: metrics, no-knowledge baseline, backends, guard.

Metrics, over every training rating (i, j) of the attacked users:

* ``exact_fraction``: share of ratings with round(clip(estimate, lo, hi)) == r_ij, with
  [lo, hi] the data set's rating scale (:attr:`fedmf.data.Ratings.rating_scale`);
* ``reconstruction_rmse``: RMSE of clip(estimate, lo, hi) against r_ij;
* ``rated_set_precision`` / ``rated_set_recall``: micro-averaged over users, of the
  rated set the attack read off the uploads against the true training set.

Where the attack has nothing (no decodable upload, or its structure checks fail) it
falls back to the no-knowledge guess: the public global mean mu for every rating and,
when the rated set is unreadable too, a uniformly random set of the true size. The
baseline is that guess for every user (a different random draw).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from fedmf.data import Split
from fedmf.model import ModelConfig
from fedmf.trainer import FedMFTrainer
from secagg import make_backend
from secagg.errors import SecaggError
from secagg.quantize import step_size

from .gradient_leakage import RECOVERED, AttackResult, RoundObservation, attack_user
from .observe import ServerRecord, public_params, record_run

#: relative tolerance of the structure checks for float64 uploads
FLOAT_TOL = 1e-6
#: tolerance for uploads quantised to 16 bits (SecAgg's default encoding)
QUANTISED_TOL = 0.05


@dataclass
class Guesses:
    """Per-user truth and guesses, aligned: estimates are for the user's true items."""

    true_items: list[np.ndarray]
    true_ratings: list[np.ndarray]
    estimates: list[np.ndarray]
    rated_sets: list[np.ndarray]

    def metrics(self, scale: tuple[float, float]) -> dict[str, float]:
        """The attack metrics, estimates clipped to the rating ``scale`` (lo, hi)."""
        truth = np.concatenate(self.true_ratings)
        est = np.clip(np.concatenate(self.estimates), *scale)
        hits = sum(np.intersect1d(p, t).size for p, t in zip(self.rated_sets, self.true_items))
        predicted = sum(p.size for p in self.rated_sets)
        return {
            "exact_fraction": float(np.mean(np.rint(est) == truth)),
            "reconstruction_rmse": float(np.sqrt(np.mean((est - truth) ** 2))),
            "rated_set_precision": hits / predicted if predicted else 0.0,
            "rated_set_recall": hits / sum(t.size for t in self.true_items),
        }


def user_truth(split: Split, users: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each user's training items (sorted) and ratings: what the uploads are about."""
    train, rows = split.train, split.train.rows_by_user()
    items, ratings = [], []
    for u in users:
        order = np.argsort(train.items[rows[u]])
        items.append(train.items[rows[u]][order])
        ratings.append(train.ratings[rows[u]][order])
    return items, ratings


def random_rated_set(rng: np.random.Generator, n_items: int, size: int) -> np.ndarray:
    """The no-knowledge rated-set guess: ``size`` items uniformly without replacement."""
    return np.sort(rng.choice(n_items, size=size, replace=False))


def baseline_guesses(items, ratings, mu: float, n_items: int, seed: int) -> Guesses:
    """Global mean for every rating, a random rated set of the right size."""
    rng = np.random.default_rng(seed)
    return Guesses(items, ratings, [np.full(t.size, mu) for t in items],
                   [random_rated_set(rng, n_items, t.size) for t in items])


def attack_guesses(results: list[AttackResult], items, ratings, mu: float, n_items: int,
                   seed: int) -> Guesses:
    """The attack's estimates for the true items, with the no-knowledge fallback."""
    rng = np.random.default_rng(seed + 1)
    estimates, rated = [], []
    for res, t in zip(results, items):
        est = np.full(t.size, mu)
        if res.status == RECOVERED:
            pos = np.searchsorted(res.rated_items, t)
            pos = np.minimum(pos, res.rated_items.size - 1)
            found = res.rated_items[pos] == t
            est[found] = res.ratings[pos[found]]
        estimates.append(est)
        rated.append(res.rated_items if res.rated_items is not None
                     else random_rated_set(rng, n_items, t.size))
    return Guesses(items, ratings, estimates, rated)


def evaluate_record(record: ServerRecord, split: Split, *, tol: float = FLOAT_TOL,
                    seed: int = 0) -> tuple[dict[str, object], Guesses]:
    """Attack every user of ``record``; return the report and the attack's guesses."""
    t0 = time.perf_counter()
    users = record.users
    results = [attack_user(record.observations(u), record.params, tol=tol) for u in users]
    seconds = time.perf_counter() - t0
    items, ratings = user_truth(split, users)
    mu = record.params.mu
    guesses = attack_guesses(results, items, ratings, mu, record.n_items, seed)
    base = baseline_guesses(items, ratings, mu, record.n_items, seed)
    scale = split.train.rating_scale
    report: dict[str, object] = guesses.metrics(scale)
    report["baseline"] = base.metrics(scale)
    report.update(
        ratings_no_better_than_baseline=bool(
            report["exact_fraction"] <= report["baseline"]["exact_fraction"] + 0.01
            and report["reconstruction_rmse"] >= report["baseline"]["reconstruction_rmse"] - 0.01
        ),
        backend=record.backend, mode=record.mode, users_attacked=len(users),
        ratings_attacked=int(sum(t.size for t in items)),
        rounds_observed=[r.round for r in record.rounds[-2:]],
        status_counts=dict(Counter(r.status for r in results)),
        orders_found=dict(Counter(r.order for r in results if r.order)),
        attack_seconds=seconds,
    )
    reasons = Counter(re.sub(r"-?\d[\d.e+-]*", "#", r.reason)
                      for r in results if r.status != RECOVERED and r.reason)
    if reasons:
        report["failure_reasons"] = dict(reasons.most_common(3))
    return report, guesses


def evaluate_backend(split: Split, backend: str, *, config: ModelConfig, mode: str = "full",
                     rounds: int = 2, users: np.ndarray | None = None, seed: int = 0,
                     backend_options: dict[str, object] | None = None,
                     tol: float = FLOAT_TOL) -> tuple[dict[str, object], Guesses]:
    """Train ``rounds`` rounds over ``backend``, record the server's view, attack it."""
    t0 = time.perf_counter()
    record = record_run(split, backend, config=config, mode=mode, rounds=rounds, users=users,
                        seed=seed, backend_options=backend_options)
    training_seconds = time.perf_counter() - t0
    report, guesses = evaluate_record(record, split, tol=tol, seed=seed)
    report["training_seconds"] = training_seconds
    report["backend_info"] = {k: v for k, v in record.info.items()
                              if isinstance(v, int | float | str | bool) and k != "modulus"}
    return report, guesses


def guard_demonstration(split: Split, *, config: ModelConfig, mode: str = "full",
                        victims: int = 20, others: int = 8, seed: int = 0,
                        tol: float = QUANTISED_TOL) -> dict[str, object]:
    """The known weak spot of sum-only protection, with the guard too low and enforced.

    A malicious server runs each SecAgg round for a cohort of the victim, one Sybil
    client it controls (input known: zeros) and ``others`` honest users, and declares the
    honest others dropped. The "sum" is then the victim's (quantised) upload. SecAgg
    itself aborts a round in which a survivor has fewer than t live neighbours, so a
    lone victim needs the Sybil; with t = 1 and ``min_inputs=1`` ("guard too low") the
    round completes and the attack runs on the sum. With the enforced guard
    (the default t = floor((n - 1) / 2) + 1 of the complete graph and ``min_inputs=2``) the
    backend refuses the round with TooFewInputsError.
    """
    rng = np.random.default_rng(seed)
    trainer_uploads: list[dict[int, np.ndarray]] = []
    trainer = FedMFTrainer(split, "plain", config=config, mode=mode, seed=seed,
                           observer=lambda r, res, up, s: trainer_uploads.append(up))
    participants = trainer.participants()
    chosen = rng.choice(participants, size=min(victims + others, len(participants)), replace=False)
    victim_ids, honest = [int(c) for c in chosen[:victims]], [int(c) for c in chosen[victims:]]
    V_before, scale = [], trainer.upload_scale
    for _ in range(2):
        V_before.append(trainer.V.copy())
        trainer.run_round()
    cohort_ids = [int(c) for c in chosen]
    support_of = dict(zip(cohort_ids, user_truth(split, cohort_ids)[0]))
    sybil = max(participants) + 1
    n = len(honest) + 2
    too_low = make_backend("secagg", min_inputs=1, k=n - 1, t=1, record_view=True,
                           allow_insecure_threshold=True, out_of_range="clip")
    enforced = make_backend("secagg", record_view=True, out_of_range="clip")
    results, refused = [], []
    for victim in victim_ids:
        observations = []
        for rnd in range(2):
            cohort = {c: trainer_uploads[rnd][c] for c in [victim, *honest]}
            cohort[sybil] = np.zeros_like(cohort[victim])
            sparse = _sparse_args(mode, cohort, support_of, config.row_length)
            result = too_low.aggregate(cohort, dropped=honest, **sparse)
            victim_sum = (result.view.aggregate - cohort[sybil]).reshape(-1, config.row_length) * scale
            support = result.view.support.get(victim) if mode == "part" else None
            observations.append(RoundObservation(victim_sum, V_before[rnd], support, rnd + 1))
            try:
                enforced.aggregate(cohort, dropped=honest, **sparse)
            except SecaggError as exc:
                refused.append(f"{type(exc).__name__}: {exc}")
        results.append(attack_user(observations, public_params(trainer), tol=tol,
                                   zero_tol=2 * quantisation_step(too_low) * scale))
    lone = {c: trainer_uploads[0][c] for c in [victim_ids[0], *honest]}
    try:
        too_low.aggregate(lone, dropped=honest, **_sparse_args(mode, lone, support_of, config.row_length))
        lone_outcome = "completed"
    except SecaggError as exc:
        lone_outcome = f"{type(exc).__name__}: {exc}"
    items, ratings = user_truth(split, victim_ids)
    guesses = attack_guesses(results, items, ratings, trainer.mu, trainer.n_items, seed)
    low = guesses.metrics(split.train.rating_scale)
    low["status_counts"] = dict(Counter(r.status for r in results))
    return {
        "backend": "secagg",
        "attack": "declare the cohort's honest clients dropped; one server-controlled Sybil (input 0) stays",
        "victims": len(victim_ids),
        "cohort_size": n,
        "structure_tolerance": tol,
        "guard_too_low": {"min_inputs": 1, "t": 1, **low},
        "guard_enforced": {
            "min_inputs": enforced.min_inputs,
            "t": enforced.parameters(n).t,
            "rounds_refused": len(refused),
            "rounds_attempted": 2 * len(victim_ids),
            "error": refused[0] if refused else None,
        },
        "lone_victim_without_sybil": lone_outcome,
    }


def quantisation_step(backend) -> float:
    """Width of one quantisation level of a SecAgg backend's encoding (public): c / L."""
    return step_size(backend.clip, backend.precision_bits)


def _sparse_args(mode, cohort, support_of, block_size):
    if mode != "part":
        return {}
    empty = np.zeros(0, np.int64)
    return {"support": {c: support_of.get(c, empty) for c in cohort}, "block_size": block_size,
            "dense_fallback": True}  # SecAgg masks every entry: PartText runs densely
