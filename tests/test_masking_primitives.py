"""Primitives, Shamir, quantization and graph parameters of secagg.masking."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import (HeadroomExceededError, InvalidInputError, KeyMismatchError,
                           MalformedMessageError, RoundAbortedError)
import importlib

from secagg import keystream as ks
from secagg.masking import graph, primitives as pr, shamir, vectors
from secagg.backend import integer_weights

q = importlib.import_module("secagg.masking.quantize")


def test_aead_rejects_tampering_and_wrong_context():
    key = pr.random_seed()
    blob = pr.aead_encrypt(key, b"share bytes", b"session|1|2")
    assert pr.aead_decrypt(key, blob, b"session|1|2") == b"share bytes"
    flipped = bytearray(blob)
    flipped[-20] ^= 1
    with pytest.raises(MalformedMessageError):
        pr.aead_decrypt(key, bytes(flipped), b"session|1|2")
    with pytest.raises(MalformedMessageError):
        pr.aead_decrypt(key, blob, b"session|2|1")  # replayed to another pair
    with pytest.raises(MalformedMessageError):
        pr.aead_decrypt(key, blob[:10], b"session|1|2")


def test_x25519_agreement_is_symmetric_and_rejects_low_order_keys():
    a, a_pub = pr.x25519_keypair()
    b, b_pub = pr.x25519_keypair()
    assert pr.x25519_shared(a, b_pub) == pr.x25519_shared(b, a_pub)
    with pytest.raises(KeyMismatchError):
        pr.x25519_shared(a, bytes(32))


def test_mask_keys_differ_for_every_binding_field():
    base = dict(label=pr.LABEL_PAIR_MASK, session=b"s" * 32, round_id=1, party=(1, 2),
                vector="v", length=10, modulus=1 << 20)
    ref = pr.mask_key(b"k" * 32, **base)
    for field, value in [("label", pr.LABEL_SELF_MASK), ("session", b"t" * 32), ("round_id", 2),
                         ("party", (1, 3)), ("vector", "w"), ("length", 11), ("modulus", 1 << 21)]:
        assert pr.mask_key(b"k" * 32, **{**base, field: value}) != ref, field


def _ctr_keystream(key: bytes, nbytes: int) -> bytes:
    """The reference PRG: plain AES-CTR from counter block 0^96 || [2]_32."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    return Cipher(algorithms.AES(key), modes.CTR(bytes(12) + (2).to_bytes(4, "big"))).encryptor().update(
        bytes(nbytes))


def test_mask_prg_is_aes256_ctr_of_the_hkdf_key():
    """Masks are AES-256-CTR keystream words (counter from 2) of a 32-byte HKDF-derived key."""
    key = pr.mask_key(b"k" * 32, label=pr.LABEL_PAIR_MASK, session=b"s" * 32, round_id=1,
                      party=(1, 2), vector="v", length=100, modulus=1 << 32)
    assert len(key) == 32
    assert pr.uniform_mod(key, 100, 1 << 32).tobytes() == _ctr_keystream(key, 400)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 5000), min_size=1, max_size=12), st.binary(min_size=32, max_size=32))
def test_prg_read_in_pieces_equals_one_ctr_keystream(pieces, key):
    """The GCM engine read in odd-sized pieces (CtrStream, MaskStream) is the CTR keystream."""
    total = sum(2 * p for p in pieces)
    stream = ks.CtrStream(key)
    got = b"".join(stream.words16(p).tobytes() for p in pieces)
    assert got == _ctr_keystream(key, total)
    acc = np.zeros(total // 4, dtype=np.uint32)
    pr.add_keystreams(acc, [key], [1], chunk_words=max(1, pieces[0]))
    assert acc.tobytes() == _ctr_keystream(key, acc.size * 4)


def test_prg_refuses_a_stream_longer_than_its_counter():
    with pytest.raises(InvalidInputError, match="PRG limit"):
        ks.check_prg_length(ks.PRG_MAX_BYTES + 1)
    ks.check_prg_length(ks.PRG_MAX_BYTES)
    for short in (b"short", bytes(16)):  # AES-256 only: an AES-128 key is refused too
        with pytest.raises(InvalidInputError, match="32 bytes"):
            ks.prg_cipher(short)


@pytest.mark.parametrize("modulus", [2, 3, 1000003, 1 << 20, 1 << 32, (1 << 32) + 15, 1 << 63, 1 << 64])
def test_uniform_mod_is_in_range_and_deterministic(modulus):
    key = b"\x07" * 32
    v = pr.uniform_mod(key, 5000, modulus)
    assert v.dtype == pr.word_dtype(modulus)
    assert int(v.max()) < modulus
    assert np.array_equal(v, pr.uniform_mod(key, 5000, modulus))


def test_uniform_mod_rejection_sampling_is_unbiased():
    # M = 3 with 2-bit samples: a plain "& 3" or "% 3" would bias the counts
    v = pr.uniform_mod(pr.random_seed(), 60000, 3)
    counts = np.bincount(v.astype(np.int64), minlength=3)
    assert np.all(np.abs(counts - 20000) < 600)  # > 5 sigma


def test_bad_modulus_rejected():
    for bad in (1, 0, (1 << 64) + 1, (1 << 63) + 1, 2.5):
        with pytest.raises(InvalidInputError):
            pr.check_modulus(bad)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(0, 8), st.data())
