"""Reference (NumPy / plain Python) kernels of ``wavelet``: the oracle, and the definition of the format.

Transform. A separable lifting wavelet over every axis, Mallat layout: at each level the current low-pass
box (the leading corner of the array) is transformed along each *active* axis — an axis whose current length
is at least :data:`MIN_LENGTH` — and the level's low half (``ceil(n / 2)`` samples) is put first, the high
half after it. Boundaries use whole-sample symmetric extension, so any length works. Both halves are scaled
so that every synthesis basis function has unit L2 norm (the transform is close to orthonormal: a uniform
quantization step gives nearly the same error in every subband).

Entropy coding. Quantized coefficients (int64) are coded box by box (one box per subband; every box is
an independent stream) with an adaptive binary range coder (LZMA style carry handling, 32-bit range,
16-bit probabilities, each the mean of a fast and a slow adaptive estimate that warm up like counters). Elements are visited in raster
order inside the box; the context of an element is a bucket of the weighted magnitudes of its already-coded
neighbours (:func:`neighbour_bucket`). Each value is binarized as: zero flag; sign (context: signs of the
west and north neighbours); ``|v| - 1`` as an Exp-Golomb code whose unary exponent bins and first mantissa
bit are adaptive, the other mantissa bits equiprobable. The first byte of every stream (always 0) is not
stored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..dispatch import kernel

#: wavelet names → id used by the kernels
WAVELETS = {"cdf97": 0, "cdf53": 1, "haar": 2}
#: an axis takes part in a level while its current length is at least this
MIN_LENGTH = 8
#: lifting steps (predict, update, predict, update) of the CDF 9/7 wavelet, as in JPEG 2000
CDF97_STEPS = (-1.586134342059924, -0.052980118572961, 0.882911075530934, 0.443506852043971)
CDF53_STEPS = (-0.5, 0.25)
#: (low, high) scale factors: the L2 norms of the synthesis basis functions of the unscaled lifting steps
SCALES = {0: (1.139764007654642, 0.8872770756359072), 1: (1.224744871391589, 0.8477912478906585),
          2: (math.sqrt(2.0), 1.0 / math.sqrt(2.0))}

# --- entropy coder constants (shared by every backend) ---------------------------------------------------
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

Level = tuple[tuple[int, ...], tuple[int, ...]]  # (extents of the low-pass box, active axes)


def plan(shape: Sequence[int], levels: int | None) -> list[Level]:
    """The levels of the transform of an array of ``shape``: at most ``levels`` (None: as many as fit)."""
    ext = list(shape)
    out: list[Level] = []
    while levels is None or len(out) < levels:
        axes = tuple(k for k, n in enumerate(ext) if n >= MIN_LENGTH)
        if not axes:
            break
        out.append((tuple(ext), axes))
        for k in axes:
            ext[k] = (ext[k] + 1) // 2
    return out


def subbands(shape: Sequence[int], levels: list[Level]) -> np.ndarray:
    """Boxes of the subbands, int64 ``(n_boxes, ndim, 2)`` of [start, stop): the final low-pass box first,
    then the detail boxes from the coarsest level to the finest."""
    ndim = len(shape)
    final = list(shape)
    for ext, axes in levels:
        final = list(ext)
        for k in axes:
            final[k] = (ext[k] + 1) // 2
    boxes = [[(0, n) for n in final]]
    for ext, axes in reversed(levels):
        for which in range(1, 1 << len(axes)):
            box = [(0, ext[k]) for k in range(ndim)]
            for j, k in enumerate(axes):
                half = (ext[k] + 1) // 2
                box[k] = (half, ext[k]) if which >> j & 1 else (0, half)
            boxes.append(box)
    return np.array(boxes, dtype=np.int64).reshape(len(boxes), ndim, 2)


# --- transform ------------------------------------------------------------------------------------------
def _predict(s: np.ndarray, d: np.ndarray, c: float) -> None:
    """d[i] += c (s[i] + s[i+1]), with s[ns] mirrored to s[ns-1]; axis 0 is the lifting axis."""
    right = s[1 : d.shape[0] + 1] if s.shape[0] > d.shape[0] else np.concatenate([s[1:], s[-1:]])
    d += c * (s[: d.shape[0]] + right)


def _update(s: np.ndarray, d: np.ndarray, c: float) -> None:
    """s[i] += c (d[i-1] + d[i]), with d[-1] mirrored to d[0] and d[nd] to d[nd-1]."""
    cur = d if d.shape[0] == s.shape[0] else np.concatenate([d, d[-1:]])
    prev = np.concatenate([cur[:1], cur[:-1]])
    s += c * (prev + cur)


def lift_forward(x: np.ndarray, wid: int) -> np.ndarray:
    """One level along axis 0 of float64 ``x``: ``[low; high]`` (low first, ``ceil(n/2)`` rows)."""
    s, d = x[0::2].copy(), x[1::2].copy()
    if wid == 2:
        d -= s[: d.shape[0]]
        s[: d.shape[0]] += 0.5 * d
    else:
        steps = CDF97_STEPS if wid == 0 else CDF53_STEPS
        for i in range(0, len(steps), 2):
            _predict(s, d, steps[i])
            _update(s, d, steps[i + 1])
    low, high = SCALES[wid]
    return np.concatenate([s * low, d * high])


def lift_inverse(y: np.ndarray, wid: int) -> np.ndarray:
    """Inverse of :func:`lift_forward` along axis 0."""
    ns = (y.shape[0] + 1) // 2
    low, high = SCALES[wid]
    s, d = y[:ns] / low, y[ns:] / high
    if wid == 2:
        s[: d.shape[0]] -= 0.5 * d
        d += s[: d.shape[0]]
    else:
        steps = CDF97_STEPS if wid == 0 else CDF53_STEPS
        for i in range(len(steps) - 2, -1, -2):
            _update(s, d, -steps[i + 1])
            _predict(s, d, -steps[i])
    x = np.empty_like(y)
    x[0::2], x[1::2] = s, d
    return x


@kernel("wavelet", "forward", "reference")
def forward(x: np.ndarray, wid: int, levels: list[Level]) -> np.ndarray:
    """Multi-level transform of float64 ``x`` (any ndim); returns a new float64 array, Mallat layout."""
    c = np.array(x, dtype=np.float64, copy=True)
    for ext, axes in levels:
        box = tuple(slice(0, n) for n in ext)
        sub = c[box]
        for k in axes:
            sub = np.moveaxis(lift_forward(np.moveaxis(sub, k, 0), wid), 0, k)
        c[box] = sub
    return c


@kernel("wavelet", "inverse", "reference")
def inverse(c: np.ndarray, wid: int, levels: list[Level]) -> np.ndarray:
    """Inverse of :func:`forward`."""
    x = np.array(c, dtype=np.float64, copy=True)
    for ext, axes in reversed(levels):
        box = tuple(slice(0, n) for n in ext)
        sub = x[box]
        for k in reversed(axes):
            sub = np.moveaxis(lift_inverse(np.moveaxis(sub, k, 0), wid), 0, k)
        x[box] = sub
    return x


# --- entropy coding -------------------------------------------------------------------------------------
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


class _Models:
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


def _encode_value(enc: RangeEncoder, m: _Models, v: int, bucket: int, sctx: int) -> None:
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


def _decode_value(dec: RangeDecoder, m: _Models, bucket: int, sctx: int) -> int:
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


def _as4d(shape: Sequence[int]) -> tuple[int, int, int, int]:
    s = (1,) * (4 - len(shape)) + tuple(shape)
    return (s[0], s[1], s[2], s[3])


def _box4(box: np.ndarray) -> tuple[list[int], list[int]]:
    pad = 4 - box.shape[0]
    return [0] * pad + [int(v) for v in box[:, 0]], [1] * pad + [int(v) for v in box[:, 1]]


def _positions(lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1)


@kernel("wavelet", "encode", "reference")
def encode_boxes(q: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Code int64 ``q`` (ndim ≤ 4) box by box; returns (uint8 streams back to back, int64 size of each)."""
    q4 = q.reshape(_as4d(q.shape))
    streams = []
    for box in boxes:
        lo, hi = _box4(box)
        enc, models = RangeEncoder(), _Models()
        for i in _positions(lo, hi):
            idx = (int(i[0]), int(i[1]), int(i[2]), int(i[3]))
            bucket = neighbour_bucket(neighbour_sum(q4, idx, lo, hi))
            _encode_value(enc, models, int(q4[idx]), bucket, sign_context(q4, idx, lo))
        streams.append(enc.finish())
    sizes = np.array([len(s) for s in streams], dtype=np.int64)
    return np.frombuffer(b"".join(streams), dtype=np.uint8).copy(), sizes


