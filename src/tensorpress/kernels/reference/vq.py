"""Reference (NumPy) products with a ``vq`` weight: the oracle of the fast kernels.

Operands, as :func:`tensorpress.kernels.composite.product` extracts them from a 2-D ``vq`` weight ``W``
(rows × cols) — the same for every backend:

- ``book``: float32 (groups, C, 2**bits, dim), the codebooks (widened from their stored dtype);
- ``packed``: uint8, the codes as stored — LSB-first at exactly ``bits`` bits each, ordered (row,
  sub-vector, codebook) — followed by at least 3 zero bytes (kernels read 3 bytes per code);
- ``scales``: float32 (rows,), the row scales (ones when the weight has none);
- ``bits``: the code width (1…16); ``per``: rows per codebook set (row ``r`` uses set ``r // per``);
  ``cols``: the row length (a shorter last sub-vector when ``dim`` does not divide it).

The oracle dequantizes ``W`` in float64 and multiplies; results float32.
"""

from __future__ import annotations

import numpy as np

from ...formats._kmeans import unpack_codes
from ..dispatch import kernel


def codes_of(packed: np.ndarray, bits: int, rows: int, nvec: int, c: int) -> np.ndarray:
    """The codes (rows, sub-vectors, C) int64 from the packed stream."""
    return unpack_codes(packed, bits, rows * nvec * c).reshape(rows, nvec, c)


def dequantize(book: np.ndarray, packed: np.ndarray, scales: np.ndarray, bits: int, per: int,
               cols: int) -> np.ndarray:
    """``W`` as float64 (rows, cols)."""
    _, c, _, dim = book.shape
    rows = scales.shape[0]
    nvec = -(-cols // dim)
    codes = codes_of(packed, bits, rows, nvec, c)
    g = (np.arange(rows) // per)[:, None]
    w = np.zeros((rows, nvec, dim))
    for i in range(c):
        w += book.astype(np.float64)[g, i, codes[:, :, i]]
    return w.reshape(rows, nvec * dim)[:, :cols] * scales.astype(np.float64)[:, None]


def uses_table(per: int, codewords: int, dim: int) -> bool:
    """Whether the fast kernels tabulate ``codeword · x-slice`` for codebook sets of ``per`` rows (a table
    costs ``codewords · dim`` multiply-adds per sub-vector position and codebook, decoding directly ``per ·
    dim``, the table's gathers ``per``) rather than decode each row's codewords directly."""
    return per * (dim - 1) >= codewords * dim


def _product(book: np.ndarray, packed: np.ndarray, scales: np.ndarray, bits: int, per: int, cols: int,
             x: np.ndarray) -> np.ndarray:
    return (dequantize(book, packed, scales, bits, per, cols) @ np.asarray(x, np.float64)).astype(np.float32)


@kernel("vq", "matvec", "reference")
def matvec(book: np.ndarray, packed: np.ndarray, scales: np.ndarray, bits: int, per: int, cols: int,
           x: np.ndarray) -> np.ndarray:
    """``y = W·x``: ``x`` float32 (cols,) → float32 (rows,)."""
    return _product(book, packed, scales, bits, per, cols, x)


@kernel("vq", "matmul", "reference")
def matmul(book: np.ndarray, packed: np.ndarray, scales: np.ndarray, bits: int, per: int, cols: int,
           x: np.ndarray) -> np.ndarray:
    """``Y = W·X``: ``X`` float32 (cols, batch) → float32 (rows, batch)."""
    return _product(book, packed, scales, bits, per, cols, x)
