"""Reference (NumPy) kernels for ``topk`` (activation sparsity): the oracle of the other backends.

Operands: ``values`` (tokens, k) and ``indices`` (tokens, k), the kept positions along the last axis.
``spmv_dense`` takes the dense weight transposed, ``wt`` (in, out), so that each kept position reads one
contiguous weight row.
"""

from __future__ import annotations

import numpy as np

from ..dispatch import kernel


@kernel("topk", "decode", "reference")
def decode(values: np.ndarray, indices: np.ndarray, n: int) -> np.ndarray:
    """Dense (tokens, n) array of ``values``' dtype; dropped elements are 0 (all bits clear)."""
    out = np.zeros((values.shape[0], n), dtype=values.dtype)
    if values.size:
        np.put_along_axis(out, indices.astype(np.int64), values, axis=1)
    return out


@kernel("topk", "spmv_dense", "reference")
def spmv_dense(values: np.ndarray, indices: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """``y[t] = Σ_j values[t, j] · wt[indices[t, j], :]``: float32 (tokens, out), accumulated in float64."""
    gathered = wt.astype(np.float64)[indices.astype(np.int64)]  # (tokens, k, out)
    return np.einsum("tk,tko->to", values.astype(np.float64), gathered).astype(np.float32)
