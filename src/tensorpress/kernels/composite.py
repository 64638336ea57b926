"""``W · x`` on any compressed 2-D weight that can be multiplied without decoding it, composites included.

:func:`product` turns an :class:`~tensorpress.Encoded` weight (out × in) into a callable ``x → W · x``
with its kernel operands extracted once (what a layer keeps between calls):

- formats with a ``components`` method (``compensated``, ``gear``, ``outliers``: nested data whose decodes
  sum to the tensor) → :class:`SumProduct`, the sum of the parts' products — base + low-rank + sparse, none
  of them densified;
- ``lowrank`` (``factors``: U, V) → :class:`LowRankProduct`, ``U·(V·x)``;
- ``csr`` (``csr_parts``) → :class:`CSRProduct`;
- ``vq`` (``parts_of``: codebooks, codes, scales) → :class:`VQProduct`, a lookup-matvec on the packed codes;
- formats whose ``prepare`` gives a callable product (``quant``, ``nm``, ``bitmap``, ``block``) → that.

Anything else (or a layout the kernels do not take, such as a weight quantized along its output axis) gives
``None``: the caller decodes instead. Each product takes ``x`` of shape (in,) or (in, batch), any float
dtype, and returns float32 (out,) or (out, batch); ``backend`` picks the kernels (default: the dispatch
order, numba first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..core.encoded import Encoded
from ..core.errors import InputError
from .dispatch import get_kernel


class Product(Protocol):
    """``x`` (cols,) or (cols, batch) → float32 (rows,) or (rows, batch); ``nbytes``: operand bytes read."""

    @property
    def rows(self) -> int: ...

    @property
    def cols(self) -> int: ...

    def __call__(self, x: Any, *, backend: str | None = None) -> np.ndarray: ...

    @property
    def nbytes(self) -> int: ...


def operand(x: Any, cols: int, owner: str) -> np.ndarray:
    """The right-hand side of ``W · x`` as C-contiguous float32: (cols,) or (cols, batch)."""
    arr = np.asarray(x)
    if arr.ndim not in (1, 2) or arr.shape[0] != cols:
        raise InputError(f"{owner}: W · x needs x of shape ({cols},) or ({cols}, batch) for a weight with {cols} "
                         f"input columns; got {arr.shape}")
    if arr.dtype.kind not in "fiub":
        raise InputError(f"{owner}: x must hold numbers, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _op(x: np.ndarray) -> str:
    return "matvec" if x.ndim == 1 else "matmul"


@dataclass(frozen=True)
class LowRankProduct:
    """``U·(V·x)`` with ``u`` (rows, r) and ``v`` (r, cols) as stored (float16 or float32)."""

    u: np.ndarray
    v: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.u.shape[0])

    @property
    def cols(self) -> int:
        return int(self.v.shape[1])

    def __call__(self, x: Any, *, backend: str | None = None) -> np.ndarray:
        xx = operand(x, self.cols, "lowrank")
        return get_kernel("lowrank", _op(xx), backend)(self.u, self.v, xx)

    @property
    def nbytes(self) -> int:
        return self.u.nbytes + self.v.nbytes


@dataclass(frozen=True)
class CSRProduct:
    """A sparse matrix in CSR form times ``x``."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    rows: int
    cols: int

    def __call__(self, x: Any, *, backend: str | None = None) -> np.ndarray:
        xx = operand(x, self.cols, "csr")
        return get_kernel("csr", _op(xx), backend)(self.indptr, self.indices, self.values, xx)

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.indices.nbytes + self.values.nbytes


@dataclass(frozen=True)
class VQProduct:
    """A ``vq`` weight times ``x`` from its codebooks and packed codes (operands:
    :mod:`tensorpress.kernels.reference.vq`)."""

    book: np.ndarray
    packed: np.ndarray
    scales: np.ndarray
    bits: int
    per: int
    cols: int

    @property
    def rows(self) -> int:
        return int(self.scales.shape[0])

    def __call__(self, x: Any, *, backend: str | None = None) -> np.ndarray:
        xx = operand(x, self.cols, "vq")
        return get_kernel("vq", _op(xx), backend)(self.book, self.packed, self.scales, self.bits, self.per,
                                                  self.cols, xx)

    @property
    def nbytes(self) -> int:
        return self.book.nbytes + self.packed.nbytes + self.scales.nbytes


def vq_product(enc: Encoded) -> VQProduct:
    """The :class:`VQProduct` of a 2-D ``vq`` weight: codebooks widened to float32, the stored code stream
    padded with 3 zero bytes, row scales as float32 (ones without them)."""
    codec: Any = enc.codec
    book, _, scales = codec.parts_of(enc)
    rows, cols = enc.shape
    packed = np.concatenate([enc.part_array("codes", np.uint8).reshape(-1),
                             np.zeros(3, np.uint8)])
    s = np.ones(rows, np.float32) if scales is None else scales.astype(np.float32)
    per = rows if codec.group == 0 else min(codec.group, rows)
    return VQProduct(np.ascontiguousarray(book, np.float32), packed, s, codec.codebook_bits, max(per, 1), cols)


@dataclass(frozen=True)
class SumProduct:
    """The sum of the products of parts that add up to one weight (a composite format)."""

    terms: tuple[Product, ...]
    rows: int
    cols: int

    def __call__(self, x: Any, *, backend: str | None = None) -> np.ndarray:
        xx = operand(x, self.cols, "composite")
        out = np.zeros((self.rows, *xx.shape[1:]), np.float32)
        for term in self.terms:
            out += term(xx, backend=backend)
        return out

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.terms)


def product(enc: Encoded) -> Product | None:
    """``x → W · x`` for a 2-D encoded weight ``W`` without decoding it, or None when its format (or any of a
    composite's parts) has no such product."""
    if len(enc.shape) != 2:
        return None
    rows, cols = enc.shape
    codec: Any = enc.codec
    if hasattr(codec, "components"):
        terms = [product(part) for part in codec.components(enc).values()]
        if any(t is None or (t.rows, t.cols) != (rows, cols) for t in terms):
            return None
        return SumProduct(tuple(t for t in terms if t is not None), rows, cols)
    if hasattr(codec, "factors"):
        u, v = codec.factors(enc)
        return LowRankProduct(np.ascontiguousarray(u), np.ascontiguousarray(v))
    if hasattr(codec, "csr_parts"):
        indptr, indices, values, _ = codec.csr_parts(enc)
        vals = values if values.dtype in (np.float16, np.float32) else values.astype(np.float32)
        return CSRProduct(indptr, np.ascontiguousarray(indices), np.ascontiguousarray(vals), rows, cols)
    if hasattr(codec, "parts_of"):
        return vq_product(enc)
    if hasattr(codec, "prepare"):
        try:
            prepared = codec.prepare(enc)
        except InputError:  # a layout the kernels do not take (e.g. groups along the output axis)
            return None
        return prepared if callable(prepared) else None
    return None
