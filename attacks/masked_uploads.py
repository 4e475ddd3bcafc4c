"""The gradient-leakage attack on what a server saw in clear during masked FedMF.

:class:`PairRecorder` keeps, per user, the first two consecutive rounds the server
decoded in clear; :func:`attack_masked_uploads` runs the two-round attack of
:mod:`attacks.gradient_leakage` on each pair (it recovers the masked targets r - m
exactly) and scores the de-masking estimators' best estimates of the TRUE ratings
against the no-knowledge guess (:mod:`attacks.leakage`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedmf.masked import MaskDesign

from .demask import PublicPrior
from .gradient_leakage import RECOVERED, RoundObservation, attack_user
from .leakage import leakage
from .observe import public_params


@dataclass
class PlainUpload:
    round: int
    V: np.ndarray
    rows: np.ndarray  # (n_items, row_length), model units


@dataclass
class PairRecorder:
    """Trainer observer keeping, per user, the first two consecutive rounds the server
    decoded in clear (``view.per_client``; the backend needs ``record_view=True``).

    The masked targets do not change between rounds, so one pair is what the attack needs.
    """

    trainer: object
    pairs: dict[int, list[PlainUpload]] = field(default_factory=dict)
    _last: dict[int, PlainUpload] = field(default_factory=dict)
    clear_users: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._V_before = self.trainer.V.copy()

    def __call__(self, rnd, result, uploads, upload_scale) -> None:
        width = self.trainer.config.row_length
        for cid, vec in result.view.per_client.items():
            self.clear_users.add(cid)
            if cid in self.pairs:
                continue
            up = PlainUpload(rnd, self._V_before, vec.reshape(-1, width) * upload_scale)
            prev = self._last.get(cid)
            if prev is not None and prev.round == rnd - 1:
                self.pairs[cid] = [prev, up]
                self._last.pop(cid)
            else:
                self._last[cid] = up
        self._V_before = self.trainer.V.copy()


def attack_masked_uploads(trainer, recorder: PairRecorder, true_train: np.ndarray,
                          prior: PublicPrior, design: MaskDesign | None = None,
                          margin: float | None = None) -> dict[str, object]:
    """Run the gradient-leakage attack on every user the server saw in clear in two
    consecutive rounds; score its best estimates of the TRUE ratings against the guess.

    Fractions are pooled over ratings (each rating counts once); ``exact_fraction`` uses
    each user's best estimator under the exact metric, ``rmse`` its best under RMSE,
    ``per_estimator`` every estimator pooled alike. ``masked_targets_*`` scores the
    attack's raw output against r - m (what it can recover at most). With ``margin``,
    ``users_within_margin`` counts the recovered users whose advantage is <= margin
    under both metrics (those the self-audit would let out in clear).
    """
    params = public_params(trainer)
    train = trainer.split.train
    rows_by_user = train.rows_by_user()
    n = exact = guess_exact = sq = guess_sq = masked_err = 0.0
    recovered_users, failed, within = 0, 0, 0
    by_estimator = {"exact": {}, "rmse": {}}
    per_estimator: dict[str, list[float]] = {}
    advantages = {"exact": [], "rmse": []}
    for cid, (a, b) in sorted(recorder.pairs.items()):
        rows = rows_by_user[cid]
        support = train.items[rows] if trainer.mode == "part" else None
        obs = [RoundObservation(u.rows, u.V, support, u.round) for u in (a, b)]
        result = attack_user(obs, params)
        if result.status != RECOVERED:
            failed += 1
            continue
        order = np.argsort(np.argsort(train.items[rows]))
        recovered = result.ratings[order]
        masked_err += float(np.sum((recovered - train.ratings[rows]) ** 2))
        score = leakage(true_train[rows], recovered, prior, design, train.items[rows])
        recovered_users += 1
        n += score.n
        exact += score.exact_fraction * score.n
        guess_exact += score.guess_exact_fraction * score.n
        sq += score.rmse**2 * score.n
        guess_sq += score.guess_rmse**2 * score.n
        for metric, name in (("exact", score.estimator), ("rmse", score.rmse_estimator)):
            by_estimator[metric][name] = by_estimator[metric].get(name, 0) + 1
            advantages[metric].append(score.advantage(metric))
        for name, (e, r) in score.per_estimator.items():
            acc = per_estimator.setdefault(name, [0.0, 0.0])
            acc[0] += e * score.n
            acc[1] += r**2 * score.n
        if margin is not None:
            within += max(score.advantage("exact"), score.advantage("rmse")) <= margin
    users_in_clear = len(recorder.clear_users)
    out = {
        "users_seen_in_clear": users_in_clear,
        "users_attacked": len(recorder.pairs),
        "users_recovered": recovered_users,
        "users_attack_failed": failed,
        "users_in_clear_without_consecutive_pair": users_in_clear - len(recorder.pairs),
        "ratings": int(n),
        "exact_fraction": exact / n if n else None,
        "rmse": float(np.sqrt(sq / n)) if n else None,
        "guess_exact_fraction": guess_exact / n if n else None,
        "guess_rmse": float(np.sqrt(guess_sq / n)) if n else None,
        "masked_targets_rmse": float(np.sqrt(masked_err / n)) if n else None,
        "max_user_advantage": max(advantages["exact"]) if advantages["exact"] else None,
        "max_user_advantage_rmse": max(advantages["rmse"]) if advantages["rmse"] else None,
        "best_estimator_counts": by_estimator["exact"],
        "best_rmse_estimator_counts": by_estimator["rmse"],
        "per_estimator": {k: {"exact_fraction": v[0] / n, "rmse": float(np.sqrt(v[1] / n))}
                          for k, v in per_estimator.items()} if n else {},
    }
    if margin is not None:
        out.update(margin=margin, users_within_margin=within,
                   fraction_within_margin=within / recovered_users if recovered_users else None)
    return out
