"""Triton products with a ``quant`` weight (operands: :mod:`tensorpress.kernels.reference.quant_matvec`).

Each program takes a block of rows and walks their columns in chunks, dequantizing every code in registers with
its group's scale and offset and multiplying it with the matching entries of ``x`` (or rows of ``X``): ``W``
never reaches memory. Where every row's codes fill whole 32-bit words (2, 4 or 8 bits, ``n·bits`` a multiple of
32) the codes are read as words, one load per word shared by the lanes that take its codes; other layouts read
each code's one or two bytes from the LSB-first stream. One code's bytes are always inside the stream, so the
stream is used as it is (no padded copy per call). A single right-hand side reduces along the row; a batch of
runs as a float32 matrix product (:func:`~._runtime.f32_product`).
"""

from __future__ import annotations

import functools
from typing import Any

from ..dispatch import kernel
from ._runtime import device, f32_product, pow2, require_triton, to_device, to_host

require_triton()

tl: Any = None  # bound when the kernels are first built (Triton resolves names through the globals)
mul_sum: Any = None
# (rows, columns) per program step: one right-hand side, then a batch. Measured on an H200 at 4096 x 4096, 4-bit:
# 4 rows of 256 took 46 us, 8 x 256 64 us, 2 x 1024 56 us, 16 x 256 117 us (more programs in flight win).
BLOCKS_VEC = (4, 256)
BLOCKS_MAT = (16, 64)


@functools.cache
def _kernels() -> Any:
    global tl, mul_sum
    import triton
    import triton.language as tl

    mul_sum = f32_product()

    @triton.jit
    def quant_matmul(packed, scales, offsets, x, out, rows, n, ngroups, group, batch,  # type: ignore[no-untyped-def]
                     BITS: tl.constexpr, WORDS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
                     BLOCK_B: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        rr = r.to(tl.int64)[:, None]
        bb = tl.arange(0, BLOCK_B)
        acc = tl.zeros((BLOCK_R, BLOCK_B), dtype=tl.float32)
        for k0 in range(0, n, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)
            ok = (r[:, None] < rows) & (kk[None, :] < n)
            if WORDS:  # `packed` holds 32-bit words; each row starts on one
                per = 32 // BITS
                word = tl.load(packed + rr * (n // per) + kk[None, :] // per, mask=ok, other=0)
                code = (word >> ((kk[None, :] % per) * BITS)) & ((1 << BITS) - 1)
            else:
                pos = (rr * n + kk[None, :]) * BITS
                byte = pos // 8
                shift = (pos % 8).to(tl.int32)
                lo = tl.load(packed + byte, mask=ok, other=0).to(tl.int32) & 255
                hi = tl.load(packed + byte + 1, mask=ok & (shift + BITS > 8), other=0).to(tl.int32) & 255
                code = ((lo >> shift) | (hi << (8 - shift))) & ((1 << BITS) - 1)
            g = rr * ngroups + kk[None, :] // group
            s = tl.load(scales + g, mask=ok, other=0.0)
            o = tl.load(offsets + g, mask=ok, other=0.0)
            w = code.to(tl.float32) * s + o
            if BLOCK_B == 1:
                xv = tl.load(x + kk, mask=kk < n, other=0.0)
                acc += tl.sum(w * xv[None, :], axis=1)[:, None]
            else:
                xv = tl.load(x + kk[:, None].to(tl.int64) * batch + bb[None, :],
                             mask=(kk[:, None] < n) & (bb[None, :] < batch), other=0.0)
                acc += mul_sum(w, xv, BLOCK_K >= 16)
        tl.store(out + rr * batch + bb[None, :], acc, mask=(r[:, None] < rows) & (bb[None, :] < batch))

    return quant_matmul


def _matmul(packed: Any, scales: Any, offsets: Any, bits: int, n: int, group: int, x: Any) -> Any:
    import torch

    dev = device()
    quant_matmul = _kernels()
    p, s, o, xx = (to_device(packed, dev, bits=True), to_device(scales, dev), to_device(offsets, dev),
                   to_device(x, dev))
    rows, ngroups = s.shape
    x2 = xx.reshape(xx.shape[0], -1).float().contiguous()
    batch = x2.shape[1]
    out = torch.zeros((rows, batch), dtype=torch.float32, device=dev)
    if rows and n and batch:
        words = bits in (2, 4, 8) and (n * bits) % 32 == 0 and p.numel() * 8 >= rows * n * bits
        if words:
            p = p.reshape(-1)[: rows * n * bits // 8].view(torch.int32)
        block_r, block_k = BLOCKS_VEC if batch == 1 else BLOCKS_MAT
        quant_matmul[(-(-rows // block_r),)](p, s.float().contiguous(), o.float().contiguous(), x2, out, rows, n,
                                             ngroups, group, batch, BITS=bits, WORDS=words, BLOCK_R=block_r,
                                             BLOCK_K=block_k, BLOCK_B=pow2(batch))
    return to_host(out.reshape(rows) if xx.ndim == 1 else out, x)


@kernel("quant", "matvec", "triton")
def matvec(packed: Any, scales: Any, offsets: Any, bits: int, n: int, group: int, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.quant_matvec.matvec`."""
    return _matmul(packed, scales, offsets, bits, n, group, x)


@kernel("quant", "matmul", "triton")
def matmul(packed: Any, scales: Any, offsets: Any, bits: int, n: int, group: int, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.quant_matvec.matmul`."""
    return _matmul(packed, scales, offsets, bits, n, group, x)
