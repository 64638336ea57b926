"""Reference (NumPy) kernels for ``bitmap`` (tile bitmaps + packed values): the oracle of the other backends.

Operands: ``bitmap`` (rows, B) uint8 — the tile words' bytes, bit ``j`` of byte ``b`` (LSB first) marking
column ``8·b + j``; ``values`` (nnz,) in row-major order; ``offsets`` (rows + 1,) int64, where row ``r``'s
values start (the running popcount). ``x`` is padded with zeros to ``8·B`` entries.
"""

from __future__ import annotations

import numpy as np

from ..dispatch import kernel


def _mask(bitmap: np.ndarray) -> np.ndarray:
    return np.unpackbits(bitmap, axis=1, bitorder="little").astype(bool)


@kernel("bitmap", "decode", "reference")
def decode(bitmap: np.ndarray, values: np.ndarray, offsets: np.ndarray, cols: int) -> np.ndarray:
    """Dense (rows, cols) array of ``values``' dtype; unmarked elements are 0 (all bits clear)."""
    mask = _mask(bitmap)
    out = np.zeros(mask.shape, dtype=values.dtype)
    out[mask] = values
    return np.ascontiguousarray(out[:, :cols])


def _dense64(bitmap: np.ndarray, values: np.ndarray) -> np.ndarray:
    mask = _mask(bitmap)
    out = np.zeros(mask.shape)
    out[mask] = values
    return out


@kernel("bitmap", "matvec", "reference")
def matvec(bitmap: np.ndarray, values: np.ndarray, offsets: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``y = W · x``; float32 (rows,), accumulated in float64."""
    return (_dense64(bitmap, values) @ x.astype(np.float64)).astype(np.float32)


@kernel("bitmap", "matmul", "reference")
def matmul(bitmap: np.ndarray, values: np.ndarray, offsets: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``Y = W · X`` for ``X`` (8·B, batch); float32 (rows, batch), accumulated in float64."""
    return (_dense64(bitmap, values) @ x.astype(np.float64)).astype(np.float32)
