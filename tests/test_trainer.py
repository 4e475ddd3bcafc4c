"""FedMF trainer: federated training matches the centralized baseline; modes and orders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedmf.cli import main
from fedmf.data import random_holdout, synthetic_ratings
from fedmf.errors import ConfigError
from fedmf.model import ModelConfig, local_update
from fedmf.trainer import FedMFTrainer, train_centralized


@pytest.fixture(scope="module")
def small_split():
    ratings = synthetic_ratings(n_users=120, n_items=80, density=0.2, min_per_user=5, seed=3)
    return random_holdout(ratings, 0.2, seed=3, name="small")


def _train(split, rounds, **kwargs):
    trainer = FedMFTrainer(split, **kwargs)
    for _ in range(rounds):
        trainer.run_round()
    return trainer


def test_plain_federated_reaches_the_centralized_baseline(small_split):
    config = ModelConfig()
    trainer = _train(small_split, 30, config=config)
    central = train_centralized(small_split, config, 30)
    federated = [log.test_rmse for log in trainer.history]
    assert np.allclose(federated, central, atol=1e-9), "same model, same init: same trajectory"
    mean_guess = np.sqrt(np.mean((small_split.test.ratings - small_split.train.ratings.mean()) ** 2))
    assert federated[-1] < 0.9 * mean_guess, "training must beat the global-mean predictor"


def test_full_and_part_text_train_the_same_model_but_part_uploads_less(small_split):
    full = _train(small_split, 5, mode="full")
    part = _train(small_split, 5, mode="part")
    assert np.allclose(full.V, part.V) and np.allclose(full.U, part.U)
    assert part.history[-1].bytes_up_per_client < full.history[-1].bytes_up_per_client / 2


def test_setup_aggregates_the_public_statistics(small_split):
    trainer = FedMFTrainer(small_split)
    assert trainer.mu == pytest.approx(small_split.train.ratings.mean(), abs=1e-12)
    assert np.array_equal(trainer.item_counts, np.bincount(small_split.train.items, minlength=80))


def test_initialisation_is_random_not_the_public_codes_constant(small_split):
    trainer = FedMFTrainer(small_split, config=ModelConfig(biases=False))
    assert np.std(trainer.V) > 0.05 and np.std(trainer.U[0]) > 0


@pytest.mark.parametrize("order", ["paper", "sequential"])
def test_local_update_matches_its_equations(order):
    config = ModelConfig(factors=3, biases=False, order=order, lr=0.2, reg=0.05)
    rng = np.random.default_rng(0)
    u, V = rng.normal(size=3), rng.normal(size=(4, 3))
    items, ratings, mu = np.array([2, 0]), np.array([4.0, 2.0]), 3.0
    new_u, G = local_update(config, mu, u, V, items, ratings)
    if order == "paper":
        e = ratings - mu - V[items] @ u
        expect_u = u - 0.2 * (-(2 / 2) * e @ V[items] + 2 * 0.05 * u)
        expect_G = -2 * e[:, None] * u + 2 * 0.05 * V[items]
    else:
        w, rows = u.copy(), []
        for j, r in zip(items, ratings):
            e = r - mu - V[j] @ w
            w = w - (0.2 / 2) * (-2 * e * V[j] + 2 * 0.05 * w)
            rows.append(-2 * e * w + 2 * 0.05 * V[j])
        expect_u, expect_G = w, np.array(rows)
    assert np.allclose(new_u, expect_u) and np.allclose(G, expect_G)


def test_sequential_order_trains(small_split):
    trainer = _train(small_split, 20, config=ModelConfig(order="sequential"))
    assert trainer.history[-1].test_rmse < trainer.history[0].test_rmse


def test_bad_options_are_config_errors(small_split):
    with pytest.raises(ConfigError, match="mode"):
        FedMFTrainer(small_split, mode="half")
    with pytest.raises(ConfigError, match="lr"):
        ModelConfig(lr=-1)
    with pytest.raises(ConfigError, match="order"):
        ModelConfig(order="random")


def test_cli_train_writes_the_json_summary(tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["train", "--rounds", "3", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    for key in ("test_rmse", "rounds", "backend", "seconds_per_round", "client_seconds_per_round",
                "server_seconds_per_round", "bytes_up_per_client", "centralized_test_rmse"):
        assert key in summary
    assert summary["rounds"] == 3 and summary["backend"] == "plain"
    assert abs(summary["test_rmse"] - summary["centralized_test_rmse"]) < 1e-9
    assert "round   3" in capsys.readouterr().out


def test_cli_rejects_unknown_backend(capsys):
    assert main(["train", "--rounds", "1", "--backend", "rot13"]) == 2
    assert "--backend: invalid choice: 'rot13'" in capsys.readouterr().err
