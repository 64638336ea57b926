"""Reference (NumPy) kernels for ``nm`` (N:M structured sparsity): the oracle of the other backends.

Layout of one ``nm`` tensor seen as (rows, cols) with the sparse axis last, ``G = ceil(cols / m)`` groups of
``m`` columns per row (the last group padded with zeros when ``m`` does not divide ``cols``):

- ``values`` (rows, G·n): the kept values, group after group, ascending column order inside a group;
- ``indices``: the position (0 … m-1) of each kept value inside its group, ``ceil(log2 m)`` bits each, as
  one LSB-first bit stream in the same order (the bit packing of ``quant``); for 2:4 that is 4 bits per
  group, two 2-bit indices, first kept value in the low bits — the metadata layout of sparse tensor cores.

A short last group holding fewer than ``n`` real columns keeps padding slots: value 0 at a position past
``cols``. Kernels read ``x`` padded with zeros to ``G·m`` entries, so those slots add nothing.
"""

from __future__ import annotations

import math

import numpy as np

from ..dispatch import kernel
from .quant import pack_bits, unpack_bits


def index_bits(m: int) -> int:
    """Bits per stored index: ``ceil(log2 m)`` (0 for m = 1)."""
    return max(0, math.ceil(math.log2(m))) if m > 1 else 0


def pack_indices(idx: np.ndarray, m: int) -> np.ndarray:
    """Positions (< m) → the packed uint8 stream."""
    bits = index_bits(m)
    if bits == 0 or idx.size == 0:
        return np.zeros(0, np.uint8)
    return pack_bits(idx.astype(np.uint8), bits)


def unpack_indices(packed: np.ndarray, m: int, count: int) -> np.ndarray:
    """The packed stream → ``count`` positions as uint8."""
    bits = index_bits(m)
    if bits == 0 or count == 0:
        return np.zeros(count, np.uint8)
    return unpack_bits(packed, bits, count)


def _columns(packed: np.ndarray, rows: int, groups: int, n: int, m: int) -> np.ndarray:
    """Absolute (padded) column of every kept value, int64 (rows, groups·n)."""
    pos = unpack_indices(packed, m, rows * groups * n).reshape(rows, groups, n).astype(np.int64)
    return (pos + (np.arange(groups, dtype=np.int64) * m)[None, :, None]).reshape(rows, groups * n)


@kernel("nm", "decode", "reference")
def decode(values: np.ndarray, packed: np.ndarray, n: int, m: int, cols: int) -> np.ndarray:
    """Dense (rows, cols) array of ``values``' dtype; pruned elements are 0 (all bits clear)."""
    rows = values.shape[0]
    groups = -(-cols // m)
    out = np.zeros((rows, groups * m), dtype=values.dtype)
    if values.size:
        np.put_along_axis(out, _columns(packed, rows, groups, n, m), values, axis=1)
    return np.ascontiguousarray(out[:, :cols])


def _dense64(values: np.ndarray, packed: np.ndarray, n: int, m: int, cols: int) -> np.ndarray:
    return decode(values.astype(np.float64), packed, n, m, cols)


@kernel("nm", "matvec", "reference")
def matvec(values: np.ndarray, packed: np.ndarray, n: int, m: int, cols: int, x: np.ndarray) -> np.ndarray:
    """``y = W · x`` for ``x`` float32 padded with zeros to G·m entries; float32 (rows,), in float64."""
    return (_dense64(values, packed, n, m, cols) @ x[:cols].astype(np.float64)).astype(np.float32)


@kernel("nm", "matmul", "reference")
def matmul(values: np.ndarray, packed: np.ndarray, n: int, m: int, cols: int, x: np.ndarray) -> np.ndarray:
    """``Y = W · X`` for ``X`` float32 (G·m, batch), zero-padded; float32 (rows, batch), in float64."""
    return (_dense64(values, packed, n, m, cols) @ x[:cols].astype(np.float64)).astype(np.float32)
