"""Triton products with a ``quant`` weight (operands: :mod:`tensorpress.kernels.reference.quant_matvec`).

Each program takes a block of rows and walks their columns in chunks: every code is read straight from the
packed LSB-first stream (one or two bytes, any width 2–8), dequantized in registers with its group's scale
and offset, and multiplied with the matching entries of ``x`` (or rows of ``X``) — ``W`` never reaches
memory.
"""

from __future__ import annotations

import functools
from typing import Any

from ..dispatch import kernel
from ._runtime import device, require_triton, to_device, to_host

require_triton()

tl: Any = None  # bound when the kernels are first built (Triton resolves names through the globals)
BLOCK_R = 16
BLOCK_K = 64


@functools.cache
def _kernels() -> Any:
    global tl
    import triton
    import triton.language as tl

    @triton.jit
    def quant_matmul(packed, scales, offsets, x, out, rows, n, ngroups, group, batch,  # type: ignore[no-untyped-def]
                     BITS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        bb = tl.arange(0, BLOCK_B)
        acc = tl.zeros((BLOCK_R, BLOCK_B), dtype=tl.float32)
        for k0 in range(0, n, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)
            ok = (r[:, None] < rows) & (kk[None, :] < n)
            pos = (r[:, None].to(tl.int64) * n + kk[None, :]) * BITS
            byte = pos // 8
            shift = (pos % 8).to(tl.int32)
            lo = tl.load(packed + byte, mask=ok, other=0).to(tl.int32) & 255
            hi = tl.load(packed + byte + 1, mask=ok & (shift + BITS > 8), other=0).to(tl.int32) & 255
            code = ((lo >> shift) | (hi << (8 - shift))) & ((1 << BITS) - 1)
            g = r[:, None].to(tl.int64) * ngroups + kk[None, :] // group
            s = tl.load(scales + g, mask=ok, other=0.0)
            o = tl.load(offsets + g, mask=ok, other=0.0)
            w = code.to(tl.float32) * s + o
            xv = tl.load(x + kk[:, None].to(tl.int64) * batch + bb[None, :],
                         mask=(kk[:, None] < n) & (bb[None, :] < batch), other=0.0)
            acc += tl.sum(w[:, :, None] * xv[None, :, :], axis=1)
        tl.store(out + r[:, None].to(tl.int64) * batch + bb[None, :], acc,
                 mask=(r[:, None] < rows) & (bb[None, :] < batch))

    return quant_matmul


def _matmul(packed: Any, scales: Any, offsets: Any, bits: int, n: int, group: int, x: Any) -> Any:
    import torch

    dev = device()
    quant_matmul = _kernels()
    p, s, o, xx = (to_device(packed, dev, bits=True), to_device(scales, dev), to_device(offsets, dev),
                   to_device(x, dev))
    rows, ngroups = s.shape
    x2 = xx.reshape(xx.shape[0], -1).contiguous()
    batch = x2.shape[1]
    out = torch.zeros((rows, batch), dtype=torch.float32, device=dev)
    if rows and n and batch:
        p = torch.cat([p, torch.zeros(1, dtype=p.dtype, device=dev)])  # the reader may touch one more byte
        quant_matmul[(-(-rows // BLOCK_R),)](p, s.float().contiguous(), o.float().contiguous(), x2, out, rows, n,
                                            ngroups, group, batch, BITS=bits, BLOCK_R=BLOCK_R, BLOCK_K=BLOCK_K,
                                            BLOCK_B=max(1, 1 << (batch - 1).bit_length()))
    return to_host(out.reshape(rows) if xx.ndim == 1 else out, x)


@kernel("quant", "matvec", "triton")
def matvec(packed: Any, scales: Any, offsets: Any, bits: int, n: int, group: int, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.quant_matvec.matvec`."""
    return _matmul(packed, scales, offsets, bits, n, group, x)


@kernel("quant", "matmul", "triton")
def matmul(packed: Any, scales: Any, offsets: Any, bits: int, n: int, group: int, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.quant_matvec.matmul`."""
    return _matmul(packed, scales, offsets, bits, n, group, x)
