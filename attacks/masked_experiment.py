"""The masked FedMF experiment: personalized masks, the adaptive protocol, measured leakage.

:func:`train_masked` trains FedMF on personally masked targets (:mod:`fedmf.masked`)
over an aggregation backend, optionally through :class:`secagg.adaptive.AdaptiveBackend`
(each upload in clear or encrypted as a policy decides: ``count`` encrypts users whose
mask was fitted on few ratings, ``audit`` asks the self-audit of
:mod:`attacks.self_audit`, ``all`` / ``never`` encrypt every / no upload), then runs the
gradient-leakage attack on everything the server saw in clear
(:mod:`attacks.masked_uploads`) and reports accuracy, leakage and cost next to plain
FedMF (the peer of the same run). This is ``fedmf train --mask personalized``.

With ``selective_noise``, the private parts of the masks (noise, scale) are kept only for
users they let pass the audit (:func:`keep_noise_where_it_passes`; the others are
encrypted anyway). Measured on ML-100K u1 (``bench/fedmmf_adaptive.py``): noise on every
user small enough to keep test RMSE within +0.005 of plain FedMF lets almost no user
pass a 0.05 audit margin; selective scale + noise lets about a fifth of the users pass
at no measurable accuracy cost, because those users then contribute almost nothing to
the shared model: whatever in r~ the federated model can learn from, the server (who
recovers r~ exactly) can use too, so a plaintext upload that leaks nothing beyond the
margin also teaches little, and the accuracy budget caps how many users can send one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from fedmf.data import Split
from fedmf.errors import ConfigError
from fedmf.masked import (
    AUDIT_METRICS,
    POLICIES,
    MaskedSplit,
    local_model,
    mask_design,
    mask_split,
    refit_private,
    test_rmse,
)
from fedmf.trainer import FedMFTrainer
from secagg import make_backend
from secagg.adaptive import AdaptiveBackend, CountPolicy, Decision, FixedPolicy, SelfAuditPolicy

from .demask import PublicPrior
from .leakage import leakage, oracle_leakage
from .masked_uploads import PairRecorder, attack_masked_uploads
from .self_audit import RatingAuditor


def public_prior(split: Split) -> PublicPrior:
    """The public prior of a split's training ratings, on its dataset's rating scale."""
    return PublicPrior.from_ratings(split.train.ratings, split.train.rating_scale)


def keep_noise_where_it_passes(clean: MaskedSplit, noisy: MaskedSplit, true_train: np.ndarray,
                               prior: PublicPrior, margin: float) -> tuple[MaskedSplit, np.ndarray]:
    """Per-user choice before training: keep the noisy mask only for users whose noisy
    masked targets pass the audit (advantage <= ``margin`` under exact and RMSE, for the
    de-masking estimators AND the :func:`oracle_leakage` reference); every other user keeps
    the clean mask (it fails the audit and is encrypted anyway, so noise would only cost
    accuracy). Returns the mixed split and the boolean per-user choice.

    Caveat [R]: the kept draws are selected (those the attacks do worst on); the audit
    scores the realised draw, but a server that models this selection could do better
    than estimators assuming an unconditional N(0, sigma^2) noise law.
    """
    train = clean.split.train
    keep = np.zeros(train.n_users, bool)
    ratings, offsets = clean.split.train.ratings.copy(), clean.train_mask.copy()
    masks = dict(clean.masks)
    for u, rows in enumerate(train.rows_by_user()):
        if rows.size == 0:
            continue
        y = noisy.split.train.ratings[rows]
        scores = (leakage(true_train[rows], y, prior, noisy.design, train.items[rows]),
                  oracle_leakage(true_train[rows], y, clean.clean_train_mask[rows], prior,
                                 noisy.design.noise_sigma, noisy.masks[u].private_scale))
        if max(sc.advantage(m) for sc in scores for m in AUDIT_METRICS) <= margin:
            keep[u] = True
            ratings[rows], offsets[rows], masks[u] = y, noisy.train_mask[rows], noisy.masks[u]
    mixed = MaskedSplit(Split(replace(train, ratings=ratings), clean.split.test, clean.split.validation,
                              f"{clean.split.name} selective noise"),
                        masks, offsets, clean.test_offset, noisy.design, clean.clean_train_mask)
    return mixed, keep


def make_masks(split: Split, run: MaskedRunConfig, prior: PublicPrior) -> MaskedSplit:
    """The masks of a run: local model, private scale and noise; with ``selective_noise``
    the users the private parts do not let pass the audit keep the plain local model."""
    model = local_model(run.mask_model, run.dataset, split, alpha=run.mask_alpha)
    design = mask_design(run.mask_model, run.dataset, split)
    masked = mask_split(split, model, noise_sigma=run.mask_noise, scale=run.mask_scale, design=design)
    if run.selective_noise and run.mask_noise > 0:
        clean = mask_split(split, model, design=design)  # who fails is encrypted: plain f, no private parts
        masked, _ = keep_noise_where_it_passes(clean, masked, split.train.ratings, prior, run.audit_margin)
    return masked


@dataclass
class MaskedRunConfig:
    """Options of :func:`train_masked` (the ``fedmf train --mask personalized`` flags)."""

    dataset: str
    mask_model: str = "ridge"
    mask_alpha: float = 30.0
    #: private noise added to every training rating's mask (PrivateNoise); 0: none
    mask_noise: float = 0.0
    #: (low, high): residuals shrunk by a private per-user scale (PrivateScale); None: no
    mask_scale: tuple[float, float] | None = None
    #: keep the noise only for users it lets pass the audit (keep_noise_where_it_passes)
    selective_noise: bool = False
    #: device-side refit of the private user coordinates on the denoised targets
    refit: bool = False
    policy: str = "none"
    min_fitted: int = 100
    audit_margin: float = 0.05
    #: the audit lets an upload out in clear only if the advantage is <= margin under each
    audit_metrics: tuple[str, ...] = AUDIT_METRICS
    rounds: int = 60
    mode: str = "full"
    seed: int = 0
    compare_plain: bool = True
    compare_encrypt_all_rounds: int = 0
    #: train with a seeded random subset of this many users (None: all); the test RMSE
    #: then covers all test ratings, so use it for cost measurements only
    participants: int | None = None

    def users(self, split: Split) -> np.ndarray | None:
        n = split.train.n_users
        if self.participants is None:
            return None
        if not 2 <= self.participants <= n:
            raise ConfigError(f"participants must be in 2..{n}, got {self.participants}")
        return np.sort(np.random.default_rng(self.seed).choice(n, self.participants, replace=False))


def train_masked(split: Split, backend, config, run: MaskedRunConfig, *, log=print) -> dict[str, object]:
    """FedMF on masked targets over ``backend`` (with ``run.policy`` != "none": the
    encrypting path of an :class:`~secagg.adaptive.AdaptiveBackend`), then the
    gradient-leakage attack on what the server saw in clear; returns the JSON summary.

    With ``compare_plain``, plain FedMF (unmasked, plain backend, same model and seed)
    is trained alongside for the accuracy and the attack comparison. With
    ``compare_encrypt_all_rounds`` > 0 and a policy, the same masked run with every
    upload encrypted is timed for that many rounds (the cost peer).
    """
    if run.policy not in POLICIES:
        raise ConfigError(f"policy must be one of {POLICIES}, got {run.policy!r}")
    if run.policy == "none" and not backend.record_view:
        raise ConfigError(f"policy 'none' measures what the server decodes: construct the {backend.name!r} "
                          "backend with record_view=True")
    prior = public_prior(split)
    masked = make_masks(split, run, prior)
    trainer, adaptive, auditor = _masked_trainer(split, masked, backend, config, run, prior, run.policy)
    recorder, infos, in_clear = PairRecorder(trainer), [], []

    def observe(rnd, result, uploads, upload_scale):
        recorder(rnd, result, uploads, upload_scale)
        infos.append(result.info)
        in_clear.append(len(result.view.per_client) / len(uploads))

    trainer.observer = observe
    cpu = _timed_rounds(trainer, run.rounds, log)
    summary = trainer.result().summary()
    summary.pop("history")
    summary["cpu_seconds_per_round"] = cpu
    if run.refit:
        U = refit_private(trainer, split.train.ratings - masked.clean_train_mask)
        summary.update(test_rmse_before_refit=summary["test_rmse"],
                       test_rmse=test_rmse(trainer, U, masked.test_offset))
    explained = [m.explained for m in masked.masks.values()]
    summary.update(
        mask={"model": run.mask_model, "alpha": run.mask_alpha if run.mask_model == "ridge" else None,
              "noise_sigma": run.mask_noise, "private_scale": run.mask_scale, "refit": run.refit,
              "selective_noise": run.selective_noise, "noisy_users": len(masked.noisy_users),
              "users": len(masked.masks), "mean_explained_variance": float(np.mean(explained)),
              "mean_fitted": float(np.mean(list(masked.fitted_counts.values())))},
        policy=run.policy,
        participants=len(trainer.participants()),
        encrypting_backend=adaptive.encrypted.name if adaptive is not None else backend.name,
        encrypted_fraction=_encrypted_fraction(infos, in_clear),
        attack=attack_masked_uploads(trainer, recorder, split.train.ratings, prior, masked.design,
                                     margin=run.audit_margin),
    )
    if adaptive is not None:
        summary.update(_adaptive_summary(run, infos, auditor))
    if run.compare_plain:
        summary.update(_plain_reference(split, config, run, prior, log))
        summary["rmse_difference"] = summary["test_rmse"] - summary["plain_fedmf_test_rmse"]
        if run.refit:
            summary["rmse_difference_vs_plain_refit"] = summary["test_rmse"] - summary["plain_fedmf_refit_test_rmse"]
    if adaptive is not None and run.compare_encrypt_all_rounds > 0:
        summary["encrypt_all"] = _encrypt_all_peer(split, masked, adaptive.encrypted, config, run, prior)
        peer = summary["encrypt_all"]["seconds_per_round"]
        summary["seconds_per_round_vs_encrypt_all"] = summary["seconds_per_round"] / peer
    return summary


def _timed_rounds(trainer, rounds: int, log) -> float:
    """Run ``rounds`` rounds; return the process CPU seconds per round (this process
    only: every client, the server and the audits run in it unless a backend has workers)."""
    t0 = time.process_time()
    for _ in range(rounds):
        log(trainer.run_round().line())
    return (time.process_time() - t0) / rounds


def _masked_trainer(split, masked, backend, config, run, prior, policy):
    users = run.users(split)
    if policy == "none":
        trainer = FedMFTrainer(masked.split, backend, config=config, mode=run.mode, seed=run.seed,
                               prediction_offset=masked.test_offset, users=users)
        return trainer, None, None
    auditor = None
    if policy == "count":
        rule = CountPolicy(masked.fitted_counts, run.min_fitted)
    elif policy == "audit":
        rule = _AuditOnceBound()
    else:
        rule = FixedPolicy(encrypt=policy == "all")
    adaptive = AdaptiveBackend(backend, rule, record_view=True)
    trainer = FedMFTrainer(masked.split, adaptive, config=config, mode=run.mode, seed=run.seed,
                           prediction_offset=masked.test_offset, users=users)
    if policy == "audit":
        auditor = RatingAuditor(trainer, masked, split.train.ratings, prior, run.audit_metrics, run.audit_margin)
        rule.bind(SelfAuditPolicy(auditor, run.audit_margin))
    return trainer, adaptive, auditor


class _AuditOnceBound:
    """The audit policy, bound once its auditor exists: the auditor needs the trainer,
    whose setup round runs first, so until :meth:`bind` every upload is encrypted."""

    def __init__(self) -> None:
        self.policy: SelfAuditPolicy | None = None

    def bind(self, policy: SelfAuditPolicy) -> None:
        self.policy = policy

    def decide(self, cid, round, vector):
        if self.policy is None:
            return Decision(True, float("inf"), "setup before the audit exists")
        return self.policy.decide(cid, round, vector)

    def record(self, cid, round, vector, encrypted):
        if self.policy is not None:
            self.policy.record(cid, round, vector, encrypted)


def _encrypted_fraction(infos, in_clear) -> float:
    """Mean over training rounds of the fraction of uploads that went through encryption
    (an adaptive backend's count; otherwise the uploads the server did not decode)."""
    fractions = [i["encrypted_fraction"] for i in infos if "encrypted_fraction" in i]
    if fractions:
        return float(np.mean(fractions))
    return 1.0 - float(np.mean(in_clear)) if in_clear else 1.0


def _adaptive_summary(run, infos, auditor) -> dict[str, object]:
    per_round = lambda path, key: float(np.mean([i[f"{path}_cost"][key] for i in infos]))
    out = {
        "encrypted_path_client_seconds_per_round": per_round("encrypted", "client_seconds"),
        "encrypted_path_server_seconds_per_round": per_round("encrypted", "server_seconds"),
        "plain_path_client_seconds_per_round": per_round("plain", "client_seconds"),
        "bytes_up_per_round": per_round("encrypted", "bytes_up") + per_round("plain", "bytes_up"),
        "promoted_per_round": float(np.mean([len(i["promoted"]) for i in infos])),
        "policy_client_seconds_per_round": float(np.mean([i["policy_client_seconds"] for i in infos])),
        "encrypted_fraction_per_round": [i["encrypted_fraction"] for i in infos],
    }
    if run.policy == "count":
        out["min_fitted"] = run.min_fitted
    if auditor is not None:
        out.update(audit_margin=run.audit_margin, audit_metrics=list(run.audit_metrics),
                   audit_attacks_run=auditor.attacks_run)
    return out


def _plain_reference(split, config, run, prior, log) -> dict[str, object]:
    """Plain FedMF (no mask, plain backend, same model and seed) and the attack on it."""
    trainer = FedMFTrainer(split, make_backend("plain", record_view=True), config=config,
                           mode=run.mode, seed=run.seed, users=run.users(split))
    recorder = PairRecorder(trainer)
    trainer.observer = recorder
    for _ in range(run.rounds):
        trainer.run_round()
    rmse_ = trainer.history[-1].test_rmse
    log(f"plain FedMF (no mask, plain backend): rmse {rmse_:.4f}")
    out = {"plain_fedmf_test_rmse": rmse_,
           "plain_fedmf_attack": attack_masked_uploads(trainer, recorder, split.train.ratings, prior,
                                                       margin=run.audit_margin)}
    if run.refit:
        out["plain_fedmf_refit_test_rmse"] = test_rmse(trainer, refit_private(trainer, split.train.ratings))
    return out


def _encrypt_all_peer(split, masked, encrypted_backend, config, run, prior) -> dict[str, object]:
    """The cost peer: the same masked run with every upload through the encrypting backend."""
    trainer, adaptive, _ = _masked_trainer(split, masked, encrypted_backend, config, run, prior, "all")
    cpu = _timed_rounds(trainer, run.compare_encrypt_all_rounds, lambda *_: None)
    h = trainer.history
    return {"rounds": len(h),
            "seconds_per_round": float(np.mean([r.seconds for r in h])),
            "cpu_seconds_per_round": cpu,
            "client_seconds_per_round": float(np.mean([r.client_seconds for r in h])),
            "server_seconds_per_round": float(np.mean([r.server_seconds for r in h])),
            "bytes_up_per_client": float(np.mean([r.bytes_up_per_client for r in h])),
            "test_rmse": h[-1].test_rmse}
