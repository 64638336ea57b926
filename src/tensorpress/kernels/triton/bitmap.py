"""Triton kernels for ``bitmap`` (operands: :mod:`tensorpress.kernels.reference.bitmap`).

One program per row walks its bitmap bytes in chunks: the popcounts of the bytes, prefix-summed across
the chunk, give where each byte's values start; bit ``j`` of a byte then finds its value at that start plus
the popcount of the bits below it. Values and the matching ``x`` entries are loaded with masks, so the
dense row is never formed.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..dispatch import kernel
from ._runtime import device, pow2, require_triton, to_device, to_host

require_triton()

# bound as module globals when the kernels are first built (Triton resolves names through the globals)
tl: Any = None
popcount8: Any = None
CHUNK = 64  # bitmap bytes per step


@functools.cache
def _kernels() -> Any:
    global tl, popcount8
    import triton
    import triton.language as tl

    @triton.jit
    def popcount8(b):
        b = (b & 0x55) + ((b >> 1) & 0x55)
        b = (b & 0x33) + ((b >> 2) & 0x33)
        return (b & 0x0F) + (b >> 4)

    @triton.jit
    def bitmap_matmul(bitmap, vals, offsets, x, out, nbytes, batch, CHUNK: tl.constexpr, BLOCK_B: tl.constexpr):  # type: ignore[no-untyped-def]
        r = tl.program_id(0).to(tl.int64)
        bb = tl.arange(0, BLOCK_B)
        acc = tl.zeros((BLOCK_B,), dtype=tl.float32)
        start = tl.load(offsets + r)
        for b0 in range(0, nbytes, CHUNK):
            b = b0 + tl.arange(0, CHUNK)
            ok = b < nbytes
            byte = tl.load(bitmap + r * nbytes + b, mask=ok, other=0).to(tl.int32) & 255
            count = popcount8(byte)
            first = start + tl.cumsum(count, axis=0) - count
            for j in tl.static_range(8):
                marked = ok & (((byte >> j) & 1) == 1)
                v = tl.load(vals + first + popcount8(byte & ((1 << j) - 1)), mask=marked, other=0.0)
                col = (8 * b + j).to(tl.int64)
                xv = tl.load(x + col[:, None] * batch + bb[None, :], mask=marked[:, None] & (bb[None, :] < batch),
                             other=0.0)
                acc += tl.sum(v.to(tl.float32)[:, None] * xv, axis=0)
            start += tl.sum(count, axis=0)
        tl.store(out + r * batch + bb, acc, mask=bb < batch)

    @triton.jit
    def bitmap_decode(bitmap, vals, offsets, out, nbytes, CHUNK: tl.constexpr):  # type: ignore[no-untyped-def]
        r = tl.program_id(0).to(tl.int64)
        start = tl.load(offsets + r)
        for b0 in range(0, nbytes, CHUNK):
            b = b0 + tl.arange(0, CHUNK)
            ok = b < nbytes
            byte = tl.load(bitmap + r * nbytes + b, mask=ok, other=0).to(tl.int32) & 255
            count = popcount8(byte)
            first = start + tl.cumsum(count, axis=0) - count
            for j in tl.static_range(8):
                marked = ok & (((byte >> j) & 1) == 1)
                v = tl.load(vals + first + popcount8(byte & ((1 << j) - 1)), mask=marked)
                tl.store(out + r * nbytes * 8 + 8 * b + j, v, mask=marked)
            start += tl.sum(count, axis=0)

    return bitmap_matmul, bitmap_decode


def _matmul(bitmap: Any, values: Any, offsets: Any, x: Any) -> Any:
    import torch

    dev = device()
    bitmap_matmul, _ = _kernels()
    bm, v, off, xx = (to_device(bitmap, dev, bits=True), to_device(values, dev), to_device(offsets, dev),
                      to_device(x, dev))
    rows, nbytes = bm.shape
    x2 = xx.reshape(xx.shape[0], -1).contiguous()
    batch = x2.shape[1]
    out = torch.zeros((rows, batch), dtype=torch.float32, device=dev)
    if rows and nbytes and batch and v.numel():
        bitmap_matmul[(rows,)](bm, v, off, x2, out, nbytes, batch, CHUNK=CHUNK,
                               BLOCK_B=pow2(batch))
    return to_host(out.reshape(rows) if xx.ndim == 1 else out, x)


@kernel("bitmap", "matvec", "triton")
def matvec(bitmap: Any, values: Any, offsets: Any, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.bitmap.matvec`."""
    return _matmul(bitmap, values, offsets, x)


@kernel("bitmap", "matmul", "triton")
def matmul(bitmap: Any, values: Any, offsets: Any, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.bitmap.matmul`."""
    return _matmul(bitmap, values, offsets, x)


@kernel("bitmap", "decode", "triton")
def decode(bitmap: Any, values: Any, offsets: Any, cols: int) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.bitmap.decode` (bits are moved: any dtype)."""
    import torch

    dev = device()
    _, bitmap_decode = _kernels()
    bm, v, off = to_device(bitmap, dev, bits=True), to_device(values, dev, bits=True), to_device(offsets, dev)
    rows, nbytes = bm.shape
    out = torch.zeros((rows, nbytes * 8), dtype=v.dtype, device=dev)
    if rows and nbytes and v.numel():
        bitmap_decode[(rows,)](bm, v, off, out, nbytes, CHUNK=CHUNK)
    dtype = values.dtype if isinstance(values, np.ndarray) else None
    return to_host(out[:, :cols].contiguous(), values, dtype)
