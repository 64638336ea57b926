"""Numba CPU kernels of ``wavelet``: lifting transforms, and the range coder of
:mod:`~tensorpress.kernels.numba._wavelet_coder` behind the kernel table.

Bit-exact with :mod:`tensorpress.kernels.reference.wavelet`, which defines the format. Transforms run in
parallel over blocks of lines; coefficient boxes (subbands) are independent streams, coded in parallel.
Arrays below :data:`PARALLEL_MIN` elements run on one thread.
"""

from __future__ import annotations

import numba
import numpy as np

from ..dispatch import kernel
from ..reference.wavelet import CDF53_STEPS, CDF97_STEPS, SCALES, Level
from ._wavelet_coder import (
    decode_boxes_parallel,
    decode_boxes_serial,
    decode_sparse_stream,
    encode_boxes_parallel,
    encode_boxes_serial,
    encode_sparse_stream,
)

_BLOCK = 64  # lines lifted together along a non-last axis (contiguous inner loops)
_STEPS = np.zeros((3, 4), np.float64)
_STEPS[0] = CDF97_STEPS
_STEPS[1, :2] = CDF53_STEPS
_NSTEPS = np.array([4, 2, 0], np.int64)
_SCALE = np.array([SCALES[0], SCALES[1], SCALES[2]], np.float64)


