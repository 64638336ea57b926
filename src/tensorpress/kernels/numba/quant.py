"""Numba CPU kernels for ``quant``: bit-stream unpacking fused with dequantization, parallel over row blocks.

The layout is the one documented in :mod:`tensorpress.kernels.reference.quant`. For 2–4 bits each group's
``2**bits`` possible values are tabulated first, so the inner loop is a byte load and table lookups; the
arithmetic per value is the reference's ``float32(code) * scale + offset``, so results match it exactly.
Where every group's codes fill whole 64-bit words (2, 4 or 8 bits, the usual groups), a word-wise loop runs
(:func:`word_aligned`); other layouts walk the bit stream. :func:`dequantize_stored` reads the stored float16 or
float32 scales and minimums and converts each group's where the group starts, so the codec's decode makes no
float32 copies of them; its checked variant also returns the CRC-32Cs of the codes (each row block decoded
32 KiB of codes at a time, each step checksummed right after it) and of its rows of scales and minimums.
:func:`parameters` / ``parameters_crc`` convert (and check) the stored parameters for the other kernels.

The decodes are serial block functions run in parallel by :func:`~._blocks.run`, not ``prange`` loops: loaded
from Numba's cache, a ``prange`` decode is different machine code from the one compiled and measured (see
:mod:`._blocks`), and ran up to 13 % slower.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np

from ..dispatch import kernel
from ._bits import to_f32
from ._blocks import BLOCK, run
from .crc32c import available as crc_available
from .crc32c import crc32c, join, span, span_constants, span_fixed


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
def _group_words(packed, lut, scale, offset, bits, w0, out_row, j, count):  # numba infers the types
    """Decode ``count`` codes of one row that fill whole 64-bit words, from word ``w0`` on. (A rotate-xor chain
    over the words, which once kept LLVM from vectorizing this loop with gathers, measured 2.0-3.1 % slower in
    the block functions.)"""
    per = 64 // bits
    _table(lut, bits, scale, offset)
    for w in range(count // per):
        _word(packed, lut, scale, offset, bits, 8 * (w0 + w), out_row, j + w * per)


@numba.njit(cache=True, nogil=True, inline="always")
def _group_params(scales, mins, params, r, g):  # numba infers the types
    """Group ``g`` of row ``r``: its float32 (scale, offset), converted from the stored values where they are
    read; the offset is the stored minimum (or given offset), or ``-zero · scale`` without minimums."""
    s = to_f32(scales[r, g])
    if params[_HAS_MINS]:
        return s, to_f32(mins[r, g])
    return s, np.float32(-params[_ZERO]) * s


@numba.njit(cache=True, nogil=True, inline="always")
def _rows_words(packed, lut, scales, mins, params, bits, n, group, out, first, last):  # numba infers the types
    """Rows ``first..last`` by :func:`_group_words`."""
    row_words = n * bits // 64
    for r in range(first, last):
        out_row = out[r]
        for g in range(scales.shape[1]):
            j = g * group
            s, o = _group_params(scales, mins, params, r, g)
            _group_words(packed, lut, s, o, bits, r * row_words + j * bits // 64, out_row, j, min(group, n - j))


def word_aligned(bits: int, n: int, group: int) -> bool:
    """True where every group of every row is whole 64-bit words of codes: 2, 4 or 8 bits, and ``n`` and
    ``group`` multiples of the codes per word (then the stream is exactly ``rows · n · bits / 8`` bytes)."""
    return bits in (2, 4, 8) and n % (64 // bits) == 0 and group % (64 // bits) == 0


# The decode runs as row blocks (see :mod:`._blocks`). Each block function gets the codes, each group's scale and
# offset source (the stored float16 or float32 scales and minimums, or float32 scales and offsets), the output and
# an int64 parameter vector: rows, n, bits, group, groups per row, blocks, code bytes, the zero code (offset =
# -zero · scale where there are no minimums), whether there are minimums, the CRC span constants
# (:func:`~.crc32c.span_constants`) of the checked decode, then two slots per block, where a checked block leaves
# the registers of its rows of the scales and of the minimums. Block ``b`` decodes rows ``b·per … (b+1)·per - 1``
# with ``per = ceil(rows / blocks)`` (the last ones may hold none).
_ROWS, _N, _BITS, _GROUP, _GROUPS, _BLOCKS, _NBYTES, _ZERO, _HAS_MINS, _COUNT, _K1, _K2 = range(12)
_HEAD = 12  # the block slots follow
_BLOCKS_MAX = 64  # row blocks of a decode (in the checked decode, each one CRC register, joined at the end)


@numba.njit(cache=True, nogil=True, inline="always")
def _block_rows(params, b):  # numba infers the types
    """Block ``b``'s rows ``first … last-1``: ``ceil(rows / blocks)`` per block, the last ones may hold none."""
    rows = params[_ROWS]
    per_block = (rows + params[_BLOCKS] - 1) // params[_BLOCKS]
    return min(rows, b * per_block), min(rows, (b + 1) * per_block)


