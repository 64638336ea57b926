"""Numba CPU kernels of ``wavelet``: lifting transforms and the context-adaptive range coder.

Bit-exact with :mod:`tensorpress.kernels.reference.wavelet`, which defines the format. Transforms run in
parallel over blocks of lines; coefficient boxes (subbands) are independent streams, coded in parallel.
"""

from __future__ import annotations

import numba
import numpy as np

from ..dispatch import kernel
from ..reference.wavelet import (
    CDF53_STEPS,
    CDF97_STEPS,
    FAST_RATE,
    MAX_EXP,
    N_BUCKETS,
    N_EXP,
    P_MAX,
    P_MIN,
    PROB_BITS,
    SCALES,
    TOP,
    WARMUP,
    Level,
    neighbour_bucket,
)

_BLOCK = 64  # lines lifted together along a non-last axis (contiguous inner loops)
_STEPS = np.zeros((3, 4), np.float64)
_STEPS[0] = CDF97_STEPS
_STEPS[1, :2] = CDF53_STEPS
_NSTEPS = np.array([4, 2, 0], np.int64)
_SCALE = np.array([SCALES[0], SCALES[1], SCALES[2]], np.float64)
_HALF = 1 << (PROB_BITS - 1)
_WARMUP = np.array(WARMUP, np.int64)
_LAST_COUNT = len(WARMUP) - 1


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


# --- range coder ---------------------------------------------------------------------------------------
# The coder state lives in local variables threaded through inlined helpers (so it stays in registers).
# Encoder state: low, range, cache, cache_size, pos (next byte of out), end (one past the last usable byte).
# A stream that does not fit in out[:end] sets pos past end; the caller codes that box again with more room.
@numba.njit(cache=True, nogil=True)
def _shift_low(low, cache, csize, pos, end, out):
    if low < 0xFF000000 or low >= (1 << 32):
        carry = low >> 32
        temp = cache
        while True:
            if pos < end:
                out[pos] = (temp + carry) & 0xFF
            pos += 1
            temp = 0xFF
            csize -= 1
            if csize == 0:
                break
        cache = (low >> 24) & 0xFF
    return (low & 0x00FFFFFF) << 8, cache, csize + 1, pos


@numba.njit(cache=True, nogil=True, inline="always")
def _p0_adapt(m, k, bit):
    """P(bit = 0) of model k, then move both estimates towards the coded bit (branch-free)."""
    f = m[k, 0]
    sl = m[k, 1]
    n = m[k, 2]
    shift = _WARMUP[n]
    target = P_MAX - bit * (P_MAX - P_MIN)
    m[k, 0] = f + ((target - f) >> (shift if shift < FAST_RATE else FAST_RATE))
    m[k, 1] = sl + ((target - sl) >> shift)
    m[k, 2] = n + (1 if n < _LAST_COUNT else 0)
    return (f + sl) >> 1


@numba.njit(cache=True, nogil=True, inline="always")
def _enc_bit(low, rng, cache, csize, pos, end, out, m, k, bit):
    bound = (rng >> PROB_BITS) * _p0_adapt(m, k, bit)
    low += bound * bit
    rng = bound + bit * (rng - 2 * bound)
    while rng < TOP:
        rng <<= 8
        low, cache, csize, pos = _shift_low(low, cache, csize, pos, end, out)
    return low, rng, cache, csize, pos


@numba.njit(cache=True, nogil=True, inline="always")
def _enc_bypass(low, rng, cache, csize, pos, end, out, bit):
    rng >>= 1
    if bit:
        low += rng
    while rng < TOP:
        rng <<= 8
        low, cache, csize, pos = _shift_low(low, cache, csize, pos, end, out)
    return low, rng, cache, csize, pos


@numba.njit(cache=True, nogil=True, inline="always")
def _dec_bit(code, rng, pos, end, buf, m, k):
    bound = (rng >> PROB_BITS) * ((m[k, 0] + m[k, 1]) >> 1)
    bit = 1 if code >= bound else 0
    code -= bound * bit
    rng = bound + bit * (rng - 2 * bound)
    _p0_adapt(m, k, bit)
    while rng < TOP:
        rng <<= 8
        code = ((code << 8) | (buf[pos] if pos < end else 0)) & 0xFFFFFFFF
        pos += 1
    return bit, code, rng, pos


