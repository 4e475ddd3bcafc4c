"""PFedRec: the local steps against finite differences and a numpy reference, the upload, the
server mean, sampling, determinism, LDP noise and the item-set leakage attack."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from attacks.pfedrec_leakage import attack_backend, infer_positives
from fedmf.data import load_implicit, loo_split, synthetic_ratings
from fedmf.errors import ConfigError
from fedmf.ldp import csprng_uniform, laplace_noise
from fedmf.pfedrec import PFedRecConfig, PFedRecTrainer, make_engine
from fedmf.pfedrec_model import clip_rows, dense_uploads, sample_round, touched_rows, train_users

SMALL = dict(latent_dim=8, batch_size=16)


@pytest.fixture(scope="module")
def small_split():
    ratings = synthetic_ratings(n_users=24, n_items=80, density=0.15, min_per_user=8, seed=4)
    return loo_split(ratings, seed=1, n_negatives=9)


def _bce_mean(z, y):
    return np.mean(np.logaddexp(0.0, np.where(y > 0.5, -z, z)))


def _one_user(E, w, b, items, labels, *, lr, lr_item, batch, joint):
    """Run the numba kernel on one user with the given samples (in the given order)."""
    indptr = np.array([0, items.size], np.int64)
    row_indptr, rows = touched_rows(indptr, items, E.shape[0])
    W, B = w[None].copy(), np.array([b])
    deltas, _, _ = train_users(E, W, B, np.array([0], np.int64), indptr, items, labels, row_indptr,
                               rows, lr, lr_item, batch, joint, np.zeros((1, 1), np.int64))
    local = E.copy()
    local[rows] += deltas
    return W[0], B[0], local


@pytest.mark.parametrize("joint", [False, True])
def test_one_batch_steps_equal_sgd_on_finite_difference_gradients(joint):
    rng = np.random.default_rng(0)
    E = rng.standard_normal((7, 4))
    w, b = rng.uniform(-0.5, 0.5, 4), 0.1
    items = np.array([0, 3, 3, 5, 1, 6], np.int64)
    labels = np.array([1, 0, 0, 1, 0, 1], float)
    lr, lr_item, h = 0.3, 5.0, 1e-6

    def loss(w_, b_, E_):
        return _bce_mean(E_[items] @ w_ + b_, labels)

    def grad_score(w_, b_, E_):
        gw = np.array([(loss(w_ + h * e, b_, E_) - loss(w_ - h * e, b_, E_)) / (2 * h) for e in np.eye(4)])
        return gw, (loss(w_, b_ + h, E_) - loss(w_, b_ - h, E_)) / (2 * h)

    def grad_items(w_, b_, E_):
        g = np.zeros_like(E_)
        for idx in np.ndindex(*E_.shape):
            d = np.zeros_like(E_)
            d[idx] = h
            g[idx] = (loss(w_, b_, E_ + d) - loss(w_, b_, E_ - d)) / (2 * h)
        return g

    gw, gb = grad_score(w, b, E)
    w1, b1 = w - lr * gw, b - lr * gb
    # alternating (PFedRec): the item step sees the new score function; joint (FedMF): the old one
    E1 = E - lr_item * (grad_items(w, b, E) if joint else grad_items(w1, b1, E))
    W, B, local = _one_user(E, w, b, items, labels, lr=lr, lr_item=lr_item, batch=8, joint=joint)
    np.testing.assert_allclose(W, w1, rtol=0, atol=1e-8)
    assert B == pytest.approx(b1, abs=1e-8)
    np.testing.assert_allclose(local, E1, rtol=0, atol=1e-6)
    assert np.all(local[[2, 4]] == E[[2, 4]]), "rows outside the batch never move"


def _reference_epoch(E, w, b, items, labels, lr, lr_item, batch):
    """Paper Alg. 1 ClientUpdate in plain numpy (independent of the kernel)."""
    local, w, b = E.copy(), w.copy(), float(b)
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))
    for lo in range(0, items.size, batch):
        it, y = items[lo:lo + batch], labels[lo:lo + batch]
        g = (sig(local[it] @ w + b) - y) / it.size
        w, b = w - lr * g @ local[it], b - lr * g.sum()
        g = (sig(local[it] @ w + b) - y) / it.size
        np.add.at(local, it, -lr_item * g[:, None] * w[None, :])
    return w, b, local


def test_kernel_matches_a_numpy_reference_over_several_batches():
    rng = np.random.default_rng(1)
    E = rng.standard_normal((30, 6))
    w, b = rng.uniform(-0.4, 0.4, 6), -0.2
    items = rng.integers(0, 30, 53).astype(np.int64)
    labels = (rng.random(53) < 0.3).astype(float)
    W, B, local = _one_user(E, w, b, items, labels, lr=0.1, lr_item=40.0, batch=16, joint=False)
    rw, rb, rlocal = _reference_epoch(E, w, b, items, labels, 0.1, 40.0, 16)
    np.testing.assert_allclose(W, rw, atol=1e-10)
    assert B == pytest.approx(rb, abs=1e-10)
    np.testing.assert_allclose(local, rlocal, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_neg=st.integers(1, 6))
def test_sampling_gives_each_positive_distinct_unseen_negatives(seed, n_neg):
    rng = np.random.default_rng(seed)
    n_users, n_items = 5, 25
    pos = [np.sort(rng.choice(n_items, rng.integers(1, 8), replace=False)) for _ in range(n_users)]
    seen = [np.union1d(p, rng.choice(n_items, 3)) for p in pos]
    indptr = np.r_[0, np.cumsum([p.size for p in pos])].astype(np.int64)
    seen_indptr = np.r_[0, np.cumsum([s.size for s in seen])].astype(np.int64)
    items, labels = sample_round(indptr, np.concatenate(pos).astype(np.int64), seen_indptr,
                                 np.concatenate(seen).astype(np.int64), n_items, n_neg,
                                 rng.random(indptr[-1] * n_neg), rng.random(indptr[-1] * (1 + n_neg)))
    for u in range(n_users):
        block = slice(indptr[u] * (1 + n_neg), indptr[u + 1] * (1 + n_neg))
        it, y = items[block], labels[block]
        assert sorted(it[y == 1].tolist()) == pos[u].tolist(), "each positive exactly once"
        negs = it[y == 0]
        assert negs.size == n_neg * pos[u].size
        assert not np.isin(negs, seen[u]).any(), "negatives are never interacted items"


def test_distinct_draws_are_uniform():
    """Each positive's n_neg negatives: every item of the complement equally likely."""
    n_items, n_neg, n_pos = 12, 3, 4000
    indptr = np.array([0, n_pos], np.int64)
    rng = np.random.default_rng(2)
    items, labels = sample_round(indptr, np.zeros(n_pos, np.int64), np.array([0, 1], np.int64),
                                 np.array([0], np.int64), n_items, n_neg, rng.random(n_pos * n_neg),
                                 rng.random(n_pos * (1 + n_neg)))
    counts = np.bincount(items[labels == 0], minlength=n_items)[1:]
    assert stats.chisquare(counts).pvalue > 1e-4
    blocks = np.sort(items.reshape(-1)[labels.reshape(-1) == 0])  # all negatives
    assert blocks.size == n_pos * n_neg


