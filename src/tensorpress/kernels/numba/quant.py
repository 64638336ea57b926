"""Numba CPU kernels for ``quant``: bit-stream unpacking fused with dequantization, parallel over rows.

The layout is the one documented in :mod:`tensorpress.kernels.reference.quant`.
"""

from __future__ import annotations

import numba
import numpy as np

from ..dispatch import kernel


@numba.njit(parallel=True, cache=True, nogil=True)
def _dequant(packed, scales, offsets, bits, n, group, out):  # numba infers the types
    rows = out.shape[0]
    mask = (1 << bits) - 1
    for r in numba.prange(rows):
        pos = r * n * bits
        j = 0
        g = 0
        while j < n:
            s = scales[r, g]
            o = offsets[r, g]
            end = min(j + group, n)
            if bits == 8:
                base = pos >> 3
                for k in range(j, end):
                    out[r, k] = np.float32(packed[base + k - j]) * s + o
                pos += (end - j) * 8
            elif bits == 4 and (pos & 7) == 0 and ((end - j) & 1) == 0:
                base = pos >> 3
                for k in range(j, end, 2):
                    byte = packed[base + ((k - j) >> 1)]
                    out[r, k] = np.float32(byte & 15) * s + o
                    out[r, k + 1] = np.float32(byte >> 4) * s + o
                pos += (end - j) * 4
            else:
                for k in range(j, end):
                    byte = pos >> 3
                    shift = pos & 7
                    v = np.uint32(packed[byte]) >> shift
                    if shift + bits > 8:
                        v |= np.uint32(packed[byte + 1]) << (8 - shift)
                    out[r, k] = np.float32(v & mask) * s + o
                    pos += bits
            j = end
            g += 1


@kernel("quant", "decode", "numba")
def dequantize(
    packed: np.ndarray, scales: np.ndarray, offsets: np.ndarray, bits: int, n: int, group: int
) -> np.ndarray:
    """Same contract as the reference :func:`~tensorpress.kernels.reference.quant.dequantize`."""
    rows = scales.shape[0]
    out = np.empty((rows, n), dtype=np.float32)
    if rows and n:
        _dequant(packed, np.ascontiguousarray(scales, np.float32), np.ascontiguousarray(offsets, np.float32),
                 bits, n, group, out)
    return out
