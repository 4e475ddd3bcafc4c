"""Private-noise masks, the design-aware de-masking attack, the oracle reference and the
device-side refit (secagg.personal_mask.PrivateNoise, fedmf.masked, attacks.demask / leakage)."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.demask import PublicPrior, demask
from attacks.leakage import leakage, mask_leakage, oracle_leakage
from attacks.masked_experiment import keep_noise_where_it_passes, public_prior
from fedmf.data import random_holdout, synthetic_ratings
from fedmf.masked import MaskDesign, local_model, mask_split, refit_private
from fedmf.model import ModelConfig
from fedmf.trainer import FedMFTrainer
from secagg.errors import InvalidInputError
from secagg.personal_mask import BiasModel, PrivateNoise, PrivateScale, fit_personal_mask, private_normal

STARS = (1.0, 5.0)  # the rating scale of the hand-made ratings below (MovieLens')


def test_private_normal_is_gaussian_and_not_reproducible():
    z = private_normal(20001, 2.0)
    assert z.shape == (20001,)
    assert abs(z.mean()) < 0.1 and abs(z.std() - 2.0) < 0.1  # 5 sigma-ish bounds for n = 20001
    assert abs(np.mean(np.abs(z) < 2.0) - 0.6827) < 0.02, "one-sigma mass of a normal law"
    assert not np.array_equal(private_normal(8, 1.0), private_normal(8, 1.0)), "drawn from os.urandom"
    assert np.all(private_normal(5, 0.0) == 0)
    with pytest.raises(InvalidInputError):
        private_normal(3, -1.0)


def test_noise_mask_is_fixed_per_fitted_key_and_absent_on_unseen_keys():
    items = np.array([4, 1, 4, 9, 1])
    y = np.array([1.0, 2, 3, 4, 5])
    mask = fit_personal_mask(PrivateNoise(BiasModel(), 0.7), items, y)
    m = mask.values(items)
    assert m[0] == m[2] and m[1] == m[4], "one draw per key, fixed"
    assert np.array_equal(mask.values(items), m), "the mask does not change between calls"
    assert np.allclose(mask.base_values(items), y.mean()), "base_values strips the noise"
    assert mask.values(np.array([7]))[0] == y.mean(), "an unseen key gets the base model only"
    assert np.allclose(mask.unmask(items, mask.mask(items, y)), y)
    with pytest.raises(InvalidInputError, match="1-D integer"):
        PrivateNoise(BiasModel(), 0.5).fit(np.zeros((2, 2), int), np.ones(2))
    with pytest.raises(InvalidInputError, match="sigma"):
        PrivateNoise(BiasModel(), float("nan"))


def test_design_aware_em_undoes_a_ridge_mask_that_a_constant_shift_cannot():
    """A mask linear in public features (here a strong genre effect, off the integer
    grid) survives the shift-only snap but not the EM over the design's basis."""
    rng = np.random.default_rng(4)
    features = np.eye(3)[rng.integers(0, 3, 200)]
    r = rng.integers(1, 6, 200).astype(float)
    m = 3.3 + features @ np.array([0.0, 0.45, -0.4])
    recovered = r - m
    prior = PublicPrior(3.0, np.full(5, 0.2), STARS)
    basis = MaskDesign(features).basis(np.arange(200))
    est = demask(recovered, prior, basis=basis)
    snap_exact = np.mean(np.clip(np.rint(est["integer_snap"]), *STARS) == r)
    assert snap_exact < 0.7
    assert np.mean(est["em_basis_map"] == r) > 0.98
    score = leakage(r, recovered, prior, MaskDesign(features), np.arange(200))
    assert score.estimator.startswith("em_basis") and score.exact_fraction > 0.98


def test_oracle_is_exact_without_noise_and_near_the_guess_with_a_lot_of_it():
    rng = np.random.default_rng(5)
    r = rng.integers(1, 6, 4000).astype(float)
    prior = PublicPrior.from_ratings(r, STARS)
    clean = rng.uniform(2, 4, r.size)
    assert oracle_leakage(r, r - clean, clean, prior, 0.0).exact_fraction == 1.0
    noisy = oracle_leakage(r, r - clean - rng.normal(0, 8.0, r.size), clean, prior, 8.0)
    assert noisy.advantage("exact") < 0.05 and noisy.advantage("rmse") < 0.05


@pytest.fixture(scope="module")
def small_split():
    ratings = synthetic_ratings(n_users=80, n_items=60, density=0.3, min_per_user=5, seed=7)
    return random_holdout(ratings, 0.2, seed=7, name="small")


def test_refit_solves_the_local_ridge_problem(small_split):
    masked = mask_split(small_split, BiasModel(), noise_sigma=0.5)
    trainer = FedMFTrainer(masked.split, config=ModelConfig(), prediction_offset=masked.test_offset)
    for _ in range(5):
        trainer.run_round()
    targets = small_split.train.ratings - masked.clean_train_mask
    assert not np.allclose(targets, masked.split.train.ratings), "the noise is in the training targets"
    U = refit_private(trainer, targets)
    cfg, V, free = trainer.config, trainer.V, trainer.config.user_mask
    for u in trainer.participants():
        rows = trainer.user_rows[u]
        Vr = V[small_split.train.items[rows]]
        e = targets[rows] - trainer.mu - Vr @ U[u]
        grad = -(2 / rows.size) * (e @ Vr) + 2 * cfg.reg * U[u]
        assert np.allclose(grad[free], 0, atol=1e-9), "stationary point of the local objective"
        assert np.array_equal(U[u, ~free], trainer.U[u, ~free]), "constant coordinates untouched"


