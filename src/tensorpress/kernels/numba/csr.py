"""Numba CPU products with a ``csr`` matrix (operands: :mod:`tensorpress.kernels.reference.csr`), parallel
over rows: each row's stored values meet the entries of ``x`` (or rows of ``X``) at their columns."""

from __future__ import annotations

import numba
import numpy as np

from ..dispatch import kernel
from ._bits import balanced, to_f32


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _csr_rows(indptr, indices, values, x2, out):  # numba infers the types
    rows = out.shape[0]
    batch = x2.shape[1]
    for r in numba.prange(rows):
        for k in range(indptr[r], indptr[r + 1]):
            v = to_f32(values[k])
            c = np.int64(indices[k])
            for b in range(batch):
                out[r, b] += v * x2[c, b]


def _product(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    xx = np.asarray(x, np.float32)
    x2 = np.ascontiguousarray(xx.reshape(xx.shape[0], -1))
    rows = len(indptr) - 1
    out = np.zeros((rows, x2.shape[1]), np.float32)
    vals = np.ascontiguousarray(values)
    vals = vals.view(np.uint16) if vals.dtype == np.float16 else vals.astype(np.float32, copy=False)
    if len(vals) and x2.shape[1]:
        with balanced():
            _csr_rows(np.ascontiguousarray(indptr, np.int64), np.ascontiguousarray(indices), vals, x2, out)
    return out.reshape(rows) if xx.ndim == 1 else out


@kernel("csr", "matvec", "numba")
def matvec(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Same contract as :func:`tensorpress.kernels.reference.csr.matvec`."""
    return _product(indptr, indices, values, x)


@kernel("csr", "matmul", "numba")
def matmul(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Same contract as :func:`tensorpress.kernels.reference.csr.matmul`."""
    return _product(indptr, indices, values, x)
