"""Numba CPU products with a ``vq`` weight, straight from the packed codes and the codebooks (operands:
:mod:`tensorpress.kernels.reference.vq`). ``W`` is never dense in memory.

The lookup trick: for codebook set ``g``, sub-vector position ``j``, codebook ``c`` and codeword ``k``,
``table[g, j, c, k] = book[g, c, k] · x[j·dim : (j+1)·dim]`` is tabulated once per call (the last slice
shorter when ``dim`` does not divide the row), and row ``r`` of the product is the gather-sum
``scale[r] · Σ_j Σ_c table[g(r), j, c, code[r, j, c]]`` — C look-ups per ``dim`` weights instead of ``dim``
multiply-adds. Both passes are parallel (over (set, position), then over blocks of rows).

A table costs ``2**bits · cols · C`` multiply-adds per codebook set, against ``rows · cols · C`` to decode the
set's codewords directly: sets of few rows (``per · (dim − 1) < 2**bits · dim``) take the direct path, each
row's codewords dotted with the matching slice of ``x`` as the codes are read. ``X`` with a few columns
(``matmul``) tabulates a value per column: one gather serves the whole batch.
"""

from __future__ import annotations

import numba
import numpy as np

from ..dispatch import kernel
from ..reference.vq import uses_table
from ._bits import balanced, task_rows, tasks


@numba.njit(cache=True, nogil=True, inline="always")
def _code(packed, index, bits):  # numba infers the types
    """Code ``index`` of the LSB-first stream (3 bytes read: the stream is padded)."""
    if bits == 8:
        return np.int64(packed[index])
    pos = index * bits
    byte = pos >> 3
    word = np.int64(packed[byte]) | (np.int64(packed[byte + 1]) << 8) | (np.int64(packed[byte + 2]) << 16)
    return (word >> (pos & 7)) & ((1 << bits) - 1)


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _tabulate(book, x2, nvec, table):  # numba infers the types
    """``table[g, j, c, k, b] = book[g, c, k, :n] · x2[j·dim : j·dim + n, b]`` (n: the slice's length)."""
    groups, ncb, k, dim = book.shape
    cols, batch = x2.shape
    for task in numba.prange(groups * nvec):
        g = task // nvec
        j = task - g * nvec
        lo = j * dim
        n = min(dim, cols - lo)
        for c in range(ncb):
            for w in range(k):
                for b in range(batch):
                    s = np.float32(0.0)
                    for t in range(n):
                        s += book[g, c, w, t] * x2[lo + t, b]
                    table[g, j, c, w, b] = s


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _gather1(table, packed, scales, bits, per, out):  # numba infers the types
    """Batch 1: ``out[r] = scale[r] · Σ_j Σ_c table[g, j, c, code, 0]``, four independent sums per row."""
    rows = out.shape[0]
    nvec, ncb = table.shape[1], table.shape[2]
    for task in numba.prange(tasks(rows)):
        r0, r1 = task_rows(task, rows)
        for r in range(r0, r1):
            g = r // per
            base = r * nvec * ncb
            s0 = s1 = s2 = s3 = np.float32(0.0)
            j = 0
            while j + 4 <= nvec:
                for c in range(ncb):
                    i = base + j * ncb + c
                    s0 += table[g, j, c, _code(packed, i, bits), 0]
                    s1 += table[g, j + 1, c, _code(packed, i + ncb, bits), 0]
                    s2 += table[g, j + 2, c, _code(packed, i + 2 * ncb, bits), 0]
                    s3 += table[g, j + 3, c, _code(packed, i + 3 * ncb, bits), 0]
                j += 4
            while j < nvec:
                for c in range(ncb):
                    s0 += table[g, j, c, _code(packed, base + j * ncb + c, bits), 0]
                j += 1
            out[r, 0] = ((s0 + s1) + (s2 + s3)) * scales[r]


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _gather(table, packed, scales, bits, per, out):  # numba infers the types
    """A few right-hand sides: each look-up adds ``table[g, j, c, code, :]`` (batch values) to the row's sums."""
    rows, batch = out.shape
    nvec, ncb = table.shape[1], table.shape[2]
    for task in numba.prange(tasks(rows)):
        r0, r1 = task_rows(task, rows)
        acc = np.empty(batch, np.float32)
        for r in range(r0, r1):
            g = r // per
            base = r * nvec * ncb
            acc[:] = 0.0
            for j in range(nvec):
                for c in range(ncb):
                    w = _code(packed, base + j * ncb + c, bits)
                    for b in range(batch):
                        acc[b] += table[g, j, c, w, b]
            for b in range(batch):
                out[r, b] = acc[b] * scales[r]


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _direct(book, x2, packed, scales, bits, per, out):  # numba infers the types
    """Without a table: each row's codewords (summed over the codebooks) dotted with the slices of ``x2``."""
    rows, batch = out.shape
    _, ncb, _, dim = book.shape
    cols = x2.shape[0]
    nvec = (cols + dim - 1) // dim
    for task in numba.prange(tasks(rows)):
        r0, r1 = task_rows(task, rows)
        acc = np.empty(batch, np.float32)
        word = np.empty(dim, np.float32)
        for r in range(r0, r1):
            g = r // per
            base = r * nvec * ncb
            acc[:] = 0.0
            for j in range(nvec):
                word[:] = 0.0
                for c in range(ncb):
                    w = _code(packed, base + j * ncb + c, bits)
                    for t in range(dim):
                        word[t] += book[g, c, w, t]
                lo = j * dim
                for t in range(min(dim, cols - lo)):
                    for b in range(batch):
                        acc[b] += word[t] * x2[lo + t, b]
            for b in range(batch):
                out[r, b] = acc[b] * scales[r]


def _product(book: np.ndarray, packed: np.ndarray, scales: np.ndarray, bits: int, per: int, cols: int,
             x: np.ndarray) -> np.ndarray:
    xx = np.asarray(x, np.float32)
    x2 = np.ascontiguousarray(xx.reshape(xx.shape[0], -1))
    groups, ncb, k, dim = book.shape
    rows, batch = scales.shape[0], x2.shape[1]
    nvec = -(-cols // dim)
    out = np.zeros((rows, batch), np.float32)
    if rows and cols and batch:
        with balanced():
            if uses_table(per, k, dim):
                table = np.empty((groups, nvec, ncb, k, batch), np.float32)
                _tabulate(book, x2, nvec, table)
                (_gather1 if batch == 1 else _gather)(table, packed, scales, bits, per, out)
            else:
                _direct(book, x2, packed, scales, bits, per, out)
    return out.reshape(rows) if xx.ndim == 1 else out


@kernel("vq", "matvec", "numba")
def matvec(book: np.ndarray, packed: np.ndarray, scales: np.ndarray, bits: int, per: int, cols: int,
           x: np.ndarray) -> np.ndarray:
    """Same contract as :func:`tensorpress.kernels.reference.vq.matvec`."""
    return _product(book, packed, scales, bits, per, cols, x)


@kernel("vq", "matmul", "numba")
def matmul(book: np.ndarray, packed: np.ndarray, scales: np.ndarray, bits: int, per: int, cols: int,
           x: np.ndarray) -> np.ndarray:
    """Same contract as :func:`tensorpress.kernels.reference.vq.matmul`."""
    return _product(book, packed, scales, bits, per, cols, x)
