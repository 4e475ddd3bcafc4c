"""The participant-side self-audit of the adaptive protocol (our FedMMF reading [R]).

:class:`RatingAuditor` is what :class:`secagg.adaptive.SelfAuditPolicy` asks before an
upload leaves in clear: the user runs the gradient-leakage attack on it and on its
previous plaintext upload (the pair the server would hold), de-masks the result with
every estimator of :mod:`attacks.demask`, and returns the best estimators' advantage
over the no-knowledge guess, per metric (default: exact AND RMSE, each must stay within
the margin). With no previous plaintext upload the two-round attack cannot run yet, and
the user scores its own masked targets r~ (what the attack recovers once a second
plaintext round follows). Only the user's own device data is used.
"""

from __future__ import annotations

import numpy as np

from fedmf.errors import ConfigError
from fedmf.masked import AUDIT_METRICS, MaskedSplit

from .demask import PublicPrior
from .gradient_leakage import RECOVERED, RoundObservation, attack_user
from .leakage import leakage
from .masked_uploads import PlainUpload
from .observe import public_params


class RatingAuditor:
    """The participant-side self-audit ; device data only.

    ``trainer`` gives the item matrix the user downloaded this round (read during the
    round, before the server's update) and the public hyperparameters.
    """

    def __init__(self, trainer, masked: MaskedSplit, true_train: np.ndarray, prior: PublicPrior,
                 metrics: tuple[str, ...] = AUDIT_METRICS, margin: float | None = None) -> None:
        metrics = tuple(metrics)
        if not metrics or any(m not in AUDIT_METRICS for m in metrics):
            raise ConfigError(f"audit metrics must be a non-empty subset of {AUDIT_METRICS}, got {metrics!r}")
        self.trainer, self.prior, self.metrics, self.design = trainer, prior, metrics, masked.design
        self.margin = margin  # known: stop the estimators once one beats it (the upload is encrypted)
        train = masked.split.train
        self.rows = train.rows_by_user()
        self.items = train.items
        self.true = true_train
        self.masked_targets = train.ratings
        self.last_clear: dict[int, PlainUpload] = {}
        self._cache: dict[int, tuple[np.ndarray, dict[str, float]]] = {}
        self.attacks_run = 0

    def _upload(self, vector: np.ndarray) -> np.ndarray | None:
        width = self.trainer.config.row_length
        if vector.size != self.trainer.n_items * width:
            return None
        return vector.reshape(-1, width) * self.trainer.upload_scale

    def advantage(self, cid: int, round: int, vector: np.ndarray) -> dict[str, float]:
        """The best estimators' advantage over the guess, one per audited metric."""
        cannot_tell = {m: float("inf") for m in self.metrics}
        rows = self._upload(vector)
        if rows is None:
            return cannot_tell  # not a model upload (e.g. the setup round): encrypt
        user_rows = self.rows[cid]
        recovered = self.masked_targets[user_rows]
        prev = self.last_clear.get(cid)
        if prev is not None and prev.round == round - 1:
            recovered = self._attack(cid, prev, PlainUpload(round, self.trainer.V, rows))
            if recovered is None:
                return cannot_tell
        return self._score(cid, recovered)

    def _score(self, cid: int, recovered: np.ndarray) -> dict[str, float]:
        """Advantage of the best estimator; reused while the recovered targets are unchanged
        (the masked targets are fixed, so the attack recovers the same r~ every round)."""
        cached = self._cache.get(cid)
        if cached is not None and np.allclose(cached[0], recovered, rtol=0, atol=1e-9):
            return cached[1]
        rows = self.rows[cid]
        score = leakage(self.true[rows], recovered, self.prior, self.design, self.items[rows],
                        stop_above=self.margin, stop_metrics=self.metrics)
        adv = {m: score.advantage(m) for m in self.metrics}
        self._cache[cid] = (recovered.copy(), adv)
        return dict(adv)

    def _attack(self, cid: int, prev: PlainUpload, cur: PlainUpload) -> np.ndarray | None:
        obs = [RoundObservation(u.rows, u.V, self._support(cid), u.round) for u in (prev, cur)]
        result = attack_user(obs, public_params(self.trainer))
        self.attacks_run += 1
        if result.status != RECOVERED:
            return None
        order = np.argsort(np.argsort(self.items[self.rows[cid]]))
        return result.ratings[order]

    def _support(self, cid: int) -> np.ndarray | None:
        return self.items[self.rows[cid]] if self.trainer.mode == "part" else None

    def sent_in_clear(self, cid: int, round: int, vector: np.ndarray) -> None:
        rows = self._upload(vector)
        if rows is not None:
            self.last_clear[cid] = PlainUpload(round, self.trainer.V.copy(), rows.copy())
