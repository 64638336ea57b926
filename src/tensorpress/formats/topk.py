"""``topk``: activation sparsity — per token (row along ``axis``) only the ``k`` largest ``|x|`` are kept
(CHESS/TEAL-like), with their positions.

``k=…`` keeps that many per row (all when the row is shorter); ``fraction=f`` keeps ``round(f · n)`` (at
least one). Storage: values (rows, k) — raw in the input dtype or compressed by a nested codec — and their
ascending positions (rows, k) in the smallest unsigned type. With the sparse axis last, ``spmv_dense``
multiplies the sparse activations by a dense weight reading only the ``k`` weight columns each token
needs. NaN or Inf in the input are an error.

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


@register
@dataclass(frozen=True)
class TopK(Codec):
    k: int | None = None
    fraction: float | None = None
    axis: int = -1
    values: Codec | None = None

    codec_id: ClassVar[str] = "topk"
    accepts_nonfinite: ClassVar[bool] = False
    summary: ClassVar[str] = "activation sparsity: the k largest |x| per token, with their positions"
    examples: ClassVar[tuple[str, ...]] = (
        "topk(fraction=0.25)",
        "topk(k=8)",
        "topk(fraction=0.5, axis=0)",
        "topk(k=16, values=quant(bits=8, group=16))",
    )

    def validate(self) -> None:
        if (self.k is None) == (self.fraction is None):
            raise ConfigError("topk: give exactly one of k=<kept per row> or fraction=<kept share, e.g. 0.25>")
        if self.k is not None and self.k < 1:
            raise ConfigError(f"topk: k must be >= 1, got {self.k}")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"topk: fraction must be in (0, 1], got {self.fraction}")

    @property
    def accepts_integers(self) -> bool:  # type: ignore[override]
        return self.values is None or self.values.accepts_integers

    def kept(self, n: int) -> int:
        """Values kept per row of length ``n``."""
        if n == 0:
            return 0
        if self.k is not None:
            return min(self.k, n)
        return min(n, max(1, math.floor(float(self.fraction or 1.0) * n + 0.5)))

    def _select(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows view (R, n), kept positions (R, k) ascending int64)."""
        rows, _ = _sparse.as_rows(x, self.axis, "topk")
        score = np.abs(np.asarray(rows, dtype=_sparse.score_dtype(x.dtype)))
        k = self.kept(rows.shape[1])
        order = np.argsort(-score, axis=1, kind="stable")[:, :k]
        return rows, np.sort(order, axis=1)

    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        _sparse.require_finite(x, "topk")
        rows, pos = self._select(x)
        vals = np.take_along_axis(rows, pos, axis=1)
        idx = pos.astype(_sparse.index_dtype(max(1, rows.shape[1])))
        return self._make(x, {"values": _sparse.store_values(self.values, vals), "indices": idx}, {})

    def _stored(self, enc: Encoded) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(values (R, k) in the original dtype, positions (R, k), rows, n)."""
        self._check_owner(enc)
        nrows, n = _sparse.rows_shape(enc.shape, self.axis, "topk")
        k = self.kept(n)
        idx = enc.part_array("indices", _sparse.index_dtype(max(1, n)), (nrows, k))
        if idx.size and int(idx.max()) >= n:
            raise BlobError(f"topk: a stored position is not below {n}: the data is corrupted")
        return _sparse.load_values(enc, self.values, (nrows, k), "topk"), idx, nrows, n

    def decode_array(self, enc: Encoded) -> np.ndarray:
        vals, idx, _, n = self._stored(enc)
        dense = get_kernel("topk", "decode")(_sparse.bit_patterns(vals), idx, n).view(vals.dtype)
        return restore_dtype(_sparse.from_rows(dense, enc.shape, self.axis), enc.dtype)

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """``|x|`` where dropped; the values codec's bound where kept."""
        if x.size == 0:
            return 0.0
        rows, pos = self._select(x)
        tol = np.abs(rows.astype(np.float64))
        np.put_along_axis(tol, pos, _sparse.values_tolerance(self.values, np.take_along_axis(rows, pos, 1)), 1)
        return _sparse.from_rows(tol, x.shape, self.axis)

    # --- compute on the compressed data ----------------------------------------------------------------
    def operands(self, enc: Encoded) -> tuple[np.ndarray, np.ndarray]:
        """(kept values (rows, k) as a kernel operand — float16/float32 —, their positions (rows, k))."""
        vals, idx, _, _ = self._stored(enc)
        return _sparse.as_float32_operand(vals), idx

    def spmv_dense(self, enc: Encoded, weight: Any, *, backend: str | None = None) -> np.ndarray:
        """``W · x`` for every token ``x`` held sparse in ``enc`` and a dense weight ``W`` (out, in).

        ``enc``: activations (in,) or (tokens, in) sparse along the last axis. ``weight``: W as (out, in)
        float32/float16 — it is used through its transpose (in, out); pass ``W.T`` of a C-contiguous
        (in, out) array to avoid a copy. Returns float32 (out,) or (tokens, out).
        """
        if len(enc.shape) not in (1, 2) or self.axis % len(enc.shape) != len(enc.shape) - 1:
            raise InputError(
                f"topk: spmv_dense needs activations (in,) or (tokens, in) sparse along the last axis; got "
                f"shape {enc.shape}, axis={self.axis}"
            )
        vals, idx, _, n = self._stored(enc)
        w = np.asarray(weight)
        if w.ndim != 2 or w.shape[1] != n:
            raise InputError(f"topk: the weight must be (out, {n}) to multiply activations of {n}, got {w.shape}")
        wt = np.ascontiguousarray(w.T, dtype=np.float16 if w.dtype == np.float16 else np.float32)
        y = get_kernel("topk", "spmv_dense", backend)(_sparse.as_float32_operand(vals), idx, wt)
        return y.reshape(-1) if len(enc.shape) == 1 else y
