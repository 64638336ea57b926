"""Calibration statistics that formats accept as ``calib``.

A weight's ``calib`` (Contracts) is an array ``X`` of shape (samples × in): real input activations of the
layer, one row per token. Methods that only need the second moment accept the accumulated Hessian
``H = Xᵀ X`` instead, wrapped in :class:`Hessian` — the wrapper, never the array's shape, tells the two
apart, so an ``(in × in)`` activation sample is never mistaken for a Hessian.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.dtypes import as_array
from ..core.errors import InputError


@dataclass(frozen=True, eq=False)
class Hessian:
    """``H = Σ_tokens x xᵀ`` (in × in, float64) of a layer's inputs, over ``samples`` token rows."""

    matrix: np.ndarray
    samples: int

    def __post_init__(self) -> None:
        h = np.asarray(self.matrix, dtype=np.float64)
        if h.ndim != 2 or h.shape[0] != h.shape[1]:
            raise InputError(f"Hessian: expected a square (in × in) matrix, got shape {h.shape}")
        if not np.all(np.isfinite(h)):
            raise InputError("Hessian: the matrix holds NaN or Inf; recollect the calibration statistics")
        if self.samples < 0:
            raise InputError(f"Hessian: samples must be >= 0, got {self.samples}")
        object.__setattr__(self, "matrix", h)

    @classmethod
    def of(cls, x: Any) -> Hessian:
        """The Hessian of an activation array ``x`` (samples × in)."""
        rows = _activations(x, None, "Hessian.of")
        return cls(rows.T @ rows, rows.shape[0])

    def __add__(self, other: Hessian) -> Hessian:
        return Hessian(self.matrix + other.matrix, self.samples + other.samples)

    @property
    def features(self) -> int:
        return self.matrix.shape[0]


def hessian(calib: Any, features: int, codec_id: str) -> np.ndarray:
    """``Xᵀ X`` (features × features, float64) from ``calib`` (an array X, samples × in, or a :class:`Hessian`).

    Raises :class:`InputError` naming ``calib`` when it is missing or does not fit ``features`` inputs.
    """
    if calib is None:
        raise InputError(f"{codec_id} needs calib: the layer's input activations X (samples × {features}) or a "
                         "tensorpress Hessian; collect them with tensorpress.nn.calibrate")
    if isinstance(calib, Hessian):
        if calib.features != features:
            raise InputError(f"{codec_id}: calib is a Hessian of {calib.features} inputs, the quantized axis has "
                             f"{features}; give the statistics of this layer")
        return calib.matrix
    x = _activations(calib, features, codec_id)
    return x.T @ x


def column_weights(calib: Any, features: int, codec_id: str) -> np.ndarray:
    """``diag(Xᵀ X)`` (features,), float64: how much each input feature's error costs."""
    if isinstance(calib, Hessian):
        return np.diag(hessian(calib, features, codec_id)).copy()
    x = _activations(calib, features, codec_id)
    return np.einsum("ij,ij->j", x, x)


def _activations(calib: Any, features: int | None, codec_id: str) -> np.ndarray:
    x = as_array(calib)
    if x.ndim != 2 or (features is not None and x.shape[1] != features):
        want = "(samples × in)" if features is None else f"(samples × {features})"
        raise InputError(f"{codec_id}: calib must be activations X {want} (or a tensorpress Hessian), "
                         f"got an array of shape {x.shape}")
    if x.dtype.kind not in "fiub" and x.dtype.kind != "V":
        raise InputError(f"{codec_id}: calib must hold numbers, got {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise InputError(f"{codec_id}: calib holds NaN or Inf; recollect the activations")
    return x