def _capture():
    seen = {}

    def observer(rnd, result, uploads, scale):
        seen.update(result=result, uploads=uploads, scale=scale)

    return seen, observer


def test_upload_is_the_dense_item_delta_and_the_server_applies_its_mean(small_split):
    config = PFedRecConfig(**SMALL, upload_clip=1e6)
    seen, observer = _capture()
    engine = make_engine(small_split, "plain", config=config, observer=observer,
                         backend_options={"record_view": True})
    trainer = engine.trainer
    E0, W0, B0 = trainer.state.E.copy(), trainer.state.W.copy(), trainer.state.B.copy()
    engine.run_round()
    cr = trainer.last_round
    m, k = small_split.n_items, config.latent_dim
    for u in trainer.clients():
        sent = seen["result"].view.per_client[u] * seen["scale"]
        assert sent.shape == (m * k,), "the upload is the item table only: (w, b) are not in it"
        rows = cr.rows[cr.row_indptr[u]:cr.row_indptr[u + 1]]
        dense = np.zeros((m, k))
        dense[rows] = cr.deltas[cr.row_indptr[u]:cr.row_indptr[u + 1]]
        np.testing.assert_allclose(sent.reshape(m, k), dense, rtol=0, atol=1e-9)
        untouched = np.setdiff1d(np.arange(m), rows)
        assert np.all(sent.reshape(m, k)[untouched] == 0)
        # independently: the reference epoch on the same samples gives the same table
        block = slice(cr.sample_indptr[u], cr.sample_indptr[u + 1])
        rw, _, rlocal = _reference_epoch(E0, W0[u], B0[u], cr.items[block], cr.labels[block],
                                         config.lr, trainer.lr_item, config.batch_size)
        np.testing.assert_allclose(rlocal - E0, dense, atol=1e-8)
        np.testing.assert_allclose(trainer.state.W[u], rw, atol=1e-10)
        assert not np.allclose(trainer.state.W[u], W0[u]), "the score function trained on the device"
    uploads = np.array([seen["uploads"][u] * seen["scale"] for u in trainer.clients()])
    np.testing.assert_allclose(trainer.state.E - E0, uploads.mean(axis=0).reshape(m, k), atol=1e-9)


