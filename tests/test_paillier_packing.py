"""secagg.paillier packing: layout, quantize/pack/unpack, exact slot sums, headroom, serialization."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import HeadroomExceededError, InvalidInputError, KeyMismatchError, MalformedMessageError
from secagg.paillier import (
    PackedEncryptedVector,
    PackingLayout,
    choose_layout,
    generate_keypair,
    vector_from_bytes,
    vector_from_json,
)

SMALL = 512
FAST = settings(max_examples=30, deadline=None)


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(SMALL, allow_insecure_small_key=True)


def test_layout_is_chosen_from_its_inputs():
    lay = choose_layout(clip=1.0, precision_bits=16, max_summands=943, key_bits=2048)
    assert lay.level == 2**15 - 1
    assert lay.slot_bits == (2 * 943 * lay.level).bit_length() == 26
    assert lay.slots == 2047 // 26 - 1 and (lay.slots + 1) * lay.slot_bits <= 2047  # + the count slot
    d = lay.describe()
    assert d["slots"] == lay.slots and d["headroom_bits"] == 10 and d["step"] == pytest.approx(1 / lay.level)
    more = choose_layout(clip=1.0, precision_bits=16, max_summands=4 * 943, key_bits=2048)
    assert more.slot_bits == lay.slot_bits + 2
    assert choose_layout(clip=1.0, precision_bits=16, max_summands=943, key_bits=3072).slots > lay.slots


@pytest.mark.parametrize("kwargs", [
    dict(clip=0.0), dict(clip=float("nan")), dict(precision_bits=1), dict(max_summands=0),
])
def test_layout_rejects_bad_parameters(kwargs):
    params = dict(clip=1.0, precision_bits=16, max_summands=10, key_bits=512) | kwargs
    with pytest.raises(InvalidInputError):
        PackingLayout(**params)


def test_layout_rejects_slots_wider_than_62_bits():
    with pytest.raises(HeadroomExceededError):
        choose_layout(clip=1.0, precision_bits=48, max_summands=2**20, key_bits=2048)


@FAST
@given(bits=st.integers(2, 40), k=st.integers(1, 5000), length=st.integers(0, 300), seed=st.integers(0, 2**32))
def test_pack_unpack_roundtrip(bits, k, length, seed):
    lay = choose_layout(clip=1.0, precision_bits=bits, max_summands=k, key_bits=2048)
    rng = np.random.default_rng(seed)
    padded = lay.ciphertexts_for(length) * lay.slots
    slots = rng.integers(0, 2 * k * lay.level + 1, size=padded, dtype=np.uint64)
    packed = lay.pack(slots)
    assert len(packed) == lay.ciphertexts_for(length)
    assert all(0 <= m < 2 ** (lay.key_bits - 1) for m in packed)  # below any 2048-bit n
    assert np.array_equal(lay.unpack(packed), slots)


@FAST
@given(bits=st.integers(4, 24), clip=st.floats(1e-3, 1e3), length=st.integers(1, 200),
       seed=st.integers(0, 2**32))
def test_quantization_error_within_one_step(bits, clip, length, seed):
    lay = choose_layout(clip=clip, precision_bits=bits, max_summands=3, key_bits=1024)
    x = np.random.default_rng(seed).uniform(-clip, clip, length)
    slots, clipped = lay.quantize(x)
    assert clipped == 0
    back = lay.dequantize(lay.slot_sums(slots, length, 1))
    assert np.all(np.abs(back - x) <= lay.step * (1 + 1e-9))


def test_stochastic_rounding_is_unbiased():
    lay = choose_layout(clip=1.0, precision_bits=4, max_summands=1, key_bits=1024)  # step 1/7
    x = np.full(200_000, 0.3)
    slots, _ = lay.quantize(x)
    mean = lay.dequantize(lay.slot_sums(slots, x.size, 1)).mean()
    assert abs(mean - 0.3) < 5 * lay.step / np.sqrt(x.size)
    assert len(set(slots[:x.size].tolist())) == 2  # both neighbours of 0.3 * 7 = 2.1 occur


def test_clipping_is_counted(keys):
    lay = choose_layout(clip=1.0, precision_bits=8, max_summands=4, key_bits=SMALL)
    v = PackedEncryptedVector.encrypt(keys[1], np.array([0.5, 2.0, -3.0, 1.0]), lay)
    assert v.clipped == 2
    assert np.array_equal(v.decrypt_integers(keys[1])[[1, 2, 3]], [127, -127, 127])


@FAST
@given(count=st.integers(1, 6), length=st.integers(1, 40), seed=st.integers(0, 2**32))
def test_encrypted_sum_is_exact_sum_of_quantized_values(keys, count, length, seed):
    """Dec(sum of packed ciphertexts) = exact per-slot integer sum of the quantized inputs."""
    pk, sk = keys
    lay = choose_layout(clip=2.0, precision_bits=12, max_summands=6, key_bits=SMALL)
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(-2, 2, length) for _ in range(count)]
    encs = [PackedEncryptedVector.encrypt(pk if i % 2 else sk, x, lay) for i, x in enumerate(xs)]
    singles = [e.decrypt_integers(sk) for e in encs]
    for s, x in zip(singles, xs):  # each is a valid stochastic rounding of its input
        assert np.all(np.abs(s * lay.step - x) < lay.step)
    total = PackedEncryptedVector.sum(encs)
    assert total.summands == count
    assert np.array_equal(total.decrypt_integers(sk), np.sum(singles, axis=0))
    assert np.all(np.abs(total.decrypt(sk) - np.sum(xs, axis=0)) < count * lay.step)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_overflow_detected_at_exactly_the_declared_headroom(keys, sign):
    """K extreme summands fill every slot to its limit without carrying; K + 1 are refused."""
    pk, sk = keys
    k = 5
    lay = choose_layout(clip=1.0, precision_bits=10, max_summands=k, key_bits=SMALL)
    x = np.full(2 * lay.slots + 3, sign)  # every slot at +-L, over three ciphertexts
    one = PackedEncryptedVector.encrypt(sk, x, lay)
    full = PackedEncryptedVector.sum([one] * k)
    assert np.array_equal(full.decrypt_integers(sk), np.full(x.size, int(sign) * k * lay.level))
    with pytest.raises(HeadroomExceededError):
        full + one
    with pytest.raises(HeadroomExceededError):
        PackedEncryptedVector.sum([one] * (k + 1))
    assert np.array_equal((one * k).decrypt_integers(sk), full.decrypt_integers(sk))
    with pytest.raises(HeadroomExceededError):
        one * (k + 1)
    two = PackedEncryptedVector.encrypt(sk, 2 * x, lay, summands=2)
    assert np.array_equal((two + one * 3).decrypt_integers(sk), full.decrypt_integers(sk))
    with pytest.raises(HeadroomExceededError):
        PackedEncryptedVector.encrypt(sk, x, lay, summands=k + 1)


def test_packed_rejects_bad_operations(keys):
    pk, sk = keys
    lay = choose_layout(clip=1.0, precision_bits=10, max_summands=5, key_bits=SMALL)
    v = PackedEncryptedVector.encrypt(sk, np.zeros(4), lay)
    other_lay = choose_layout(clip=2.0, precision_bits=10, max_summands=5, key_bits=SMALL)
    with pytest.raises(InvalidInputError):
        v + PackedEncryptedVector.encrypt(sk, np.zeros(4), other_lay)
    with pytest.raises(InvalidInputError):
        v + PackedEncryptedVector.encrypt(sk, np.zeros(5), lay)
    for k in (0, -1, 1.5):
        with pytest.raises(InvalidInputError):
            v * k
    for bad in (np.array([np.nan]), np.array([np.inf, 0.0]), np.zeros((2, 2))):
        with pytest.raises(InvalidInputError):
            PackedEncryptedVector.encrypt(sk, bad, lay)
    wrong_size = choose_layout(clip=1.0, precision_bits=10, max_summands=5, key_bits=1024)
    with pytest.raises(KeyMismatchError):
        PackedEncryptedVector.encrypt(sk, np.zeros(4), wrong_size)
    other_sk = generate_keypair(SMALL, allow_insecure_small_key=True)[1]
    with pytest.raises(KeyMismatchError):
        v + PackedEncryptedVector.encrypt(other_sk, np.zeros(4), lay)


def test_packed_serialization_roundtrip_and_tampering(keys):
    pk, sk = keys
    lay = choose_layout(clip=1.0, precision_bits=10, max_summands=5, key_bits=SMALL)
    v = PackedEncryptedVector.encrypt(sk, np.linspace(-1, 1, 50), lay) * 2
    for back in (vector_from_bytes(v.to_bytes(), allow_insecure_small_key=True),
                 vector_from_json(v.to_json(), allow_insecure_small_key=True),
                 vector_from_bytes(v.to_bytes(include_key=False), pk)):
        # no counter on the wire: a loaded vector counts as the layout's maximum
        assert back.layout == lay and back.summands == lay.max_summands and back.length == 50
        assert np.array_equal(back.decrypt_integers(sk), v.decrypt_integers(sk))
    blob = bytes(v.to_bytes(include_key=False))
    head = 4 + 1 + 1 + 32  # magic, kind, key flag, fingerprint; then >dBII
    for bad in (blob[:head + 9] + b"\xff" + blob[head + 10:], blob[:-3]):
        with pytest.raises(MalformedMessageError):
            vector_from_bytes(bad, pk)
    understated = vector_from_bytes(blob, pk, summands=1)  # the receiver vouches wrongly
    with pytest.raises(HeadroomExceededError):  # the encrypted count (2) says otherwise
        understated.decrypt(sk)


def test_2048_bit_packed_roundtrip():
    pk, sk = generate_keypair()
    lay = choose_layout(clip=0.5, precision_bits=16, max_summands=943, key_bits=pk.bits)
    x = np.random.default_rng(1).uniform(-0.5, 0.5, 1000)
    y = np.random.default_rng(2).uniform(-0.5, 0.5, 1000)
    total = PackedEncryptedVector.encrypt(sk, x, lay) + PackedEncryptedVector.encrypt(pk, y, lay)
    assert len(total.ciphertexts) == -(-1000 // lay.slots)
    assert np.all(np.abs(total.decrypt(sk, workers=2) - (x + y)) < 2 * lay.step)
