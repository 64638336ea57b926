"""Numba CPU kernels for ``quant``: bit-stream unpacking fused with dequantization, parallel over row blocks.

The layout is the one documented in :mod:`tensorpress.kernels.reference.quant`. For 2–4 bits each group's
``2**bits`` possible values are tabulated first, so the inner loop is a byte load and table lookups; the
arithmetic per value is the reference's ``float32(code) * scale + offset``, so results match it exactly.
Where every group's codes fill whole 64-bit words (2, 4 or 8 bits, the usual groups), a word-wise loop runs
(:func:`word_aligned`); other layouts walk the bit stream. The checked variants also return the CRC-32C of
the codes: below 8 bits the word-wise loop feeds each word to a ``crc32`` chain as it decodes it; at 8 bits,
and in the bit-stream walk, each row block is checksummed right after it is decoded. The stored parameters
are converted (and checked) by :func:`parameters` / ``parameters_crc``.
"""

from __future__ import annotations

import numba
import numpy as np

from ..dispatch import kernel
from ._bits import to_f32
from .crc32c import available as crc_available
from .crc32c import block_span, crc_word, join, span_constants


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


@numba.njit(cache=True, nogil=True, inline="always")
def _table(lut, bits, scale, offset):  # numba infers the types
    """A group's ``2**bits`` decoded values (8-bit codes are computed directly)."""
    if bits < 8:
        for v in range(1 << bits):
            lut[v] = np.float32(v) * scale + offset


@numba.njit(cache=True, nogil=True, inline="always")
def _word(packed, lut, scale, offset, bits, first, out_row, base):  # numba infers the types
    """The codes of the 64-bit word at byte ``first``, decoded into ``out_row`` from ``base`` on: a fixed-length
    loop over the word's bytes, which LLVM unrolls."""
    for t in range(8):
        byte = packed[first + t]
        if bits == 8:
            out_row[base + t] = np.float32(byte) * scale + offset
        elif bits == 4:
            out_row[base + 2 * t] = lut[byte & 15]
            out_row[base + 2 * t + 1] = lut[byte >> 4]
        else:
            out_row[base + 4 * t] = lut[byte & 3]
            out_row[base + 4 * t + 1] = lut[(byte >> 2) & 3]
            out_row[base + 4 * t + 2] = lut[(byte >> 4) & 3]
            out_row[base + 4 * t + 3] = lut[byte >> 6]