def test_shamir_any_t_shares_reconstruct(t, extra, data):
    n = t + extra
    secrets = [pr.random_seed() for _ in range(3)]
    xs = data.draw(st.lists(st.integers(1, shamir.PRIME - 1), min_size=n, max_size=n, unique=True))
    shares = shamir.share(secrets, xs, t)
    pick = data.draw(st.permutations(range(n)))[:t]
    assert shamir.reconstruct([xs[i] for i in pick], shares[pick]) == secrets


def test_shamir_fewer_than_t_shares_do_not_give_the_secret():
    for _ in range(20):
        secret = [pr.random_seed()]
        shares = shamir.share(secret, list(range(1, 11)), 6)
        try:  # usually a limb falls outside 30 bits and is reported as inconsistent
            assert shamir.reconstruct(list(range(1, 6)), shares[:5]) != secret
        except RoundAbortedError:
            pass


def test_shamir_lagrange_cache_is_reused():
    shamir.lagrange_coefficients.cache_clear()
    secrets = [pr.random_seed()]
    for _ in range(3):
        shares = shamir.share(secrets, [3, 5, 9, 11], 3)
        shamir.reconstruct([3, 5, 9], shares[:3])
    assert shamir.lagrange_coefficients.cache_info().hits == 2


def test_shamir_input_checks():
    with pytest.raises(InvalidInputError):
        shamir.share([b"short"], [1, 2], 1)
    with pytest.raises(InvalidInputError):
        shamir.share([bytes(32)], [1, 1, 2], 2)
    with pytest.raises(InvalidInputError):
        shamir.share([bytes(32)], [1, 2], 3)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([2, 5, 13, 29, 31, 32, 33, 40, 57, 64, 1000003]), st.integers(0, 300))
def test_pack_roundtrip(bits_or_mod, length):
    modulus = bits_or_mod if bits_or_mod > 64 else 1 << bits_or_mod
    v = pr.uniform_mod(pr.random_seed(), max(length, 1), modulus)[:length]
    data = vectors.pack(v, modulus)
    assert len(data) == vectors.packed_size(length, modulus)
    assert np.array_equal(vectors.unpack(data, length, modulus, v.dtype), v)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 64), st.integers(0, 100), st.data())
