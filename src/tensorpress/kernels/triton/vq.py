"""Triton products with a ``vq`` weight, straight from the packed codes and the codebooks (operands:
:mod:`tensorpress.kernels.reference.vq`); the same two paths as the Numba kernels
(:mod:`tensorpress.kernels.numba.vq`).

- codebook sets of many rows: ``tabulate`` (one program per set and sub-vector position) writes
  ``table[g, j, c, k, b] = book[g, c, k] · X[j·dim : (j+1)·dim, b]``; ``gather`` (one program per block of
  rows) reads each row's codes from the bit stream and sums the table entries they point at;
- sets of few rows: ``gather`` without a table, the codewords loaded by their codes and multiplied with the
  matching rows of ``X``, one element of the sub-vector at a time.

Codes are read from the LSB-first stream as three bytes (the stream is padded) shifted and masked.
"""

from __future__ import annotations

import functools
from typing import Any

from ..dispatch import kernel
from ..reference.vq import uses_table
from ._runtime import device, f32_product, pow2, require_triton, to_device, to_host

require_triton()

tl: Any = None  # bound when the kernels are first built (Triton resolves names through the globals)
mul_sum: Any = None
BLOCK_R = 16
BLOCK_J = 16
BLOCK_K = 64


@functools.cache
def _kernels() -> Any:
    global tl, mul_sum
    import triton
    import triton.language as tl

    mul_sum = f32_product()

    @triton.jit
    def tabulate(book, x, table, ncb, k, dim, cols, nvec, batch,  # type: ignore[no-untyped-def]
                 BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_B: tl.constexpr):
        task = tl.program_id(0)
        g = task // nvec
        j = task - g * nvec
        t = tl.arange(0, BLOCK_D)
        bb = tl.arange(0, BLOCK_B)
        n = tl.minimum(dim, cols - j * dim)
        xv = tl.load(x + (j * dim + t[:, None]).to(tl.int64) * batch + bb[None, :],
                     mask=(t[:, None] < n) & (bb[None, :] < batch), other=0.0)
        for c in range(ncb):
            for k0 in range(0, k, BLOCK_K):
                kk = k0 + tl.arange(0, BLOCK_K)
                w = tl.load(book + ((g * ncb + c) * k + kk[:, None]).to(tl.int64) * dim + t[None, :],
                            mask=(kk[:, None] < k) & (t[None, :] < n), other=0.0)
                v = mul_sum(w, xv, BLOCK_D >= 16)
                dst = (((g * nvec + j) * ncb + c) * k + kk[:, None]).to(tl.int64) * batch + bb[None, :]
                tl.store(table + dst, v, mask=(kk[:, None] < k) & (bb[None, :] < batch))

    @triton.jit
    def gather(table, book, x, packed, scales, out, rows, cols, nvec, ncb, k, dim, bits, per,  # type: ignore[no-untyped-def]
               batch, TABLE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_B: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        bb = tl.arange(0, BLOCK_B)
        g = (r // per).to(tl.int64)
        acc = tl.zeros((BLOCK_R, BLOCK_B), dtype=tl.float32)
        for j0 in range(0, nvec, BLOCK_J):
            jj = j0 + tl.arange(0, BLOCK_J)
            live = (r[:, None] < rows) & (jj[None, :] < nvec)
            for c in range(ncb):
                pos = ((r[:, None].to(tl.int64) * nvec + jj[None, :]) * ncb + c) * bits
                byte = pos >> 3
                word = (tl.load(packed + byte, mask=live, other=0).to(tl.int32) & 0xFF) \
                    | ((tl.load(packed + byte + 1, mask=live, other=0).to(tl.int32) & 0xFF) << 8) \
                    | ((tl.load(packed + byte + 2, mask=live, other=0).to(tl.int32) & 0xFF) << 16)
                code = (word >> (pos & 7).to(tl.int32)) & ((1 << bits) - 1)
                if TABLE:
                    at = ((g[:, None] * nvec + jj[None, :]) * ncb + c) * k + code
                    v = tl.load(table + at[:, :, None] * batch + bb[None, None, :],
                                mask=live[:, :, None] & (bb[None, None, :] < batch), other=0.0)
                    acc += tl.sum(v, axis=1)
                else:
                    word_at = ((g[:, None] * ncb + c) * k + code) * dim
                    for t in range(dim):
                        col = jj * dim + t
                        w = tl.load(book + word_at + t, mask=live & (col[None, :] < cols), other=0.0)
                        xv = tl.load(x + col[:, None].to(tl.int64) * batch + bb[None, :],
                                     mask=(col[:, None] < cols) & (bb[None, :] < batch), other=0.0)
                        acc += mul_sum(w, xv, BLOCK_J >= 16)
        s = tl.load(scales + r, mask=r < rows, other=0.0)
        tl.store(out + r[:, None].to(tl.int64) * batch + bb[None, :], acc * s[:, None],
                 mask=(r[:, None] < rows) & (bb[None, :] < batch))

    return tabulate, gather



def _product(book: Any, packed: Any, scales: Any, bits: int, per: int, cols: int, x: Any) -> Any:
    import torch

    dev = device()
    bk, pk, sc, xx = to_device(book, dev), to_device(packed, dev, bits=True), to_device(scales, dev), to_device(x, dev)
    x2 = xx.reshape(xx.shape[0], -1).float().contiguous()
    groups, ncb, k, dim = (int(v) for v in bk.shape)
    rows, batch = int(sc.shape[0]), int(x2.shape[1])
    nvec = -(-cols // dim)
    out = torch.zeros((rows, batch), dtype=torch.float32, device=x2.device)
    if rows and cols and batch:
        tabulate, gather = _kernels()
        table_on = uses_table(per, k, dim)
        bb = pow2(batch)
        table = torch.empty((groups * nvec * ncb * k * batch if table_on else 1,), dtype=torch.float32,
                            device=x2.device)
        bkf = bk.float().contiguous()
        if table_on:  # codeword tiles at least 16 wide: their product with x is then float32-accurate (f32_product)
            tabulate[(groups * nvec,)](bkf, x2, table, ncb, k, dim, cols, nvec, batch, BLOCK_K=min(BLOCK_K, pow2(k)),
                                       BLOCK_D=max(16, pow2(dim)), BLOCK_B=bb)
        gather[(-(-rows // BLOCK_R),)](table, bkf, x2, pk.contiguous(), sc.float().contiguous(), out, rows, cols, nvec,
                                       ncb, k, dim, bits, per, batch, TABLE=table_on, BLOCK_R=BLOCK_R,
                                       BLOCK_J=BLOCK_J, BLOCK_B=bb)
    return to_host(out.reshape(rows) if xx.ndim == 1 else out, x)


@kernel("vq", "matvec", "triton")
def matvec(book: Any, packed: Any, scales: Any, bits: int, per: int, cols: int, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.vq.matvec`."""
    return _product(book, packed, scales, bits, per, cols, x)


@kernel("vq", "matmul", "triton")
def matmul(book: Any, packed: Any, scales: Any, bits: int, per: int, cols: int, x: Any) -> Any:
    """Same contract as :func:`tensorpress.kernels.reference.vq.matmul`."""
    return _product(book, packed, scales, bits, per, cols, x)
