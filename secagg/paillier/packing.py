"""BatchCrypt-style packing: quantize (the crypto layer's one quantizer), pack slots.

Follows BatchCrypt (Zhang et al., USENIX ATC 2020, section 4): values are quantized with
:mod:`secagg.quantize` (clip to [-alpha, alpha], signed levels in [-L, L] with
L = 2^(b-1) - 1, step alpha / L, stochastic rounding from a CSPRNG), then many values are
packed into one Paillier plaintext. Instead of BatchCrypt's two's complement with
duplicated sign bit we use *offset binary*, the quantizer's own encoding (the research
note's suggestion, B8.4): a ciphertext that stands for c summands stores each slot as
q + c L in [0, 2 c L]. The sum of ciphertexts carrying C summands in total has slots in
[0, 2 C L]; slots are subtracted C L after decryption, which gives the exact integer sum
of the quantized values. The only error is quantization (|error| < step = alpha / L per
summand).

Layout (:func:`choose_layout`): slot width w = bit_length(2 K L) for the declared
maximum number of summands K, so no slot can carry into its neighbour while at most K
summands are absorbed; each plaintext holds k = floor((|n| - 1) / w) - 1 value slots
plus one **count slot** (the top one), so the packed integer is < 2^(|n| - 1) <= n.

Count slot. A fresh ciphertext standing for c summands stores c in its count slot;
homomorphic addition sums the counts with the values, so the decrypted count is the
true number of summands C the ciphertext absorbed, whatever any public counter says.
Decoding subtracts C L using that count, and refuses (HeadroomExceededError) when
C > K (a slot may have carried into its neighbour) or when the ciphertexts of one
vector disagree. The public ``summands`` counters of :mod:`.vector` refuse additions
beyond K before they happen; the count slot makes a wrong counter (e.g. one read from
an untrusted message) detectable instead of a wrong answer. (A client that encrypts
out-of-range slots on purpose is not caught: that needs range proofs.)

Array work runs in numba kernels (``cache=True``); assembling the big plaintext goes
through little-endian uint64 limbs and ``int.from_bytes``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numba
import numpy as np

from ..errors import HeadroomExceededError, InvalidInputError
from ..quantize import Grid
from .codec import finite_1d

MAX_SLOT_BITS = 62


@dataclass(frozen=True)
class PackingLayout:
    """Slot layout for one (value range, precision, max summands, key size)."""

    clip: float
    precision_bits: int
    max_summands: int
    key_bits: int
    #: L = 2^(b-1) - 1, largest |quantized value| of one summand
    level: int = field(init=False)
    slot_bits: int = field(init=False)
    slots: int = field(init=False)
    limbs: int = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.precision_bits, int) or not 2 <= self.precision_bits <= 48:
            raise InvalidInputError(
                f"precision_bits must be an integer in [2, 48], got {self.precision_bits!r}"
            )
        if not isinstance(self.max_summands, int) or self.max_summands < 1:
            raise InvalidInputError(f"max_summands must be an integer >= 1, got {self.max_summands!r}")
        level = Grid(self.clip, self.precision_bits).level  # checks clip
        slot_bits = (2 * self.max_summands * level).bit_length()
        if slot_bits > MAX_SLOT_BITS:
            raise HeadroomExceededError(
                f"{self.precision_bits}-bit values summed {self.max_summands} times need "
                f"{slot_bits}-bit slots, above {MAX_SLOT_BITS}: lower precision or max_summands"
            )
        slots = (self.key_bits - 1) // slot_bits - 1  # one more slot holds the count
        if slots < 1:
            raise InvalidInputError(
                f"a {self.key_bits}-bit key cannot hold one {slot_bits}-bit value slot and its count slot"
            )
        object.__setattr__(self, "level", level)
        object.__setattr__(self, "slot_bits", slot_bits)
        object.__setattr__(self, "slots", slots)
        object.__setattr__(self, "limbs", -(-(slots + 1) * slot_bits // 64))

    @property
    def grid(self) -> Grid:
        """The quantization grid (clip alpha, precision_bits b) of :mod:`secagg.quantize`."""
        return Grid(self.clip, self.precision_bits)

    @property
    def step(self) -> float:
        """Quantization step alpha / L: per-summand error bound."""
        return self.grid.step

    def ciphertexts_for(self, length: int) -> int:
        return -(-length // self.slots)

    def describe(self) -> dict:
        """Plain dict of the layout (parameters and derived sizes) for logs and results."""
        d = asdict(self)
        d.update(step=self.step, headroom_bits=self.slot_bits - self.precision_bits)
        return d

    def quantize(self, values: np.ndarray, summands: int = 1) -> tuple[np.ndarray, int]:
        """Offset slots q + c L (uint64, padded to whole ciphertexts) and the clipped count.

        Values stand for c = ``summands`` summands: clipped to |x| <= c alpha, then
        stochastically rounded (CSPRNG) by :meth:`secagg.quantize.Grid.encoder`.
        """
        x = finite_1d(values)
        if not isinstance(summands, int) or not 1 <= summands <= self.max_summands:
            raise HeadroomExceededError(
                f"summands must be an integer in [1, {self.max_summands}], got {summands!r}"
            )
        padded = self.ciphertexts_for(x.size) * self.slots
        out = np.full(padded, self.grid.offset(summands), dtype=np.uint64)  # padding encodes 0
        encoder = self.grid.encoder(summands)
        encoder.encode_into(x, out[:x.size])
        return out, encoder.clipped

    def pack(self, slot_values: np.ndarray, count: int = 0) -> list[int]:
        """Big plaintext integers: value slot i at bits [i w, (i + 1) w), ``count`` in the top slot."""
        rows = slot_values.reshape(-1, self.slots)
        counted = np.empty((rows.shape[0], self.slots + 1), dtype=np.uint64)
        counted[:, :-1] = rows
        counted[:, -1] = count
        limbs = _pack(counted.ravel(), self.slots + 1, self.slot_bits, self.limbs)
        raw = limbs.tobytes()
        width = self.limbs * 8
        return [int.from_bytes(raw[i:i + width], "little") for i in range(0, len(raw), width)]

    def unpack(self, plaintexts: list[int]) -> np.ndarray:
        """Value slots (uint64) of decrypted plaintexts, in order."""
        return self.unpack_counted(plaintexts)[0]

    def unpack_counted(self, plaintexts: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(value slots, count slot of each plaintext), both uint64."""
        width = self.limbs * 8
        try:
            raw = b"".join(int(m).to_bytes(width, "little") for m in plaintexts)
        except OverflowError:
            raise HeadroomExceededError("a decrypted plaintext exceeds the packed layout") from None
        limbs = np.frombuffer(raw, dtype=np.uint64).reshape(len(plaintexts), self.limbs)
        slots = _unpack(limbs, self.slots + 1, self.slot_bits).reshape(len(plaintexts), self.slots + 1)
        return np.ascontiguousarray(slots[:, :-1]).ravel(), slots[:, -1].copy()

    def check_counts(self, counts: np.ndarray) -> int:
        """The summand count C all count slots agree on; refuses C > K or disagreement."""
        if counts.size == 0:
            return 0
        c = int(counts[0])
        if np.any(counts != counts[0]):
            raise HeadroomExceededError(
                f"the ciphertexts of one vector absorbed different numbers of summands "
                f"({sorted(set(counts.tolist()))}): they were tampered with or mixed up"
            )
        if not 1 <= c <= self.max_summands:
            raise HeadroomExceededError(
                f"the ciphertexts absorbed {c} summands (their encrypted count), outside the "
                f"headroom [1, max_summands={self.max_summands}]: slots may have overflowed"
            )
        return c

    def slot_sums(self, slot_values: np.ndarray, length: int, summands: int) -> np.ndarray:
        """Exact integer sums of quantized values: slot - C L, checked to lie in [-C L, C L]."""
        offset = self.grid.offset(summands)
        s = slot_values[:length]
        if s.size and int(s.max()) > 2 * offset:
            raise HeadroomExceededError(
                f"a slot holds {int(s.max())}, above 2 C L = {2 * offset} for C = {summands} "
                "summands: the ciphertext was tampered with or its summand count is wrong"
            )
        return s.astype(np.int64) - np.int64(offset)

    def dequantize(self, sums: np.ndarray) -> np.ndarray:
        """Floats from signed slot sums (:meth:`slot_sums`): sums * step."""
        return self.grid.values(sums)


