"""Gradient-leakage attack: exact recovery on plain FedMF, honest failure, protected backends."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attacks.evaluate import evaluate_backend, guard_demonstration, user_truth
from attacks.gradient_leakage import (
    NO_OBSERVATION,
    RECOVERED,
    VIOLATED,
    PublicParams,
    RoundObservation,
    attack_user,
)
from attacks.observe import record_run
from fedmf.cli import main
from fedmf.data import load_split, random_holdout, synthetic_ratings
from fedmf.model import ModelConfig, init_items, init_users, local_update


@pytest.fixture(scope="module")
def split():
    ratings = synthetic_ratings(n_users=40, n_items=80, density=0.12, min_per_user=4, seed=3)
    return random_holdout(ratings, 0.2, seed=0, name="tiny")


def _max_error(record, split):
    items, ratings = user_truth(split, record.users)
    worst, statuses, orders = 0.0, set(), set()
    for u, t, r in zip(record.users, items, ratings):
        res = attack_user(record.observations(u), record.params)
        statuses.add(res.status)
        orders.add(res.order)
        if res.status == RECOVERED:
            assert np.array_equal(res.rated_items, t)
            worst = max(worst, float(np.abs(res.ratings - r).max()))
    return worst, statuses, orders


@pytest.mark.parametrize("order", ["paper", "sequential"])
@pytest.mark.parametrize("biases", [True, False])
@pytest.mark.parametrize("order_known", [True, False])
def test_exact_recovery_on_synthetic_data(split, order, biases, order_known):
    config = ModelConfig(order=order, biases=biases)
    record = record_run(split, "plain", config=config, rounds=2, order_known=order_known)
    worst, statuses, orders = _max_error(record, split)
    assert statuses == {RECOVERED}
    assert orders == {order}  # when unknown, the structure checks identify the true order
    assert worst < 1e-8


@settings(max_examples=12, deadline=None)
@given(lr=st.floats(0.05, 0.6), reg=st.floats(0.01, 0.3), factors=st.integers(2, 12),
       seed=st.integers(0, 10_000), rounds=st.integers(2, 4))
def test_paper_biased_recovery_property(split, lr, reg, factors, seed, rounds):
    config = ModelConfig(lr=lr, reg=reg, factors=factors)
    record = record_run(split, "plain", config=config, rounds=rounds, seed=seed)
    worst, statuses, _ = _max_error(record, split)
    assert statuses == {RECOVERED}
    assert worst < 1e-6


def test_parttext_rated_set_and_exact_fraction(split):
    report, _ = evaluate_backend(split, "plain", config=ModelConfig(), mode="part")
    assert report["exact_fraction"] == 1.0
    assert report["rated_set_precision"] == report["rated_set_recall"] == 1.0
    assert report["baseline"]["exact_fraction"] < 0.6
    assert report["ratings_no_better_than_baseline"] is False


def _two_epoch_rounds(config, n_items=30, rated=8, epochs=2, seed=0):
    """One user's uploads when it runs ``epochs`` local passes per round (summed rows)."""
    rng = np.random.default_rng(seed)
    u = init_users(config, 1, rng)[0]
    items = np.sort(rng.choice(n_items, rated, replace=False))
    ratings = rng.integers(1, 6, rated).astype(float)
    V = init_items(config, n_items, rng)
    rounds = []
    for rnd in (1, 2):
        upload = np.zeros((n_items, config.row_length))
        for _ in range(epochs):
            u, G = local_update(config, 3.5, u, V, items, ratings)
            upload[items] += G
        rounds.append(RoundObservation(upload, V.copy(), None, rnd))
        V[:, config.item_mask] += rng.normal(0, 0.05, (n_items, config.row_length))  # server step
    params = PublicParams(lr=config.lr, reg=config.reg, mu=3.5, factors=config.factors,
                          biases=config.biases, order=None, rating_scale=(1.0, 5.0))
    return rounds, params, ratings


