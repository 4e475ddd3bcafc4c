"""PersonalFR: gradients, the exact idle-row optimizer, what is uploaded, the server mean, the attack."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attacks.personalfr_leakage import run_attack
from fedmf.autorec import Layout, decoder_size, loss_and_grad, xavier_init
from fedmf.data import random_holdout, synthetic_ratings
from fedmf.errors import ConfigError
from fedmf.personalfr import (
    ClientState,
    FedConfig,
    clip_global_norm,
    make_engine,
    ndcg_at_k,
    nesterov_step,
    summarize,
)
from fedmf.personalfr_joint import train_joint


def small_split(seed: int = 0, users: int = 40, items: int = 30):
    ratings = synthetic_ratings(users, items, density=0.3, min_per_user=4, seed=seed)
    return random_holdout(ratings, 0.1, seed=seed, name="synthetic")


@pytest.mark.parametrize("loss", ["explicit", "implicit"])
def test_gradient_matches_finite_differences(loss):
    rng = np.random.default_rng(1)
    rows, batch = 6, 3
    layout = Layout(rows)
    flat = xavier_init(rows, rng).astype(np.float64) + rng.normal(0, 0.1, layout.size)
    observed = rng.random((batch, rows)) < 0.6
    x = np.zeros((batch, rows))
    x[observed] = rng.integers(1, 6, observed.sum()) if loss == "explicit" else rng.random(observed.sum()) < 0.5
    keep = (rng.random((batch, 128)) < 0.5).astype(np.float64)
    grad = np.empty_like(flat)
    loss_and_grad(flat, layout, x, observed, loss, keep, grad)
    f = lambda p: loss_and_grad(p, layout, x, observed, loss, keep, np.empty_like(p))
    # every tensor is probed: a few coordinates in each
    idx = np.concatenate([rng.choice(np.arange(a, b), min(8, b - a), replace=False)
                          for a, b in layout.offsets().values()])
    numeric = np.array([(f(flat + e) - f(flat - e)) / 2e-6
                        for e in (np.eye(1, flat.size, i).ravel() * 1e-6 for i in idx)])
    assert np.allclose(numeric, grad[idx], rtol=1e-5, atol=1e-8)
    assert np.abs(grad[idx]).max() > 1e-3  # the check is not vacuous


def test_unobserved_rows_get_zero_gradient():
    rng = np.random.default_rng(2)
    layout = Layout(5)
    flat = xavier_init(5, rng)
    x = np.zeros((2, 5), np.float32)
    observed = np.zeros((2, 5), bool)
    observed[:, :2] = True
    x[observed] = 4.0
    grad = np.empty_like(flat)
    loss_and_grad(flat, layout, x, observed, "explicit", None, grad)
    g = layout.views(grad)
    assert np.all(g["W4"][2:] == 0) and np.all(g["b4"][2:] == 0) and np.all(g["W1"][2:] == 0)
    assert np.any(g["W4"][:2] != 0)


def dense_reference(trainer, cid, lr, rng, momentum, rounds_flat):
    """Torch-style Nesterov SGD on every item row (no row trick), same batches and masks."""
    cfg, data = trainer.cfg, trainer.data[cid]
    m = trainer.n_items
    layout = Layout(m)
    flat = rounds_flat.copy()
    values = np.zeros((len(data.users), m), np.float32)
    observed = np.zeros((len(data.users), m), bool)
    values[:, data.items], observed[:, data.items] = data.values, data.observed
    grad = np.empty_like(flat)
    for _ in range(cfg.local_epochs):
        order = rng.permutation(len(data.users))
        for start in range(0, len(data.users), cfg.batch_users):
            b = order[start : start + cfg.batch_users]
            keep = (rng.random((b.size, 128)) >= 0.5).astype(np.float32)
            loss_and_grad(flat, layout, values[b], observed[b], cfg.loss, keep, grad)
            clip_global_norm(grad, cfg.clip_norm)
            nesterov_step(flat, momentum, grad, lr, cfg)
    return flat


@pytest.mark.parametrize("variant", ["personalfr", "fedavg"])
@pytest.mark.parametrize("clients", [None, 4])
def test_row_trick_and_persisting_state_equal_dense_sgd(variant, clients):
    """Two local rounds of one client (state kept between them) equal dense torch-style SGD."""
    split = small_split()
    cfg = FedConfig(variant=variant, batch_users=2, rounds=10)
    engine = make_engine(split, config=cfg, clients=clients)
    tr = engine.trainer
    cid = next(c for c in tr.clients() if tr.data[c].items.size < tr.n_items)
    ref_rng = copy.deepcopy(tr.rng)
    dense_momentum = np.zeros_like(tr.global_flat)
    dense = tr.global_flat.copy()
    start = 0 if variant == "fedavg" else Layout(tr.n_items).encoder_size
    for rnd in range(2):
        lr = cfg.lr_at(rnd)
        upload, _, state, _ = tr.client_update(cid, lr)
        tr.states[cid] = state  # the client keeps its optimizer state (and encoder)
        dense_start = dense.copy()
        dense_start[start:] = tr.global_flat[start:]  # it loads the server's federated part
        dense = dense_reference(tr, cid, lr, ref_rng, dense_momentum, dense_start)
        assert upload.size == tr.upload_layout().length
        np.testing.assert_allclose(upload, (dense - tr.global_flat)[start:], atol=2e-6)
    assert state.rounds == 2 and np.any(state.momentum != 0)


@pytest.mark.parametrize("loss", ["explicit", "implicit"])
@pytest.mark.parametrize("variant,clients,batch", [("personalfr", None, 1), ("personalfr", 4, 3),
                                                   ("fedavg", None, 1)])
def test_numba_training_equals_numpy_training(loss, variant, clients, batch):
    """The fused numba client loop and the per-step numpy loop give the same run (float32 rounding)."""
    split = small_split()
    cfg = FedConfig(loss=loss, variant=variant, batch_users=batch, rounds=6, fraction=0.5)
    runs = {}
    for kernel in ("numba", "numpy"):
        engine = make_engine(split, config=cfg, clients=clients, kernel=kernel)
        engine.run(6)
        runs[kernel] = engine
    fast, slow = (runs[k].trainer for k in ("numba", "numpy"))
    initial = make_engine(split, config=cfg, clients=clients).trainer.global_flat
    assert np.abs(fast.global_flat - initial).max() > 1e-3  # the runs did train
    np.testing.assert_allclose(fast.global_flat, slow.global_flat, rtol=0, atol=2e-5)
    assert set(fast.states) == set(slow.states)
    for cid, state in fast.states.items():
        np.testing.assert_allclose(state.momentum, slow.states[cid].momentum, rtol=0, atol=2e-5)
        assert state.idle_beta == slow.states[cid].idle_beta
    for a, b in zip(runs["numba"].history, runs["numpy"].history):
        assert a.metrics["train_loss"] == pytest.approx(b.metrics["train_loss"], rel=1e-4)
        key = "test_rmse" if loss == "explicit" else "ndcg_at_10"
        assert a.metrics[key] == pytest.approx(b.metrics[key], abs=1e-4)


def test_unknown_kernel_raises():
    with pytest.raises(ConfigError, match="kernel"):
        make_engine(small_split(), kernel="torch")


def test_optimizer_state_changes_the_next_update():
    split = small_split()
    tr = make_engine(split, config=FedConfig(rounds=10)).trainer
    cid = tr.clients()[0]
    _, _, state, _ = tr.client_update(cid, 0.1)
    tr.states[cid] = state
    rng = copy.deepcopy(tr.rng)
    kept, _, _, _ = tr.client_update(cid, 0.1)
    tr.rng = rng
    tr.states[cid] = ClientState(np.zeros_like(state.momentum), 0.0, state.encoder, 1)
    fresh, _, _, _ = tr.client_update(cid, 0.1)
    assert np.abs(kept - fresh).max() > 1e-4


def test_encoder_never_uploaded_and_server_mean_of_decoders():
    split = small_split()
    cfg = FedConfig(rounds=4, fraction=0.25)
    seen = []
    engine = make_engine(split, "plain", config=cfg)
    tr = engine.trainer
    enc = Layout(tr.n_items).encoder_size
    before = {"flat": tr.global_flat.copy()}

    def observer(rnd, result, uploads, scale):
        seen.append((before["flat"], dict(uploads), tr.global_flat.copy()))
        before["flat"] = tr.global_flat.copy()

    engine.observer = observer
    engine.run(4)
    assert tr.upload_layout().length == decoder_size(tr.n_items) == tr.global_flat.size - enc
    for old, uploads, new in seen:
        # the server's encoder never moves: nothing of an encoder reaches it
        np.testing.assert_array_equal(new[:enc], tr.initial_encoder)
        copies = [old[enc:] + u for u in uploads.values()]  # each client's decoder copy
        np.testing.assert_allclose(new[enc:], np.mean(copies, axis=0), atol=1e-6)
    # while the clients' encoders did train
    cid, state = next(iter(tr.states.items()))
    from fedmf.personalfr import gather_rows
    initial = gather_rows(np.concatenate([tr.initial_encoder, tr.global_flat[enc:]]), tr.n_items,
                          tr.data[cid].items)[: state.encoder.size]
    assert np.abs(state.encoder - initial).max() > 1e-4


def test_fedavg_uploads_the_whole_autoencoder():
    split = small_split()
    tr = make_engine(split, config=FedConfig(variant="fedavg", rounds=2)).trainer
    assert tr.upload_layout().length == Layout(tr.n_items).size


def test_federated_training_reduces_test_error():
    split = small_split(users=60)
    engine = make_engine(split, config=FedConfig(rounds=30, fraction=0.5))
    engine.run(30)
    s = summarize(engine)
    first = engine.history[0].metrics["test_rmse"]
    assert s["test_rmse"] < first - 0.5 and s["last_round"]["round"] == 30
    taken = s["participations_per_client"]
    n = len(engine.trainer.clients())
    assert taken["mean"] * n == pytest.approx(sum(r.participants for r in engine.history))
    assert 0 <= taken["min"] <= taken["mean"] <= taken["max"] <= 30


def test_joint_trains():
    split = small_split(users=60)
    out = train_joint(split, "implicit", 3, batch_users=20)
    assert 0 <= out["ndcg_at_10"] <= 1 and len(out["history"]) == 3


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 1), min_size=1, max_size=15), st.integers(0, 10_000))
def test_ndcg_bounds_and_perfect_ranking(labels, seed):
    labels = np.array(labels, float)
    users = np.zeros(labels.size, int)
    scores = np.random.default_rng(seed).random(labels.size)
    value = ndcg_at_k(users, scores, labels)
    assert 0 <= value <= 1 + 1e-12
    perfect = ndcg_at_k(users, labels + 0.0, labels)
    assert perfect == (1.0 if labels.any() else 0.0)


def test_ndcg_hand_computed():
    # one user, test items ranked [0 (gain 0), 1 (gain 1)]: DCG = 1/log2(3), IDCG = 1
    users = np.array([0, 0, 1])
    value = ndcg_at_k(users, np.array([0.9, 0.1, 0.5]), np.array([0.0, 1.0, 0.0]))
    assert value == pytest.approx((1 / np.log2(3) + 0.0) / 2)  # user 1 has no positive: 0


def test_bad_config_raises():
    with pytest.raises(ConfigError, match="variant"):
        FedConfig(variant="nope").check()
    with pytest.raises(ConfigError, match="loss"):
        FedConfig(loss="hinge").check()
    with pytest.raises(ConfigError, match="clients"):
        make_engine(small_split(), clients=1000)


def test_attack_recovers_rated_set_in_plain():
    split = small_split(users=60, items=40)
    report = run_attack(split, "plain", config=FedConfig(rounds=10, fraction=0.2), rounds=2)
    assert report.clients_attacked >= 12
    assert report.precision == 1.0 and report.recall == 1.0
    assert report.baseline_precision < 0.6
    assert report.rating_rmse < report.rating_baseline_rmse


def test_attack_at_baseline_under_secagg_plus():
    split = small_split(users=60, items=40)
    report = run_attack(split, "secagg+", config=FedConfig(rounds=10, fraction=0.2), rounds=1,
                        backend_options={"clip": 1.0, "precision_bits": 16})
    assert report.clients_attacked == 12
    # the masked view looks active everywhere: precision is the client's share of items
    assert report.recall == 1.0
    assert report.precision == pytest.approx(report.baseline_precision, abs=1e-12)


def test_cli_refuses_a_split_other_than_the_codes(capsys):
    from fedmf.cli import main

    assert main(["train", "--model", "personalfr", "--dataset", "synthetic", "--split", "u1", "--rounds", "1"]) == 2
    assert "--split random" in capsys.readouterr().err
