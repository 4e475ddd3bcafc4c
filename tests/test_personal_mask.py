"""Personalized local masks (secagg.personal_mask) and FedMF on masked targets (fedmf.masked)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attacks.demask import PublicPrior, demask
from attacks.leakage import leakage
from fedmf.data import random_holdout, synthetic_ratings
from fedmf.masked import local_model, mask_split
from fedmf.model import ModelConfig
from fedmf.trainer import FedMFTrainer
from secagg.errors import InvalidInputError
from secagg.personal_mask import (
    BiasModel,
    CallableModel,
    LocalMFModel,
    RidgeModel,
    fit_personal_mask,
)

ratings_1_5 = arrays(np.float64, st.integers(1, 40), elements=st.integers(1, 5).map(float))

STARS = (1.0, 5.0)  # the rating scale of the hand-made ratings below (MovieLens')


@settings(max_examples=40, deadline=None)
@given(y=ratings_1_5, shrink=st.floats(0, 20))
def test_mask_then_unmask_is_the_identity_and_uses_only_local_data(y, shrink):
    items = np.arange(y.size)
    mask = fit_personal_mask(BiasModel(shrinkage=shrink, prior=3.0), items, y)
    masked = mask.mask(items, y)
    assert np.allclose(mask.unmask(items, masked), y)
    expected = (y.sum() + shrink * 3.0) / (y.size + shrink)
    assert np.allclose(y - masked, expected), "the bias mask is the participant's shrunk mean"
    assert mask.n_fitted == y.size


def test_ridge_mask_explains_a_genre_preference_the_bias_mask_cannot():
    features = np.eye(4)[np.arange(40) % 4]  # four public genres
    items = np.arange(40)
    y = np.where(items % 4 == 0, 5.0, 2.0)
    ridge = fit_personal_mask(RidgeModel(features, alpha=0.1), items, y)
    bias = fit_personal_mask(BiasModel(), items, y)
    assert ridge.residual_rms < 0.05 < bias.residual_rms
    assert ridge.explained > 0.99 and abs(bias.explained) < 1e-12


def test_local_mf_fits_a_low_rank_silo_and_falls_back_to_the_mean_for_unseen_keys():
    rng = np.random.default_rng(0)
    P, Q = rng.normal(size=(15, 2)), rng.normal(size=(20, 2))
    rows, keys = np.meshgrid(np.arange(15), np.arange(20), indexing="ij")
    x = np.column_stack([rows.ravel(), keys.ravel()])
    y = 3.0 + (P @ Q.T).ravel()
    mask = fit_personal_mask(LocalMFModel(factors=2, reg=1e-4, epochs=3000, lr=0.5), x, y)
    assert mask.residual_rms < 0.1 * mask.spread
    unseen = mask.values(np.array([[99, 99]]))
    assert unseen[0] == pytest.approx(y.mean())


def test_callable_model_and_bad_inputs_raise_our_errors():
    mask = fit_personal_mask(CallableModel(lambda x, y: (lambda k: np.full(len(k), 2.5))), np.arange(3), np.ones(3))
    assert np.allclose(mask.values(np.arange(5)), 2.5)
    with pytest.raises(InvalidInputError, match="one target per key"):
        fit_personal_mask(BiasModel(), np.arange(3), np.ones(4))
    with pytest.raises(InvalidInputError, match="NaN"):
        fit_personal_mask(BiasModel(), np.arange(2), np.array([1.0, np.nan]))
    with pytest.raises(InvalidInputError, match="at least one"):
        fit_personal_mask(BiasModel(), np.arange(0), np.ones(0))
    with pytest.raises(InvalidInputError, match="local model returned"):
        fit_personal_mask(CallableModel(lambda x, y: (lambda k: np.ones(len(k) + 1))), np.arange(2), np.ones(2))
    with pytest.raises(InvalidInputError, match="feature table"):
        fit_personal_mask(RidgeModel(np.eye(3)), np.array([0, 7]), np.ones(2))


@pytest.fixture(scope="module")
def small_split():
    ratings = synthetic_ratings(n_users=120, n_items=80, density=0.2, min_per_user=5, seed=3)
    return random_holdout(ratings, 0.2, seed=3, name="small")


def test_masked_split_trains_on_residuals_and_the_composed_model_matches_plain_fedmf(small_split):
    masked = mask_split(small_split, local_model("bias", "synthetic", small_split))
    train = small_split.train
    assert np.allclose(masked.split.train.ratings + masked.train_mask, train.ratings)
    for u, rows in enumerate(train.rows_by_user()):
        if rows.size:
            assert np.allclose(masked.train_mask[rows], train.ratings[rows].mean())
    config = ModelConfig()
    plain = FedMFTrainer(small_split, config=config)
    composed = FedMFTrainer(masked.split, config=config, prediction_offset=masked.test_offset)
    for _ in range(30):
        plain.run_round()
        composed.run_round()
    assert abs(composed.mu) < 1e-9, "residuals of a mean mask average to zero"
    assert composed.history[-1].test_rmse <= plain.history[-1].test_rmse + 0.01


def test_demask_undoes_a_constant_mask_by_integrality():
    rng = np.random.default_rng(1)
    r = rng.integers(1, 6, 60).astype(float)
    prior = PublicPrior(3.0, np.full(5, 0.2), STARS)
    masked = r - (r.mean() + 0.37)  # constant mask, not on the integer grid
    est = demask(masked, prior)["integer_snap"]
    assert np.allclose(est - r, np.round(np.mean(est - r)), atol=1e-6), "recovers r up to an integer"
    score = leakage(r, masked, prior)
    assert score.exact_fraction == 1.0 and score.estimator == "integer_snap"


def test_a_mask_that_memorises_leaves_the_server_at_the_guess():
    r = np.tile([1.0, 2, 3, 4, 5], 12)
    prior = PublicPrior.from_ratings(r, STARS)
    masked = np.zeros_like(r)  # m = r: nothing left to recover
    score = leakage(r, masked, prior)
    assert score.advantage("exact") <= 1e-12
    assert score.advantage("rmse") <= 1e-12


def test_the_rating_scale_comes_from_the_data_not_a_constant():
    """Ratings on a 0..10 scale: the estimators snap and clip to that scale (with MovieLens'
    1..5 hard-coded, every rating above 5 would be lost)."""
    rng = np.random.default_rng(2)
    r = rng.integers(0, 11, 200).astype(float)
    prior = PublicPrior.from_ratings(r, (0.0, 10.0))
    assert list(prior.levels) == list(range(11))
    score = leakage(r, r - (r.mean() + 0.37), prior)
    assert score.exact_fraction == 1.0
    assert synthetic_ratings(n_users=5, n_items=20, min_per_user=5).rating_scale == STARS
