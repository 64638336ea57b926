"""Reference (NumPy) kernels for ``block`` (constant-block sparsity): the oracle of the other backends.

Operands: ``values`` (block-rows, kept, bh, bw) — each block-row's kept blocks in ascending column order —
and ``columns`` (block-rows, kept), the block column of each. The matrix is padded to whole blocks; ``x``
is padded with zeros to ``block-columns · bw`` entries and results have ``block-rows · bh`` rows.
"""

from __future__ import annotations

import numpy as np

from ..dispatch import kernel


def _dense(values: np.ndarray, columns: np.ndarray, block_cols: int, dtype: np.dtype) -> np.ndarray:
    rb, _, bh, bw = values.shape
    out = np.zeros((rb, block_cols, bh, bw), dtype=dtype)
    if values.size:
        np.put_along_axis(out, columns.astype(np.int64)[:, :, None, None], values.astype(dtype), axis=1)
    return out.transpose(0, 2, 1, 3).reshape(rb * bh, block_cols * bw)


@kernel("block", "decode", "reference")
def decode(values: np.ndarray, columns: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Dense (rows, cols) array of ``values``' dtype; pruned blocks are 0 (all bits clear)."""
    bw = values.shape[3]
    return np.ascontiguousarray(_dense(values, columns, -(-cols // bw), values.dtype)[:rows, :cols])


@kernel("block", "matvec", "reference")
def matvec(values: np.ndarray, columns: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``y = W · x``; float32 (block-rows · bh,), accumulated in float64."""
    dense = _dense(values, columns, x.shape[0] // values.shape[3], np.dtype(np.float64))
    return (dense @ x.astype(np.float64)).astype(np.float32)


@kernel("block", "matmul", "reference")
def matmul(values: np.ndarray, columns: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``Y = W · X`` for ``X`` (block-columns · bw, batch); float32 (block-rows · bh, batch), in float64."""
    dense = _dense(values, columns, x.shape[0] // values.shape[3], np.dtype(np.float64))
    return (dense @ x.astype(np.float64)).astype(np.float32)
