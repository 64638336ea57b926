"""Reference (NumPy / plain Python) kernels of ``wavelet``: the oracle, and the definition of the format.

Transform. A separable lifting wavelet over every axis, Mallat layout: at each level the current low-pass
box (the leading corner of the array) is transformed along each *active* axis — an axis whose current length
is at least :data:`MIN_LENGTH` — and the level's low half (``ceil(n / 2)`` samples) is put first, the high
half after it. Boundaries use whole-sample symmetric extension, so any length works. Both halves are scaled
so that every synthesis basis function has unit L2 norm (the transform is close to orthonormal: a uniform
quantization step gives nearly the same error in every subband).

Entropy coding. Quantized coefficients (int64) are coded box by box (one box per subband; every box is
an independent stream) with an adaptive binary range coder (LZMA style carry handling, 32-bit range,
16-bit probabilities, each the mean of a fast and a slow adaptive estimate that warm up like counters;
:mod:`~tensorpress.kernels.reference._wavelet_coder`). Elements are visited in raster order inside the
box; the context of an element is a bucket of the weighted magnitudes of its already-coded neighbours
(:func:`neighbour_bucket`). Each value is binarized as: zero flag; sign (context: signs of the west and
north neighbours); ``|v| - 1`` as an Exp-Golomb code whose unary exponent bins and first mantissa bit are
adaptive, the other mantissa bits equiprobable. Sparse layers (:func:`encode_sparse`) code the gaps
between positions and the values the same way. Every stream ends on the value with the most trailing zero
bits; its first byte (always 0) and its trailing zero bytes are not stored (decoders read zeros past the
end).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..dispatch import kernel
from ._wavelet_coder import (
    Models,
    RangeDecoder,
    RangeEncoder,
    SparseModels,
    decode_count,
    decode_value,
    encode_count,
    encode_value,
    neighbour_bucket,
    neighbour_sum,
    sign_context,
)

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
        enc, models = RangeEncoder(), Models()
        for i in _positions(lo, hi):
            idx = (int(i[0]), int(i[1]), int(i[2]), int(i[3]))
            bucket = neighbour_bucket(neighbour_sum(q4, idx, lo, hi))
            encode_value(enc, models, int(q4[idx]), bucket, sign_context(q4, idx, lo))
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
        dec, models = RangeDecoder(raw[offsets[k] : offsets[k + 1]]), Models()
        for i in _positions(lo, hi):
            idx = (int(i[0]), int(i[1]), int(i[2]), int(i[3]))
            bucket = neighbour_bucket(neighbour_sum(q4, idx, lo, hi))
            q4[idx] = decode_value(dec, models, bucket, sign_context(q4, idx, lo))
    return q4.reshape(shape)


@kernel("wavelet", "encode_sparse", "reference")
def encode_sparse(positions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Code increasing flat ``positions`` and their nonzero int64 ``values``: per element the gap since the
    previous position (context: the bucket of the previous gap, so clusters are cheap), the sign, and
    ``|value| - 1``. Returns the uint8 stream (the count is stored by the caller)."""
    enc, m = RangeEncoder(), SparseModels()
    prev, prev_gap = -1, 0
    for p, v in zip(positions.tolist(), values.tolist(), strict=True):
        gap = p - prev - 1
        encode_count(enc, m.gap_exp, m.gap_mant, neighbour_bucket(prev_gap), gap)
        enc.bit(m.sign, 0, int(v < 0))
        encode_count(enc, m.val_exp, m.val_mant, 0, abs(v) - 1)
        prev, prev_gap = p, gap
    return np.frombuffer(enc.finish(), np.uint8).copy()


@kernel("wavelet", "decode_sparse", "reference")
def decode_sparse(data: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_sparse`: (int64 positions, int64 values) of ``count`` elements."""
    dec, m = RangeDecoder(bytes(np.asarray(data, np.uint8))), SparseModels()
    positions, values = np.zeros(count, np.int64), np.zeros(count, np.int64)
    prev, prev_gap = -1, 0
    for i in range(count):
        gap = decode_count(dec, m.gap_exp, m.gap_mant, neighbour_bucket(prev_gap))
        negative = dec.bit(m.sign, 0)
        magnitude = decode_count(dec, m.val_exp, m.val_mant, 0) + 1
        prev, prev_gap = prev + gap + 1, gap
        positions[i], values[i] = prev, -magnitude if negative else magnitude
    return positions, values
