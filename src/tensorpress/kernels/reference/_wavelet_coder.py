"""The range coder of ``wavelet`` in plain Python: the definition of the bit stream (see
:mod:`tensorpress.kernels.reference.wavelet`), slow, used as the oracle of the Numba coder."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# --- constants (shared by every backend) ---------------------------------------------------------------
N_BUCKETS = 28
N_EXP = 64
#: largest Exp-Golomb exponent (|values| < 2**62); decoders stop there on corrupt data
MAX_EXP = 62
PROB_BITS = 16
FAST_RATE, SLOW_RATE = 4, 7
#: adaptation shift after n coded bits: about log2(n + 2), so a fresh model first averages like a counter,
#: then each estimate settles at its own rate (short streams, e.g. small chunks, learn quickly)
WARMUP = tuple(min(max(1, (n + 2).bit_length() - 1), SLOW_RATE) for n in range(1 << SLOW_RATE))
#: estimates move towards P_MAX after a 0 and P_MIN after a 1, so they never reach 0 or 1
P_MIN, P_MAX = 32, (1 << PROB_BITS) - 32
TOP = 1 << 24


# --- contexts, models, coder ---------------------------------------------------------------------------
def neighbour_bucket(s: int) -> int:
    """Context bucket of a weighted neighbour magnitude sum ``s``: two buckets per octave."""
    if s <= 0:
        return 0
    e = s.bit_length() - 1
    half = (s >> (e - 1)) & 1 if e >= 1 else 0
    return min(1 + 2 * e + half, N_BUCKETS - 1)


def neighbour_sum(q: np.ndarray, i: tuple[int, int, int, int], lo: Sequence[int], hi: Sequence[int]) -> int:
    """2(|W| + |N|) + |NW| + |NE| + |U| + |V| over already-coded neighbours inside the box [lo, hi).

    ``q`` is 4-D; W, N are the previous elements along the last two axes, NW/NE the diagonal ones above,
    U and V the previous elements along axes 1 and 0.
    """
    i0, i1, i2, i3 = i
    s = 0
    if i3 > lo[3]:
        s += 2 * abs(int(q[i0, i1, i2, i3 - 1]))
    if i2 > lo[2]:
        s += 2 * abs(int(q[i0, i1, i2 - 1, i3]))
        if i3 > lo[3]:
            s += abs(int(q[i0, i1, i2 - 1, i3 - 1]))
        if i3 + 1 < hi[3]:
            s += abs(int(q[i0, i1, i2 - 1, i3 + 1]))
    if i1 > lo[1]:
        s += abs(int(q[i0, i1 - 1, i2, i3]))
    if i0 > lo[0]:
        s += abs(int(q[i0 - 1, i1, i2, i3]))
    return s


def sign_context(q: np.ndarray, i: tuple[int, int, int, int], lo: Sequence[int]) -> int:
    i0, i1, i2, i3 = i
    w = int(np.sign(q[i0, i1, i2, i3 - 1])) if i3 > lo[3] else 0
    n = int(np.sign(q[i0, i1, i2 - 1, i3])) if i2 > lo[2] else 0
    return 3 * (w + 1) + (n + 1)


class Models:
    """Adaptive binary models: each holds (fast, slow) estimates of P(bit = 0) in 16-bit fixed point."""

    def __init__(self) -> None:
        self.zero, self.sign = new_models(N_BUCKETS), new_models(9)
        self.exp, self.mant = new_models(N_BUCKETS * N_EXP), new_models(N_BUCKETS * N_EXP)


def new_models(n: int) -> np.ndarray:
    """``n`` fresh models: (fast, slow, count) = (1/2, 1/2, 0)."""
    m = np.zeros((n, 3), np.int64)
    m[:, :2] = 1 << (PROB_BITS - 1)
    return m


def _p0(m: np.ndarray, k: int) -> int:
    return int((m[k, 0] + m[k, 1]) >> 1)


def _adapt(m: np.ndarray, k: int, bit: int) -> None:
    """Move both estimates of model k towards the coded bit; column 2 counts the bits seen (saturating)."""
    target = P_MIN if bit else P_MAX
    shift = WARMUP[m[k, 2]]
    m[k, 0] += (target - m[k, 0]) >> min(shift, FAST_RATE)
    m[k, 1] += (target - m[k, 1]) >> shift
    m[k, 2] = min(m[k, 2] + 1, len(WARMUP) - 1)


class RangeEncoder:
    """Binary range encoder (carry-propagating, LZMA style)."""

    def __init__(self) -> None:
        self.low, self.range, self.cache, self.cache_size = 0, 0xFFFFFFFF, 0, 1
        self.out = bytearray()

    def _shift_low(self) -> None:
        if self.low < 0xFF000000 or self.low >= 1 << 32:
            carry = self.low >> 32
            temp = self.cache
            while True:
                self.out.append((temp + carry) & 0xFF)
                temp = 0xFF
                self.cache_size -= 1
                if self.cache_size == 0:
                    break
            self.cache = (self.low >> 24) & 0xFF
        self.cache_size += 1
        self.low = (self.low & 0x00FFFFFF) << 8

    def _normalize(self) -> None:
        while self.range < TOP:
            self.range <<= 8
            self._shift_low()

    def bit(self, m: np.ndarray, k: int, bit: int) -> None:
        bound = (self.range >> PROB_BITS) * _p0(m, k)
        if bit:
            self.low += bound
            self.range -= bound
        else:
            self.range = bound
        _adapt(m, k, bit)
        self._normalize()

    def bypass(self, bit: int) -> None:
        self.range >>= 1
        if bit:
            self.low += self.range
        self._normalize()

    def finish(self) -> bytes:
        """Flush the value in [low, low + range) with the most trailing zero bits, then drop the first byte
        (always 0) and the trailing zero bytes (decoders read zeros past the end)."""
        for k in range(32, -1, -1):
            v = ((self.low + (1 << k) - 1) >> k) << k
            if v - self.low < self.range:
                self.low = v
                break
        for _ in range(5):
            self._shift_low()
        return bytes(self.out[1:]).rstrip(b"\0")


class RangeDecoder:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 4
        padded = bytes(data[:4]).ljust(4, b"\0")
        self.code, self.range = int.from_bytes(padded, "big"), 0xFFFFFFFF

    def _normalize(self) -> None:
        while self.range < TOP:
            self.range <<= 8
            nxt = self.data[self.pos] if self.pos < len(self.data) else 0
            self.code = ((self.code << 8) | nxt) & 0xFFFFFFFF
            self.pos += 1

    def bit(self, m: np.ndarray, k: int) -> int:
        bound = (self.range >> PROB_BITS) * _p0(m, k)
        if self.code < bound:
            self.range, bit = bound, 0
        else:
            self.code -= bound
            self.range -= bound
            bit = 1
        _adapt(m, k, bit)
        self._normalize()
        return bit

    def bypass(self) -> int:
        self.range >>= 1
        bit = 0
        if self.code >= self.range:
            self.code -= self.range
            bit = 1
        self._normalize()
        return bit


def encode_value(enc: RangeEncoder, m: Models, v: int, bucket: int, sctx: int) -> None:
    enc.bit(m.zero, bucket, int(v != 0))
    if v == 0:
        return
    enc.bit(m.sign, sctx, int(v < 0))
    u = abs(v)  # = (|v| - 1) + 1, Exp-Golomb of |v| - 1
    e = u.bit_length() - 1
    base = bucket * N_EXP
    for j in range(e):
        enc.bit(m.exp, base + j, 1)
    if e < MAX_EXP:
        enc.bit(m.exp, base + e, 0)
    if e >= 1:
        enc.bit(m.mant, base + e, (u >> (e - 1)) & 1)
        for j in range(e - 2, -1, -1):
            enc.bypass((u >> j) & 1)


def decode_value(dec: RangeDecoder, m: Models, bucket: int, sctx: int) -> int:
    if not dec.bit(m.zero, bucket):
        return 0
    negative = dec.bit(m.sign, sctx)
    base = bucket * N_EXP
    e = 0
    while e < MAX_EXP and dec.bit(m.exp, base + e):
        e += 1
    u = 1
    if e >= 1:
        u = (u << 1) | dec.bit(m.mant, base + e)
        for _ in range(e - 1):
            u = (u << 1) | dec.bypass()
    return -u if negative else u


# --- counts (the sparse correction layer) --------------------------------------------------------------
def encode_count(enc: RangeEncoder, exp: np.ndarray, mant: np.ndarray, ctx: int, u: int) -> None:
    """Adaptive Exp-Golomb code of ``u >= 0``: exponent bins in context ``ctx``, the first mantissa bit
    adaptive, the others equiprobable."""
    w = u + 1
    e = w.bit_length() - 1
    base = ctx * N_EXP
    for j in range(e):
        enc.bit(exp, base + j, 1)
    if e < MAX_EXP:
        enc.bit(exp, base + e, 0)
    if e >= 1:
        enc.bit(mant, base + e, (w >> (e - 1)) & 1)
        for j in range(e - 2, -1, -1):
            enc.bypass((w >> j) & 1)


def decode_count(dec: RangeDecoder, exp: np.ndarray, mant: np.ndarray, ctx: int) -> int:
    base = ctx * N_EXP
    e = 0
    while e < MAX_EXP and dec.bit(exp, base + e):
        e += 1
    w = 1
    if e >= 1:
        w = (w << 1) | dec.bit(mant, base + e)
        for _ in range(e - 1):
            w = (w << 1) | dec.bypass()
    return w - 1


class SparseModels:
    def __init__(self) -> None:
        self.gap_exp, self.gap_mant = new_models(N_BUCKETS * N_EXP), new_models(N_BUCKETS * N_EXP)
        self.sign, self.val_exp, self.val_mant = new_models(1), new_models(N_EXP), new_models(N_EXP)
