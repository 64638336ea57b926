"""The stored layers of ``wavelet`` besides the transform: coefficient stream framing, the NaN/Inf mask,
exactly stored elements, and the smooth fill of masked cells (encoder only).

Byte layouts (integers little-endian):

- ``corrections``: LEB128 count, then the stream of :func:`~tensorpress.kernels.reference.wavelet.
  encode_sparse` (positions and values of the nonzero corrections);
- coefficient streams (``coefficients``, ``mask``): the byte size of each box's stream
  but the last as LEB128 varints, then the streams back to back (the last one takes the rest);
- ``mask``: per element 0 = finite, 1 = the dtype's canonical NaN, 2 = +Inf, 3 = -Inf, 4 + j = the j-th
  bit pattern of ``specials`` (other NaN payloads), coded as one box;
- ``exact``: zstd of [u64 count, u64 position deltas (first from 0), the elements' raw bits];
- ``raw`` (exact mode): zstd of the array's raw little-endian bytes; ``plain``: those bytes as such.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import zstandard

from ..core.dtypes import native
from ..core.encoded import Encoded
from ..core.errors import BlobError
from ..kernels import get_kernel

_ZSTD_LEVEL = 19
_JACOBI_SWEEPS = 6


def _uint(dtype: np.dtype[Any]) -> np.dtype[Any]:
    return np.dtype(f"<u{dtype.itemsize}")


def _bits(x: np.ndarray) -> np.ndarray:
    """Raw bit patterns (unsigned, native order) of ``x``'s elements, flat."""
    return np.ascontiguousarray(x, dtype=native(x.dtype)).reshape(-1).view(f"u{x.dtype.itemsize}")


def _specials(dtype: np.dtype[Any]) -> np.ndarray:
    """Bit patterns of NaN, +Inf, -Inf in ``dtype`` (codes 1, 2, 3)."""
    with np.errstate(invalid="ignore", over="ignore"):
        vals = np.array([np.nan, np.inf, -np.inf]).astype(native(dtype))
    return vals.view(f"u{dtype.itemsize}")


# --- coefficient streams ----------------------------------------------------------------------------------
def _varints(values: np.ndarray) -> bytes:
    out = bytearray()
    for v in values.tolist():
        while True:
            byte = v & 0x7F
            v >>= 7
            out.append(byte | (0x80 if v else 0))
            if not v:
                break
    return bytes(out)


def encode_coefficients(q: np.ndarray, boxes: np.ndarray) -> bytes:
    """int64 codes → framed streams (see the module docstring)."""
    data, sizes = get_kernel("wavelet", "encode")(q, boxes)
    return _varints(sizes[:-1]) + data.tobytes()