@kernel("wavelet", "decode", "reference")
def decode_boxes(
    data: np.ndarray, sizes: np.ndarray, boxes: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Inverse of :func:`encode_boxes`: int64 array of ``shape`` (elements outside every box are 0)."""
    q4 = np.zeros(_as4d(shape), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    raw = bytes(np.asarray(data, dtype=np.uint8))
    for k, box in enumerate(boxes):
        lo, hi = _box4(box)
        dec, models = RangeDecoder(raw[offsets[k] : offsets[k + 1]]), _Models()
        for i in _positions(lo, hi):
            idx = (int(i[0]), int(i[1]), int(i[2]), int(i[3]))
            bucket = neighbour_bucket(neighbour_sum(q4, idx, lo, hi))
            q4[idx] = _decode_value(dec, models, bucket, sign_context(q4, idx, lo))
    return q4.reshape(shape)


# --- sparse values (the correction layer) --------------------------------------------------------------
def _encode_count(enc: RangeEncoder, exp: np.ndarray, mant: np.ndarray, ctx: int, u: int) -> None:
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


def _decode_count(dec: RangeDecoder, exp: np.ndarray, mant: np.ndarray, ctx: int) -> int:
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


class _SparseModels:
    def __init__(self) -> None:
        self.gap_exp, self.gap_mant = new_models(N_BUCKETS * N_EXP), new_models(N_BUCKETS * N_EXP)
        self.sign, self.val_exp, self.val_mant = new_models(1), new_models(N_EXP), new_models(N_EXP)


@kernel("wavelet", "encode_sparse", "reference")
def encode_sparse(positions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Code increasing flat ``positions`` and their nonzero int64 ``values``: per element the gap since the
    previous position (context: the bucket of the previous gap, so clusters are cheap), the sign, and
    ``|value| - 1``. Returns the uint8 stream (the count is stored by the caller)."""
    enc, m = RangeEncoder(), _SparseModels()
    prev, prev_gap = -1, 0
    for p, v in zip(positions.tolist(), values.tolist(), strict=True):
        gap = p - prev - 1
        _encode_count(enc, m.gap_exp, m.gap_mant, neighbour_bucket(prev_gap), gap)
        enc.bit(m.sign, 0, int(v < 0))
        _encode_count(enc, m.val_exp, m.val_mant, 0, abs(v) - 1)
        prev, prev_gap = p, gap
    return np.frombuffer(enc.finish(), np.uint8).copy()


@kernel("wavelet", "decode_sparse", "reference")
def decode_sparse(data: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_sparse`: (int64 positions, int64 values) of ``count`` elements."""
    dec, m = RangeDecoder(bytes(np.asarray(data, np.uint8))), _SparseModels()
    positions, values = np.zeros(count, np.int64), np.zeros(count, np.int64)
    prev, prev_gap = -1, 0
    for i in range(count):
        gap = _decode_count(dec, m.gap_exp, m.gap_mant, neighbour_bucket(prev_gap))
        negative = dec.bit(m.sign, 0)
        magnitude = _decode_count(dec, m.val_exp, m.val_mant, 0) + 1
        prev, prev_gap = prev + gap + 1, gap
        positions[i], values[i] = prev, -magnitude if negative else magnitude
    return positions, values