def choose_layout(
    *, clip: float, precision_bits: int = 16, max_summands: int, key_bits: int
) -> PackingLayout:
    """The layout for values |x| <= clip, b-bit quantization, up to K summands, |n| bits."""
    return PackingLayout(float(clip), int(precision_bits), int(max_summands), int(key_bits))


def aligned_positions(length: int, block_size: int, slots: int) -> tuple[np.ndarray, int]:
    """Item-aligned packing: the slot position of each of ``length`` entries, and the cell count.

    The vector is ``length / block_size`` blocks (FedMF: one item's row). Each block sits
    in whole ciphertexts ("cells") of ``slots`` slots, never across a cell boundary:

    * block_size <= slots: k = slots // block_size blocks per cell, grouped by index
      (cell g holds blocks g k .. g k + k - 1, a public grouping), block j at slots
      (j mod k) b .. (j mod k) b + b - 1 of cell j // k; the last slots % b stay 0;
    * block_size > slots: block j alone fills cells j m .. j m + m - 1, m = ceil(b / slots).

    block_size = 1 (or any divisor of ``slots``) gives the plain consecutive layout.
    A client whose support is a set of blocks then uploads only the cells holding them.
    """
    if block_size < 1 or length % block_size:
        raise InvalidInputError(f"block_size must be a positive divisor of {length}, got {block_size}")
    entry = np.arange(length, dtype=np.int64)
    block, offset = entry // block_size, entry % block_size
    if block_size <= slots:
        per_cell = slots // block_size
        positions = (block // per_cell) * slots + (block % per_cell) * block_size + offset
        cells = -(-(length // block_size) // per_cell)
    else:
        span = -(-block_size // slots)
        positions = block * span * slots + offset
        cells = (length // block_size) * span
    return positions, int(cells)


@numba.njit(cache=True)
def _pack(slots, k, w, n_limbs):
    n_ct = slots.size // k
    limbs = np.zeros((n_ct, n_limbs), dtype=np.uint64)
    for j in range(n_ct):
        for s in range(k):
            v = slots[j * k + s]
            o = s * w
            li = o >> 6
            sh = o & 63
            limbs[j, li] |= v << np.uint64(sh)
            if sh + w > 64:
                limbs[j, li + 1] |= v >> np.uint64(64 - sh)
    return limbs


@numba.njit(cache=True)
def _unpack(limbs, k, w):
    n_ct = limbs.shape[0]
    out = np.empty(n_ct * k, dtype=np.uint64)
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    for j in range(n_ct):
        for s in range(k):
            o = s * w
            li = o >> 6
            sh = o & 63
            v = limbs[j, li] >> np.uint64(sh)
            if sh + w > 64:
                v |= limbs[j, li + 1] << np.uint64(64 - sh)
            out[j * k + s] = v & mask
    return out
