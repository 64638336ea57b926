"""Numba CPU products with a ``lowrank`` weight (operands: :mod:`tensorpress.kernels.reference.lowrank`).

Two passes, each parallel over the rows of its factor: ``t = V·x`` (r values per right-hand side), then
``y = U·t``. float16 factors are read as their bits and widened in registers; a factor row meets up to four
right-hand sides per pass (:func:`~tensorpress.kernels.numba._bits.dense_row_dot`).
"""

from __future__ import annotations

import numba
import numpy as np

from ..dispatch import kernel
from ._bits import balanced, dense_row_dot, to_f32


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _rows_dot(a, xt, out):  # numba infers the types
    """``out[i, b] = a[i] · xt[b]`` for a (m, k) float32/float16-bits matrix and xt (batch, k) float32."""
    m, k = a.shape
    for i in numba.prange(m):
        row = np.empty(k, np.float32)
        for j in range(k):
            row[j] = to_f32(a[i, j])
        dense_row_dot(row, xt, out[i])


def _operand(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    if a.dtype == np.float16:
        return a.view(np.uint16)
    return a if a.dtype == np.float32 else a.astype(np.float32)


def _product(u: np.ndarray, v: np.ndarray, x: np.ndarray) -> np.ndarray:
    xx = np.asarray(x, np.float32)
    xt = np.ascontiguousarray(xx.reshape(xx.shape[0], -1).T)  # (batch, cols)
    batch = xt.shape[0]
    rows, r = u.shape
    t = np.zeros((r, batch), np.float32)
    y = np.zeros((rows, batch), np.float32)
    if r and batch:
        with balanced():
            _rows_dot(_operand(v), xt, t)
            _rows_dot(_operand(u), np.ascontiguousarray(t.T), y)
    return y.reshape(rows) if xx.ndim == 1 else y


@kernel("lowrank", "matvec", "numba")
def matvec(u: np.ndarray, v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Same contract as :func:`tensorpress.kernels.reference.lowrank.matvec`."""
    return _product(u, v, x)


@kernel("lowrank", "matmul", "numba")
def matmul(u: np.ndarray, v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Same contract as :func:`tensorpress.kernels.reference.lowrank.matmul`."""
    return _product(u, v, x)
