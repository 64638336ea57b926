"""``slice``: whole rows / columns / heads removed (SliceGPT-like), the kept indices stored so the original
shape comes back.

Along ``axis`` the ``keep`` share of slices (at least one) with the largest L2 norm of their element scores
is kept (``select``: ``magnitude`` = |w|; ``wanda`` = |w_ij|·||X_j||₂ for a 2-D weight and calibration
``X`` (samples, in)); the others decode as zeros. Storage: the kept slices — raw in the input dtype or
compressed by a nested codec — and their ascending indices (the smallest unsigned type). Compute needs no
special kernel: ``W · x`` is the dense product of the kept slices with the matching part of ``x``.
NaN or Inf in the input are an error.

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
from . import _sparse


@register
@dataclass(frozen=True)
class SliceSparse(Codec):
    axis: int = 0
    keep: float = 0.5
    select: str = "magnitude"
    values: Codec | None = None

    codec_id: ClassVar[str] = "slice"
    accepts_nonfinite: ClassVar[bool] = False
    summary: ClassVar[str] = "remove whole rows/columns (SliceGPT-like), kept indices restore the shape"
    examples: ClassVar[tuple[str, ...]] = (
        "slice(axis=0, keep=0.5)",
        "slice(axis=-1, keep=0.75)",
        "slice(axis=0, keep=0.5, values=quant(bits=8, group=64))",
    )

    def validate(self) -> None:
        if not (0.0 < self.keep <= 1.0):
            raise ConfigError(f"slice: keep must be a fraction in (0, 1], got {self.keep}")
        _sparse.check_select("slice", self.select, ("magnitude", "wanda"))

    @property
    def accepts_integers(self) -> bool:  # type: ignore[override]
        return self.values is None or self.values.accepts_integers

    def _kept(self, size: int) -> int:
        return min(size, max(1, math.floor(self.keep * size + 0.5))) if size else 0

    def _axis(self, ndim: int) -> int:
        if not -max(ndim, 1) <= self.axis < max(ndim, 1):
            raise InputError(f"slice: axis {self.axis} is out of range for a {ndim}-d array")
        return self.axis % max(ndim, 1)

    def _index(self, x: np.ndarray, calib: Any) -> np.ndarray:
        """Kept slice indices, ascending int64."""
        x1 = x.reshape(1) if x.ndim == 0 else x
        axis = self._axis(x1.ndim)
        score = _sparse.scores(x1, self.select, calib, "slice").astype(np.float64)
        other = tuple(a for a in range(x1.ndim) if a != axis)
        norms = np.sqrt(np.sum(score * score, axis=other)) if other else score
        order = np.argsort(-norms, kind="stable")[: self._kept(x1.shape[axis])]
        return np.sort(order)

    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        _sparse.require_finite(x, "slice")
        index = self._index(x, calib)
        x1 = x.reshape(1) if x.ndim == 0 else x
        kept = np.take(x1, index, axis=self._axis(x1.ndim))
        size = x1.shape[self._axis(x1.ndim)]
        parts = {"values": _sparse.store_values(self.values, kept),
                 "index": index.astype(_sparse.index_dtype(max(1, size)))}
        return self._make(x, parts, {})

    def _stored(self, enc: Encoded) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], int]:
        """(kept slices in the original dtype, indices int64, shape as ≥1-d, axis)."""
        self._check_owner(enc)
        shape = enc.shape or (1,)
        if not -len(shape) <= self.axis < len(shape):
            raise BlobError(f"slice: axis {self.axis} does not fit the stored shape {enc.shape}")
        axis = self.axis % len(shape)
        k = self._kept(shape[axis])
        index = enc.part_array("index", _sparse.index_dtype(max(1, shape[axis])), (k,)).astype(np.int64)
        if k and (index.max() >= shape[axis] or np.any(np.diff(index) <= 0)):
            raise BlobError("slice: the stored indices are not ascending and in range: the data is corrupted")
        kept_shape = (*shape[:axis], k, *shape[axis + 1 :])
        return _sparse.load_values(enc, self.values, kept_shape, "slice"), index, shape, axis

    def decode_array(self, enc: Encoded) -> np.ndarray:
        kept, index, shape, axis = self._stored(enc)
        out = np.zeros(shape, dtype=kept.dtype)
        where: list[Any] = [slice(None)] * len(shape)
        where[axis] = index
        out[tuple(where)] = kept
        return restore_dtype(out.reshape(enc.shape), enc.dtype)

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """``|x|`` in removed slices; the values codec's bound in kept ones (magnitude only)."""
        mag = np.abs(np.asarray(x, dtype=np.float64))
        if self.select == "wanda" or x.size == 0:
            return mag if self.values is None else np.inf
        x1 = x.reshape(1) if x.ndim == 0 else x
        axis = self._axis(x1.ndim)
        index = self._index(x, None)
        tol = mag.reshape(x1.shape).copy()
        where: list[Any] = [slice(None)] * x1.ndim
        where[axis] = index
        tol[tuple(where)] = _sparse.values_tolerance(self.values, np.take(x1, index, axis=axis))
        return tol.reshape(x.shape)

    def matmul(self, enc: Encoded, x: Any) -> np.ndarray:
        """``W · x`` for a 2-D weight (out, in): the kept slices times ``x`` (in,) or (in, batch); float32."""
        if len(enc.shape) != 2:
            raise InputError(f"slice: matmul needs a 2-D weight (out, in), got shape {enc.shape}")
        kept, index, shape, axis = self._stored(enc)
        xx = _sparse.check_operand(x, shape[1], "slice")
        w = kept.astype(np.float32)
        if axis == 1:
            return w @ xx[index]
        y = np.zeros((shape[0], *xx.shape[1:]), np.float32)
        y[index] = w @ xx
        return y