@numba.njit(cache=True, nogil=True, inline="always")
def _views(codes_p, out_p, params_p, b):  # numba infers the types
    """The parameter vector, codes and output of a block function as arrays, with its rows ``first … last-1``."""
    head = numba.carray(params_p, (_HEAD,), np.int64)
    params = numba.carray(params_p, (_HEAD + 2 * head[_BLOCKS],), np.int64)
    packed = numba.carray(codes_p, (params[_NBYTES],), np.uint8)
    out = numba.carray(out_p, (params[_ROWS], params[_N]), np.float32)
    first, last = _block_rows(params, b)
    return params, packed, out, first, last


@numba.njit(cache=True, nogil=True, inline="always")
def _stream_rows(packed, lut, scales, mins, params, bits, n, group, out, first, last):  # numba infers the types
    """Rows ``first … last-1`` by walking the bit stream (any layout)."""
    for r in range(first, last):
        out_row = out[r]
        pos = r * n * bits
        for g in range(scales.shape[1]):
            j = g * group
            s, o = _group_params(scales, mins, params, r, g)
            pos = _group_span(packed, lut, s, o, bits, pos, out_row, j, min(j + group, n))


@numba.njit(cache=True, nogil=True, inline="always")
def _share(params, b):  # numba infers the types
    """Block ``b``'s share of the code bytes, (start, stop): from the byte holding its first code to the next
    block's; the last block's share (which may hold no rows) runs to the end of the stream, padding included."""
    first, last = _block_rows(params, b)
    row_bits = params[_N] * params[_BITS]
    stop = params[_NBYTES] if b == params[_BLOCKS] - 1 else (last * row_bits) // 8
    return (first * row_bits) // 8, stop


@numba.njit(cache=True, nogil=True)
def _shares(params):  # numba infers the types
    """Byte length of each block's share of the codes (what :func:`~.crc32c.join` takes)."""
    lengths = np.empty(params[_BLOCKS], np.int64)
    for b in range(lengths.size):
        start, stop = _share(params, b)
        lengths[b] = stop - start
    return lengths


@numba.njit(cache=True, nogil=True, inline="always")
def _rows(packed, lut, scales, mins, params, width, stream, out, first, last):  # numba infers the types
    """Rows ``first … last-1`` by the bit-stream walk (``stream``) or the word-wise loop."""
    n, group = params[_N], params[_GROUP]
    if stream:
        _stream_rows(packed, lut, scales, mins, params, width, n, group, out, first, last)
    else:
        _rows_words(packed, lut, scales, mins, params, width, n, group, out, first, last)


_SUB_BYTES = 32 << 10  # codes decoded, then checksummed, per step of the checked decode (rows of at least this)


