"""Numba CPU kernels for ``bitmap`` (operands: :mod:`tensorpress.kernels.reference.bitmap`), parallel over rows.

``matvec`` on x86 hosts with AVX2: each bitmap byte covers 8 columns; the next 8 packed values are loaded
(float16 converted in the register), moved onto the lanes of their columns with one ``vpermps`` driven by a
256-entry table, multiplied with the 8 entries of ``x`` and accumulated — a few instructions per 8
columns, no gathers, no dense row. Elsewhere, and for ``matmul``, the columns of a row's values are listed
first without branches (each byte appends a table row of set-bit positions and advances by its popcount),
then the products run over those columns. ``matmul`` expands one row at a time into a row buffer that stays
in L1 and takes its dot products with ``X``'s columns, four at a time.
"""

from __future__ import annotations

import numba
import numpy as np

from ..dispatch import kernel
from ._bits import (
    balanced,
    dense_row_dot,
    expand8_fma,
    expand64_fma,
    expansion_table,
    has_avx2,
    shuffle_table,
    task_rows,
    tasks,
    to_f32,
)

_POSITIONS = np.array([[j for j in range(8) if b >> j & 1] + [0] * (8 - bin(b).count("1")) for b in range(256)],
                      dtype=np.int32)
_COUNTS = np.array([bin(b).count("1") for b in range(256)], dtype=np.int64)
_EXPAND = expansion_table()
_EXPAND8 = _EXPAND.astype(np.int8)  # the same rows, one 8-byte load each (expand64_fma, float32 values)
_SHUFFLE = shuffle_table()  # expand64_fma's table for float16 values
AVX2 = has_avx2()


@numba.njit(cache=True, nogil=True, inline="always")
def _columns(bitmap_row, positions, counts, col):  # numba infers the types
    """Columns of the marked elements of one row into ``col`` (needs 8 spare entries); returns the count."""
    k = 0
    for b in range(bitmap_row.shape[0]):
        byte = bitmap_row[b]
        base = np.int32(8 * b)
        for q in range(8):
            col[k + q] = base + positions[byte, q]
        k += counts[byte]
    return k


@numba.njit(parallel=True, cache=True, nogil=True)
def _decode(bitmap, vals, offsets, positions, counts, out):  # numba infers the types
    rows, nbytes = bitmap.shape
    for task in numba.prange(tasks(rows)):
        col = np.empty(8 * nbytes + 8, np.int32)
        r0, r1 = task_rows(task, rows)
        for r in range(r0, r1):
            k0 = offsets[r]
            for i in range(_columns(bitmap[r], positions, counts, col)):
                out[r, col[i]] = vals[k0 + i]


@kernel("bitmap", "decode", "numba")
def decode(bitmap: np.ndarray, values: np.ndarray, offsets: np.ndarray, cols: int) -> np.ndarray:
    """Same contract as :func:`tensorpress.kernels.reference.bitmap.decode` (any dtype: bits are moved)."""
    rows, nbytes = bitmap.shape
    out = np.zeros((rows, nbytes * 8), dtype=values.dtype)
    if values.size:
        bits_dtype = np.dtype(f"u{values.dtype.itemsize}")
        with balanced():
            _decode(np.ascontiguousarray(bitmap), np.ascontiguousarray(values).view(bits_dtype), offsets,
                    _POSITIONS, _COUNTS, out.view(bits_dtype))
    return out if nbytes * 8 == cols else np.ascontiguousarray(out[:, :cols])


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _matvec(bitmap, vals, offsets, x, positions, counts, y):  # numba infers the types
    rows, nbytes = bitmap.shape
    for task in numba.prange(tasks(rows)):
        col = np.empty(8 * nbytes + 8, np.int32)
        r0, r1 = task_rows(task, rows)
        for r in range(r0, r1):
            k0 = offsets[r]
            acc = np.float32(0.0)
            for i in range(_columns(bitmap[r], positions, counts, col)):
                acc += to_f32(vals[k0 + i]) * x[col[i]]
            y[r] = acc


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _matvec_avx2(bitmap, vals, offsets, x, expand, expand8, positions, counts, y):  # numba infers the types
    rows, nbytes = bitmap.shape
    total = vals.shape[0]
    flat = bitmap.reshape(rows * nbytes)
    for task in numba.prange(tasks(rows)):
        acc = np.empty(32, np.float32)
        col = np.empty(8 * nbytes + 8, np.int32)
        r0, r1 = task_rows(task, rows)
        for r in range(r0, r1):
            br = bitmap[r]
            if offsets[r + 1] + 8 <= total:  # the 8-wide loads stay inside the values
                acc[:] = 0
                k = offsets[r]
                b = 0
                while b + 8 <= nbytes:  # a word of 64 columns per step
                    k = expand64_fma(acc, vals, k, x, 8 * b, expand8, flat, r * nbytes + b)  # type: ignore[call-arg]
                    b += 8
                while b < nbytes:
                    byte = br[b]
                    expand8_fma(acc, 0, vals, k, x, 8 * b, expand, byte)  # type: ignore[call-arg]
                    k += counts[byte]
                    b += 1
                y[r] = acc.sum()
            else:
                k0 = offsets[r]
                acc1 = np.float32(0.0)
                for i in range(_columns(br, positions, counts, col)):
                    acc1 += to_f32(vals[k0 + i]) * x[col[i]]
                y[r] = acc1


@kernel("bitmap", "matvec", "numba")
def matvec(bitmap: np.ndarray, values: np.ndarray, offsets: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``y = W · x``: values float16/float32 (nnz,), ``x`` float32 padded to 8·B; float32 (rows,)."""
    y = np.zeros(bitmap.shape[0], np.float32)
    if values.size:
        args = (np.ascontiguousarray(bitmap), _bits_operand(values), offsets, np.ascontiguousarray(x))
        with balanced():
            if AVX2:
                wide = _SHUFFLE if args[1].dtype == np.uint16 else _EXPAND8
                _matvec_avx2(*args, _EXPAND, wide, _POSITIONS, _COUNTS, y)
            else:
                _matvec(*args, _POSITIONS, _COUNTS, y)
    return y


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _matmul(bitmap, vals, offsets, xt, positions, counts, out):  # numba infers the types
    rows, nbytes = bitmap.shape
    for task in numba.prange(tasks(rows)):
        col = np.empty(8 * nbytes + 8, np.int32)
        w = np.zeros(xt.shape[1], np.float32)
        r0, r1 = task_rows(task, rows)
        for r in range(r0, r1):
            k0 = offsets[r]
            nnz = _columns(bitmap[r], positions, counts, col)
            for i in range(nnz):
                w[col[i]] = to_f32(vals[k0 + i])
            dense_row_dot(w, xt, out[r])
            for i in range(nnz):
                w[col[i]] = 0.0


@kernel("bitmap", "matmul", "numba")
def matmul(bitmap: np.ndarray, values: np.ndarray, offsets: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``Y = W · X`` for ``X`` float32 (8·B, batch); float32 (rows, batch)."""
    out = np.zeros((bitmap.shape[0], x.shape[1]), np.float32)
    if values.size and x.shape[1]:
        with balanced():
            _matmul(np.ascontiguousarray(bitmap), _bits_operand(values), offsets, np.ascontiguousarray(x.T),
                    _POSITIONS, _COUNTS, out)
    return out


def _bits_operand(values: np.ndarray) -> np.ndarray:
    values = np.ascontiguousarray(values)
    return values.view(np.uint16) if values.dtype == np.float16 else values
