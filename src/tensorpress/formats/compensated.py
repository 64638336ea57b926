"""``compensated``: a compressed tensor plus a low-rank correction of its error (EoRA / LoRD idea).

``Ŵ = base(W) + L·R``, where ``L·R`` is the rank-r (or ``energy`` share) approximation of the base's error
``E = W − decode(base(W))``. ``method=svd``: the truncated SVD of E (best in Frobenius norm).
``method=activation_aware``: with calibration activations ``X`` (samples × in), E is whitened by ``S``
(``S·Sᵀ = XᵀX``), truncated and un-whitened — the correction spends its rank where the layer's inputs have
energy (EoRA's activation eigenspace), minimizing ``‖(W − Ŵ)·Xᵀ‖``. The calibration set is passed to the
base too (a GPTQ-style base uses it).

Parts: ``base`` (the base's nested data) and ``correction`` (a nested ``lowrank`` blob with factors
``U`` (rows × r) and ``V`` (r × cols) in ``factor_dtype``). Decode = base decode + U·V, so ``W·x`` is the
base's matvec plus ``U·(V·x)``.

Guarantee: none per element (the correction can move any element); ``tolerance`` is ``inf``. NaN or Inf, and
integer input, are refused. ``rank`` above min(rows, cols) is an error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.codec import Codec, register
from ..core.encoded import Encoded
from ..core.errors import BlobError
from . import _lowrank
from .lowrank import LowRank
from .outliers import sum_decoded
from .quant import GroupQuant

METHODS = ("svd", "activation_aware")

#: the base when none is given (a quant layout; any spec can be nested)
DEFAULT_BASE = GroupQuant(bits=3, group=128)


@register
@dataclass(frozen=True)
class Compensated(Codec):
    base: Codec = DEFAULT_BASE
    rank: int | None = None
    energy: float | None = None
    method: str = "svd"
    factor_dtype: str = "float16"

    codec_id: ClassVar[str] = "compensated"
    accepts_integers: ClassVar[bool] = False
    accepts_nonfinite: ClassVar[bool] = False
    summary: ClassVar[str] = "a base format plus a low-rank correction of its error (EoRA/LoRD)"
    examples: ClassVar[tuple[str, ...]] = (
        "compensated(base=quant(bits=3, group=64), energy=0.3)",
        "compensated(base=quant(bits=2, group=32, symmetric=true) | zstd(level=3), energy=0.5, factor_dtype=float32)",
    )

    def validate(self) -> None:
        _lowrank.check_config("compensated", self.rank, self.energy, self.method, self.factor_dtype, METHODS)

    def correction(self) -> LowRank:
        """The codec of the correction part."""
        return LowRank(rank=self.rank, energy=self.energy, method=self.method, factor_dtype=self.factor_dtype)

    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        _lowrank.require_finite_float(x, "compensated")
        base = self.base.encode(x, calib=calib)
        err = np.asarray(x, dtype=np.float64) - base.decode().astype(np.float64)
        fix = self.correction().encode(err.astype(np.float64 if x.dtype.itemsize > 4 else np.float32), calib=calib)
        return self._make(x, {"base": base, "correction": fix}, {})

    def components(self, enc: Encoded) -> dict[str, Encoded]:
        """The nested data whose decodes sum to the tensor: ``base`` and ``correction`` (``lowrank``; its
        codec's ``factors`` gives U and V)."""
        self._check_owner(enc)
        base, fix = enc.part_encoded("base"), enc.part_encoded("correction")
        if base.codec != self.base or fix.codec != self.correction() or fix.shape != enc.shape:
            raise BlobError(f"compensated: the nested data ({base.codec}, {fix.codec}) does not match the spec {self}")
        return {"base": base, "correction": fix}

    prepare = components

    def decode_array(self, enc: Encoded) -> np.ndarray:
        return sum_decoded(enc, self.components(enc).values())

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """No per-element bound (see the module docstring)."""
        return np.inf
