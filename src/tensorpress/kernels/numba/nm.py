"""Numba CPU kernels for ``nm`` (layout: :mod:`tensorpress.kernels.reference.nm`), parallel over row blocks.

``matvec`` never builds the dense row. For ``m <= 8`` it avoids gathers: ``x`` is laid out as (m, G) — entry
``[j, g]`` is ``x[g·m + j]`` — so that for every group the candidates of a kept value are unit-stride loads,
and the one at the stored position is picked with compare-and-select. Positions inside a group ascend, so
the k-th kept value of ``n`` lies in ``k … m-n+k``: 2:4 needs two selects per value. ``n`` and ``m`` are
compile-time constants (one specialization per pattern, passed as tuple lengths), so the loops unroll and
vectorize over groups. Larger ``m`` reads ``x`` at the stored column directly. On x86 hosts with AVX2, 2:4
has its own path: per 4 groups, 8 values (float16 converted in the register) meet the 8 entries of ``x``
that two ``vpermps`` pick from the groups' 16 columns, driven by a 256-entry table of metadata bytes.

``matmul`` (a few right-hand sides) expands one row at a time into a row buffer that stays in L1 and takes
its dot products with ``X``'s columns, four at a time: the matrix is never dense in memory.
"""

from __future__ import annotations

import numba
import numpy as np

from ..dispatch import kernel
from ..reference.nm import index_bits
from ._bits import (
    balanced,
    dense_row_dot,
    has_avx2,
    pair_table,
    select24_fma,
    task_rows,
    tasks,
    to_f32,
    unpack_codes,
)

SELECT_MAX_M = 8
AVX2 = has_avx2()
_PAIRS = pair_table()


@numba.njit(cache=True, nogil=True, inline="always")
def _codes(packed, bits, r, k_row, code):  # numba infers the types
    if bits:
        unpack_codes(packed, bits, r * k_row, k_row, code)
    else:
        code[:] = 0


