"""Reference (NumPy) products with a ``quant`` weight: the oracle of the fast ``matvec``/``matmul`` kernels.

Operands, as :meth:`tensorpress.formats.quant.GroupQuant.prepare` extracts them from a 2-D weight ``W``
(rows × n, groups of ``group`` along ``n``; the last group shorter when ``group`` does not divide ``n``):

- ``packed``: uint8, the codes as the LSB-first bit stream of :mod:`tensorpress.kernels.reference.quant`;
- ``scales``, ``offsets``: float32 (rows, ceil(n / group)); ``W[r, j] = code * scale + offset`` of ``j``'s group
  (asymmetric: offset = minimum; symmetric: offset = -2**(bits-1) * scale);
- ``bits``, ``n``, ``group``: ints.

The oracle dequantizes exactly as ``decode`` does and sums in float64; results are float32.
"""

from __future__ import annotations

import numpy as np

from ..dispatch import kernel
from .quant import dequantize


def _product(packed: np.ndarray, scales: np.ndarray, offsets: np.ndarray, bits: int, n: int, group: int,
             x: np.ndarray) -> np.ndarray:
    w = dequantize(packed, np.asarray(scales, np.float32), np.asarray(offsets, np.float32), bits, n, group)
    return (w.astype(np.float64) @ np.asarray(x, np.float64)).astype(np.float32)


@kernel("quant", "matvec", "reference")
def matvec(packed: np.ndarray, scales: np.ndarray, offsets: np.ndarray, bits: int, n: int, group: int,
           x: np.ndarray) -> np.ndarray:
    """``y = W · x``: ``x`` float32 (n,) → float32 (rows,)."""
    return _product(packed, scales, offsets, bits, n, group, x)


@kernel("quant", "matmul", "reference")
def matmul(packed: np.ndarray, scales: np.ndarray, offsets: np.ndarray, bits: int, n: int, group: int,
           x: np.ndarray) -> np.ndarray:
    """``Y = W · X``: ``X`` float32 (n, batch) → float32 (rows, batch)."""
    return _product(packed, scales, offsets, bits, n, group, x)
