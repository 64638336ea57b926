"""``gear``: GEAR — a quantized (or otherwise compressed) bulk, a low-rank residual and sparse outliers.

Made for KV-cache tensors (GEAR, Kang et al. 2024), usable on weights. Order:

1. outliers are picked first: the ``outliers`` share of all elements with the largest ``x²`` (times
   ``diag(XᵀX)`` of their column when calibration activations ``X`` are given);
2. the base encodes the rest (outliers replaced as in :mod:`~tensorpress.formats.outliers`: clipped into
   their quantization group's range for a ``quant`` base, zero otherwise);
3. a low-rank approximation (``rank`` or ``energy``; ``method=svd|activation_aware``) of the base's error
   away from the outliers;
4. the sparse part stores, at the outliers, what base and low-rank leave (fp16; float32 with ``exact=true``),
   so they come back to that precision.

Parts: ``base``, ``correction`` (a nested ``lowrank`` blob), ``outliers`` (a nested ``csr`` blob). Decode =
the sum of the three, so ``W·x`` = base matvec + ``U·(V·x)`` + sparse matvec.

Guarantee: none per element (the low-rank part can move any element); ``tolerance`` is ``inf``. NaN or Inf,
and integer input, are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.codec import Codec, register, restore_dtype
from ..core.encoded import Encoded
from ..core.errors import BlobError
from . import _lowrank
from .compensated import METHODS
from .lowrank import LowRank
from .outliers import check_amount, check_sparse, importance, neutral_fill, pick, store_sparse, sum_decoded
from .quant import GroupQuant

#: the base when none is given (a quant layout; any spec can be nested)
DEFAULT_BASE = GroupQuant(bits=4, group=64)


@register
@dataclass(frozen=True)
class Gear(Codec):
    base: Codec = DEFAULT_BASE
    rank: int | None = None
    energy: float | None = None
    outliers: float = 0.01
    method: str = "svd"
    factor_dtype: str = "float16"
    exact: bool = False

    codec_id: ClassVar[str] = "gear"
    accepts_integers: ClassVar[bool] = False
    accepts_nonfinite: ClassVar[bool] = False
    summary: ClassVar[str] = "GEAR: a base format, a low-rank residual and sparse outliers (KV caches, weights)"
    examples: ClassVar[tuple[str, ...]] = (
        "gear(base=quant(bits=4, group=64), energy=0.2, outliers=0.01)",
        "gear(base=quant(bits=2, group=32, symmetric=true), energy=0.5, outliers=0.05, exact=true)",
    )

    def validate(self) -> None:
        _lowrank.check_config("gear", self.rank, self.energy, self.method, self.factor_dtype, METHODS)
        check_amount("gear", "outliers", self.outliers, None)

    def correction(self) -> LowRank:
        """The codec of the correction part."""
        return LowRank(rank=self.rank, energy=self.energy, method=self.method, factor_dtype=self.factor_dtype)

    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        _lowrank.require_finite_float(x, "gear")
        x64 = np.asarray(x, dtype=np.float64)
        mask = pick(x64, self.outliers, importance(calib, x.shape, "gear"))
        rest = neutral_fill(x64, mask, self.base, np.zeros_like(x64)) if mask.any() else x64
        base = self.base.encode(restore_dtype(rest, x.dtype), calib=calib)
        left = x64 - base.decode().astype(np.float64)
        work = np.float64 if x.dtype.itemsize > 4 else np.float32
        fix = self.correction().encode(np.where(mask, 0.0, left).astype(work), calib=calib)
        left = left - fix.decode().astype(np.float64)
        sparse = store_sparse(np.where(mask, left, 0.0), self.exact, x.dtype, "gear")
        return self._make(x, {"base": base, "correction": fix, "outliers": sparse}, {})

    def components(self, enc: Encoded) -> dict[str, Encoded]:
        """The nested data whose decodes sum to the tensor: ``base``, ``correction`` (``lowrank``) and
        ``outliers`` (``csr``)."""
        self._check_owner(enc)
        base, fix = enc.part_encoded("base"), enc.part_encoded("correction")
        if base.codec != self.base or fix.codec != self.correction() or fix.shape != enc.shape:
            raise BlobError(f"gear: the nested data ({base.codec}, {fix.codec}) does not match the spec {self}")
        return {"base": base, "correction": fix, "outliers": check_sparse(enc, "gear")}

    prepare = components

    def decode_array(self, enc: Encoded) -> np.ndarray:
        return sum_decoded(enc, self.components(enc).values())

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """No per-element bound (see the module docstring)."""
        return np.inf
