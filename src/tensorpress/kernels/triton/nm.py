"""Triton kernels for ``nm`` (layout: :mod:`tensorpress.kernels.reference.nm`).

Each program takes a block of rows and walks their kept values in chunks: the positions are read straight
from the packed bit stream (``ceil(log2 m)`` bits each), the matching entries of ``x`` (or rows of ``X``)
are gathered, and the products summed — the dense matrix is never formed.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..dispatch import kernel
from ..reference.nm import index_bits
from ._runtime import device, pow2, require_triton, to_device, to_host

require_triton()

# bound as module globals when the kernels are first built (Triton resolves names through the globals)
tl: Any = None
positions: Any = None
BLOCK_R = 16
BLOCK_K = 64


@functools.cache
def _kernels() -> Any:
    global tl, positions
    import triton
    import triton.language as tl

    @triton.jit
    def positions(packed, e, ok, BITS: tl.constexpr):  # type: ignore[no-untyped-def]
        """Position (0 … m-1) of kept values ``e`` (int64 element numbers) in the LSB-first stream, where ``ok``
        (0 elsewhere). Only the bytes that hold a position's bits are read, so the stream needs no padding."""
        pos = e * BITS
        byte = pos // 8
        shift = (pos % 8).to(tl.int32)
        lo = tl.load(packed + byte, mask=ok & (BITS > 0), other=0).to(tl.int32) & 255
        hi = tl.load(packed + byte + 1, mask=ok & (shift + BITS > 8), other=0).to(tl.int32) & 255
        return ((lo >> shift) | (hi << (8 - shift))) & ((1 << BITS) - 1)

    @triton.jit
    def nm_matmul(vals, packed, x, out, rows, k_row, batch, N: tl.constexpr, M: tl.constexpr,  # type: ignore[no-untyped-def]
                  BITS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        bb = tl.arange(0, BLOCK_B)
        acc = tl.zeros((BLOCK_R, BLOCK_B), dtype=tl.float32)
        for k0 in range(0, k_row, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)
            ok = (r[:, None] < rows) & (kk[None, :] < k_row)
            e = r[:, None].to(tl.int64) * k_row + kk[None, :]
            v = tl.load(vals + e, mask=ok, other=0.0).to(tl.float32)
            p = positions(packed, e, ok, BITS)  # 0 when BITS is 0 (m = 1)
            col = (kk[None, :] // N) * M + p
            xv = tl.load(x + col[:, :, None].to(tl.int64) * batch + bb[None, None, :],
                         mask=ok[:, :, None] & (bb[None, None, :] < batch), other=0.0)
            acc += tl.sum(v[:, :, None] * xv, axis=1)
        tl.store(out + r[:, None].to(tl.int64) * batch + bb[None, :], acc,
                 mask=(r[:, None] < rows) & (bb[None, :] < batch))

    @triton.jit
    def nm_decode(vals, packed, out, count, k_row, padded, N: tl.constexpr, M: tl.constexpr,  # type: ignore[no-untyped-def]
                  BITS: tl.constexpr, BLOCK: tl.constexpr):
        e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        ok = e < count
        p = positions(packed, e, ok, BITS)
        r = e // k_row
        kk = e % k_row
        tl.store(out + r * padded + (kk // N) * M + p, tl.load(vals + e, mask=ok), mask=ok)

    return nm_matmul, nm_decode


def _matmul(values: Any, packed: Any, n: int, m: int, x: Any) -> Any:
    import torch

    dev = device()
    nm_matmul, _ = _kernels()
    v, p, xx = to_device(values, dev), to_device(packed, dev, bits=True), to_device(x, dev)
    rows, k_row = v.shape
    x2 = xx.reshape(xx.shape[0], -1)
    batch = x2.shape[1]
    out = torch.zeros((rows, batch), dtype=torch.float32, device=dev)
    if rows and k_row and batch:
        nm_matmul[(-(-rows // BLOCK_R),)](v, p, x2.contiguous(), out, rows, k_row, batch, N=n, M=m,
                                         BITS=index_bits(m), BLOCK_R=BLOCK_R, BLOCK_K=BLOCK_K,
                                         BLOCK_B=pow2(batch))
    return to_host(out.reshape(rows) if xx.ndim == 1 else out, x)


@kernel("nm", "matvec", "triton")
def matvec(values: Any, packed: Any, n: int, m: int, cols: int, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.nm.matvec`."""
    return _matmul(values, packed, n, m, x)


@kernel("nm", "matmul", "triton")
def matmul(values: Any, packed: Any, n: int, m: int, cols: int, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.nm.matmul`."""
    return _matmul(values, packed, n, m, x)


@kernel("nm", "decode", "triton")
def decode(values: Any, packed: Any, n: int, m: int, cols: int) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.nm.decode` (bits are moved: any dtype)."""
    import torch

    dev = device()
    _, nm_decode = _kernels()
    v, p = to_device(values, dev, bits=True), to_device(packed, dev, bits=True)
    rows, k_row = v.shape
    groups = -(-cols // m)
    out = torch.zeros((rows, groups * m), dtype=v.dtype, device=dev)
    if v.numel():
        block = 256
        nm_decode[(-(-v.numel() // block),)](v, p, out, v.numel(), k_row, groups * m, N=n, M=m,
                                             BITS=index_bits(m), BLOCK=block)
    out = out[:, :cols].contiguous()
    dtype = values.dtype if isinstance(values, np.ndarray) else None
    return to_host(out, values, dtype)
