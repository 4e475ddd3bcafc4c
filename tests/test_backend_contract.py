"""The backend contract of secagg/backend.py, checked for every registered backend.

Each test runs a real round (real keys, real masks) of each backend in
``available_backends()``; a new backend is covered by registering it (its test-only
options, e.g. a small key, go in ``TEST_OPTIONS``).
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from secagg import available_backends, make_backend
from secagg.backend import OUT_OF_RANGE, SPARSE_MODES, backend_options
from secagg.errors import InvalidInputError
from secagg.paillier import generate_keypair

COMMON = {"min_inputs", "record_view", "clip", "out_of_range"}
NAMES = available_backends()
N, LENGTH, BLOCK = 5, 300, 3  # packed test keys hold 25 slots a ciphertext: 12 ciphertexts


@pytest.fixture(scope="module")
def test_options():
    sk = generate_keypair(512, allow_insecure_small_key=True)[1]
    small_key = {"key": sk, "allow_insecure_small_key": True}
    return {"paillier": small_key, "paillier_packed": small_key}


def _build(name, test_options, **options):
    return make_backend(name, **test_options.get(name, {}), **options)


def _updates(seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    return {c: rng.uniform(-scale, scale, LENGTH) for c in range(N)}


def _tolerance(result) -> float:
    step = result.info.get("layout", {}).get("step")
    if step is None and "precision_bits" in result.info:
        step = 2 * result.info["clip"] / (2 ** result.info["precision_bits"] - 1)
    return N * (step or 2.0**-30) + 1e-12


def test_every_backend_is_covered():
    assert {"plain", "paillier", "paillier_packed", "secagg", "secagg+"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_option_names_are_shared(name):
    accepted = backend_options(name)
    assert COMMON <= accepted, f"{name} lacks {COMMON - accepted}"
    assert "bits" not in accepted, "quantization bits are called precision_bits everywhere"
    if name != "plain":
        assert "precision_bits" in accepted and "workers" in accepted


@pytest.mark.parametrize("name", NAMES)
def test_defaults_are_the_documented_ones(name, test_options):
    backend = _build(name, test_options)
    assert backend.out_of_range == "raise" and backend.min_inputs == 2 and backend.record_view is False
    if "workers" in backend_options(name):
        assert backend.workers == 1
        for bad in (0, -2, 1.5, True):
            with pytest.raises(InvalidInputError, match="workers must be an integer >= 1"):
                _build(name, test_options, workers=bad)


@pytest.mark.parametrize("name", NAMES)
def test_options_are_never_dropped(name, test_options):
    with pytest.raises(InvalidInputError, match="no_such_option"):
        _build(name, test_options, no_such_option=1)
    backend = _build(name, test_options)
    assert make_backend(backend) is backend
    with pytest.raises(InvalidInputError, match="already built"):
        make_backend(backend, min_inputs=3)
    with pytest.raises(InvalidInputError, match="out_of_range"):
        _build(name, test_options, out_of_range="wrap")


@pytest.mark.parametrize("name", NAMES)
def test_out_of_range_policy_and_typed_info(name, test_options):
    ups = _updates()
    ups[1][3], ups[2][0] = 1.7, -4.0  # two coordinates outside clip = 1
    with pytest.raises(InvalidInputError, match="client 1"):
        _build(name, test_options, clip=1.0).aggregate(ups)
    with _build(name, test_options, clip=1.0, out_of_range="clip") as backend:
        result = backend.aggregate(ups)
    expected = sum(np.clip(x, -1.0, 1.0) for x in ups.values())
    assert np.max(np.abs(result.aggregate - expected)) <= _tolerance(result)
    info = result.info
    assert info["clipped"] == 2 and isinstance(info["clipped"], int)
    assert info["out_of_range"] in OUT_OF_RANGE and info["out_of_range"] == "clip"
    assert info["sparse"] in SPARSE_MODES and info["sparse"] == "none"
    in_range = _build(name, test_options, clip=1.0).aggregate(_updates(1))
    assert in_range.info["clipped"] == 0 and in_range.info["out_of_range"] == "raise"


def _sparse_round(seed=2):
    rng = np.random.default_rng(seed)
    ups, support = {}, {}
    for c in range(N):
        blocks = np.sort(rng.choice(LENGTH // BLOCK, 1, replace=False))
        x = np.zeros(LENGTH)
        for b in blocks:
            x[b * BLOCK:(b + 1) * BLOCK] = rng.uniform(-0.5, 0.5, BLOCK)
        ups[c], support[c] = x, blocks
    return ups, support


@pytest.mark.parametrize("name", NAMES)
def test_sparse_rounds_are_sparse_or_refused_never_silently_dense(name, test_options):
    ups, support = _sparse_round()
    backend = _build(name, test_options)
    dense = backend.aggregate(ups)
    if backend.sparse_capable:
        sparse = backend.aggregate(ups, support=support, block_size=BLOCK)
        assert sparse.info["sparse"] == "sparse"
        assert sparse.cost.mean_bytes_up() < dense.cost.mean_bytes_up()
    else:
        with pytest.raises(InvalidInputError, match="dense_fallback"):
            backend.aggregate(ups, support=support, block_size=BLOCK)
        sparse = backend.aggregate(ups, support=support, block_size=BLOCK, dense_fallback=True)
        assert sparse.info["sparse"] == "dense"
    seen = sparse.view.support
    assert set(seen) == set(support)
    for c in support:  # the server sees the declared blocks, or whole groups holding them
        assert set(support[c].tolist()) <= set(seen[c].tolist())
        if name != "paillier_packed":
            assert seen[c].tolist() == support[c].tolist()
    assert np.max(np.abs(sparse.aggregate - sum(ups.values()))) <= _tolerance(sparse)


@pytest.mark.parametrize("name", NAMES)
def test_configured_by_constructor_only(name, test_options):
    """close() and the context manager exist; the out-of-range default is in the signature."""
    backend = _build(name, test_options)
    assert callable(backend.close)
    with backend as same:
        assert same is backend
    cls = type(backend)
    for owner in cls.__mro__:
        if "__init__" in vars(owner):
            params = inspect.signature(owner.__init__).parameters
            if "out_of_range" in params:
                assert params["out_of_range"].default == "raise"
                break


def _progress_cases():
    for name in NAMES:
        yield name, 1
        if "workers" in backend_options(name):
            yield name, 2


@pytest.mark.parametrize(("name", "workers"), list(_progress_cases()))
@pytest.mark.parametrize("dropped", [(), (3,)])
def test_progress_hook_is_called_once_per_included_client(name, workers, dropped, test_options):
    """The hook sees every included client exactly once, never a dropped one, also when
    worker processes build the uploads (the hook runs in this process)."""
    options = {"workers": workers} if workers > 1 else {}
    calls = []
    with _build(name, test_options, **options) as backend:
        result = backend.aggregate(_updates(3), dropped=dropped, progress=calls.append)
    assert sorted(result.included) == sorted(set(range(N)) - set(dropped))
    assert sorted(calls) == sorted(result.included), f"{name}: hook calls {calls}"
    assert np.max(np.abs(result.aggregate - sum(x for c, x in _updates(3).items() if c not in dropped))) \
        <= _tolerance(result)


@pytest.mark.parametrize("name", NAMES)
def test_progress_hook_in_sparse_rounds(name, test_options):
    ups, support = _sparse_round()
    calls = []
    backend = _build(name, test_options)
    result = backend.aggregate(ups, support=support, block_size=BLOCK,
                               dense_fallback=not backend.sparse_capable, progress=calls.append)
    assert sorted(calls) == list(range(N)) == sorted(result.included)


@pytest.mark.parametrize("stage", ["advertise", "share_keys"])
@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("secagg")])
def test_progress_hook_skips_clients_dropped_before_masking(name, stage):
    calls = []
    result = make_backend(name, drop_stage=stage).aggregate(_updates(4), dropped=[2], progress=calls.append)
    assert sorted(calls) == sorted(result.included) == [0, 1, 3, 4]


@pytest.mark.parametrize("name", NAMES)
def test_progress_hook_must_be_callable_and_its_errors_abort_the_round(name, test_options):
    backend = _build(name, test_options)
    with pytest.raises(InvalidInputError, match="progress must be a callable"):
        backend.aggregate(_updates(), progress=42)

    class Stop(Exception):
        pass

    def stop(cid):
        raise Stop(cid)

    with pytest.raises(Stop):
        backend.aggregate(_updates(), progress=stop)


@pytest.mark.parametrize("name", NAMES)
def test_bytes_down_hold_the_aggregate_only_where_the_protocol_delivers_it(name, test_options):
    """RoundCost: the aggregate is in bytes_down only when the clients must receive it from
    the protocol (Paillier: they decrypt it); where the server learns it in clear the
    model broadcast is the trainer's, so bytes_down does not grow with the vector."""
    backend = _build(name, test_options)
    rng = np.random.default_rng(5)
    short = backend.aggregate({c: rng.uniform(-0.5, 0.5, LENGTH) for c in range(N)})
    long = backend.aggregate({c: rng.uniform(-0.5, 0.5, 4 * LENGTH) for c in range(N)})
    grown = long.cost.mean_bytes_down() - short.cost.mean_bytes_down()
    if backend.server_learns_aggregate:
        assert grown == 0, f"{name}: bytes_down grew by {grown} with the vector length"
    else:
        assert grown > 0, f"{name}: the encrypted aggregate's download is not counted"