@numba.njit(cache=True, nogil=True, inline="always")
def _group_words(packed, words, lut, scale, offset, bits, w0, out_row, j, count, reg):  # numba infers the types
    """Decode ``count`` codes of one row that fill whole 64-bit words, from word ``w0`` on. Each word also goes
    through a rotate-xor chain in ``reg``, whose value nobody needs: a running register keeps LLVM from
    vectorizing the loop over words with gathers from the table, which measured 14-21 % slower than this
    scalar loop. :func:`_group_words_crc` is the same loop with the CRC as its register."""
    per = 64 // bits
    _table(lut, bits, scale, offset)
    for w in range(count // per):
        reg = (reg << np.uint64(1) | reg >> np.uint64(63)) ^ words[w0 + w]
        _word(packed, lut, scale, offset, bits, 8 * (w0 + w), out_row, j + w * per)
    return reg


@numba.njit(cache=True, nogil=True, inline="always")
def _group_words_crc(packed, words, lut, scale, offset, bits, w0, out_row, j, count, reg):  # numba infers the types
    """:func:`_group_words` with the CRC-32C of the words as its register: one ``crc32`` instruction per word,
    while the word is in a register. (A flag choosing the register inside one loop measured slower: LLVM kept
    the choice in the loop.)"""
    per = 64 // bits
    _table(lut, bits, scale, offset)
    for w in range(count // per):
        reg = crc_word(reg, words[w0 + w])
        _word(packed, lut, scale, offset, bits, 8 * (w0 + w), out_row, j + w * per)
    return reg


@numba.njit(cache=True, nogil=True, inline="always")
def _rows_words(packed, words, lut, scales, offsets, bits, n, group, out, first, last):  # numba infers the types
    """Rows ``first..last`` by :func:`_group_words`; returns the register, which keeps its chain (and the scalar
    loop) alive: without the return it measured 6 % slower at 4 bits."""
    row_words = n * bits // 64
    reg = np.uint64(0)
    for r in range(first, last):
        out_row = out[r]
        for g in range(scales.shape[1]):
            j = g * group
            reg = _group_words(packed, words, lut, scales[r, g], offsets[r, g], bits, r * row_words + j * bits // 64,
                               out_row, j, min(group, n - j), reg)
    return reg


@numba.njit(parallel=True, cache=True, nogil=True)
def _dequant_words(packed, scales, offsets, bits, n, group, out, n_blocks):  # numba infers the types
    """Decode where every group's codes fill whole 64-bit words (see :func:`word_aligned`), parallel over
    ``n_blocks`` row blocks."""
    rows = out.shape[0]
    per_block = (rows + n_blocks - 1) // n_blocks
    words = packed[: 8 * (packed.size // 8)].view(np.uint64)
    for b in numba.prange(n_blocks):
        lut = np.empty(256, np.float32)
        _rows_words(packed, words, lut, scales, offsets, bits, n, group, out, min(rows, b * per_block),
                    min(rows, (b + 1) * per_block))


@numba.njit(parallel=True, cache=True, nogil=True)
def _dequant_words_crc(packed, scales, offsets, bits, n, group, out, n_blocks):  # numba infers the types
    """:func:`_dequant_words`, and the CRC-32C of ``packed`` (exactly the rows' bytes), block by block, the blocks
    joined at the end. Below 8 bits each word runs through one ``crc32`` chain as it is decoded (decoding a word
    takes longer than the instruction's latency): 0-2.5 % over the plain decode, where checksumming each block
    after decoding it cost 2-4.5 %. At 8 bits the chain's latency shows, and each block is checksummed after it
    is decoded, in three streams (1.5-2 %, against 2-4 % for the chain: the instruction's throughput)."""
    rows = out.shape[0]
    per_block = (rows + n_blocks - 1) // n_blocks
    row_words = n * bits // 64
    shortest = per_block * row_words * 8
    third, join_b, join_a = span_constants(shortest)
    words = packed[: 8 * (packed.size // 8)].view(np.uint64)
    partial = np.zeros(n_blocks, np.uint32)
    lengths = np.zeros(n_blocks, np.int64)
    for b in numba.prange(n_blocks):
        lut = np.empty(256, np.float32)
        first, last = min(rows, b * per_block), min(rows, (b + 1) * per_block)
        if bits == 8:
            _rows_words(packed, words, lut, scales, offsets, bits, n, group, out, first, last)
            partial[b] = block_span(packed, first * row_words * 8, last * row_words * 8, b == 0, shortest, third,
                                    join_b, join_a)
        else:
            reg = np.uint64(0xFFFFFFFF) if b == 0 else np.uint64(0)
            for r in range(first, last):
                out_row = out[r]
                for g in range(scales.shape[1]):
                    j = g * group
                    reg = _group_words_crc(packed, words, lut, scales[r, g], offsets[r, g], bits,
                                           r * row_words + j * bits // 64, out_row, j, min(group, n - j), reg)
            partial[b] = np.uint32(reg)
        lengths[b] = (last - first) * row_words * 8
    return join(partial, lengths)


def word_aligned(bits: int, n: int, group: int) -> bool:
    """True where every group of every row is whole 64-bit words of codes: 2, 4 or 8 bits, and ``n`` and
    ``group`` multiples of the codes per word (then the stream is exactly ``rows · n · bits / 8`` bytes)."""
    return bits in (2, 4, 8) and n % (64 // bits) == 0 and group % (64 // bits) == 0


_WORD_BLOCKS = 64  # row blocks of the word-wise decode (each one CRC register in the checked decode)


@kernel("quant", "decode", "numba")
def dequantize(
    packed: np.ndarray, scales: np.ndarray, offsets: np.ndarray, bits: int, n: int, group: int
) -> np.ndarray:
    """Same contract as the reference :func:`~tensorpress.kernels.reference.quant.dequantize`."""
    rows = scales.shape[0]
    out = np.empty((rows, n), dtype=np.float32)
    if rows and n:
        scales, offsets = np.ascontiguousarray(scales, np.float32), np.ascontiguousarray(offsets, np.float32)
        if word_aligned(bits, n, group):
            _dequant_words(packed, scales, offsets, bits, n, group, out, min(_WORD_BLOCKS, rows))
        else:
            _dequant(packed, scales, offsets, bits, n, group, out)
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
        partial[b] = block_span(packed, start, stop, b == 0, shortest, third, join_b, join_a)
        lengths[b] = stop - start
    return join(partial, lengths)


if crc_available():

    @kernel("quant", "decode_crc", "numba")
    def dequantize_crc(
        packed: np.ndarray, scales: np.ndarray, offsets: np.ndarray, bits: int, n: int, group: int
    ) -> tuple[np.ndarray, int]:
        """:func:`dequantize`, plus the CRC-32C of ``packed`` computed block by block while the codes are in
        cache (the blob's deferred check of its largest part, see :class:`tensorpress.core.blob.CheckedParts`)."""
        rows = scales.shape[0]
        out = np.empty((rows, n), dtype=np.float32)
        scales, offsets = np.ascontiguousarray(scales, np.float32), np.ascontiguousarray(offsets, np.float32)
        if word_aligned(bits, n, group) and packed.size * 8 == rows * n * bits:
            crc = _dequant_words_crc(packed, scales, offsets, bits, n, group, out, max(1, min(_WORD_BLOCKS, rows)))
        else:  # each block's span checksummed after decoding it
            crc = _dequant_crc(packed, scales, offsets, bits, n, group, out, max(1, min(_CRC_BLOCKS, rows)))
        return out, int(crc)


@numba.njit(cache=True, nogil=True, inline="always")
def _convert_rows(scales, mins, zero, has_mins, scale32, offsets, first, last):  # numba infers the types
    """Rows ``first..last`` of the stored parameters as float32 scales and offsets."""
    for r in range(first, last):
        for g in range(scales.shape[1]):
            s = to_f32(scales[r, g])
            scale32[r, g] = s
            offsets[r, g] = to_f32(mins[r, g]) if has_mins else np.float32(-zero) * s


@numba.njit(parallel=True, cache=True, nogil=True)
def _parameters(scales, mins, zero, has_mins, scale32, offsets):  # numba infers the types
    for r in numba.prange(scales.shape[0]):
        _convert_rows(scales, mins, zero, has_mins, scale32, offsets, r, r + 1)


@numba.njit(parallel=True, cache=True, nogil=True)
def _parameters_crc(scales, mins, zero, has_mins, scale32, offsets, n_blocks):  # numba infers the types
    """:func:`_parameters`, and the CRC-32C of the stored scales and minimums, each block's bytes checksummed
    right after converting them."""
    rows = scales.shape[0]
    per_block = (rows + n_blocks - 1) // n_blocks
    row_bytes = scales.shape[1] * scales.itemsize
    scale_bytes = scales.reshape(-1).view(np.uint8)
    min_bytes = mins.reshape(-1).view(np.uint8)
    partial = np.zeros((2, n_blocks), np.uint32)
    lengths = np.zeros(n_blocks, np.int64)
    shortest = per_block * row_bytes
    third, join_b, join_a = span_constants(shortest)
    for b in numba.prange(n_blocks):
        first, last = min(rows, b * per_block), min(rows, (b + 1) * per_block)
        _convert_rows(scales, mins, zero, has_mins, scale32, offsets, first, last)
        start, stop = first * row_bytes, last * row_bytes
        partial[0, b] = block_span(scale_bytes, start, stop, b == 0, shortest, third, join_b, join_a)
        if has_mins:
            partial[1, b] = block_span(min_bytes, start, stop, b == 0, shortest, third, join_b, join_a)
        lengths[b] = stop - start
    return join(partial[0], lengths), join(partial[1], lengths)


_PARAMETER_BLOCKS = 16


@kernel("quant", "parameters", "numba")
def parameters(scales: np.ndarray, mins: np.ndarray | None, zero: int) -> tuple[np.ndarray, np.ndarray]:
    """Same contract as the reference :func:`~tensorpress.kernels.reference.quant.parameters`; float16 is
    converted by the hardware instruction, about ten times NumPy's ``astype``."""
    scale32 = np.empty(scales.shape, np.float32)
    offsets = np.empty(scales.shape, np.float32)
    if scales.size:
        _parameters(_bits_of(scales), _bits_of(scales if mins is None else mins), zero, mins is not None, scale32,
                    offsets)
    return scale32, offsets


def _bits_of(a: np.ndarray) -> np.ndarray:
    """float16 as its uint16 bit patterns (what :func:`to_f32` reads), other floats as they are, 2-D."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint16) if a.dtype == np.float16 else a


if crc_available():

    @kernel("quant", "parameters_crc", "numba")
    def parameters_crc(scales: np.ndarray, mins: np.ndarray | None, zero: int) -> tuple[
            np.ndarray, np.ndarray, int, int | None]:
        """:func:`parameters`, plus the CRC-32C of ``scales`` and of ``mins`` (None without), computed while
        converting them (the blob's deferred checks of those parts)."""
        scale32 = np.empty(scales.shape, np.float32)
        offsets = np.empty(scales.shape, np.float32)
        if not scales.size:
            return scale32, offsets, 0, None if mins is None else 0
        crc_s, crc_m = _parameters_crc(_bits_of(scales), _bits_of(scales if mins is None else mins), zero,
                                       mins is not None, scale32, offsets, max(1, min(_PARAMETER_BLOCKS,
                                                                                      scales.shape[0])))
        return scale32, offsets, int(crc_s), None if mins is None else int(crc_m)

