"""Numba CPU kernels for ``topk`` (operands: :mod:`tensorpress.kernels.reference.topk`).

``spmv_dense`` splits each token's kept positions among the threads: each streams its share of the weight
rows (whole, contiguous rows of W^T) into a private accumulator scaled by the kept values, and the partial
sums are added at the end. A token with 10% of its activations kept reads 10% of the weight.
"""

from __future__ import annotations

import numba
import numpy as np

from ..dispatch import kernel
from ._bits import balanced, to_f32


@numba.njit(parallel=True, cache=True, nogil=True)
def _decode(vals, idx, out):  # numba infers the types
    for t in numba.prange(vals.shape[0]):
        for j in range(vals.shape[1]):
            out[t, idx[t, j]] = vals[t, j]


@kernel("topk", "decode", "numba")
def decode(values: np.ndarray, indices: np.ndarray, n: int) -> np.ndarray:
    """Same contract as :func:`tensorpress.kernels.reference.topk.decode` (any dtype: bits are moved)."""
    out = np.zeros((values.shape[0], n), dtype=values.dtype)
    if values.size:
        bits = np.dtype(f"u{values.dtype.itemsize}")
        with balanced():
            _decode(np.ascontiguousarray(values).view(bits), np.ascontiguousarray(indices), out.view(bits))
    return out


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _spmv(vals, idx, wt, parts, partial):  # numba infers the types
    tokens, k = vals.shape
    n_out = wt.shape[1]
    for p in numba.prange(parts):
        j0 = p * k // parts
        j1 = (p + 1) * k // parts
        for t in range(tokens):
            acc = partial[p, t]
            for j in range(j0, j1):
                v = to_f32(vals[t, j])
                row = wt[np.int64(idx[t, j])]
                for o in range(n_out):
                    acc[o] += v * to_f32(row[o])


@kernel("topk", "spmv_dense", "numba")
def spmv_dense(values: np.ndarray, indices: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """Same contract as the reference; ``values`` and ``wt`` float32 or float16; float32 (tokens, out)."""
    tokens, k = values.shape
    if not (values.size and wt.shape[1]):
        return np.zeros((tokens, wt.shape[1]), np.float32)
    parts = max(1, min(numba.get_num_threads(), k))
    partial = np.zeros((parts, tokens, wt.shape[1]), np.float32)
    _spmv(_bits_operand(values), np.ascontiguousarray(indices), _bits_operand(wt), parts, partial)  # one task a thread
    return partial.sum(axis=0) if parts > 1 else partial[0]


def _bits_operand(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(np.uint16) if a.dtype == np.float16 else a
