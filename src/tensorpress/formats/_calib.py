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


def second_moment(calib: Any, features: int, what: str, *, alternative: str = "", need_samples: bool = False,
                  weight_shape: tuple[int, ...] | None = None) -> tuple[np.ndarray, int]:
    """``(Xᵀ X, samples)``: (features × features, float64) and the token count, from ``calib`` — activations X
    (samples × features; leading axes are flattened) or a :class:`Hessian`.

    Every method that takes ``calib`` reads it here, so the errors read alike: ``what`` names the asking
    method (``"nm(select=wanda)"``), ``alternative`` is what to use without calibration. ``need_samples``
    refuses statistics of zero tokens; ``weight_shape`` is named when the activations do not fit it.
    """
    if calib is None:
        instead = f"; {alternative}" if alternative else ""
        raise InputError(f"{what} needs calibration activations: encode(w, calib=X) with X of shape (samples, "
                         f"{features}) holding the layer's real inputs, or a tensorpress Hessian (see "
                         f"tensorpress.nn.calibrate){instead}")
    if isinstance(calib, Hessian):
        if calib.features != features:
            raise InputError(f"{what}: calib is a Hessian of {calib.features} inputs, but the weight has "
                             f"{features}; give this layer's statistics")
        h, samples = calib.matrix, calib.samples
    else:
        x = _activations(calib, features, what, weight_shape)
        h, samples = x.T @ x, x.shape[0]
    if need_samples and samples == 0:
        raise InputError(f"{what}: the calibration statistics hold no samples")
    return h, samples


def hessian(calib: Any, features: int, codec_id: str) -> np.ndarray:
    """``Xᵀ X`` (features × features, float64) from ``calib`` (see :func:`second_moment`)."""
    return second_moment(calib, features, codec_id)[0]


def column_weights(calib: Any, features: int, codec_id: str) -> np.ndarray:
    """``diag(Xᵀ X)`` (features,), float64: how much each input feature's error costs."""
    if isinstance(calib, Hessian):
        return np.diag(hessian(calib, features, codec_id)).copy()
    x = _activations(calib, features, codec_id)
    return np.einsum("ij,ij->j", x, x)


def _activations(calib: Any, features: int | None, what: str,
                 weight_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Activations (samples × features) float64; leading axes are flattened."""
    x = as_array(calib)
    if x.ndim < 2 or (features is not None and x.shape[-1] != features):
        want = "(samples, in)" if features is None else f"(samples, {features})"
        of = f"the weight of shape {weight_shape} (out, in) needs" if weight_shape else "calib must be"
        raise InputError(f"{what}: calibration activations have shape {x.shape}, but {of} activations X {want} "
                         "(or a tensorpress Hessian; leading axes are flattened)")
    if x.dtype.kind not in "fiub" and x.dtype.kind != "V":
        raise InputError(f"{what}: calib must hold numbers, got {x.dtype}")
    x = x.reshape(-1, x.shape[-1]).astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise InputError(f"{what}: calib holds NaN or Inf; recollect the activations")
    return x
