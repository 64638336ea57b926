"""Triton products with a ``csr`` matrix (operands: :mod:`tensorpress.kernels.reference.csr`): one program
per row walks its stored values in chunks and gathers the matching entries of ``x`` (or rows of ``X``)."""

from __future__ import annotations

import functools
from typing import Any

from ..dispatch import kernel
from ._runtime import device, pow2, require_triton, to_device, to_host

require_triton()

tl: Any = None  # bound when the kernels are first built (Triton resolves names through the globals)
CHUNK = 32


@functools.cache
def _kernels() -> Any:
    global tl
    import triton
    import triton.language as tl

    @triton.jit
    def csr_matmul(indptr, indices, values, x, out, batch,  # type: ignore[no-untyped-def]
                   CHUNK: tl.constexpr, BLOCK_B: tl.constexpr):
        r = tl.program_id(0).to(tl.int64)
        start = tl.load(indptr + r)
        stop = tl.load(indptr + r + 1)
        bb = tl.arange(0, BLOCK_B)
        acc = tl.zeros((BLOCK_B,), dtype=tl.float32)
        for k0 in range(start, stop, CHUNK):
            k = k0 + tl.arange(0, CHUNK)
            ok = k < stop
            v = tl.load(values + k, mask=ok, other=0.0).to(tl.float32)
            c = tl.load(indices + k, mask=ok, other=0).to(tl.int64)
            xv = tl.load(x + c[:, None] * batch + bb[None, :], mask=ok[:, None] & (bb[None, :] < batch), other=0.0)
            acc += tl.sum(v[:, None] * xv, axis=0)
        tl.store(out + r * batch + bb, acc, mask=bb < batch)

    return csr_matmul


def _product(indptr: Any, indices: Any, values: Any, x: Any) -> Any:
    import torch

    dev = device()
    ip, ix, v, xx = to_device(indptr, dev), to_device(indices, dev), to_device(values, dev), to_device(x, dev)
    rows = ip.shape[0] - 1
    x2 = xx.reshape(xx.shape[0], -1).float().contiguous()
    batch = x2.shape[1]
    out = torch.zeros((rows, batch), dtype=torch.float32, device=dev)
    if rows and batch and v.numel():
        _kernels()[(rows,)](ip.to(torch.int64), ix, v, x2, out, batch, CHUNK=CHUNK,
                            BLOCK_B=pow2(batch))
    return to_host(out.reshape(rows) if xx.ndim == 1 else out, x)


@kernel("csr", "matvec", "triton")
def matvec(indptr: Any, indices: Any, values: Any, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.csr.matvec`."""
    return _product(indptr, indices, values, x)


@kernel("csr", "matmul", "triton")
def matmul(indptr: Any, indices: Any, values: Any, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.csr.matmul`."""
    return _product(indptr, indices, values, x)
