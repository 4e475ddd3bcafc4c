"""Simulating without repeating work (issue 19): the shared aggregate is decrypted once per
round and charged to every client; parallel client work changes no bit of the result;
PartText under packed Paillier uploads whole item-aligned groups only."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmf.data import random_holdout, synthetic_ratings
from fedmf.model import ModelConfig
from fedmf.trainer import FedMFTrainer
from secagg import make_backend
from secagg.paillier import generate_keypair
from secagg.paillier.packing import aligned_positions, choose_layout

CLIENTS, BLOCK, BLOCKS = 6, 7, 120  # 120 blocks ("items") of 7 entries


@pytest.fixture(scope="module")
def key():
    return generate_keypair(1024, allow_insecure_small_key=True)[1]


def _packed(key, **options):
    # clip = L = 127 puts integers on the grid: stochastic rounding is then exact, so two
    # runs on the same inputs must agree bit for bit
    return make_backend("paillier_packed", key=key, allow_insecure_small_key=True, clip=127.0,
                        precision_bits=8, **options)


def _unpacked(key, **options):
    return make_backend("paillier", key=key, allow_insecure_small_key=True, **options)


def _round_inputs(seed=0, per_client=4):
    """Integer updates on a few blocks per client, and those blocks as the support."""
    rng = np.random.default_rng(seed)
    ups, support = {}, {}
    for c in range(CLIENTS):
        blocks = np.sort(rng.choice(BLOCKS, per_client, replace=False))
        x = np.zeros((BLOCKS, BLOCK))
        x[blocks] = rng.integers(-127, 128, (per_client, BLOCK))
        ups[c], support[c] = x.ravel(), blocks
    return ups, support


@pytest.mark.parametrize("sparse", [False, True])
def test_decrypt_once_is_bit_identical_to_every_client_decrypting(key, sparse):
    ups, support = _round_inputs()
    args = {"support": support, "block_size": BLOCK} if sparse else {}
    exact = sum(ups.values())
    results = {}
    for name, options in [("once", {}), ("once, 2 workers", {"workers": 2}),
                          ("per_client", {"decrypt": "per_client"})]:
        with _packed(key, **options) as backend:
            results[name] = backend.aggregate(ups, **args)
    for name, result in results.items():  # per_client also checked every client against the once result
        assert np.array_equal(result.aggregate, exact), name
    if not sparse:
        return  # the unpacked backend, one value per ciphertext: its sparse rounds are enough here
    with _unpacked(key) as once, _unpacked(key, decrypt="per_client") as each:
        scale = 1.0 / 128  # inside the unpacked codec's [-1, 1]
        a = once.aggregate({c: x * scale for c, x in ups.items()}, **args).aggregate
        b = each.aggregate({c: x * scale for c, x in ups.items()}, **args).aggregate
    assert np.array_equal(a, b)


def test_each_client_is_charged_the_shared_decryption(key):
    ups, support = _round_inputs(seed=1)
    with _packed(key) as backend:
        dense = backend.aggregate(ups)
        sparse = backend.aggregate(ups, support=support, block_size=BLOCK)
    shared = dense.cost.shared_client_seconds
    assert set(shared) == set(dense.included)
    assert len(set(shared.values())) == 1 and shared[0] == dense.info["decrypt_seconds"] > 0
    for cid in dense.included:  # the charge is part of what each client pays
        assert dense.cost.client_seconds[cid] > shared[cid]
    # sparse: each client pays for the cells it downloads, at the measured cost per cell
    cells = {c: (sparse.cost.bytes_down[c] - _header(key)) // key.public_key.ciphertext_bytes
             for c in sparse.included}
    per_cell = {c: sparse.cost.shared_client_seconds[c] / cells[c] for c in sparse.included}
    assert np.allclose(list(per_cell.values()), per_cell[0], rtol=1e-12)
    assert sum(cells.values()) > sparse.info["ciphertexts_per_client"]  # groups overlap, not everyone has all
    assert max(cells.values()) < sparse.info["ciphertexts_per_client"]
    with _packed(key, decrypt="per_client") as backend:
        each = backend.aggregate(ups)
    assert each.cost.shared_client_seconds == {}  # nothing shared: every client paid its own


def _layout(key):
    return choose_layout(clip=127.0, precision_bits=8, max_summands=CLIENTS, key_bits=key.public_key.bits)


def _header(key):
    """Bytes of a packed vector message besides its ciphertexts."""
    from secagg.paillier import PackedEncryptedVector

    lay = _layout(key)
    vec = PackedEncryptedVector.encrypt(key, np.zeros(lay.slots), lay)
    return len(vec.to_bytes(include_key=False)) - key.public_key.ciphertext_bytes


def test_part_uploads_only_the_item_aligned_groups_holding_its_items(key):
    ups, support = _round_inputs(seed=2, per_client=3)
    with _packed(key) as backend:
        full = backend.aggregate(ups)
        part = backend.aggregate(ups, support=support, block_size=BLOCK)
    assert np.array_equal(part.aggregate, full.aggregate)
    lay = _layout(key)
    assert lay.slots % BLOCK  # rows would straddle ciphertexts in the consecutive layout
    positions, n_cells = aligned_positions(BLOCKS * BLOCK, BLOCK, lay.slots)
    header, width = _header(key), key.public_key.ciphertext_bytes
    for c in part.included:
        groups = np.unique(positions.reshape(BLOCKS, BLOCK)[support[c]] // lay.slots)
        assert part.cost.bytes_up[c] == header + groups.size * (width + 4)  # ciphertexts + indices
        assert part.cost.bytes_down[c] == header + groups.size * width
    assert part.cost.mean_bytes_up() <= full.cost.mean_bytes_up() / 2


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 12), st.integers(1, 40))
def test_aligned_positions_keep_each_block_in_its_own_whole_cells(n_blocks, block, slots):
    positions, n_cells = aligned_positions(n_blocks * block, block, slots)
    assert np.unique(positions).size == positions.size and positions.max() < n_cells * slots
    cells = positions.reshape(n_blocks, block) // slots
    if block <= slots:
        assert np.all(cells == cells[:, :1])  # one cell per block, never straddling
        per_cell = slots // block
        assert np.array_equal(cells[:, 0], np.arange(n_blocks) // per_cell)  # grouped by index
    else:
        span = -(-block // slots)
        assert np.array_equal(cells[:, 0], np.arange(n_blocks) * span)  # blocks share no cell
    assert n_cells == cells.max() + 1


def test_fedmf_with_parallel_clients_is_bit_identical_to_sequential(key):
    ratings = synthetic_ratings(n_users=8, n_items=12, density=0.4, min_per_user=3, seed=4)
    split = random_holdout(ratings, 0.2, seed=4, name="tiny")
    config = ModelConfig(factors=2)
    runs = []
    for options in ({}, {"workers": 2}, {"decrypt": "per_client"}):
        with _unpacked(key, out_of_range="clip", **options) as backend:
            trainer = FedMFTrainer(split, backend, config=config, seed=4)
            for _ in range(2):
                trainer.run_round()
            runs.append(([log.test_rmse for log in trainer.history], trainer.V.copy(), trainer.U.copy()))
    for rmse, V, U in runs[1:]:
        assert rmse == runs[0][0]
        assert np.array_equal(V, runs[0][1]) and np.array_equal(U, runs[0][2])


def test_short_djn_exponent_is_exact_and_its_floor_enforced(key):
    from secagg.errors import InsecureParameterError, InvalidInputError

    ups, _ = _round_inputs(seed=3)
    with _packed(key, obfuscation="djn", djn_exponent_bits=160, workers=2) as backend:
        result = backend.aggregate(ups)
    assert np.array_equal(result.aggregate, sum(ups.values()))
    assert "short-exponent" in result.info["obfuscation_assumption"]
    with pytest.raises(InsecureParameterError, match=">= 160"):
        _packed(key, obfuscation="djn", djn_exponent_bits=159)
    with pytest.raises(InvalidInputError, match="obfuscation='djn' only"):
        _packed(key, djn_exponent_bits=160)