@numba.njit(cache=True, nogil=True, inline="always")
def _sub_rows(params):  # numba infers the types
    """Rows per step of the checked decode: as many as hold :data:`_SUB_BYTES` of codes (at least one)."""
    return max(1, (_SUB_BYTES * 8) // max(1, params[_N] * params[_BITS]))


@numba.njit(cache=True, nogil=True)
def _sub_bytes(params):  # numba infers the types
    """Code bytes of a step's rows, rounded down: the span length that the decode's CRC constants are for (a
    step's span may be a byte longer, never shorter, but for a block's last step)."""
    return (_sub_rows(params) * params[_N] * params[_BITS]) // 8


@numba.njit(cache=True, nogil=True, inline="always")
def _rows_crc(packed, lut, scales, mins, params, width, stream, out, first, last, b):  # numba infers the types
    """Rows ``first … last-1`` decoded a step of :func:`_sub_rows` at a time, each step's code bytes checksummed
    right after it, from the decode's own loads still in cache; returns the register of block ``b``'s share
    (:func:`_share`). The steps' spans split the share at the byte of each step's first code, so they chain."""
    n, bits = params[_N], params[_BITS]
    start, stop = _share(params, b)
    reg = np.uint32(0xFFFFFFFF) if b == 0 else np.uint32(0)
    shortest = _sub_bytes(params)
    count, k1, k2 = params[_COUNT], np.uint32(params[_K1]), np.uint32(params[_K2])
    at = start
    step = _sub_rows(params)
    for r0 in range(first, last, step):
        r1 = min(last, r0 + step)
        _rows(packed, lut, scales, mins, params, width, stream, out, r0, r1)
        end = stop if r1 == last else (r1 * n * bits) // 8
        reg = span_fixed(packed, at, end, reg, count, k1, k2) if end - at >= shortest else span(packed, at, end, reg)
        at = end
    if stop > at:  # a share without rows (the last block's, past the rows)
        reg = span(packed, at, stop, reg)
    return reg


@numba.njit(cache=True, nogil=True, inline="always")
def _params_crc(scales, mins, params, first, last, b):  # numba infers the types
    """Checksum block ``b``'s rows ``first … last-1`` of the stored scales and minimums into the block's slots of
    ``params`` (the same rows as its codes, so the shares chain like theirs: :func:`_param_shares`)."""
    start = np.uint32(0xFFFFFFFF) if b == 0 else np.uint32(0)
    stored = scales.reshape(-1).view(np.uint8)
    row_bytes = stored.size // params[_ROWS]
    params[_HEAD + 2 * b] = span(stored, first * row_bytes, last * row_bytes, start)
    if params[_HAS_MINS]:
        params[_HEAD + 2 * b + 1] = span(mins.reshape(-1).view(np.uint8), first * row_bytes, last * row_bytes, start)


# The block functions, one per kind, code width and parameter type. ``width``, ``stream``, ``checked`` and the
# stored type are closure constants: each width gets its own loop, which ran 1.5-10 % faster than one loop for
# every width in the word-wise decode and 18-27 % faster in the bit-stream walk (3 and 5 bits). Numba's cache
# keys a closure by its constants too.

def _block_source(width: int, stream: bool, checked: bool, stored: Any) -> Any:
    def decode_block(codes_p, scales_p, mins_p, out_p, params_p, b):  # numba infers the types
        """One row block of the word-wise decode (see :func:`word_aligned`) or of the bit-stream walk (any
        layout), each group's scale and offset converted from the stored values (``stored``: float16 as its
        bits, or float32) where the group starts. Checked, it returns the register of the block's share of the
        code bytes (:func:`_rows_crc`) and leaves those of its rows' scales and minimums in ``params``.
        Checksumming each 32 KiB step of codes right after decoding it measured 1.5-2 points less overhead at
        8 bits than checksumming the whole block first (+1.6 to +3.3 % against +3.8 to +5.9 % over the plain
        decode, 3 processes x 30 rounds) and the same at 4 bits; checksumming a 128 KiB block after decoding it,
        once its output had pushed the codes out of cache, cost +7 % at 3 bits."""
        params, packed, out, first, last = _views(codes_p, out_p, params_p, b)
        scales = numba.carray(scales_p, (params[_ROWS], params[_GROUPS]), stored)
        mins = numba.carray(mins_p, (params[_ROWS], params[_GROUPS]), stored)
        lut = np.empty(256, np.float32)
        if checked:
            _params_crc(scales, mins, params, first, last, b)  # a block's parameters are a few KiB: read them once
            return np.uint64(_rows_crc(packed, lut, scales, mins, params, width, stream, out, first, last, b))
        _rows(packed, lut, scales, mins, params, width, stream, out, first, last)
        return np.uint64(0)

    return decode_block


_KINDS = {"stream": (True, False), "stream_crc": (True, True), "words": (False, False), "words_crc": (False, True)}


@functools.cache
def _block(kind: str, bits: int, half: bool) -> Any:
    """The compiled block function of decode ``kind`` for ``bits``-wide codes and float16 (``half``, read as
    their bits) or float32 parameters, compiled (or loaded from Numba's cache) on first use."""
    if bits not in range(2, 9):
        raise ValueError(f"quant codes are 2 to 8 bits wide, not {bits}")
    return numba.cfunc(BLOCK, cache=True, nogil=True)(_block_source(bits, *_KINDS[kind],
                                                                    np.uint16 if half else np.float32))


@functools.lru_cache(maxsize=256)
def _constants(shortest: int) -> tuple[int, int, int]:
    """:func:`~.crc32c.span_constants` for spans of ``shortest`` bytes, kept: a model's tensors share a few
    shapes, and each computation takes two bit-serial powers of x."""
    count, k1, k2 = span_constants(shortest)
    return int(count), int(k1), int(k2)


def _decode(kind: str, packed: np.ndarray, scales: np.ndarray, mins: np.ndarray | None, zero: int, bits: int,
            n: int, group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run a decode's row blocks: the output, the blocks' registers and the parameter vector. ``scales`` and
    ``mins`` are read as they are where both are float16, else as float32; ``mins`` None: the offsets are
    ``-zero · scale``. The blocks read raw addresses, so the buffers' sizes are checked here."""
    rows = scales.shape[0]
    packed = np.ascontiguousarray(packed, np.uint8).reshape(-1)
    groups = -(-n // group) if n and group > 0 else 0
    if (group <= 0 or scales.shape != (rows, groups) or (mins is not None and mins.shape != scales.shape)
            or packed.size * 8 < rows * n * bits):
        raise ValueError(f"quant decode: {packed.size} code bytes, scales {scales.shape} and offsets "
                         f"{scales.shape if mins is None else mins.shape} do not fit {rows} rows of {n} {bits}-bit "
                         f"codes in groups of {group}")
    out = np.empty((rows, n), dtype=np.float32)
    n_blocks = max(1, min(_BLOCKS_MAX, rows))
    params = np.zeros(_HEAD + 2 * n_blocks, np.int64)
    params[:_COUNT] = rows, n, bits, group, groups, n_blocks, packed.size, zero, mins is not None
    if kind.endswith("_crc"):
        params[_COUNT:_HEAD] = _constants(int(_sub_bytes(params)))
    if not rows * n:
        return out, np.zeros(0, np.uint64), params
    half = scales.dtype == np.float16 and (mins is None or mins.dtype == np.float16)
    s, m = (_as_read(a, half) for a in (scales, scales if mins is None else mins))
    registers = run(_block(kind, bits, half), (packed, s, m, out, params), n_blocks)
    return out, registers, params


def _as_read(a: np.ndarray, half: bool) -> np.ndarray:
    """Parameters as the blocks read them: float16 as its bits (``half``), else float32; C-contiguous."""
    return np.ascontiguousarray(a).view(np.uint16) if half else np.ascontiguousarray(a, np.float32)


def _kind(bits: int, n: int, group: int) -> str:
    """The plain decode for a layout: the word-wise loop where :func:`word_aligned`, else the bit-stream walk."""
    return "words" if word_aligned(bits, n, group) else "stream"


@kernel("quant", "decode", "numba")
def dequantize(
    packed: np.ndarray, scales: np.ndarray, offsets: np.ndarray, bits: int, n: int, group: int
) -> np.ndarray:
    """Same contract as the reference :func:`~tensorpress.kernels.reference.quant.dequantize`."""
    return _decode(_kind(bits, n, group), packed, np.asarray(scales, np.float32), np.asarray(offsets, np.float32),
                   0, bits, n, group)[0]


@kernel("quant", "decode_stored", "numba")
def dequantize_stored(
    packed: np.ndarray, scales: np.ndarray, mins: np.ndarray | None, zero: int, bits: int, n: int, group: int
) -> np.ndarray:
    """Same contract as the reference :func:`~tensorpress.kernels.reference.quant.dequantize_stored`: each group's
    scale and offset converted where the decode reads them, with no float32 copies of the parameters (at 4 bits
    in groups of 32, 4 MiB less memory written and read for a 4096 x 4096 tensor)."""
    return _decode(_kind(bits, n, group), packed, scales, mins, zero, bits, n, group)[0]


@numba.njit(cache=True, nogil=True)
def _param_shares(params, row_bytes):  # numba infers the types
    """Byte length of each block's share of a (rows, groups) parameter array of ``row_bytes`` per row: its rows'."""
    lengths = np.empty(params[_BLOCKS], np.int64)
    for b in range(lengths.size):
        first, last = _block_rows(params, b)
        lengths[b] = (last - first) * row_bytes
    return lengths


if crc_available():

    @kernel("quant", "decode_stored_crc", "numba")
    def dequantize_stored_crc(
        packed: np.ndarray, scales: np.ndarray, mins: np.ndarray | None, zero: int, bits: int, n: int, group: int
    ) -> tuple[np.ndarray, int, int, int | None]:
        """:func:`dequantize_stored`, plus the CRC-32Cs of ``packed``, ``scales`` and ``mins`` (None without),
        computed block by block while the decode has them in cache (the blob's deferred checks of those parts,
        see :class:`tensorpress.core.blob.CheckedParts`). The parameters are float16 or float32, both of one
        type: the checksums are of their bytes as stored."""
        if scales.dtype not in (np.float16, np.float32) or (mins is not None and mins.dtype != scales.dtype):
            raise ValueError(f"quant decode_stored_crc: parameters are float16 or float32 of one type, got "
                             f"{scales.dtype} and {None if mins is None else mins.dtype}")
        rows = scales.shape[0]
        whole_words = word_aligned(bits, n, group) and np.size(packed) * 8 == rows * n * bits
        out, registers, params = _decode("words_crc" if whole_words else "stream_crc", packed, scales, mins, zero,
                                         bits, n, group)
        if not registers.size:
            return (out, crc32c(np.ascontiguousarray(packed, np.uint8).reshape(-1)),
                    crc32c(np.ascontiguousarray(scales)), None if mins is None else crc32c(np.ascontiguousarray(mins)))
        lengths = _param_shares(params, params[_GROUPS] * scales.itemsize)
        slots = params[_HEAD:].reshape(-1, 2).astype(np.uint32)
        return (out, int(join(registers.astype(np.uint32), _shares(params))), int(join(slots[:, 0], lengths)),
                None if mins is None else int(join(slots[:, 1], lengths)))


@numba.njit(cache=True, nogil=True, inline="always")
def _convert_rows(scales, mins, zero, has_mins, scale32, offsets, first, last):  # numba infers the types
    """Rows ``first..last`` of the stored parameters as float32 scales and offsets."""
    for r in range(first, last):
        for g in range(scales.shape[1]):
            s = to_f32(scales[r, g])
            scale32[r, g] = s
            offsets[r, g] = to_f32(mins[r, g]) if has_mins else np.float32(-zero) * s


@numba.njit(cache=True, nogil=True)
def _parameters(scales, mins, zero, has_mins):  # numba infers the types
    """The stored parameters as float32 scales and offsets. Serial: a 4096 x 4096 tensor's parameters (131 072
    groups) convert in ~35 µs, less than the parallel loop's start and join cost here (the parallel kernel took
    25-32 µs plus 10-15 µs more of calls, and its checked variant twice the time on a cold cache)."""
    rows, groups = scales.shape
    scale32 = np.empty((rows, groups), np.float32)
    offsets = np.empty((rows, groups), np.float32)
    _convert_rows(scales, mins, zero, has_mins, scale32, offsets, 0, rows)
    return scale32, offsets


@numba.njit(cache=True, nogil=True, inline="always")
def _value(a):  # numba infers the types
    """The CRC-32C of a C-contiguous array's bytes, final xor applied."""
    stored = a.reshape(-1).view(np.uint8)
    return span(stored, 0, stored.size, np.uint32(0xFFFFFFFF)) ^ np.uint32(0xFFFFFFFF)


@numba.njit(cache=True, nogil=True)
def _parameters_crc(scales, mins, zero, has_mins):  # numba infers the types
    """:func:`_parameters`, and the CRC-32C of the stored scales and minimums, checksummed right after."""
    scale32, offsets = _parameters(scales, mins, zero, has_mins)
    return scale32, offsets, _value(scales), _value(mins) if has_mins else np.uint32(0)


@kernel("quant", "parameters", "numba")
def parameters(scales: np.ndarray, mins: np.ndarray | None, zero: int) -> tuple[np.ndarray, np.ndarray]:
    """Same contract as the reference :func:`~tensorpress.kernels.reference.quant.parameters`; float16 is
    converted by the hardware instruction, about ten times NumPy's ``astype``."""
    scale32, offsets = _parameters(_bits_of(scales), _bits_of(scales if mins is None else mins), zero,
                                   mins is not None)
    return scale32, offsets


def _bits_of(a: np.ndarray) -> np.ndarray:
    """float16 as its uint16 bit patterns (what :func:`to_f32` reads), other floats as they are, C-contiguous."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint16) if a.dtype == np.float16 else a


if crc_available():

    @kernel("quant", "parameters_crc", "numba")
    def parameters_crc(scales: np.ndarray, mins: np.ndarray | None, zero: int) -> tuple[
            np.ndarray, np.ndarray, int, int | None]:
        """:func:`parameters`, plus the CRC-32C of ``scales`` and of ``mins`` (None without), computed right after
        converting them (the blob's deferred checks of those parts)."""
        scale32, offsets, crc_s, crc_m = _parameters_crc(_bits_of(scales),
                                                         _bits_of(scales if mins is None else mins), zero,
                                                         mins is not None)
        return scale32, offsets, int(crc_s), None if mins is None else int(crc_m)