def decode_coefficients(blob: bytes | memoryview, boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    buf = np.frombuffer(blob, dtype=np.uint8)
    sizes, pos = _read_varints(buf, len(boxes) - 1)
    if pos + sum(sizes) > buf.size:
        raise BlobError(f"wavelet: streams take {buf.size - pos} bytes, their sizes say {sum(sizes)} or more")
    sizes.append(buf.size - pos - sum(sizes))
    q: np.ndarray = get_kernel("wavelet", "decode")(buf[pos:], np.array(sizes, np.int64), boxes, shape)
    return q


def encode_corrections(r: np.ndarray) -> bytes:
    """The nonzero elements of int64 ``r`` (work shape) as a sparse stream."""
    flat = r.reshape(-1)
    positions = np.flatnonzero(flat)
    stream = get_kernel("wavelet", "encode_sparse")(positions, flat[positions])
    return _varints(np.array([positions.size])) + stream.tobytes()


def apply_corrections(blob: bytes | memoryview, rec: np.ndarray, step: float) -> None:
    """``rec += r * step`` for the corrections ``r`` stored in ``blob`` (in place, flat positions)."""
    buf = np.frombuffer(blob, dtype=np.uint8)
    (count,), pos = _read_varints(buf, 1)
    if count > rec.size:
        raise BlobError(f"wavelet: {count} corrections for {rec.size} elements")
    positions, values = get_kernel("wavelet", "decode_sparse")(buf[pos:], count)
    if count and not 0 <= positions[-1] < rec.size:
        raise BlobError("wavelet: correction position out of range")
    flat = rec.reshape(-1)
    flat[positions] += values * step


def _read_varints(buf: np.ndarray, count: int) -> tuple[list[int], int]:
    """``count`` LEB128 varints from the start of ``buf``, and the position after them."""
    out, pos = [], 0
    for _ in range(count):
        v, shift = 0, 0
        while True:
            if pos >= buf.size or shift > 56:
                raise BlobError("wavelet: truncated or corrupt stream header")
            byte = int(buf[pos])
            pos += 1
            v |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        out.append(v)
    return out, pos


def whole_box(shape: tuple[int, ...]) -> np.ndarray:
    return np.array([[[0, n] for n in shape]], np.int64)


# --- NaN / Inf mask ---------------------------------------------------------------------------------------
def encode_mask(x: np.ndarray, finite: np.ndarray) -> dict[str, Any]:
    """Parts keeping the non-finite elements of ``x`` exactly ({} when every element is finite)."""
    if finite.all():
        return {}
    bits = _bits(x).reshape(finite.shape)
    special = bits[~finite]
    known = _specials(x.dtype)
    codes = np.zeros(finite.shape, np.int64)
    cat = np.zeros(special.size, np.int64)
    for j in (2, 1, 0):  # NaN last, so a dtype without Inf (Inf cast to NaN) codes NaN as 1
        cat[special == known[j]] = j + 1
    parts: dict[str, Any] = {}
    other = cat == 0
    if other.any():
        table, index = np.unique(special[other], return_inverse=True)
        cat[other] = 4 + index.reshape(-1)
        parts["specials"] = table.astype(_uint(x.dtype)).tobytes()
    codes[~finite] = cat
    parts["mask"] = encode_coefficients(codes, whole_box(finite.shape))
    return parts


def apply_mask(enc: Encoded, out: np.ndarray, dtype: np.dtype[Any]) -> None:
    """Write the stored non-finite elements into ``out`` (native ``dtype``, work shape) in place."""
    if "mask" not in enc.parts:
        if "specials" in enc.parts:
            raise BlobError("wavelet: a 'specials' table without a mask")
        return
    codes = decode_coefficients(enc.part_bytes("mask"), whole_box(out.shape), out.shape).reshape(-1)
    table = np.zeros(0, _uint(dtype))
    if "specials" in enc.parts:
        table = np.frombuffer(enc.part_bytes("specials"), _uint(dtype))
    if codes.size and (codes.min() < 0 or codes.max() >= 4 + table.size):
        raise BlobError(f"wavelet: mask codes out of range 0..{3 + table.size}")
    lookup = np.concatenate([np.zeros(1, table.dtype), _specials(dtype).astype(table.dtype), table])
    flat = out.reshape(-1).view(f"u{dtype.itemsize}")
    nonfinite = codes != 0
    flat[nonfinite] = lookup[codes[nonfinite]]


# --- exact elements ---------------------------------------------------------------------------------------
def encode_exact(x: np.ndarray, where: np.ndarray) -> bytes:
    """Positions (flat, in the work shape) and raw bits of the elements of ``x`` where ``where``."""
    pos = np.flatnonzero(where)
    deltas = np.diff(pos, prepend=0).astype("<u8")
    values = _bits(x)[pos].astype(_uint(x.dtype))
    body = np.array([pos.size], "<u8").tobytes() + deltas.tobytes() + values.tobytes()
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(body)


def apply_exact(enc: Encoded, out: np.ndarray, dtype: np.dtype[Any]) -> None:
    size = dtype.itemsize
    data = _unzstd(enc.part_bytes("exact"), 8 + out.size * (8 + size))
    count = int(np.frombuffer(data[:8], "<u8")[0]) if len(data) >= 8 else -1
    if count < 0 or len(data) != 8 + count * (8 + size):
        raise BlobError("wavelet: the 'exact' part is inconsistent")
    pos = np.cumsum(np.frombuffer(data[8 : 8 + 8 * count], "<u8"))
    if count and pos[-1] >= out.size:
        raise BlobError("wavelet: exact element position out of range")
    values = np.frombuffer(data[8 + 8 * count :], _uint(dtype))
    out.reshape(-1).view(f"u{size}")[pos.astype(np.int64)] = values


def encode_exact_all(x: np.ndarray) -> dict[str, Any]:
    """The whole array: zstd of its little-endian bytes (``raw``), or the bytes as such (``plain``) when
    zstd does not shrink them (tiny arrays)."""
    arr = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<") if x.dtype.byteorder == ">" else x.dtype)
    plain = arr.reshape(-1).view(np.uint8).tobytes()
    packed = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(plain)
    return {"raw": packed} if len(packed) < len(plain) else {"plain": plain}


def decode_exact_all(enc: Encoded, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    n = math.prod(shape) * dtype.itemsize
    data = bytes(enc.part_bytes("plain")) if "plain" in enc.parts else _unzstd(enc.part_bytes("raw"), n)
    if len(data) != n:
        raise BlobError(f"wavelet: exact data holds {len(data)} bytes, expected {n}")
    little = dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype
    return np.frombuffer(data, little).reshape(shape).astype(dtype)


def _unzstd(data: bytes | memoryview, limit: int) -> bytes:
    try:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=limit)
    except zstandard.ZstdError as exc:
        raise BlobError(f"wavelet: corrupt zstd data: {exc}") from None


# --- smooth fill of masked cells (encoder only) -----------------------------------------------------------
def smooth_fill(x: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``x`` (float64) with its unknown cells replaced by a smooth continuation of the known ones.

    Push-pull: block means of the known cells over a pyramid of 2× coarser grids fill the holes from
    coarse to fine, and a few Jacobi sweeps of the Laplace equation at each level smooth the fill, so the
    wavelet sees no edge at coastlines. Known cells are unchanged; no known cell gives zeros.
    """
    if known.all():
        return x
    if not known.any():
        return np.zeros_like(x)
    return _pull(np.where(known, x, 0.0), known.astype(np.float64))


def _pull(total: np.ndarray, weight: np.ndarray) -> np.ndarray:
    unknown = weight == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(unknown, 0.0, total / np.where(unknown, 1.0, weight))
    if not unknown.any():
        return mean
    coarse = _pull(_halve(total), _halve(weight))
    up = coarse
    for k, n in enumerate(mean.shape):
        up = np.repeat(up, 2, axis=k)[(slice(None),) * k + (slice(0, n),)]
    mean[unknown] = up[unknown]
    axes = [k for k, n in enumerate(mean.shape) if n > 1]
    acc = np.empty_like(mean)
    for _ in range(_JACOBI_SWEEPS if axes else 0):
        acc[...] = 0.0
        for k in axes:  # both neighbours along axis k, the edge repeated at the borders
            a, m = np.moveaxis(acc, k, 0), np.moveaxis(mean, k, 0)
            a[1:] += m[:-1]
            a[:-1] += m[1:]
            a[0] += m[0]
            a[-1] += m[-1]
        mean[unknown] = acc[unknown] / (2 * len(axes))
    return mean


def _halve(a: np.ndarray) -> np.ndarray:
    """Sums over 2×…×2 blocks (odd axes padded with zeros)."""
    pad = [(0, n % 2) for n in a.shape]
    a = np.pad(a, pad)
    shape: list[int] = []
    for n in a.shape:
        shape += [n // 2, 2] if n > 1 else [1, 1]
    return a.reshape(shape).sum(axis=tuple(range(1, len(shape), 2)))
