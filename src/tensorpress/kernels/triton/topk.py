"""Triton kernels for ``topk`` (operands: :mod:`tensorpress.kernels.reference.topk`).

``spmv_dense``: a program per (token, block of output features) gathers the weight rows of the token's kept
positions — only its block of columns — and accumulates them scaled by the kept values.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..dispatch import kernel
from ._runtime import device, require_triton, to_device, to_host

require_triton()

tl: Any = None  # triton.language, bound as a module global when the kernels are first built
BLOCK_K = 32
BLOCK_O = 128


@functools.cache
def _kernels() -> Any:
    global tl
    import triton
    import triton.language as tl

    @triton.jit
    def topk_spmv(vals, idx, wt, out, k, n_out, BLOCK_K: tl.constexpr, BLOCK_O: tl.constexpr):  # type: ignore[no-untyped-def]
        t = tl.program_id(0).to(tl.int64)
        o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
        oko = o < n_out
        acc = tl.zeros((BLOCK_O,), dtype=tl.float32)
        for k0 in range(0, k, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)
            okk = kk < k
            v = tl.load(vals + t * k + kk, mask=okk, other=0.0).to(tl.float32)
            row = tl.load(idx + t * k + kk, mask=okk, other=0).to(tl.int64)
            w = tl.load(wt + row[:, None] * n_out + o[None, :], mask=okk[:, None] & oko[None, :], other=0.0)
            acc += tl.sum(v[:, None] * w.to(tl.float32), axis=0)
        tl.store(out + t * n_out + o, acc, mask=oko)

    @triton.jit
    def topk_decode(vals, idx, out, count, k, n, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
        e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        ok = e < count
        col = tl.load(idx + e, mask=ok, other=0).to(tl.int64)
        tl.store(out + (e // k) * n + col, tl.load(vals + e, mask=ok), mask=ok)

    return topk_spmv, topk_decode


@kernel("topk", "spmv_dense", "triton")
def spmv_dense(values: Any, indices: Any, wt: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.topk.spmv_dense`."""
    import torch

    dev = device()
    topk_spmv, _ = _kernels()
    v, i, w = to_device(values, dev), to_device(indices, dev), to_device(wt, dev)
    tokens, k = v.shape
    n_out = w.shape[1]
    out = torch.zeros((tokens, n_out), dtype=torch.float32, device=dev)
    if tokens and k and n_out:
        topk_spmv[(tokens, -(-n_out // BLOCK_O))](v, i, w, out, k, n_out, BLOCK_K=BLOCK_K, BLOCK_O=BLOCK_O)
    return to_host(out, values)


@kernel("topk", "decode", "triton")
def decode(values: Any, indices: Any, n: int) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.topk.decode` (bits are moved: any dtype)."""
    import torch

    dev = device()
    _, topk_decode = _kernels()
    v, i = to_device(values, dev, bits=True), to_device(indices, dev)
    tokens, k = v.shape
    out = torch.zeros((tokens, n), dtype=v.dtype, device=dev)
    if v.numel():
        block = 256
        topk_decode[(-(-v.numel() // block),)](v, i, out, v.numel(), k, n, BLOCK=block)
    dtype = values.dtype if isinstance(values, np.ndarray) else None
    return to_host(out, values, dtype)