def _reference_upload(row_indptr, rows, deltas, u, n_items, clip):
    """The straightforward dense upload of user u: zeros, its delta rows, np.clip."""
    x = np.zeros((n_items, deltas.shape[1]))
    x[rows[row_indptr[u]:row_indptr[u + 1]]] = deltas[row_indptr[u]:row_indptr[u + 1]]
    return np.clip(x.ravel(), -clip, clip), int(np.count_nonzero(np.abs(x) > clip))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), clip=st.sampled_from([0.5, 1.0, 3.0, np.inf]))
def test_dense_uploads_equal_a_per_user_scatter_and_clip_bitwise(seed, clip):
    rng = np.random.default_rng(seed)
    n_users, n_items, k = 6, 15, 3
    per_user = [np.sort(rng.choice(n_items, rng.integers(0, 8), replace=False)) for _ in range(n_users)]
    row_indptr = np.r_[0, np.cumsum([r.size for r in per_user])].astype(np.int64)
    rows = np.concatenate(per_user).astype(np.int64)
    deltas = rng.standard_normal((rows.size, k)) * 2
    users = rng.permutation(n_users)[: rng.integers(1, n_users + 1)].astype(np.int64)
    X, clipped = dense_uploads(row_indptr, rows, deltas, users, n_items, clip)
    for i, u in enumerate(users):
        ref, ref_clipped = _reference_upload(row_indptr, rows, deltas, u, n_items, clip)
        assert np.array_equal(X[i], ref) and clipped[i] == ref_clipped
    Y = rng.standard_normal((4, 20)) * 2
    ref, ref_counts = np.clip(Y, -clip, clip), (np.abs(Y) > clip).sum(axis=1)
    assert np.array_equal(clip_rows(Y, clip), ref_counts)
    assert np.array_equal(Y, ref), "clipped in place"


def test_round_uploads_equal_the_per_user_reference_with_clipping(small_split):
    trainer = PFedRecTrainer(small_split, PFedRecConfig(**SMALL, upload_clip=0.5))
    users = trainer.clients()[::2]
    updates = trainer.local_updates(1, users)
    cr, total = trainer.last_round, 0
    for u in users:
        ref, clipped = _reference_upload(cr.row_indptr, cr.rows, cr.deltas, u, small_split.n_items, 0.5)
        assert np.array_equal(updates.vectors[u], ref)
        total += clipped
    assert total > 0, "the case exercises clipping"
    assert cr.clipped == total


def test_runs_are_deterministic_under_a_seed(small_split):
    def run(seed):
        engine = make_engine(small_split, "plain", config=PFedRecConfig(**SMALL, seed=seed))
        engine.run(3)
        return engine.trainer.state, [r.metrics for r in engine.history]

    (a, ha), (b, hb), (c, _) = run(7), run(7), run(8)
    assert np.array_equal(a.E, b.E) and np.array_equal(a.W, b.W) and ha == hb
    assert not np.array_equal(a.E, c.E)


def test_secagg_plus_round_matches_plain_up_to_quantisation(small_split):
    config = PFedRecConfig(**SMALL, upload_clip=16.0)
    plain = make_engine(small_split, "plain", config=config)
    masked = make_engine(small_split, "secagg+", config=config, backend_options={"precision_bits": 24})
    plain.run_round()
    masked.run_round()
    step = 2 * 16.0 / 2**24  # the mean of stochastically rounded values is off by < one step
    np.testing.assert_allclose(masked.trainer.state.E, plain.trainer.state.E, rtol=0, atol=2 * step)
    assert not np.array_equal(masked.trainer.state.E, plain.trainer.state.E), "it really was quantised"


