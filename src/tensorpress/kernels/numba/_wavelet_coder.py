"""The ``wavelet`` range coder in Numba: bit-exact with
:mod:`tensorpress.kernels.reference._wavelet_coder`, which defines the stream.

The coder state lives in local variables threaded through small helpers (so it stays in registers);
binary decisions update their models without branches (the bits are unpredictable).
"""

from __future__ import annotations

import numba
import numpy as np

from ..reference._wavelet_coder import (
    FAST_RATE,
    MAX_EXP,
    N_BUCKETS,
    N_EXP,
    P_MAX,
    P_MIN,
    PROB_BITS,
    TOP,
    WARMUP,
    neighbour_bucket,
)

_HALF = 1 << (PROB_BITS - 1)
_WARMUP = np.array(WARMUP, np.int64)
_LAST_COUNT = len(WARMUP) - 1


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
def _context(q, k, i3, lo3, hi3, has_n, has_u, has_v, s0, s1, s2):
    """(magnitude bucket, sign context) of flat element ``k`` (at position i3 along the last axis) of the 4-D
    array with element strides s0, s1, s2, 1, from its coded neighbours inside the box: W and E exist when
    lo3 < i3 and i3 + 1 < hi3, N, U, V when ``has_n``, ``has_u``, ``has_v``. Bounds come as scalars so the
    compiler keeps them in registers (they could alias the coefficients otherwise)."""
    s = 0
    w = 0
    n = 0
    if i3 > lo3:
        v = q[k - 1]
        s += 2 * abs(v)
        w = 1 if v > 0 else (-1 if v < 0 else 0)
    if has_n:
        v = q[k - s2]
        s += 2 * abs(v)
        n = 1 if v > 0 else (-1 if v < 0 else 0)
        if i3 > lo3:
            s += abs(q[k - s2 - 1])
        if i3 + 1 < hi3:
            s += abs(q[k - s2 + 1])
    if has_u:
        s += abs(q[k - s1])
    if has_v:
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
    lo0, lo1, lo2, lo3 = lo[0], lo[1], lo[2], lo[3]
    hi0, hi1, hi2, hi3 = hi[0], hi[1], hi[2], hi[3]
    for i0 in range(lo0, hi0):
        for i1 in range(lo1, hi1):
            for i2 in range(lo2, hi2):
                row = i0 * s0 + i1 * s1 + i2 * s2
                for i3 in range(lo3, hi3):
                    k = row + i3
                    v = q[k]
                    b, sc = _context(q, k, i3, lo3, hi3, i2 > lo2, i1 > lo1, i0 > lo0, s0, s1, s2)
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
    lo0, lo1, lo2, lo3 = lo[0], lo[1], lo[2], lo[3]
    hi0, hi1, hi2, hi3 = hi[0], hi[1], hi[2], hi[3]
    for i0 in range(lo0, hi0):
        for i1 in range(lo1, hi1):
            for i2 in range(lo2, hi2):
                row = i0 * s0 + i1 * s1 + i2 * s2
                for i3 in range(lo3, hi3):
                    k = row + i3
                    b, sc = _context(q, k, i3, lo3, hi3, i2 > lo2, i1 > lo1, i0 > lo0, s0, s1, s2)
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


encode_boxes_parallel = numba.njit(parallel=True, cache=True)(_encode_all)
encode_boxes_serial = numba.njit(cache=True)(_encode_all)
decode_boxes_parallel = numba.njit(parallel=True, cache=True)(_decode_all)
decode_boxes_serial = numba.njit(cache=True)(_decode_all)


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
def encode_sparse_stream(positions, values, out):
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
def decode_sparse_stream(buf, positions, values):
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