@numba.njit(parallel=True, cache=True, nogil=True)
def _decode(vals, packed, n, m, bits, out):  # numba infers the types
    rows, k_row = vals.shape
    for task in numba.prange(tasks(rows)):
        code = np.empty(k_row, np.uint8)
        r0, r1 = task_rows(task, rows)
        for r in range(r0, r1):
            _codes(packed, bits, r, k_row, code)
            for g in range(k_row // n):
                for k in range(n):
                    out[r, g * m + code[g * n + k]] = vals[r, g * n + k]


@kernel("nm", "decode", "numba")
def decode(values: np.ndarray, packed: np.ndarray, n: int, m: int, cols: int) -> np.ndarray:
    """Same contract as :func:`tensorpress.kernels.reference.nm.decode` (any dtype: bits are moved)."""
    rows = values.shape[0]
    groups = -(-cols // m)
    out = np.zeros((rows, groups * m), dtype=values.dtype)
    if values.size:
        bits_dtype = np.dtype(f"u{values.dtype.itemsize}")
        with balanced():
            _decode(np.ascontiguousarray(values).view(bits_dtype), packed, n, m, index_bits(m),
                    out.view(bits_dtype))
    return out if groups * m == cols else np.ascontiguousarray(out[:, :cols])


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _matvec_select(vals, packed, n_tuple, m_tuple, bits, xt, y):  # numba infers the types
    n = len(n_tuple)  # compile-time constants: the tuples' lengths are part of their types
    m = len(m_tuple)
    rows, k_row = vals.shape
    groups = xt.shape[1]
    for task in numba.prange(tasks(rows)):
        code = np.empty(k_row, np.uint8)
        r0, r1 = task_rows(task, rows)
        for r in range(r0, r1):
            unpack_codes(packed, bits, r * k_row, k_row, code)
            vr = vals[r]
            acc = np.float32(0.0)
            for g in range(groups):
                for k in range(n):
                    i = np.int32(code[g * n + k])
                    s = xt[k, g]
                    for j in range(k + 1, m - n + k + 1):
                        cand = xt[j, g]  # loaded unconditionally, so the select vectorizes
                        s = cand if i == j else s
                    acc += to_f32(vr[g * n + k]) * s
            y[r] = acc


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _matvec_24_avx2(vals, packed, x, table, y):  # numba infers the types
    rows, k_row = vals.shape  # k_row = 2·G, a multiple of 8 (checked by the caller)
    bytes_row = k_row // 4
    for task in numba.prange(tasks(rows)):
        acc = np.empty(32, np.float32)
        r0, r1 = task_rows(task, rows)
        for r in range(r0, r1):
            acc[:] = 0
            pr = packed[r * bytes_row : (r + 1) * bytes_row]
            vr = vals[r]
            for q in range(k_row // 32):  # 4 × (8 values, 16 columns) per step: four accumulators
                for u in range(4):
                    b = 8 * q + 2 * u
                    select24_fma(acc, 8 * u, vr, 8 * (4 * q + u), x, 64 * q + 16 * u, table, pr[b], pr[b + 1])  # type: ignore[call-arg]
            for t in range(k_row // 32 * 4, k_row // 8):
                select24_fma(acc, 0, vr, 8 * t, x, 16 * t, table, pr[2 * t], pr[2 * t + 1])  # type: ignore[call-arg]
            y[r] = acc.sum()


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _matvec_gather(vals, packed, n, m, bits, x, y):  # numba infers the types
    rows, k_row = vals.shape
    for task in numba.prange(tasks(rows)):
        code = np.empty(k_row, np.uint8)
        r0, r1 = task_rows(task, rows)
        for r in range(r0, r1):
            _codes(packed, bits, r, k_row, code)
            vr = vals[r]
            acc = np.float32(0.0)
            for g in range(k_row // n):
                for k in range(n):
                    acc += to_f32(vr[g * n + k]) * x[g * m + np.int64(code[g * n + k])]
            y[r] = acc


@kernel("nm", "matvec", "numba")
def matvec(values: np.ndarray, packed: np.ndarray, n: int, m: int, cols: int, x: np.ndarray) -> np.ndarray:
    """``y = W · x``: values float16/float32 (rows, G·n), ``x`` float32 padded to G·m; float32 (rows,)."""
    rows = values.shape[0]
    y = np.zeros(rows, np.float32)
    if values.size == 0:
        return y
    vals = _bits_operand(values)
    with balanced():
        if AVX2 and n == 2 and m == 4 and values.shape[1] % 8 == 0:
            _matvec_24_avx2(vals, packed, x, _PAIRS, y)
        elif 2 <= m <= SELECT_MAX_M:
            xt = np.ascontiguousarray(x.reshape(-1, m).T)
            _matvec_select(vals, packed, (0,) * n, (0,) * m, index_bits(m), xt, y)
        else:
            _matvec_gather(vals, packed, n, m, index_bits(m), np.ascontiguousarray(x), y)
    return y


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _matmul(vals, packed, n, m, bits, xt, out):  # numba infers the types
    rows, k_row = vals.shape
    for task in numba.prange(tasks(rows)):
        code = np.empty(k_row, np.uint8)
        w = np.zeros(xt.shape[1], np.float32)
        r0, r1 = task_rows(task, rows)
        for r in range(r0, r1):
            _codes(packed, bits, r, k_row, code)
            vr = vals[r]
            for g in range(k_row // n):
                for k in range(n):
                    w[g * m + code[g * n + k]] = to_f32(vr[g * n + k])
            dense_row_dot(w, xt, out[r])
            for g in range(k_row // n):
                for k in range(n):
                    w[g * m + code[g * n + k]] = 0.0


@kernel("nm", "matmul", "numba")
def matmul(values: np.ndarray, packed: np.ndarray, n: int, m: int, cols: int, x: np.ndarray) -> np.ndarray:
    """``Y = W · X``: ``X`` float32 (G·m, batch), padded; float32 (rows, batch)."""
    out = np.zeros((values.shape[0], x.shape[1]), np.float32)
    if values.size and x.shape[1]:
        with balanced():
            _matmul(_bits_operand(values), packed, n, m, index_bits(m), np.ascontiguousarray(x.T), out)
    return out


def _bits_operand(values: np.ndarray) -> np.ndarray:
    """float16 travels as its uint16 bits (numba has no float16); float32 as is."""
    values = np.ascontiguousarray(values)
    return values.view(np.uint16) if values.dtype == np.float16 else values