def test_laplace_noise_comes_from_the_csprng_with_the_right_law():
    x = laplace_noise(20000, 0.3)
    assert stats.kstest(x, stats.laplace(scale=0.3).cdf).pvalue > 1e-4
    u = csprng_uniform(10000)
    assert 0 < u.min() and u.max() < 1
    assert not np.array_equal(laplace_noise(10, 1.0), laplace_noise(10, 1.0))
    assert np.array_equal(laplace_noise(5, 0.0), np.zeros(5))
    with pytest.raises(ConfigError, match="scale"):
        laplace_noise(5, -0.1)


def test_ldp_noise_is_added_to_every_uploaded_entry(small_split):
    seen, observer = _capture()
    engine = make_engine(small_split, "plain", config=PFedRecConfig(**SMALL, ldp_scale=0.5, upload_clip=1e6),
                         observer=observer)
    engine.run_round()
    cr, m, k = engine.trainer.last_round, small_split.n_items, 8
    u = engine.trainer.clients()[0]
    dense = np.zeros((m, k))
    lo, hi = cr.row_indptr[u], cr.row_indptr[u + 1]
    dense[cr.rows[lo:hi]] = cr.deltas[lo:hi]
    noise = seen["uploads"][u] * seen["scale"] - dense.ravel()
    assert np.count_nonzero(noise) == m * k
    assert np.mean(np.abs(noise)) == pytest.approx(0.5, rel=0.15)


def test_attack_reads_positives_from_plain_uploads_and_nothing_under_secagg_plus(small_split):
    config = PFedRecConfig(**SMALL, upload_clip=64.0)
    plain, _ = attack_backend(small_split, "plain", config=config)
    assert plain.precision > 0.95 and plain.recall > 0.95
    assert plain.precision > 3 * plain.baseline_precision
    masked, _ = attack_backend(small_split, "secagg+", config=config)
    assert masked.observed_uploads
    assert abs(masked.precision - masked.baseline_precision) < 0.1
    assert abs(masked.recall - masked.baseline_recall) < 0.15


def test_infer_positives_takes_the_minority_side():
    w = np.array([1.0, -2.0])
    upload = np.zeros((6, 2))
    upload[1] = 0.9 * w  # positive
    upload[[2, 3, 5]] = -np.outer([0.2, 0.3, 0.1], w)  # negatives
    assert infer_positives(upload.ravel(), 6, 2).tolist() == [1]


@pytest.mark.parametrize("bad", [dict(variant="ncf"), dict(lr=0.0), dict(batch_size=0),
                                 dict(sample_fraction=1.5), dict(ldp_scale=-1.0), dict(upload_clip=np.inf)])
def test_bad_configuration_is_refused(small_split, bad):
    with pytest.raises(ConfigError):
        PFedRecTrainer(small_split, PFedRecConfig(**bad))


def test_a_few_rounds_on_movielens_learn(ml100k_root):
    split = load_implicit("ml-100k", "loo", seed=0, ties="file")
    engine = make_engine(split, "plain", config=PFedRecConfig(upload_clip=64.0))
    engine.run(3)
    hr = [r.metrics["hr_at_10"] for r in engine.history]
    assert hr[-1] > 0.3, f"random ranking gives 0.10; got {hr}"


def test_cli_refuses_pfedrec_without_a_leave_one_out_split(capsys):
    from fedmf.cli import main

    assert main(["train", "--model", "pfedrec", "--split", "u1", "--rounds", "1"]) == 2
    assert "--model pfedrec reads --split loo, got --split u1" in capsys.readouterr().err


def test_file_order_ties_pick_the_first_tied_row_as_test_like_pandas_rank_first():
    from fedmf.data import Ratings

    # user 0: items 5, 2, 7 share the latest time 9 (file order 5, 2, 7); item 1 at time 3
    rows = np.array([(0, 1, 4, 3), (0, 5, 4, 9), (0, 2, 3, 9), (0, 7, 5, 9), (0, 3, 2, 1)], np.int64)
    data = Ratings(rows[:, 0], rows[:, 1], rows[:, 2].astype(float), rows[:, 3], 1, 30,
                   np.arange(1), np.arange(30), "ties")
    by_file = loo_split(data, seed=0, n_negatives=3, ties="file")
    assert by_file.test_indices.tolist() == [5] and by_file.val_indices.tolist() == [2]
    assert by_file.train_items(0).tolist() == [1, 3, 7]
    by_item = loo_split(data, seed=0, n_negatives=3, ties="item")
    assert by_item.test_indices.tolist() == [7] and by_item.val_indices.tolist() == [5]
    with pytest.raises(ConfigError, match="ties"):
        loo_split(data, ties="time")
