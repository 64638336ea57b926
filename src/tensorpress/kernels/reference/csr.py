"""Reference (NumPy) products with a ``csr`` matrix (the sparse part of ``outliers`` and ``gear``).

Operands, as :meth:`CSRSparse.csr_parts` gives them: ``indptr`` int64 (rows + 1,), ``indices`` (nnz,) unsigned,
``values`` (nnz,) float16 or float32. Sums in float64; results float32.
"""

from __future__ import annotations

import numpy as np

from ..dispatch import kernel


def _product(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    rows = len(indptr) - 1
    xx = np.asarray(x, np.float64)
    out = np.zeros((rows, *xx.shape[1:]))
    row_of = np.repeat(np.arange(rows), np.diff(indptr))
    terms = np.asarray(values, np.float64).reshape(-1, *([1] * (xx.ndim - 1))) * xx[indices.astype(np.int64)]
    np.add.at(out, row_of, terms)
    return out.astype(np.float32)


@kernel("csr", "matvec", "reference")
def matvec(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``y = A·x``: ``x`` float32 (cols,) → float32 (rows,)."""
    return _product(indptr, indices, values, x)


@kernel("csr", "matmul", "reference")
def matmul(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``Y = A·X``: ``X`` float32 (cols, batch) → float32 (rows, batch)."""
    return _product(indptr, indices, values, x)
