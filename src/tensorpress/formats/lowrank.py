"""``lowrank``: a tensor as the product of two thin factors, ``W ≈ U·V`` (U: rows × r, V: r × cols).

The tensor is seen as a matrix with its last axis as columns (a torch ``[out, in]`` weight as is). ``rank=r``
keeps r singular values (more than min(rows, cols) is an error); ``energy=e`` keeps the fewest whose squares
sum to at least the share ``e`` of the total. Methods:

- ``svd``: truncated SVD, the best rank-r approximation in Frobenius norm.
- ``activation_aware``: for a weight and calibration activations ``X`` (samples × in), the SVD of ``W·S`` with
  ``S·Sᵀ = XᵀX`` (Cholesky, slightly damped), truncated and mapped back by ``S⁻¹`` (SVD-LLM / ASVD): the best
  rank-r weight for the layer's outputs on that data.
- ``fisher``: Fisher-weighted SVD (FWSVD). Without gradients it uses a proxy, stated here: the Fisher
  information of ``W_ij`` is ``E[δ_i² x_j²]``; with the output gradients ``δ`` taken as uniform it is
  proportional to the mean squared activation of input column ``j``, so the SVD runs on ``W·D`` with
  ``D = diag(sqrt(mean_s x_sj²))`` and is mapped back by ``D⁻¹``. It needs ``calib`` like activation_aware.

Storage: parts ``u`` (rows, r) and ``v`` (r, cols) in ``factor_dtype`` (√σ folded into each, so neither
overflows first). Decoding multiplies them in float32 (float64 for float64 tensors). Each stored weight
costs ``r·(rows + cols)·bytes / (rows·cols)``.

Guarantee: for method=svd, every element is within the (r+1)-th singular value (the spectral norm of the
truncation error bounds each element), plus the rounding of the stored factors and of the output dtype.
The other methods optimize a weighted error and give no per-element bound (``tolerance`` is ``inf``).
NaN or Inf, and integer input, are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.codec import Codec, register, restore_dtype
from ..core.encoded import Encoded
from . import _lowrank


@register
@dataclass(frozen=True)
class LowRank(Codec):
    rank: int | None = None
    energy: float | None = None
    method: str = "svd"
    factor_dtype: str = "float16"

    codec_id: ClassVar[str] = "lowrank"
    accepts_integers: ClassVar[bool] = False
    accepts_nonfinite: ClassVar[bool] = False
    summary: ClassVar[str] = "low-rank factors U·V: truncated SVD, activation-aware (whitened) or Fisher-weighted"
    examples: ClassVar[tuple[str, ...]] = (
        "lowrank(energy=0.9)",
        "lowrank(energy=0.999, factor_dtype=float32)",
        "lowrank(energy=0.5)",
    )

    def validate(self) -> None:
        _lowrank.check_config("lowrank", self.rank, self.energy, self.method, self.factor_dtype)

    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        _lowrank.require_finite_float(x, "lowrank")
        a, b = _lowrank.factorize(_lowrank.as_matrix(x), self.rank, self.energy, self.method, calib,
                                  tuple(x.shape), "lowrank")
        parts = {"u": _lowrank.store_factor(a, self.factor_dtype, "lowrank"),
                 "v": _lowrank.store_factor(b, self.factor_dtype, "lowrank")}
        return self._make(x, parts, {})

    def factors(self, enc: Encoded) -> tuple[np.ndarray, np.ndarray]:
        """``(U, V)`` as stored: (rows, r) and (r, cols) in ``factor_dtype``; ``W ≈ U @ V``.

        ``W·x`` without densifying W is ``U @ (V @ x)``: r·(rows + cols) multiply-adds instead of rows·cols.
        """
        self._check_owner(enc)
        rows, cols = _lowrank.matrix_shape(enc.shape)
        return _lowrank.load_factors(enc, self.factor_dtype, rows, cols)

    prepare = factors

    def decode_array(self, enc: Encoded) -> np.ndarray:
        u, v = self.factors(enc)
        cdt = np.float64 if enc.dtype.itemsize > 4 else np.float32
        out = u.astype(cdt) @ v.astype(cdt)
        return restore_dtype(out.reshape(enc.shape), enc.dtype)

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """method=svd: ``σ_{r+1}`` (the spectral norm of the truncation error bounds every element), plus the
        rounding of the stored factors, of the product and of the output dtype; other methods: none."""
        if self.method != "svd":
            return np.inf
        if x.size == 0:
            return 0.0
        import ml_dtypes

        m = _lowrank.as_matrix(x)
        a, b = _lowrank.factorize(m, self.rank, self.energy, "svd", None, tuple(x.shape), "lowrank")
        s = np.linalg.svd(m, compute_uv=False)
        r = a.shape[1]
        tail = float(s[r]) if r < s.size else 0.0
        unit, tiny = (2.0**-11, 2.0**-25) if self.factor_dtype == "float16" else (2.0**-24, 2.0**-150)
        da, db = unit * np.abs(a) + tiny, unit * np.abs(b) + tiny
        stored = da @ np.abs(b) + np.abs(a) @ db + da @ db
        product = (r + 2) * (2.0**-53 if x.dtype.itemsize > 4 else 2.0**-24) * ((np.abs(a) + da) @ (np.abs(b) + db))
        tol = tail + stored + product + 1e-12 * float(s[0])
        out = float(ml_dtypes.finfo(x.dtype).eps) * (np.abs(m) + tol)
        return (tol + out).reshape(x.shape)
