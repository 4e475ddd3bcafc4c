"""secagg.quantize: the one quantizer SecAgg masking and packed Paillier both encode with."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import InvalidInputError
from secagg.masking.quantize import Quantizer, modulus_for
from secagg.paillier import choose_layout
from secagg.quantize import Grid, check_quant_params

FAST = settings(max_examples=40, deadline=None)


def _encode(grid, x, count=1, weighted=False, key=None):
    enc = grid.encoder(count, weighted=weighted, rounding_key=key)
    out = np.empty(len(x), dtype=np.uint64)
    enc.encode_into(np.asarray(x, dtype=np.float64), out)
    return out, enc.clipped


def test_grid_is_symmetric_with_step_clip_over_l():
    g = Grid(2.0, 8)
    assert g.level == 127 and g.step == pytest.approx(2.0 / 127)
    assert (g.offset(3), g.top(3)) == (381, 762)
    for clip, bits in [(0.0, 8), (float("nan"), 8), (1.0, 1), (1.0, 63), (1.0, 8.0), (True, 8)]:
        with pytest.raises(InvalidInputError):
            check_quant_params(clip, bits)


@FAST
@given(bits=st.integers(2, 30), clip=st.floats(1e-3, 1e3), count=st.integers(1, 50),
       weighted=st.booleans(), length=st.integers(1, 300), seed=st.integers(0, 2**32))
def test_encoding_in_range_and_within_one_step(bits, clip, count, weighted, length, seed):
    """q in [0, 2 C L]; (q - C L) s is the (clipped) encoded value up to one step."""
    g = Grid(clip, bits)
    x = np.random.default_rng(seed).uniform(-1.5, 1.5, length) * clip * (1 if weighted else count)
    q, clipped = _encode(g, x, count, weighted)
    assert np.all(q <= g.top(count))
    value = np.clip(count * x if weighted else x, -count * clip, count * clip)
    assert clipped == int(np.sum(np.abs(x) > (clip if weighted else count * clip)))
    assert np.all(np.abs(g.dequantize(q, count) - value) <= g.step * (1 + 1e-9))


def test_zero_encodes_to_exactly_the_offset():
    g = Grid(0.37, 11)
    for count, weighted in [(1, False), (5, False), (5, True)]:
        q, _ = _encode(g, np.zeros(10_000), count, weighted)
        assert np.all(q == g.offset(count))


def test_rounding_is_unbiased_and_uses_both_neighbours():
    g = Grid(1.0, 4)  # step 1/7
    q, _ = _encode(g, np.full(200_000, 0.3))
    assert set(np.unique(q).tolist()) == {9, 10}  # 7 + 2.1 lies between levels 9 and 10
    assert abs(g.dequantize(q, 1).mean() - 0.3) < 5 * g.step / np.sqrt(q.size)


def test_sum_of_encodings_decodes_with_the_summand_count():
    g = Grid(1.0, 12)
    rng = np.random.default_rng(3)
    xs = [rng.uniform(-1, 1, 500) for _ in range(4)]
    counts = [1, 2, 3, 1]
    total = sum(_encode(g, x, c, weighted=True)[0] for x, c in zip(xs, counts))
    exact = sum(c * x for x, c in zip(xs, counts))
    assert np.all(np.abs(g.dequantize(total, sum(counts)) - exact) < len(xs) * g.step)


def test_fixed_key_reproduces_and_chunks_do_not_matter():
    g, key = Grid(2.0, 10), bytes(range(32))
    x = np.random.default_rng(0).normal(size=1001)
    whole, _ = _encode(g, x, 2, True, key)
    enc = g.encoder(2, weighted=True, rounding_key=key)
    parts = np.empty(x.size, dtype=np.uint64)
    for start in range(0, x.size, 97):
        enc.encode_into(x[start:start + 97], parts[start:start + 97])
    assert np.array_equal(whole, parts)
    assert not np.array_equal(whole, _encode(g, x, 2, True)[0])  # fresh os.urandom key
    with pytest.raises(InvalidInputError):
        g.encoder(rounding_key=b"short")
    with pytest.raises(InvalidInputError):
        g.encoder(-1)


def test_non_finite_input_is_refused():
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        _encode(Grid(1.0, 8), [0.0, np.inf])


@pytest.mark.parametrize("weight", [1, 3])
def test_secagg_and_packed_paillier_encode_identically(weight):
    """Same (clip, bits, summands): the masking words and the Paillier slots are the same
    levels. On a grid with step 1 the rounding is exact, so the encodings must be equal."""
    bits = 8
    clip = float((1 << (bits - 1)) - 1)  # step c / L = 1
    x = np.random.default_rng(weight).integers(-200, 201, 1000).astype(float)  # some clipped
    words = Quantizer(clip, bits, weight).encode(x, modulus_for(weight, bits))
    lay = choose_layout(clip=clip, precision_bits=bits, max_summands=weight, key_bits=2048)
    slots, clipped = lay.quantize(weight * x, summands=weight)
    assert np.array_equal(words.astype(np.uint64), slots[:x.size])
    assert np.array_equal(slots[:x.size], np.clip(weight * x, -weight * clip, weight * clip) + weight * clip)
    assert clipped == int(np.sum(np.abs(x) > clip))
