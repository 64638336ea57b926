"""Reference (NumPy) products with a ``lowrank`` weight ``W = U·V``: the oracle of the fast kernels.

Operands: ``u`` (rows, r) and ``v`` (r, cols), float16 or float32 as stored (:meth:`LowRank.factors`). The
product is ``U·(V·x)``: r·(rows + cols) multiply-adds instead of rows·cols, and ``W`` is never formed.
Sums in float64; results float32.
"""

from __future__ import annotations

import numpy as np

from ..dispatch import kernel


def _product(u: np.ndarray, v: np.ndarray, x: np.ndarray) -> np.ndarray:
    t = np.asarray(v, np.float64) @ np.asarray(x, np.float64)
    return (np.asarray(u, np.float64) @ t).astype(np.float32)


@kernel("lowrank", "matvec", "reference")
def matvec(u: np.ndarray, v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``y = U·(V·x)``: ``x`` float32 (cols,) → float32 (rows,)."""
    return _product(u, v, x)


@kernel("lowrank", "matmul", "reference")
def matmul(u: np.ndarray, v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``Y = U·(V·X)``: ``X`` float32 (cols, batch) → float32 (rows, batch)."""
    return _product(u, v, x)
