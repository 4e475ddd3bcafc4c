"""FCF: the device solve and gradient share follow their equations; FCF reaches centralized ALS."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedmf.als import ImplicitConfig, centralized_als, init_item_factors, objective, solve_rows
from fedmf.cli import main
from fedmf.data import loo_split, synthetic_ratings
from fedmf.engine import Engine
from fedmf.errors import ConfigError
import fedmf.fcf as fcf_module
from fedmf.fcf import FCFConfig, FCFTrainer, device_shares, run_fcf

MODEL = ImplicitConfig(factors=4, alpha=5.0, reg=2.0)


@pytest.fixture(scope="module")
def small():
    ratings = synthetic_ratings(n_users=50, n_items=120, density=0.12, min_per_user=8, seed=4)
    return loo_split(ratings, seed=1, n_negatives=20)


def test_user_solve_is_the_closed_form(small):
    Y = init_item_factors(MODEL, small.n_items, 3)
    users = np.array([0, 7, 49])
    X = solve_rows(Y, small.train_indptr, small.train_indices, users, MODEL)
    P = small.train_dense()
    for row, u in enumerate(users):
        C = np.diag(1.0 + MODEL.alpha * P[u])
        expect = np.linalg.solve(Y.T @ C @ Y + MODEL.reg * np.eye(4), Y.T @ C @ P[u])
        np.testing.assert_allclose(X[row], expect, rtol=1e-10, atol=1e-12)


def test_summed_shares_give_the_gradient_of_the_objective(small):
    rng = np.random.default_rng(0)
    Y = rng.normal(0, 0.3, (small.n_items, 4))
    users = np.arange(small.n_users)
    X = solve_rows(Y, small.train_indptr, small.train_indices, users, MODEL)
    W = device_shares(Y, X, small.train_indptr, small.train_indices, users, MODEL.alpha)
    P = small.train_dense()
    np.testing.assert_allclose(W, (1 + MODEL.alpha * P) * (P - X @ Y.T), rtol=1e-12, atol=1e-12)
    grad = -2.0 * W.T @ X + 2.0 * MODEL.reg * Y  # the server's step with every user included
    for i, k in [(0, 0), (17, 3), (119, 2)]:
        h = 1e-5
        Yp, Ym = Y.copy(), Y.copy()
        Yp[i, k] += h
        Ym[i, k] -= h
        numeric = (objective(small, X, Yp, MODEL) - objective(small, X, Ym, MODEL)) / (2 * h)
        assert grad[i, k] == pytest.approx(numeric, rel=1e-5, abs=1e-6)


def test_each_upload_is_the_dense_rank_one_share(small):
    trainer = FCFTrainer(small, MODEL, seed=2)
    updates = trainer.local_updates(1, [3, 4])
    X = trainer.solve_users(np.array([3, 4]))
    for row, u in enumerate([3, 4]):
        G = updates.vectors[u].reshape(small.n_items, 4)
        assert np.linalg.matrix_rank(G) == 1 and np.count_nonzero(np.all(G == 0, axis=1)) == 0
        w = G[:, 0] / X[row, 0]
        np.testing.assert_allclose(G, np.outer(w, X[row]), rtol=1e-10)


def test_fcf_reaches_the_objective_of_centralized_als(small):
    summary, engine = run_fcf(small, "plain", 120, model=MODEL, seed=5, centralized_iterations=30)
    trainer = engine.trainer
    users = np.arange(small.n_users)
    J_fcf = objective(small, trainer.solve_users(users), trainer.Y, MODEL)
    for X, Y in centralized_als(small, MODEL, init_item_factors(MODEL, small.n_items, 5), 30):
        pass
    J_als = objective(small, solve_rows(Y, small.train_indptr, small.train_indices, users, MODEL), Y, MODEL)
    J_0 = objective(small, X * 0, init_item_factors(MODEL, small.n_items, 5), MODEL)
    assert J_fcf < J_0 / 2 and J_fcf == pytest.approx(J_als, rel=0.01)
    assert abs(summary["hr_at_10"] - summary["centralized"]["hr_at_10"]) <= 0.1
    assert summary["history"][-1]["clipped_entries"] == 0


def test_converged_fcf_sits_at_the_stationary_point_of_converged_als(small):
    """The no-loss claim at convergence: same J, same scores x_u . y_i, same test metrics.

    (Seed 5. J is not convex: from some starts, e.g. seed 6 on this split, first-order FCF
    settles at another stationary point with J 0.4 % higher; ALS reached the lower one
    from both. The ML-100K benchmark reports several seeds.)
    """
    summary, engine = run_fcf(small, "plain", 600, model=MODEL, seed=5, centralized_iterations=300)
    trainer, users = engine.trainer, np.arange(small.n_users)
    *_, (_, Y) = centralized_als(small, MODEL, init_item_factors(MODEL, small.n_items, 5), 300)
    X = solve_rows(Y, small.train_indptr, small.train_indices, users, MODEL)
    X_fcf = trainer.solve_users(users)
    assert trainer.grad_norm < 1e-4 and summary["grad_norm_last"] == trainer.grad_norm
    assert objective(small, X_fcf, trainer.Y, MODEL) == pytest.approx(objective(small, X, Y, MODEL), rel=1e-9)
    np.testing.assert_allclose(X_fcf @ trainer.Y.T, X @ Y.T, atol=1e-3)
    for key in ("hr_at_10", "ndcg_at_10", "precision_at_10", "map_at_10"):
        assert summary["last_round"][key] == summary["centralized"]["last_iteration"][key]


def test_grad_norm_is_the_norm_of_the_server_gradient(small):
    trainer = FCFTrainer(small, MODEL, FCFConfig(optimizer="sgd", lr=1e-3, lr_decay=1.0), seed=2)
    Y = trainer.Y.copy()
    record = Engine(trainer, "plain", seed=3).run_round()
    users = np.arange(small.n_users)
    X = solve_rows(Y, small.train_indptr, small.train_indices, users, MODEL)
    W = device_shares(Y, X, small.train_indptr, small.train_indices, users, MODEL.alpha)
    expect = np.linalg.norm(-2.0 * W.T @ X + 2.0 * MODEL.reg * Y)
    assert record.metrics["grad_norm"] == pytest.approx(expect, rel=1e-10)


def test_shares_batched_over_devices_are_each_devices_own(small, monkeypatch):
    monkeypatch.setattr(fcf_module, "SHARE_BATCH", 3)
    trainer = FCFTrainer(small, MODEL, seed=2)
    users = [0, 5, 6, 11, 20, 31, 49]
    updates = trainer.local_updates(1, users)
    X = trainer.solve_users(np.array(users))
    W = device_shares(trainer.Y, X, small.train_indptr, small.train_indices, np.array(users), MODEL.alpha)
    assert sorted(updates.vectors) == users
    for row, u in enumerate(users):
        np.testing.assert_array_equal(updates.vectors[u], np.outer(W[row], X[row]).ravel())


def test_centralized_als_matches_the_implicit_library(small):
    implicit_als = pytest.importorskip("implicit.cpu.als")
    from scipy.sparse import csr_matrix

    Y0 = init_item_factors(MODEL, small.n_items, 9)
    *_, (X, Y) = centralized_als(small, MODEL, Y0, 5)
    conf = csr_matrix((np.full(small.train_indices.size, 1 + MODEL.alpha), small.train_indices,
                       small.train_indptr), shape=(small.n_users, small.n_items))
    lib = implicit_als.AlternatingLeastSquares(factors=4, regularization=MODEL.reg, alpha=1.0, iterations=5,
                                               use_cg=False, dtype=np.float64, random_state=0)
    lib.item_factors = Y0.copy()
    lib.user_factors = np.zeros((small.n_users, 4))
    lib.fit(conf, show_progress=False)
    np.testing.assert_allclose(lib.item_factors, Y, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(lib.user_factors, X, rtol=1e-7, atol=1e-9)


def test_partial_participation_scales_the_regulariser(small):
    trainer = FCFTrainer(small, MODEL, FCFConfig(optimizer="sgd", lr=1e-3, lr_decay=1.0), seed=2)
    engine = Engine(trainer, "plain", participation=0.5, seed=3)
    Y_before = trainer.Y.copy()
    seen = {}
    engine.observer = lambda r, result, up, s: seen.update(agg=result.aggregate * s, inc=result.included)
    engine.run_round()
    assert len(seen["inc"]) == round(0.5 * len(trainer.clients()))
    share = len(seen["inc"]) / len(trainer.clients())
    expected = Y_before - 1e-3 * (-2 * seen["agg"].reshape(Y_before.shape) + 2 * MODEL.reg * share * Y_before)
    np.testing.assert_allclose(trainer.Y, expected, rtol=1e-12)


def test_uploads_are_clipped_to_the_public_bound(small):
    trainer = FCFTrainer(small, MODEL, FCFConfig(upload_clip=0.01), seed=2)
    updates = trainer.local_updates(1, [0, 1])
    assert trainer.clipped_entries > 0
    assert max(np.abs(v).max() for v in updates.vectors.values()) <= 0.01


def test_fcf_over_secagg_plus_tracks_plain(small):
    plain, _ = run_fcf(small, "plain", 8, model=MODEL, seed=1, centralized_iterations=None)
    masked, _ = run_fcf(small, "secagg+", 8, model=MODEL, seed=1, centralized_iterations=None)
    for a, b in zip(plain["history"], masked["history"]):
        assert b["test_ndcg_at_10"] == pytest.approx(a["test_ndcg_at_10"], abs=0.03)
    assert masked["backend"] == "secagg+" and masked["history"][-1]["clipped_entries"] == 0


def test_bad_options_are_config_errors(small):
    with pytest.raises(ConfigError, match="upload_clip"):
        FCFConfig(upload_clip=0)
    with pytest.raises(ConfigError, match="optimizer"):
        FCFConfig(optimizer="lbfgs")
    with pytest.raises(ConfigError, match="reg"):
        ImplicitConfig(reg=0)
    with pytest.raises(ConfigError, match="Y0"):
        FCFTrainer(small, MODEL, Y0=np.zeros((3, 4)))


def test_cli_train_fcf_writes_the_issue_keys(tmp_path, capsys):
    out = tmp_path / "fcf.json"
    code = main(["train", "--model", "fcf", "--dataset", "synthetic", "--split", "loo", "--rounds", "2",
                 "--fcf-factors", "4", "--centralized-iterations", "2", "--json", str(out)])
    assert code == 0
    summary = json.loads(out.read_text())
    for key in ("hr_at_10", "ndcg_at_10", "precision_at_10", "map_at_10", "last_round", "centralized",
                "history", "seconds_per_round", "client_seconds_per_round", "server_seconds_per_round",
                "bytes_up_per_client"):
        assert key in summary
    for key in ("hr_at_10", "ndcg_at_10", "precision_at_10", "map_at_10"):
        assert 0 <= summary[key] <= 1 and key in summary["last_round"] and key in summary["centralized"]
    assert summary["rounds"] == 2 and summary["bytes_up_per_client"] >= 1682 * 4 * 8
    assert main(["train", "--model", "fcf", "--split", "u1", "--rounds", "1"]) == 2
    assert "--split loo" in capsys.readouterr().err


def test_attack_recovers_every_interaction_set_from_one_plain_upload(small):
    from attacks.fcf_leakage import evaluate_backend

    report = evaluate_backend(small, "plain", round=2, model=MODEL)
    assert report["uploads_recovered"] == report["users_attacked"] == 50
    assert report["precision"] == 1.0 and report["recall"] == 1.0
    assert report["baseline"]["precision"] < 0.3


@pytest.mark.parametrize("backend, options", [
    ("secagg+", {}),
    ("paillier_packed", {"key_bits": 1024, "allow_insecure_small_key": True}),
])
def test_attack_is_at_the_baseline_under_protection(small, backend, options):
    from attacks.fcf_leakage import evaluate_backend

    report = evaluate_backend(small, backend, round=1, model=MODEL, users=np.arange(12),
                              backend_options=options)
    assert report["uploads_recovered"] == 0
    assert report["precision"] < 0.35 and report["recall"] < 0.35, "a random set of the true size"
