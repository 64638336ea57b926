"""Numba CPU kernels for ``quant``: bit-stream unpacking fused with dequantization, parallel over rows.

The layout is the one documented in :mod:`tensorpress.kernels.reference.quant`. For 2–4 bits each group's
``2**bits`` possible values are tabulated first, so the inner loop is a byte load and table lookups; the
arithmetic per value is the reference's ``float32(code) * scale + offset``, so results match it exactly.
"""

from __future__ import annotations

import numba
import numpy as np

from ..dispatch import kernel
from .crc32c import _shift, _span, span_constants, span_fixed
from .crc32c import available as crc_available


@numba.njit(cache=True, nogil=True, inline="always")
def _group_span(packed, lut, scale, offset, bits, pos, out_row, j, end):  # numba infers the types
    """Decode codes j..end of one row starting at bit ``pos``; returns the bit position after them."""
    count = end - j
    if bits == 8:
        base = pos >> 3
        for k in range(count):
            out_row[j + k] = np.float32(packed[base + k]) * scale + offset
        return pos + 8 * count
    levels = 1 << bits
    for v in range(levels):
        lut[v] = np.float32(v) * scale + offset
    if bits == 4 and (pos & 7) == 0 and (count & 1) == 0:
        base = pos >> 3
        for k in range(count >> 1):
            byte = packed[base + k]
            out_row[j + 2 * k] = lut[byte & 15]
            out_row[j + 2 * k + 1] = lut[byte >> 4]
        return pos + 4 * count
    if bits == 2 and (pos & 7) == 0 and (count & 3) == 0:
        base = pos >> 3
        for k in range(count >> 2):
            byte = packed[base + k]
            out_row[j + 4 * k] = lut[byte & 3]
            out_row[j + 4 * k + 1] = lut[(byte >> 2) & 3]
            out_row[j + 4 * k + 2] = lut[(byte >> 4) & 3]
            out_row[j + 4 * k + 3] = lut[byte >> 6]
        return pos + 2 * count
    mask = levels - 1
    if (pos & 7) == 0 and (count & 7) == 0:
        # 8 codes fill exactly `bits` bytes: gather them into one word, then shift codes out of it
        base = pos >> 3
        for c in range(count >> 3):
            word = np.uint64(0)
            for i in range(bits):
                word |= np.uint64(packed[base + c * bits + i]) << np.uint64(8 * i)
            for t in range(8):
                out_row[j + 8 * c + t] = lut[(word >> np.uint64(bits * t)) & np.uint64(mask)]
        return pos + bits * count
    for k in range(j, end):
        byte = pos >> 3
        shift = pos & 7
        v = np.uint32(packed[byte]) >> shift
        if shift + bits > 8:
            v |= np.uint32(packed[byte + 1]) << (8 - shift)
        out_row[k] = lut[v & mask] if bits < 8 else np.float32(v & mask) * scale + offset
        pos += bits
    return pos


@numba.njit(parallel=True, cache=True, nogil=True)
def _dequant(packed, scales, offsets, bits, n, group, out):  # numba infers the types
    rows = out.shape[0]
    for r in numba.prange(rows):
        lut = np.empty(256, np.float32)
        out_row = out[r]
        pos = r * n * bits
        for g in range(scales.shape[1]):
            j = g * group
            pos = _group_span(packed, lut, scales[r, g], offsets[r, g], bits, pos, out_row, j, min(j + group, n))


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


_CRC_BLOCKS = 64  # row blocks of the checked decode: each block's codes are checksummed while in cache


@numba.njit(parallel=True, cache=True, nogil=True)
def _dequant_crc(packed, scales, offsets, bits, n, group, out, n_blocks):  # numba infers the types
    rows = out.shape[0]
    per_block = (rows + n_blocks - 1) // n_blocks
    partial = np.zeros(n_blocks, np.uint32)
    lengths = np.zeros(n_blocks, np.int64)
    # every full block's span has at least this many bytes; a shorter last block computes its own constants
    shortest = (per_block * n * bits) // 8
    third, join_b, join_a = span_constants(shortest)
    for b in numba.prange(n_blocks):
        lut = np.empty(256, np.float32)
        first, last = min(rows, b * per_block), min(rows, (b + 1) * per_block)
        for r in range(first, last):
            out_row = out[r]
            pos = r * n * bits
            for g in range(scales.shape[1]):
                j = g * group
                pos = _group_span(packed, lut, scales[r, g], offsets[r, g], bits, pos, out_row, j,
                                  min(j + group, n))
        # the block's share of the code bytes, checksummed while they are still in cache: from its first byte
        # to the next block's (the last block's share runs to the end of the stream)
        start = (first * n * bits) // 8
        stop = packed.size if last == rows else (last * n * bits) // 8
        reg = np.uint32(0xFFFFFFFF) if b == 0 else np.uint32(0)
        if stop - start >= shortest:
            reg = span_fixed(packed, start, stop, reg, third, join_b, join_a)
        else:
            reg = _span(packed, start, stop, reg)
        partial[b] = reg
        lengths[b] = stop - start
    crc = partial[0]
    for b in range(1, n_blocks):
        crc = _shift(crc, lengths[b]) ^ partial[b]
    return crc ^ np.uint32(0xFFFFFFFF)


if crc_available():

    @kernel("quant", "decode_crc", "numba")
    def dequantize_crc(
        packed: np.ndarray, scales: np.ndarray, offsets: np.ndarray, bits: int, n: int, group: int
    ) -> tuple[np.ndarray, int]:
        """:func:`dequantize`, plus the CRC-32C of ``packed`` computed block by block while the codes are in
        cache (the blob's deferred check of its largest part, see :class:`tensorpress.core.blob.CheckedParts`)."""
        rows = scales.shape[0]
        out = np.empty((rows, n), dtype=np.float32)
        crc = _dequant_crc(packed, np.ascontiguousarray(scales, np.float32),
                           np.ascontiguousarray(offsets, np.float32), bits, n, group, out,
                           max(1, min(_CRC_BLOCKS, rows)))
        return out, int(crc)