def test_pack_is_the_little_endian_bit_stream(width, length, data):
    """Entry i occupies bits [i w, (i + 1) w) of one little-endian integer, padded to
    whole 32-bit words (checked against Python big integers, not our kernels)."""
    modulus = 1 << width
    values = data.draw(st.lists(st.integers(0, modulus - 1), min_size=length, max_size=length))
    v = np.array(values, dtype=np.uint32 if width <= 32 else np.uint64)
    stream = sum(x << (i * width) for i, x in enumerate(values))
    expected = stream.to_bytes(4 * -(-length * width // 32), "little")
    assert vectors.pack(v, modulus) == expected
    acc = np.zeros(length, dtype=v.dtype)
    vectors.unpack_add(acc, memoryview(b"\x01" + expected)[1:], length, modulus)  # unaligned view
    assert np.array_equal(acc, v)


def test_unpack_rejects_nonzero_padding_before_touching_the_accumulator():
    modulus, length = 1 << 29, 3  # 87 bits in 3 words: 9 padding bits
    data = bytearray(vectors.pack(np.array([1, 2, 3], np.uint32), modulus))
    data[-1] |= 0x80
    acc = np.arange(length, dtype=np.uint32)
    with pytest.raises(MalformedMessageError, match="padding"):
        vectors.unpack_add(acc, bytes(data), length, modulus)
    assert acc.tolist() == [0, 1, 2]


def test_unpack_rejects_wrong_size_and_out_of_range():
    with pytest.raises(MalformedMessageError):
        vectors.unpack(b"\x00" * 5, 2, 1 << 29, np.uint32)
    with pytest.raises(MalformedMessageError):
        vectors.unpack(np.array([7], "<u4").tobytes(), 1, 5, np.uint32)


def test_modulus_sized_from_all_clients_never_wraps():
    for n, bits in [(1, 2), (100, 22), (943, 16), (1000, 22), (3, 62)]:
        modulus = q.modulus_for(n, bits)
        top = (1 << bits) - 2  # 2L: the largest encoding of one summand
        assert n * top < modulus <= 2 * n * top
    with pytest.raises(HeadroomExceededError):
        q.modulus_for(8, 62)


def test_stochastic_rounding_is_unbiased_and_clips():
    clip, bits = 1.0, 4
    step = q.step_size(clip, bits)
    x = np.full(40000, -clip + 0.3 * step)
    words = q.quantize(x, clip, bits, modulus=1 << 8)
    assert set(np.unique(words).tolist()) == {0, 1}
    assert abs(words.mean() - 0.3) < 0.01
    big = q.quantize(np.array([5.0, -5.0]), clip, bits, modulus=1 << 8)
    assert big.tolist() == [14, 0]  # 2L = 2^b - 2 and 0: the grid is symmetric
    with pytest.raises(InvalidInputError):
        q.quantize(np.array([np.nan]), clip, bits)
    with pytest.raises(InvalidInputError):
        q.check_quant_params(0.0, 8)
    with pytest.raises(InvalidInputError):
        q.check_quant_params(1.0, 1)  # one bit has no symmetric grid (L = 0)


def test_quantizer_is_reproducible_under_a_fixed_key_and_chunking_does_not_matter():
    x = np.random.default_rng(0).normal(size=3 * vectors.CHUNK + 17)
    key = pr.random_seed()
    quant = q.Quantizer(2.0, 12, weight=3, rounding_key=key)
    whole = quant.encode(x, 1 << 16)
    stream, parts = quant.stream(1 << 16), np.empty(x.size, np.uint32)
    for start in range(0, x.size, 1000):  # chunks unlike the encoder's own
        stream.encode_into(x[start:start + 1000], parts[start:start + 1000])
    assert np.array_equal(whole, parts)
    # weight 3: 3x is rounded once (3 summands), so the error is below one step, not three
    step = q.step_size(2.0, 12)
    assert np.all(np.abs(whole * step - 3 * 2.0 - 3 * np.clip(x, -2.0, 2.0)) < step)
    fresh = q.Quantizer(2.0, 12, weight=3).encode(x, 1 << 16)  # fresh os.urandom key
    assert not np.array_equal(whole, fresh)
    with pytest.raises(HeadroomExceededError):
        quant.stream(1 << 12)
    with pytest.raises(InvalidInputError):
        q.Quantizer(2.0, 12, rounding_key=b"short")


def test_integer_weights_exact_or_scaled():
    w, scale = integer_weights({0: 3.0, 1: 1.0})
    assert (w, scale) == ({0: 3, 1: 1}, 1.0)
    w, scale = integer_weights({0: 0.25, 1: 0.5})
    assert w[1] == 2 * w[0] and scale == 2.0 ** 20 and max(w.values()) < 2 ** 20


# Google fcp graph_parameter_finder_test table (k exact, t as an upper bound); n=100
# with 33% dropout is one degree off ours and left out.
@pytest.mark.parametrize("n,corrupt,drop,k,t", [
    (100, .05, .05, 12, 6), (1000, .05, .05, 30, 17), (1000, .05, .33, 72, 24),
    (10000, .33, .05, 92, 70), (100000, .33, .33, 480, 251), (1000, 0.0, .33, 38, 2),
])
def test_parameter_finder_matches_google_table(n, corrupt, drop, k, t):
    p = graph.find_parameters(n, corrupt_rate=corrupt, dropout_rate=drop)
    assert p.k == k and p.t <= t and not p.complete


def test_parameter_finder_falls_back_to_complete_graph_for_small_n():
    p = graph.find_parameters(10, dropout_rate=0.1, corrupt_rate=0.05)
    assert p.complete and p.k == 9 and 1 < p.t <= 9 - 1
    assert not graph.find_parameters(65).complete


def test_harary_neighbourhoods_are_symmetric_k_regular_and_session_bound():
    clients = list(range(0, 60, 2))
    nb = graph.neighbours(b"a" * 32, clients, 8)
    assert all(len(v) == 8 and c not in v for c, v in nb.items())
    assert all(c in nb[v] for c, vs in nb.items() for v in vs)
    assert nb == graph.neighbours(b"a" * 32, clients, 8)
    assert nb != graph.neighbours(b"b" * 32, clients, 8)
    assert all(graph.neighbours_of(b"a" * 32, clients, 8, c) == nb[c] for c in clients)
