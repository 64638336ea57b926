"""Reference (NumPy) bit packing and dequantization for ``quant``.

Codes are unsigned ``bits``-wide integers laid out row-major as one LSB-first bit stream: code ``k`` occupies
bits ``k*bits … k*bits+bits-1`` of the stream, bit ``i`` of the stream being bit ``i % 8`` of byte ``i // 8``.
For 4 bits this is two codes per byte, low nibble first; for 8 bits it is one code per byte.
"""

from __future__ import annotations

import numpy as np

from ..dispatch import kernel


def packed_nbytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


@kernel("quant", "pack", "reference")
def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned codes (< 2**bits) into the LSB-first stream; returns uint8 of ``packed_nbytes``."""
    flat = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return flat.copy()
    if bits == 4 and flat.size % 2 == 0:
        pairs = flat.reshape(-1, 2)
        return (pairs[:, 0] | (pairs[:, 1] << 4)).astype(np.uint8)
    planes = (flat[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(planes.reshape(-1), bitorder="little")


@kernel("quant", "unpack", "reference")
def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` codes as uint8."""
    stream = np.unpackbits(packed, bitorder="little", count=count * bits)
    weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
    return (stream.reshape(count, bits) * weights).sum(axis=1).astype(np.uint8)


@kernel("quant", "decode", "reference")
def dequantize(
    packed: np.ndarray, scales: np.ndarray, offsets: np.ndarray, bits: int, n: int, group: int
) -> np.ndarray:
    """``codes * scale + offset`` per group → float32 of shape (rows, n).

    ``scales``/``offsets`` are float32 (rows, ceil(n / group)); groups run along the last axis.
    """
    rows = scales.shape[0]
    codes = unpack_bits(packed, bits, rows * n).reshape(rows, n).astype(np.float32)
    col_group = np.arange(n) // group
    return codes * scales[:, col_group] + offsets[:, col_group]


@kernel("quant", "parameters", "reference")
def parameters(scales: np.ndarray, mins: np.ndarray | None, zero: int) -> tuple[np.ndarray, np.ndarray]:
    """The stored per-group parameters (float16 or float32, rows × groups) as the decode kernels take them:
    float32 scales, and float32 offsets — the stored minimums, or ``-zero · scale`` for symmetric groups
    (``mins`` None)."""
    scale32 = scales.astype(np.float32)
    offsets = mins.astype(np.float32) if mins is not None else np.float32(-zero) * scale32
    return scale32, offsets


@kernel("quant", "decode_stored", "reference")
def dequantize_stored(
    packed: np.ndarray, scales: np.ndarray, mins: np.ndarray | None, zero: int, bits: int, n: int, group: int
) -> np.ndarray:
    """:func:`dequantize` from the stored per-group parameters, as :func:`parameters` takes them."""
    return dequantize(packed, *parameters(scales, mins, zero), bits, n, group)
