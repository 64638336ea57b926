"""``bitmap``: unstructured sparsity as one bitmap per tile plus the packed non-zeros (the Mustafar layout).

Along the last axis every ``tile`` elements (8, 16, 32 or 64) get one little-endian word whose bit ``j`` says
whether element ``j`` of the tile is stored; the stored values follow in row-major order, raw in the input
dtype or compressed by a nested codec (``values=quant(bits=8)``). A row's start in the values is the
popcount of the bitmaps before it, so nothing else is stored: at 70% sparsity with float16 values that is
``0.3 · 16 + 1`` bits per element.

``sparsity=s``: each row keeps its ``(1 - s)`` share of largest scores (``select``: ``magnitude``, ``wanda``
or ``sparsegpt`` — see :mod:`tensorpress.formats.nm`); ``threshold=t``: elements with ``|x| > t`` are kept
(``threshold=0`` stores exactly the non-zeros, losslessly — KV caches, ReLU activations). Exact zeros are
never stored. NaN or Inf in the input are an error.

Guarantee: stored elements are exact (raw values) or within the values codec's bound; the others are 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.codec import Codec, register, restore_dtype
from ..core.encoded import Encoded
from ..core.errors import ConfigError, InputError
from ..kernels import get_kernel
from . import _sparse

TILES = (8, 16, 32, 64)


@register
@dataclass(frozen=True)
class BitmapSparse(Codec):
    sparsity: float | None = None
    threshold: float | None = None
    tile: int = 64
    select: str = "magnitude"
    values: Codec | None = None

    codec_id: ClassVar[str] = "bitmap"
    accepts_nonfinite: ClassVar[bool] = False
    summary: ClassVar[str] = "unstructured sparsity: a bitmap per tile + packed non-zeros (Mustafar layout)"
    examples: ClassVar[tuple[str, ...]] = (
        "bitmap(sparsity=0.7)",
        "bitmap(threshold=0.0)",
        "bitmap(sparsity=0.5, tile=8)",
        "bitmap(threshold=0.25, tile=16)",
        "bitmap(sparsity=0.7, values=quant(bits=8, group=64))",
    )

    def validate(self) -> None:
        _sparse.check_select("bitmap", self.select)
        _sparse.check_amount("bitmap", self.sparsity, self.threshold, self.select)
        if self.tile not in TILES:
            raise ConfigError(f"bitmap: tile must be one of {TILES} elements, got {self.tile}")

    @property
    def accepts_integers(self) -> bool:  # type: ignore[override]
        return self.values is None or self.values.accepts_integers

    def _word(self) -> np.dtype[Any]:
        return np.dtype(f"<u{self.tile // 8}")

    # --- codec ----------------------------------------------------------------------------------------
    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        _sparse.require_finite(x, "bitmap")
        rows, mask = _sparse.unstructured_select(x, self.sparsity, self.threshold, self.select, calib, "bitmap")
        nrows, cols = rows.shape
        tiles = -(-cols // self.tile)
        padded = np.zeros((nrows, tiles * self.tile), dtype=bool)
        padded[:, :cols] = mask
        bitmap = np.packbits(padded, axis=1, bitorder="little").view(self._word())
        vals = rows[mask]
        return self._make(x, {"bitmap": bitmap, "values": _sparse.store_values(self.values, vals)}, {})

    def _stored(self, enc: Encoded) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(bitmap bytes (rows, tiles·tile/8), values (nnz,) in the original dtype, rows, cols)."""
        self._check_owner(enc)
        nrows, cols = _sparse.rows_shape(enc.shape, -1, "bitmap")
        tiles = -(-cols // self.tile)
        bitmap = enc.part_array("bitmap", self._word(), (nrows, tiles)).view(np.uint8)
        nnz = int(np.bitwise_count(bitmap).sum(dtype=np.int64))
        vals = _sparse.load_values(enc, self.values, (nnz,), "bitmap")
        return bitmap, vals, nrows, cols

    def decode_array(self, enc: Encoded) -> np.ndarray:
        bitmap, vals, _, cols = self._stored(enc)
        dense = get_kernel("bitmap", "decode")(bitmap, _sparse.bit_patterns(vals), row_offsets(bitmap), cols)
        return restore_dtype(_sparse.from_rows(dense.view(vals.dtype), enc.shape, -1), enc.dtype)

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """``|x|`` where pruned; the values codec's bound where kept (mask recomputed; magnitude only)."""
        if self.select == "sparsegpt" or (self.select == "wanda" and self.values is not None):
            return np.inf
        if self.select == "wanda" or x.size == 0:
            return np.abs(np.asarray(x, dtype=np.float64))
        rows, mask = _sparse.unstructured_select(x, self.sparsity, self.threshold, self.select, None, "bitmap")
        return _sparse.unstructured_tolerance(self.values, x, rows, mask)

    # --- compute on the compressed data ----------------------------------------------------------------
    def prepare(self, enc: Encoded) -> _sparse.PreparedMatmul:
        """The kernel operands of a 2-D weight (out, in), row offsets included."""
        if len(enc.shape) != 2:
            raise InputError(f"bitmap: matmul needs a 2-D weight (out, in), got shape {enc.shape}")
        bitmap, vals, rows, cols = self._stored(enc)
        operands = (bitmap, _sparse.as_float32_operand(vals), row_offsets(bitmap))
        return _sparse.PreparedMatmul("bitmap", operands, rows, cols, bitmap.shape[1] * 8)

    def matmul(self, enc: Encoded, x: Any, *, backend: str | None = None) -> np.ndarray:
        """``W · x`` without densifying W: ``x`` (in,) → float32 (out,); ``x`` (in, batch) → (out, batch)."""
        return self.prepare(enc)(x, backend=backend)

def row_offsets(bitmap: np.ndarray) -> np.ndarray:
    """Start of each row's values, int64 (rows + 1,), from the popcounts of its bitmap bytes."""
    counts = np.bitwise_count(bitmap).sum(axis=1, dtype=np.int64)
    out = np.zeros(bitmap.shape[0] + 1, np.int64)
    np.cumsum(counts, out=out[1:])
    return out