@numba.njit(cache=True, nogil=True, inline="always")
def _dec_bypass(code, rng, pos, end, buf):
    rng >>= 1
    bit = 0
    if code >= rng:
        code -= rng
        bit = 1
    while rng < TOP:
        rng <<= 8
        code = ((code << 8) | (buf[pos] if pos < end else 0)) & 0xFFFFFFFF
        pos += 1
    return bit, code, rng, pos


_TABLE_SIZE = 1 << 13  # every larger neighbour sum falls in the last bucket
_BUCKET_OF = np.array([neighbour_bucket(v) for v in range(_TABLE_SIZE)], np.int64)
if neighbour_bucket(_TABLE_SIZE) != N_BUCKETS - 1:  # pragma: no cover - a guard on the constants
    raise ImportError("wavelet kernels: the bucket table is too short for N_BUCKETS")


@numba.njit(cache=True, nogil=True, inline="always")
def _bucket(s):
    return _BUCKET_OF[s] if s < _TABLE_SIZE else N_BUCKETS - 1


@numba.njit(cache=True, nogil=True, inline="always")
def _context(q, k, i0, i1, i2, i3, lo, hi, s0, s1, s2):
    """(magnitude bucket, sign context) of flat element ``k`` at (i0, i1, i2, i3) of the 4-D array whose
    strides (in elements) are s0, s1, s2, 1, from its coded neighbours inside the box [lo, hi)."""
    s = 0
    w = 0
    n = 0
    if i3 > lo[3]:
        v = q[k - 1]
        s += 2 * abs(v)
        w = 1 if v > 0 else (-1 if v < 0 else 0)
    if i2 > lo[2]:
        v = q[k - s2]
        s += 2 * abs(v)
        n = 1 if v > 0 else (-1 if v < 0 else 0)
        if i3 > lo[3]:
            s += abs(q[k - s2 - 1])
        if i3 + 1 < hi[3]:
            s += abs(q[k - s2 + 1])
    if i1 > lo[1]:
        s += abs(q[k - s1])
    if i0 > lo[0]:
        s += abs(q[k - s0])
    return _bucket(s), 3 * (w + 1) + (n + 1)


@numba.njit(cache=True, nogil=True)
def _final_low(low, rng):
    """The value in [low, low + rng) with the most trailing zero bits (the fewest bytes to write)."""
    for k in range(32, -1, -1):
        v = ((low + (1 << k) - 1) >> k) << k
        if v - low < rng:
            return v
    return low


def _new(n):
    m = np.zeros((n, 3), np.int64)
    m[:, 0] = _HALF
    m[:, 1] = _HALF
    return m


_new = numba.njit(cache=True, nogil=True)(_new)


def _models():
    return _new(N_BUCKETS), _new(9), _new(N_BUCKETS * N_EXP), _new(N_BUCKETS * N_EXP)


_models = numba.njit(cache=True, nogil=True)(_models)


@numba.njit(cache=True, nogil=True)
def _encode_box(q, shape, lo, hi, out, start, end):
    """Code the box [lo, hi) of flat int64 ``q`` (4-D ``shape``) into out[start:end]; returns the byte
    count, or -1 when it does not fit."""
    low, rng, cache, csize, pos = 0, 0xFFFFFFFF, 0, 1, start
    zero, sign, expo, mant = _models()
    s2 = shape[3]
    s1 = s2 * shape[2]
    s0 = s1 * shape[1]
    for i0 in range(lo[0], hi[0]):
        for i1 in range(lo[1], hi[1]):
            for i2 in range(lo[2], hi[2]):
                row = i0 * s0 + i1 * s1 + i2 * s2
                for i3 in range(lo[3], hi[3]):
                    k = row + i3
                    v = q[k]
                    b, sc = _context(q, k, i0, i1, i2, i3, lo, hi, s0, s1, s2)
                    low, rng, cache, csize, pos = _enc_bit(low, rng, cache, csize, pos, end, out, zero, b,
                                                           1 if v != 0 else 0)
                    if v == 0:
                        continue
                    low, rng, cache, csize, pos = _enc_bit(low, rng, cache, csize, pos, end, out, sign, sc,
                                                           1 if v < 0 else 0)
                    u = -v if v < 0 else v
                    e = 0
                    while (u >> (e + 1)) != 0:
                        e += 1
                    base = b * N_EXP
                    for j in range(e):
                        low, rng, cache, csize, pos = _enc_bit(low, rng, cache, csize, pos, end, out, expo,
                                                               base + j, 1)
                    if e < MAX_EXP:
                        low, rng, cache, csize, pos = _enc_bit(low, rng, cache, csize, pos, end, out, expo,
                                                               base + e, 0)
                    if e >= 1:
                        low, rng, cache, csize, pos = _enc_bit(low, rng, cache, csize, pos, end, out, mant,
                                                               base + e, (u >> (e - 1)) & 1)
                        for j in range(e - 2, -1, -1):
                            low, rng, cache, csize, pos = _enc_bypass(low, rng, cache, csize, pos, end, out,
                                                                      (u >> j) & 1)
    low = _final_low(low, rng)
    for _ in range(5):
        low, cache, csize, pos = _shift_low(low, cache, csize, pos, end, out)
    if pos > end:
        return -1
    while pos > start and out[pos - 1] == 0:  # the decoder reads zeros past the end
        pos -= 1
    return pos - start


