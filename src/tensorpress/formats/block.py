"""``block``: constant-block structured sparsity — whole ``shape`` blocks (e.g. 1×4, 4×1, 1×16) kept or zeroed.

The tensor is seen as a matrix (all leading axes × the last axis) cut into blocks of ``shape = (bh, bw)``
(the edges padded with zeros when the block does not divide them). Each block-row keeps the same number of
blocks — its ``(1 - sparsity)`` share with the largest L2 norm of the element scores (``select``:
``magnitude`` = |w|, ``wanda`` = |w_ij|·||X_j||₂ for a 2-D weight and calibration ``X`` (samples, in)) — so
rows stay balanced for parallel kernels. Storage: the kept blocks' values (block-rows, kept, bh, bw), raw in
the input dtype or compressed by a nested codec, and each kept block's column (the smallest unsigned type).

Contiguous blocks are what CPUs exploit: a kept 1×4 block is one 4-wide multiply-add on 4 consecutive
entries of ``x``. NaN or Inf in the input are an error.

Guarantee: kept elements are exact (raw values) or within the values codec's bound; the others are 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.codec import Codec, register, restore_dtype
from ..core.encoded import Encoded
from ..core.errors import BlobError, ConfigError, InputError
from ..kernels import get_kernel
from . import _sparse

MAX_BLOCK = 256


@register
@dataclass(frozen=True)
class BlockSparse(Codec):
    shape: tuple[int, ...] = (1, 4)
    sparsity: float = 0.5
    select: str = "magnitude"
    values: Codec | None = None

    codec_id: ClassVar[str] = "block"
    accepts_nonfinite: ClassVar[bool] = False
    summary: ClassVar[str] = "block sparsity (1x4, 4x1, 1x16 ...): balanced largest-norm blocks per block-row"
    examples: ClassVar[tuple[str, ...]] = (
        "block(shape=(1, 4), sparsity=0.75)",
        "block(shape=(4, 1), sparsity=0.5)",
        "block(shape=(1, 16), sparsity=0.5)",
        "block(shape=(2, 2), sparsity=0.3)",
        "block(shape=(1, 4), sparsity=0.75, values=quant(bits=8, group=32))",
    )

    def validate(self) -> None:
        if len(self.shape) != 2 or not all(1 <= s <= MAX_BLOCK for s in self.shape):
            raise ConfigError(f"block: shape must be (rows, cols) of 1..{MAX_BLOCK} each, got {self.shape}")
        _sparse.check_fraction("block", "sparsity", self.sparsity)
        _sparse.check_select("block", self.select, ("magnitude", "wanda"))

    @property
    def accepts_integers(self) -> bool:  # type: ignore[override]
        return self.values is None or self.values.accepts_integers

    # --- layout ---------------------------------------------------------------------------------------
    def _grid(self, rows: int, cols: int) -> tuple[int, int, int]:
        """(block-rows, block-columns, kept blocks per block-row)."""
        bh, bw = self.shape
        rb, cb = -(-rows // bh), -(-cols // bw)
        return rb, cb, _sparse.kept_count(cb, self.sparsity)

    def _blocks(self, mat: np.ndarray) -> np.ndarray:
        """(rb, cb, bh, bw) view of ``mat`` zero-padded to whole blocks."""
        bh, bw = self.shape
        rows, cols = mat.shape
        rb, cb, _ = self._grid(rows, cols)
        padded = np.zeros((rb * bh, cb * bw), dtype=mat.dtype)
        padded[:rows, :cols] = mat
        return padded.reshape(rb, bh, cb, bw).transpose(0, 2, 1, 3)

    def _select(self, x: np.ndarray, calib: Any) -> tuple[np.ndarray, np.ndarray]:
        """(blocks (rb, cb, bh, bw) of x, kept block columns (rb, kept) ascending int64)."""
        mat = _matrix(x)
        score = _matrix(_sparse.scores(x, self.select, calib, "block")).astype(np.float64)
        blocks = self._blocks(mat)
        norms = np.sqrt(np.einsum("rcij,rcij->rc", *(2 * [self._blocks(score)])))
        kept = self._grid(*mat.shape)[2]
        order = np.argsort(-norms, axis=1, kind="stable")[:, :kept]
        return blocks, np.sort(order, axis=1)

    # --- codec ----------------------------------------------------------------------------------------
    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        _sparse.require_finite(x, "block")
        blocks, cols = self._select(x, calib)
        vals = np.take_along_axis(blocks, cols[:, :, None, None], axis=1)
        cdt = _sparse.index_dtype(max(1, blocks.shape[1]))
        return self._make(x, {"values": _sparse.store_values(self.values, vals), "columns": cols.astype(cdt)}, {})

    def _stored(self, enc: Encoded) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(kept values (rb, kept, bh, bw) in the original dtype, block columns (rb, kept), rows, cols)."""
        self._check_owner(enc)
        rows, cols = _matrix_shape(enc.shape)
        rb, cb, kept = self._grid(rows, cols)
        columns = enc.part_array("columns", _sparse.index_dtype(max(1, cb)), (rb, kept))
        if columns.size and int(columns.max()) >= cb:
            raise BlobError(f"block: a stored block column is not below {cb}: the data is corrupted")
        vals = _sparse.load_values(enc, self.values, (rb, kept, *self.shape), "block")
        return vals, columns, rows, cols

    def decode_array(self, enc: Encoded) -> np.ndarray:
        vals, columns, rows, cols = self._stored(enc)
        dense = get_kernel("block", "decode")(_sparse.bit_patterns(vals), columns, rows, cols).view(vals.dtype)
        return restore_dtype(dense.reshape(enc.shape), enc.dtype)

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """``|x|`` where pruned; the values codec's bound where kept (mask recomputed; magnitude only)."""
        mag = np.abs(np.asarray(x, dtype=np.float64))
        if self.select == "wanda" or x.size == 0:
            return mag if self.values is None else np.inf
        blocks, cols = self._select(x, None)
        tol = self._blocks(_matrix(mag)).copy()
        kept_tol = _sparse.values_tolerance(self.values, np.take_along_axis(blocks, cols[:, :, None, None], axis=1))
        np.put_along_axis(tol, cols[:, :, None, None], kept_tol, axis=1)
        rows, ncols = _matrix_shape(x.shape)
        return tol.transpose(0, 2, 1, 3).reshape(tol.shape[0] * self.shape[0], -1)[:rows, :ncols].reshape(x.shape)

    # --- compute on the compressed data ----------------------------------------------------------------
    def prepare(self, enc: Encoded) -> _sparse.PreparedMatmul:
        """The kernel operands of a 2-D weight (out, in)."""
        if len(enc.shape) != 2:
            raise InputError(f"block: matmul needs a 2-D weight (out, in), got shape {enc.shape}")
        vals, columns, rows, cols = self._stored(enc)
        padded = self._grid(rows, cols)[1] * self.shape[1]
        return _sparse.PreparedMatmul("block", (_sparse.as_float32_operand(vals), columns), rows, cols, padded)

    def matmul(self, enc: Encoded, x: Any, *, backend: str | None = None) -> np.ndarray:
        """``W · x`` without densifying W: ``x`` (in,) → float32 (out,); ``x`` (in, batch) → (out, batch)."""
        return self.prepare(enc)(x, backend=backend)

def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if not shape:
        return 1, 1
    return math.prod(shape[:-1]), shape[-1]


def _matrix(x: np.ndarray) -> np.ndarray:
    """``x`` as a matrix: all leading axes × the last axis."""
    return x.reshape(_matrix_shape(x.shape))
