"""Triton products with a ``lowrank`` weight (operands: :mod:`tensorpress.kernels.reference.lowrank`).

Two launches of one small kernel, ``out = A · X`` for a factor ``A`` (m × k, float16 or float32) and float32
``X`` (k × batch): first ``t = V · x``, then ``y = U · t``. Each program takes a block of rows of ``A``.
"""

from __future__ import annotations

import functools
from typing import Any

from ..dispatch import kernel
from ._runtime import device, f32_product, pow2, require_triton, to_device, to_host

require_triton()

tl: Any = None  # bound when the kernels are first built (Triton resolves names through the globals)
mul_sum: Any = None
BLOCK_R = 16
BLOCK_K = 64


@functools.cache
def _kernels() -> Any:
    global tl, mul_sum
    import triton
    import triton.language as tl

    mul_sum = f32_product()

    @triton.jit
    def rows_dot(a, x, out, m, k, batch,  # type: ignore[no-untyped-def]
                 BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        bb = tl.arange(0, BLOCK_B)
        acc = tl.zeros((BLOCK_R, BLOCK_B), dtype=tl.float32)
        for k0 in range(0, k, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)
            av = tl.load(a + r[:, None].to(tl.int64) * k + kk[None, :], mask=(r[:, None] < m) & (kk[None, :] < k),
                         other=0.0).to(tl.float32)
            xv = tl.load(x + kk[:, None].to(tl.int64) * batch + bb[None, :],
                         mask=(kk[:, None] < k) & (bb[None, :] < batch), other=0.0)
            acc += mul_sum(av, xv, BLOCK_K >= 16)
        tl.store(out + r[:, None].to(tl.int64) * batch + bb[None, :], acc,
                 mask=(r[:, None] < m) & (bb[None, :] < batch))

    return rows_dot


def _rows_dot(a: Any, x2: Any) -> Any:
    import torch

    m, k = a.shape
    batch = x2.shape[1]
    out = torch.zeros((m, batch), dtype=torch.float32, device=x2.device)
    if m and k and batch:
        _kernels()[(-(-m // BLOCK_R),)](a.contiguous(), x2.contiguous(), out, m, k, batch, BLOCK_R=BLOCK_R,
                                        BLOCK_K=BLOCK_K, BLOCK_B=pow2(batch))
    return out


def _product(u: Any, v: Any, x: Any) -> Any:
    dev = device()
    uu, vv, xx = to_device(u, dev), to_device(v, dev), to_device(x, dev)
    y = _rows_dot(uu, _rows_dot(vv, xx.reshape(xx.shape[0], -1).float()))
    return to_host(y.reshape(uu.shape[0]) if xx.ndim == 1 else y, x)


@kernel("lowrank", "matvec", "triton")
def matvec(u: Any, v: Any, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.lowrank.matvec`."""
    return _product(u, v, x)


@kernel("lowrank", "matmul", "triton")
def matmul(u: Any, v: Any, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.lowrank.matmul`."""
    return _product(u, v, x)