@numba.njit(cache=True, nogil=True)
def _decode_box(buf, start, end, q, shape, lo, hi):
    rng = 0xFFFFFFFF
    code = 0
    for k in range(4):
        code = (code << 8) | (buf[start + k] if start + k < end else 0)
    pos = start + 4
    zero, sign, expo, mant = _models()
    s2 = shape[3]
    s1 = s2 * shape[2]
    s0 = s1 * shape[1]
    for i0 in range(lo[0], hi[0]):
        for i1 in range(lo[1], hi[1]):
            for i2 in range(lo[2], hi[2]):
                row = i0 * s0 + i1 * s1 + i2 * s2
                for i3 in range(lo[3], hi[3]):
                    k = row + i3
                    b, sc = _context(q, k, i0, i1, i2, i3, lo, hi, s0, s1, s2)
                    nonzero, code, rng, pos = _dec_bit(code, rng, pos, end, buf, zero, b)
                    if nonzero == 0:
                        q[k] = 0
                        continue
                    negative, code, rng, pos = _dec_bit(code, rng, pos, end, buf, sign, sc)
                    base = b * N_EXP
                    e = 0
                    while e < MAX_EXP:
                        more, code, rng, pos = _dec_bit(code, rng, pos, end, buf, expo, base + e)
                        if more == 0:
                            break
                        e += 1
                    u = 1
                    if e >= 1:
                        bit, code, rng, pos = _dec_bit(code, rng, pos, end, buf, mant, base + e)
                        u = (u << 1) | bit
                        for _ in range(e - 1):
                            bit, code, rng, pos = _dec_bypass(code, rng, pos, end, buf)
                            u = (u << 1) | bit
                    q[k] = -u if negative else u


def _encode_all(q, shape, lo, hi, out, starts, ends, sizes):
    for k in numba.prange(lo.shape[0]):
        sizes[k] = _encode_box(q, shape, lo[k], hi[k], out, starts[k], ends[k])


def _decode_all(buf, starts, ends, q, shape, lo, hi):
    for k in numba.prange(lo.shape[0]):
        _decode_box(buf, starts[k], ends[k], q, shape, lo[k], hi[k])


_encode_parallel = numba.njit(parallel=True, cache=True)(_encode_all)
_encode_serial = numba.njit(cache=True)(_encode_all)
_decode_parallel = numba.njit(parallel=True, cache=True)(_decode_all)
_decode_serial = numba.njit(cache=True)(_decode_all)


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
        run = _encode_parallel if flat.size >= PARALLEL_MIN and todo.size > 1 else _encode_serial
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
    run = _decode_parallel if flat.size >= PARALLEL_MIN and len(boxes) > 1 else _decode_serial
    run(np.ascontiguousarray(data, dtype=np.uint8), starts, ends, flat, shape4, lo, hi)
    return flat.reshape(shape)


# --- sparse values (the correction layer) --------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _enc_count(low, rng, cache, csize, pos, end, out, exp, mant, ctx, u):
    w = u + 1
    e = 0
    while (w >> (e + 1)) != 0:
        e += 1
    base = ctx * N_EXP
    for j in range(e):
        low, rng, cache, csize, pos = _enc_bit(low, rng, cache, csize, pos, end, out, exp, base + j, 1)
    if e < MAX_EXP:
        low, rng, cache, csize, pos = _enc_bit(low, rng, cache, csize, pos, end, out, exp, base + e, 0)
    if e >= 1:
        low, rng, cache, csize, pos = _enc_bit(low, rng, cache, csize, pos, end, out, mant, base + e,
                                               (w >> (e - 1)) & 1)
        for j in range(e - 2, -1, -1):
            low, rng, cache, csize, pos = _enc_bypass(low, rng, cache, csize, pos, end, out, (w >> j) & 1)
    return low, rng, cache, csize, pos