@pytest.mark.parametrize("biases", [True, False])
def test_several_local_epochs_are_reported_not_guessed(biases):
    config = ModelConfig(biases=biases)
    rounds, params, truth = _two_epoch_rounds(config, epochs=2)
    result = attack_user(rounds, params)
    assert result.status == VIOLATED
    assert result.ratings is None and "exceeds tolerance" in result.reason
    rounds, params, truth = _two_epoch_rounds(config, epochs=1)  # the same setting, one epoch
    result = attack_user(rounds, params)
    assert result.status == RECOVERED
    assert np.allclose(result.ratings, truth)


def test_user_bias_without_regularisation_needs_round_one(split):
    config = ModelConfig(reg=0.0)
    record = record_run(split, "plain", config=config, rounds=3)
    u = record.users[0]
    truth = user_truth(split, [u])[1][0]
    late = attack_user(record.observations(u, last=2), record.params)  # rounds 2, 3
    assert late.status == VIOLATED and "not identifiable" in late.reason
    early = attack_user(record.observations(u, last=3)[:2], record.params)  # rounds 1, 2: b = 0 at init
    assert early.status == RECOVERED
    assert np.allclose(early.ratings, truth)


def test_protected_backends_defeat_the_attack(split):
    config = ModelConfig()
    backends = [("secagg", {}), ("secagg+", {}),
                ("paillier_packed", {"key_bits": 1024, "allow_insecure_small_key": True})]
    for mode in ("full", "part"):
        for name, options in backends:
            report, _ = evaluate_backend(split, name, config=config, mode=mode, backend_options=options)
            assert RECOVERED not in report["status_counts"], (name, mode)
            assert report["ratings_no_better_than_baseline"], (name, mode)
            assert report["exact_fraction"] <= report["baseline"]["exact_fraction"] + 1e-12
            if mode == "part" and name == "paillier_packed":
                # the server sees only which item-aligned ciphertexts (groups) were sent:
                # every rated item is in them, along with unrated neighbours
                assert report["rated_set_recall"] == 1.0
                assert report["rated_set_precision"] < 1.0
            elif mode == "part":  # PartText declares the support: the rated set leaks by design
                assert report["rated_set_precision"] == report["rated_set_recall"] == 1.0
            else:
                assert report["rated_set_recall"] < 0.5
    paillier, _ = evaluate_backend(split, "paillier_packed", config=config, backend_options=backends[2][1])
    assert paillier["status_counts"] == {NO_OBSERVATION: len(paillier_users(split))}


def paillier_users(split):
    return [u for u in range(split.train.n_users) if np.any(split.train.users == u)]


@pytest.mark.parametrize("mode", ["full", "part"])
def test_guard_demonstration(split, mode):
    guard = guard_demonstration(split, config=ModelConfig(), mode=mode, victims=3, others=4)
    assert guard["guard_too_low"]["exact_fraction"] == 1.0
    assert guard["guard_too_low"]["rated_set_precision"] == guard["guard_too_low"]["rated_set_recall"] == 1.0
    enforced = guard["guard_enforced"]
    assert enforced["rounds_refused"] == enforced["rounds_attempted"] == 6
    assert enforced["error"].startswith("TooFewInputsError")
    assert guard["lone_victim_without_sybil"].startswith("RoundAbortedError")


def test_attack_command_writes_the_report(tmp_path, capsys):
    out = tmp_path / "attack.json"
    code = main(["attack", "--dataset", "synthetic", "--backend", "plain", "--mode", "part",
                 "--users", "40", "--guard-victims", "2", "--guard-others", "3", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    for key in ("exact_fraction", "reconstruction_rmse", "rated_set_precision", "rated_set_recall"):
        assert key in report and key in report["baseline"]
    assert report["exact_fraction"] == 1.0 and report["users_attacked"] == 40
    assert report["guard"]["guard_enforced"]["rounds_refused"] == 4
    assert "baseline" in capsys.readouterr().out


def test_ml100k_plain_full_all_users(ml100k_root):
    split = load_split("ml-100k", "u1")
    report, _ = evaluate_backend(split, "plain", config=ModelConfig(), mode="full")
    assert report["users_attacked"] == 943
    assert report["exact_fraction"] >= 0.999
    assert report["rated_set_precision"] == report["rated_set_recall"] == 1.0