def test_mask_leakage_counts_users_within_the_margin_and_noise_lowers_leakage(small_split):
    prior = public_prior(small_split)
    model = local_model("bias", "synthetic", small_split)
    clean = mask_leakage(mask_split(small_split, model), small_split.train.ratings, prior, 0.05)
    noisy = mask_leakage(mask_split(small_split, model, noise_sigma=4.0), small_split.train.ratings, prior, 0.05)
    assert clean["oracle"]["exact_fraction"] == 1.0, "the bias mask is known to the oracle: nothing hidden"
    assert clean["oracle"]["fraction_within_margin"] == 0.0
    assert noisy["oracle"]["exact_fraction"] < 0.6
    for name in ("estimators", "oracle"):
        assert noisy[name]["rmse"] > clean[name]["rmse"]
        assert 0 <= noisy[name]["fraction_within_margin"] <= noisy[name]["fraction_within_margin_exact_only"] <= 1
    assert noisy["estimators"]["users"] == len(mask_split(small_split, model).masks)


def test_private_scale_shrinks_residuals_and_the_scale_aware_em_undoes_it():
    """A private per-user scale is no protection on integer ratings: r = r~ / s + f is
    linear in (1/s, f), and the EM with r~ as an extra basis column fits it."""
    rng = np.random.default_rng(6)
    items = np.arange(150)
    r = rng.integers(1, 6, items.size).astype(float)
    mask = fit_personal_mask(PrivateScale(BiasModel(), 0.3, 1.0), items, r)
    recovered = mask.mask(items, r)
    s = recovered / (r - r.mean())
    assert np.allclose(s, s[0]) and 0.3 <= s[0] <= 1.0, "r~ = s (r - f) with one private s"
    assert np.allclose(mask.base_values(items), r.mean())
    assert mask.values(np.array([999]))[0] == pytest.approx(r.mean()), "unseen key: base model only"
    prior = PublicPrior.from_ratings(r, STARS)
    aware = leakage(r, recovered, prior, MaskDesign(scale_range=(0.3, 1.0)), items)
    exact, err = aware.per_estimator["em_scale_map"]
    assert exact > 0.95 and err < 0.25, f"s = {s[0]:.3f}: the scale-aware EM recovers the ratings"
    assert "em_scale_map" not in leakage(r, recovered, prior).per_estimator, "only for a scaled design"
    with pytest.raises(InvalidInputError, match="low <= high"):
        PrivateScale(BiasModel(), 0.0, 1.0)


def test_selective_noise_keeps_it_only_for_users_it_lets_pass(small_split):
    prior = public_prior(small_split)
    model, true = local_model("bias", "synthetic", small_split), small_split.train.ratings
    clean = mask_split(small_split, model)
    noisy = mask_split(small_split, model, noise_sigma=3.0)
    mixed, keep = keep_noise_where_it_passes(clean, noisy, true, prior, 0.05)
    assert 0 < keep.sum() < len(clean.masks), "sigma = 3 lets some users pass, not all"
    assert sorted(mixed.noisy_users) == list(np.flatnonzero(keep))
    train = mixed.split.train
    for u, rows in enumerate(train.rows_by_user()):
        if rows.size == 0:
            continue
        source = noisy if keep[u] else clean
        assert np.array_equal(train.ratings[rows], source.split.train.ratings[rows])
        if keep[u]:
            score = leakage(true[rows], train.ratings[rows], prior, mixed.design, train.items[rows])
            bound = oracle_leakage(true[rows], train.ratings[rows], clean.train_mask[rows], prior, 3.0)
            assert max(score.advantage("exact"), score.advantage("rmse"),
                       bound.advantage("exact"), bound.advantage("rmse")) <= 0.05
    assert np.array_equal(mixed.clean_train_mask, clean.clean_train_mask)


@pytest.mark.parametrize("sigma", [0.0, 0.5, 3.0])
def test_early_stopping_leakage_reaches_the_same_audit_verdict(sigma):
    rng = np.random.default_rng(8)
    features = np.eye(4)[rng.integers(0, 4, 80)]
    r = rng.integers(1, 6, 80).astype(float)
    recovered = r - (3.2 + features @ np.array([0.0, 0.3, -0.2, 0.1]) + rng.normal(0, sigma, 80))
    prior = PublicPrior.from_ratings(r, STARS)
    design = MaskDesign(features, noise_sigma=sigma)
    full = leakage(r, recovered, prior, design, np.arange(80))
    worst = lambda s, metrics: max(s.advantage(m) for m in metrics)  # noqa: E731
    for metrics in (("exact", "rmse"), ("exact",), ("rmse",)):
        quick = leakage(r, recovered, prior, design, np.arange(80), stop_above=0.05, stop_metrics=metrics)
        assert (worst(quick, metrics) > 0.05) == (worst(full, metrics) > 0.05)
        assert set(quick.per_estimator) <= set(full.per_estimator)