@numba.njit(cache=True, nogil=True)
def _dec_count(code, rng, pos, end, buf, exp, mant, ctx):
    base = ctx * N_EXP
    e = 0
    while e < MAX_EXP:
        more, code, rng, pos = _dec_bit(code, rng, pos, end, buf, exp, base + e)
        if more == 0:
            break
        e += 1
    w = 1
    if e >= 1:
        bit, code, rng, pos = _dec_bit(code, rng, pos, end, buf, mant, base + e)
        w = (w << 1) | bit
        for _ in range(e - 1):
            bit, code, rng, pos = _dec_bypass(code, rng, pos, end, buf)
            w = (w << 1) | bit
    return w - 1, code, rng, pos


@numba.njit(cache=True, nogil=True)
def _encode_sparse(positions, values, out):
    end = out.size
    low, rng, cache, csize, pos = 0, 0xFFFFFFFF, 0, 1, 0
    gap_exp, gap_mant = _new(N_BUCKETS * N_EXP), _new(N_BUCKETS * N_EXP)
    sign, val_exp, val_mant = _new(1), _new(N_EXP), _new(N_EXP)
    prev = -1
    prev_gap = 0
    for i in range(positions.size):
        gap = positions[i] - prev - 1
        v = values[i]
        low, rng, cache, csize, pos = _enc_count(low, rng, cache, csize, pos, end, out, gap_exp, gap_mant,
                                                 _bucket(prev_gap), gap)
        low, rng, cache, csize, pos = _enc_bit(low, rng, cache, csize, pos, end, out, sign, 0,
                                               1 if v < 0 else 0)
        low, rng, cache, csize, pos = _enc_count(low, rng, cache, csize, pos, end, out, val_exp, val_mant, 0,
                                                 (-v if v < 0 else v) - 1)
        prev = positions[i]
        prev_gap = gap
    low = _final_low(low, rng)
    for _ in range(5):
        low, cache, csize, pos = _shift_low(low, cache, csize, pos, end, out)
    if pos > end:
        return -1
    while pos > 0 and out[pos - 1] == 0:
        pos -= 1
    return pos


@numba.njit(cache=True, nogil=True)
def _decode_sparse(buf, positions, values):
    end = buf.size
    code = 0
    for k in range(4):
        code = (code << 8) | (buf[k] if k < end else 0)
    rng, pos = 0xFFFFFFFF, 4
    gap_exp, gap_mant = _new(N_BUCKETS * N_EXP), _new(N_BUCKETS * N_EXP)
    sign, val_exp, val_mant = _new(1), _new(N_EXP), _new(N_EXP)
    prev = -1
    prev_gap = 0
    for i in range(positions.size):
        gap, code, rng, pos = _dec_count(code, rng, pos, end, buf, gap_exp, gap_mant, _bucket(prev_gap))
        negative, code, rng, pos = _dec_bit(code, rng, pos, end, buf, sign, 0)
        magnitude, code, rng, pos = _dec_count(code, rng, pos, end, buf, val_exp, val_mant, 0)
        prev = prev + gap + 1
        prev_gap = gap
        positions[i] = prev
        values[i] = -(magnitude + 1) if negative else magnitude + 1


@kernel("wavelet", "encode_sparse", "numba")
def encode_sparse(positions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Same contract as the reference :func:`~tensorpress.kernels.reference.wavelet.encode_sparse`."""
    positions = np.ascontiguousarray(positions, np.int64)
    values = np.ascontiguousarray(values, np.int64)
    for per_element in (8, 40, 400):
        out = np.empty(positions.size * per_element + 64, np.uint8)
        n = _encode_sparse(positions, values, out)
        if n >= 0:
            return out[1:max(n, 1)].copy()  # the leading zero byte is dropped
    raise ValueError("wavelet: sparse values too large to code")  # pragma: no cover - |values| < 2**62


@kernel("wavelet", "decode_sparse", "numba")
def decode_sparse(data: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    positions, values = np.zeros(count, np.int64), np.zeros(count, np.int64)
    _decode_sparse(np.ascontiguousarray(data, np.uint8), positions, values)
    return positions, values
