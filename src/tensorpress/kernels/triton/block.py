"""Triton kernels for ``block`` (operands: :mod:`tensorpress.kernels.reference.block`).

One program per block-row: for each row inside the block it takes the kept blocks in chunks, loads their
values and the ``bw`` consecutive entries of ``x`` (or rows of ``X``) each block covers, and sums.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..dispatch import kernel
from ._runtime import device, pow2, require_triton, to_device, to_host

require_triton()

tl: Any = None  # triton.language, bound as a module global when the kernels are first built
BLOCK_Q = 32  # kept blocks per step


@functools.cache
def _kernels() -> Any:
    global tl
    import triton
    import triton.language as tl

    @triton.jit
    def block_matmul(vals, cols, x, out, kept, batch, BH: tl.constexpr, BW: tl.constexpr, BWP: tl.constexpr,  # type: ignore[no-untyped-def]
                     BLOCK_Q: tl.constexpr, BLOCK_B: tl.constexpr):
        rb = tl.program_id(0).to(tl.int64)
        bb = tl.arange(0, BLOCK_B)
        j = tl.arange(0, BWP)
        for i in tl.static_range(BH):
            acc = tl.zeros((BLOCK_B,), dtype=tl.float32)
            for q0 in range(0, kept, BLOCK_Q):
                q = q0 + tl.arange(0, BLOCK_Q)
                okq = q < kept
                c = tl.load(cols + rb * kept + q, mask=okq, other=0).to(tl.int64)
                ok = okq[:, None] & (j[None, :] < BW)
                v = tl.load(vals + ((rb * kept + q[:, None]) * BH + i) * BW + j[None, :], mask=ok, other=0.0)
                xcol = c[:, None] * BW + j[None, :]
                xv = tl.load(x + xcol[:, :, None] * batch + bb[None, None, :],
                             mask=ok[:, :, None] & (bb[None, None, :] < batch), other=0.0)
                acc += tl.sum(tl.sum(v.to(tl.float32)[:, :, None] * xv, axis=1), axis=0)
            tl.store(out + (rb * BH + i) * batch + bb, acc, mask=bb < batch)

    @triton.jit
    def block_decode(vals, cols, out, kept, width, BH: tl.constexpr, BW: tl.constexpr, BWP: tl.constexpr,  # type: ignore[no-untyped-def]
                     BLOCK_Q: tl.constexpr):
        rb = tl.program_id(0).to(tl.int64)
        j = tl.arange(0, BWP)
        for i in tl.static_range(BH):
            for q0 in range(0, kept, BLOCK_Q):
                q = q0 + tl.arange(0, BLOCK_Q)
                okq = q < kept
                c = tl.load(cols + rb * kept + q, mask=okq, other=0).to(tl.int64)
                ok = okq[:, None] & (j[None, :] < BW)
                v = tl.load(vals + ((rb * kept + q[:, None]) * BH + i) * BW + j[None, :], mask=ok)
                tl.store(out + (rb * BH + i) * width + c[:, None] * BW + j[None, :], v, mask=ok)

    return block_matmul, block_decode



def _matmul(values: Any, columns: Any, x: Any) -> Any:
    import torch

    dev = device()
    block_matmul, _ = _kernels()
    v, c, xx = to_device(values, dev), to_device(columns, dev), to_device(x, dev)
    rb, kept, bh, bw = v.shape
    x2 = xx.reshape(xx.shape[0], -1).contiguous()
    batch = x2.shape[1]
    out = torch.zeros((rb * bh, batch), dtype=torch.float32, device=dev)
    if rb and kept and batch:
        block_matmul[(rb,)](v, c, x2, out, kept, batch, BH=bh, BW=bw, BWP=pow2(bw), BLOCK_Q=BLOCK_Q,
                            BLOCK_B=pow2(batch))
    return to_host(out.reshape(rb * bh) if xx.ndim == 1 else out, x)


@kernel("block", "matvec", "triton")
def matvec(values: Any, columns: Any, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.block.matvec`."""
    return _matmul(values, columns, x)


@kernel("block", "matmul", "triton")
def matmul(values: Any, columns: Any, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.block.matmul`."""
    return _matmul(values, columns, x)


@kernel("block", "decode", "triton")
def decode(values: Any, columns: Any, rows: int, cols: int) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.block.decode` (bits are moved: any dtype)."""
    import torch

    dev = device()
    _, block_decode = _kernels()
    v, c = to_device(values, dev, bits=True), to_device(columns, dev)
    rb, kept, bh, bw = v.shape
    width = -(-cols // bw) * bw
    out = torch.zeros((rb * bh, width), dtype=v.dtype, device=dev)
    if rb and kept:
        block_decode[(rb,)](v, c, out, kept, width, BH=bh, BW=bw, BWP=pow2(bw), BLOCK_Q=BLOCK_Q)
    dtype = values.dtype if isinstance(values, np.ndarray) else None
    return to_host(out[:rows, :cols].contiguous(), values, dtype)