# --- transform ------------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _lift(s, d, wid, steps, nsteps, inverse):  # numba infers the types; s: (ns, w), d: (nd, w)
    ns, nd, w = s.shape[0], d.shape[0], s.shape[1]
    if wid == 2:  # Haar: d = odd - even, s = even + d / 2
        if inverse:
            for i in range(nd):
                for j in range(w):
                    s[i, j] -= 0.5 * d[i, j]
                    d[i, j] += s[i, j]
        else:
            for i in range(nd):
                for j in range(w):
                    d[i, j] -= s[i, j]
                    s[i, j] += 0.5 * d[i, j]
        return
    for t in range(nsteps // 2):
        k = nsteps - 2 - 2 * t if inverse else 2 * t
        cp = -steps[k] if inverse else steps[k]
        cu = -steps[k + 1] if inverse else steps[k + 1]
        if not inverse:
            for i in range(nd):
                r = i + 1 if i + 1 < ns else i
                for j in range(w):
                    d[i, j] += cp * (s[i, j] + s[r, j])
        for i in range(ns):
            a = i - 1 if i >= 1 else 0
            b = i if i < nd else nd - 1
            for j in range(w):
                s[i, j] += cu * (d[a, j] + d[b, j])
        if inverse:
            for i in range(nd):
                r = i + 1 if i + 1 < ns else i
                for j in range(w):
                    d[i, j] += cp * (s[i, j] + s[r, j])


@numba.njit(cache=True, nogil=True)
def _load(a, i, p, j, post, dst, row, w, scale, divide):
    """dst[row, :w] = a[i] of the w lines starting at line (p, j) (divided or multiplied by scale)."""
    for c in range(w):
        dst[row, c] = a[p, i, j] / scale if divide else a[p, i, j] * scale
        j += 1
        if j == post:
            j = 0
            p += 1


@numba.njit(cache=True, nogil=True)
def _store(a, i, p, j, post, src, row, w, scale):
    for c in range(w):
        a[p, i, j] = src[row, c] * scale
        j += 1
        if j == post:
            j = 0
            p += 1


def _axis(a, wid, steps, nsteps, low, high, inverse):  # a: (pre, n, post) C-contiguous float64
    """One level along axis 1 of ``a``. The pre × post lines are lifted in blocks of _BLOCK side by side
    (the lines of a block are the columns of s and d), so inner loops run over contiguous memory."""
    pre, n, post = a.shape
    ns, nd = (n + 1) // 2, n // 2
    lines = pre * post
    for job in numba.prange((lines + _BLOCK - 1) // _BLOCK):
        c0 = job * _BLOCK
        w = min(lines, c0 + _BLOCK) - c0
        s = np.empty((ns, w))
        d = np.empty((nd, w))
        p0 = c0 // post
        j0 = c0 - p0 * post
        if inverse:
            for i in range(ns):
                _load(a, i, p0, j0, post, s, i, w, low, True)
            for i in range(nd):
                _load(a, ns + i, p0, j0, post, d, i, w, high, True)
            _lift(s, d, wid, steps, nsteps, True)
            for i in range(ns):
                _store(a, 2 * i, p0, j0, post, s, i, w, 1.0)
            for i in range(nd):
                _store(a, 2 * i + 1, p0, j0, post, d, i, w, 1.0)
        else:
            for i in range(ns):
                _load(a, 2 * i, p0, j0, post, s, i, w, 1.0, False)
            for i in range(nd):
                _load(a, 2 * i + 1, p0, j0, post, d, i, w, 1.0, False)
            _lift(s, d, wid, steps, nsteps, False)
            for i in range(ns):
                _store(a, i, p0, j0, post, s, i, w, low)
            for i in range(nd):
                _store(a, ns + i, p0, j0, post, d, i, w, high)


_axis_parallel = numba.njit(parallel=True, cache=True, nogil=True)(_axis)
_axis_serial = numba.njit(cache=True, nogil=True)(_axis)
#: below this many elements a kernel runs on one thread (waking the others costs more than it saves)
PARALLEL_MIN = 1 << 17


def _transform(x: np.ndarray, wid: int, levels: list[Level], inverse: bool) -> np.ndarray:
    c = np.array(x, dtype=np.float64, copy=True, order="C")
    low, high = _SCALE[wid]
    order = reversed(levels) if inverse else levels
    for ext, axes in order:
        box = tuple(slice(0, n) for n in ext)
        sub = np.ascontiguousarray(c[box])
        for k in reversed(axes) if inverse else axes:
            pre = int(np.prod(ext[:k], dtype=np.int64))
            post = int(np.prod(ext[k + 1 :], dtype=np.int64))
            run = _axis_parallel if sub.size >= PARALLEL_MIN else _axis_serial
            run(sub.reshape(pre, ext[k], post), wid, _STEPS[wid], _NSTEPS[wid], low, high, inverse)
        c[box] = sub
    return c


@kernel("wavelet", "forward", "numba")
def forward(x: np.ndarray, wid: int, levels: list[Level]) -> np.ndarray:
    """Same contract as the reference :func:`~tensorpress.kernels.reference.wavelet.forward`."""
    return _transform(x, wid, levels, False)


@kernel("wavelet", "inverse", "numba")
def inverse(c: np.ndarray, wid: int, levels: list[Level]) -> np.ndarray:
    return _transform(c, wid, levels, True)


def _bounds4(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, ndim = boxes.shape[0], boxes.shape[1]
    lo = np.zeros((n, 4), np.int64)
    hi = np.ones((n, 4), np.int64)
    lo[:, 4 - ndim :] = boxes[:, :, 0]
    hi[:, 4 - ndim :] = boxes[:, :, 1]
    return lo, hi


def _shape4(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (1,) * (4 - len(shape)) + tuple(shape)


@kernel("wavelet", "encode", "numba")
def encode_boxes(q: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Same contract as the reference :func:`~tensorpress.kernels.reference.wavelet.encode_boxes`."""
    flat = np.ascontiguousarray(q, dtype=np.int64).reshape(-1)
    shape4 = np.array(_shape4(q.shape), np.int64)
    lo, hi = _bounds4(boxes)
    counts = np.prod(hi - lo, axis=1)
    kept: dict[int, np.ndarray] = {}
    # a first pass sized for typical data; boxes that overflow are coded again with room for the worst case
    for per_element in (2, 24, 200):
        todo = np.array([k for k in range(len(boxes)) if k not in kept], np.int64)
        if not todo.size:
            break
        caps = counts[todo] * per_element + 64
        ends = np.cumsum(caps)
        starts = ends - caps
        out = np.empty(int(ends[-1]), np.uint8)
        sizes = np.empty(todo.size, np.int64)
        run = encode_boxes_parallel if flat.size >= PARALLEL_MIN and todo.size > 1 else encode_boxes_serial
        run(flat, shape4, lo[todo], hi[todo], out, starts, ends, sizes)
        for j, k in enumerate(todo):
            if sizes[j] >= 0:  # the leading zero byte of every stream is dropped
                kept[int(k)] = out[starts[j] + 1 : starts[j] + max(sizes[j], 1)]
    chunks = [kept[k] for k in range(len(boxes))]
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    return data, np.array([c.size for c in chunks], np.int64)


@kernel("wavelet", "decode", "numba")
def decode_boxes(
    data: np.ndarray, sizes: np.ndarray, boxes: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    flat = np.zeros(int(np.prod(shape, dtype=np.int64)), np.int64)
    lo, hi = _bounds4(boxes)
    ends = np.cumsum(sizes).astype(np.int64)
    starts = ends - sizes
    shape4 = np.array(_shape4(shape), np.int64)
    run = decode_boxes_parallel if flat.size >= PARALLEL_MIN and len(boxes) > 1 else decode_boxes_serial
    run(np.ascontiguousarray(data, dtype=np.uint8), starts, ends, flat, shape4, lo, hi)
    return flat.reshape(shape)


@kernel("wavelet", "encode_sparse", "numba")
def encode_sparse(positions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Same contract as the reference :func:`~tensorpress.kernels.reference.wavelet.encode_sparse`."""
    positions = np.ascontiguousarray(positions, np.int64)
    values = np.ascontiguousarray(values, np.int64)
    for per_element in (8, 40, 400):
        out = np.empty(positions.size * per_element + 64, np.uint8)
        n = encode_sparse_stream(positions, values, out)
        if n >= 0:
            return out[1:max(n, 1)].copy()  # the leading zero byte is dropped
    raise ValueError("wavelet: sparse values too large to code")  # pragma: no cover - |values| < 2**62


@kernel("wavelet", "decode_sparse", "numba")
def decode_sparse(data: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    positions, values = np.zeros(count, np.int64), np.zeros(count, np.int64)
    decode_sparse_stream(np.ascontiguousarray(data, np.uint8), positions, values)
    return positions, values
