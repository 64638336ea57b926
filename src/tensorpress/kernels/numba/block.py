"""Numba CPU kernels for ``block`` (operands: :mod:`tensorpress.kernels.reference.block`), parallel over
blocks of block-rows. The block shape is a compile-time constant (passed as the lengths of two tuples), so the loops
over a block unroll into short multiply-adds on consecutive entries of ``x``. On x86 hosts with AVX2, 1×4
blocks go two at a time: their 8 values (float16 converted in the register) against the two 4-entry
pieces of ``x`` in one 8-lane multiply-add. ``matmul`` expands one block-row at a time into row buffers
that stay in L1 and takes their dot products with ``X``'s columns.
"""

from __future__ import annotations

import numba
import numpy as np

from ..dispatch import kernel
from ._bits import balanced, blocks14_fma, dense_row_dot, has_avx2, task_rows, tasks, to_f32


@numba.njit(parallel=True, cache=True, nogil=True)
def _decode(vals, columns, out):  # numba infers the types
    rb, kept, bh, bw = vals.shape
    for task in numba.prange(tasks(rb)):
        r0, r1 = task_rows(task, rb)
        for r in range(r0, r1):
            for q in range(kept):
                c = np.int64(columns[r, q]) * bw
                for i in range(bh):
                    for j in range(bw):
                        out[r * bh + i, c + j] = vals[r, q, i, j]


@kernel("block", "decode", "numba")
def decode(values: np.ndarray, columns: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Same contract as :func:`tensorpress.kernels.reference.block.decode` (any dtype: bits are moved)."""
    rb, _, bh, bw = values.shape
    out = np.zeros((rb * bh, -(-cols // bw) * bw), dtype=values.dtype)
    if values.size:
        bits = np.dtype(f"u{values.dtype.itemsize}")
        with balanced():
            _decode(np.ascontiguousarray(values).view(bits), np.ascontiguousarray(columns), out.view(bits))
    return np.ascontiguousarray(out[:rows, :cols])


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _matvec(vals, columns, bh_tuple, bw_tuple, x, y):  # numba infers the types
    bh = len(bh_tuple)
    bw = len(bw_tuple)
    rb, kept = columns.shape
    for task in numba.prange(tasks(rb)):
        r0, r1 = task_rows(task, rb)
        for r in range(r0, r1):
            vr = vals[r]  # (kept · bh · bw,)
            cr = columns[r]
            for i in range(bh):
                acc = np.float32(0.0)
                for q in range(kept):
                    xs = x[np.int64(cr[q]) * bw :]
                    base = (q * bh + i) * bw
                    for j in range(bw):
                        acc += to_f32(vr[base + j]) * xs[j]
                y[r * bh + i] = acc


AVX2 = has_avx2()


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _matvec_14_avx2(vals, columns, x, y):  # numba infers the types
    rb, kept = columns.shape
    for task in numba.prange(tasks(rb)):
        acc = np.empty(32, np.float32)
        r0, r1 = task_rows(task, rb)
        for r in range(r0, r1):
            acc[:] = 0
            vr = vals[r]  # (kept · 4,)
            cr = columns[r]
            q = 0
            while q + 8 <= kept:  # 8 blocks, four accumulators
                for u in range(4):
                    b = q + 2 * u
                    blocks14_fma(acc, 8 * u, vr, 4 * b, x, np.int64(cr[b]) * 4, np.int64(cr[b + 1]) * 4)  # type: ignore[call-arg]
                q += 8
            while q + 2 <= kept:
                blocks14_fma(acc, 0, vr, 4 * q, x, np.int64(cr[q]) * 4, np.int64(cr[q + 1]) * 4)  # type: ignore[call-arg]
                q += 2
            total = acc.sum()
            if q < kept:
                c = np.int64(cr[q]) * 4
                for j in range(4):
                    total += to_f32(vr[4 * q + j]) * x[c + j]
            y[r] = total


@kernel("block", "matvec", "numba")
def matvec(values: np.ndarray, columns: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``y = W · x``: values float16/float32, ``x`` float32 padded to whole blocks; float32 (rb·bh,)."""
    rb, _, bh, bw = values.shape
    y = np.zeros(rb * bh, np.float32)
    if values.size:
        flat = _bits_operand(values).reshape(rb, -1)
        with balanced():
            if AVX2 and bh == 1 and bw == 4:
                _matvec_14_avx2(flat, np.ascontiguousarray(columns), np.ascontiguousarray(x), y)
            else:
                _matvec(flat, np.ascontiguousarray(columns), (0,) * bh, (0,) * bw, np.ascontiguousarray(x), y)
    return y


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _matmul(vals, columns, xt, out):  # numba infers the types
    rb, kept, bh, bw = vals.shape
    for task in numba.prange(tasks(rb)):
        w = np.zeros((bh, xt.shape[1]), np.float32)
        r0, r1 = task_rows(task, rb)
        for r in range(r0, r1):
            for q in range(kept):
                c = np.int64(columns[r, q]) * bw
                for i in range(bh):
                    for j in range(bw):
                        w[i, c + j] = to_f32(vals[r, q, i, j])
            for i in range(bh):
                dense_row_dot(w[i], xt, out[r * bh + i])
            for q in range(kept):
                c = np.int64(columns[r, q]) * bw
                for i in range(bh):
                    for j in range(bw):
                        w[i, c + j] = 0.0


@kernel("block", "matmul", "numba")
def matmul(values: np.ndarray, columns: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``Y = W · X`` for ``X`` float32 (block-columns · bw, batch); float32 (rb·bh, batch)."""
    rb, _, bh, _ = values.shape
    out = np.zeros((rb * bh, x.shape[1]), np.float32)
    if values.size and x.shape[1]:
        with balanced():
            _matmul(_bits_operand(values), np.ascontiguousarray(columns), np.ascontiguousarray(x.T), out)
    return out


def _bits_operand(values: np.ndarray) -> np.ndarray:
    values = np.ascontiguousarray(values)
    return values.view(np.uint16) if values.dtype == np.float16 else values
