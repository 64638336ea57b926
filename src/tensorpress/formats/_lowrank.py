"""What the low-rank formats share (``lowrank``, ``compensated``, ``gear``): the matrix view of a tensor,
calibration statistics, rank selection and the truncated factorization in a whitened space.

A tensor is factored as the matrix (rows, n) with its last axis as columns (a torch ``[out, in]`` weight
as is; a 0-d or 1-D tensor as one row). For a weight ``W`` (out × in) and calibration activations ``X``
(samples × in), the output error on that data is ``‖(W − Ŵ) Xᵀ‖_F² = ‖(W − Ŵ) S‖_F²`` with ``S Sᵀ = XᵀX``,
so the best rank-r ``Ŵ`` for it is the truncated SVD of ``W S`` mapped back by ``S⁻¹`` (SVD-LLM, ASVD).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.dtypes import dtype_to_str, is_float
from ..core.errors import BlobError, ConfigError, InputError

METHODS = ("svd", "activation_aware", "fisher")
FACTOR_DTYPES: dict[str, type[np.floating[Any]]] = {"float16": np.float16, "float32": np.float32}
#: Tikhonov damping of XᵀX relative to its mean diagonal, so that S is invertible for any calibration set
DAMPING = 1e-4


def check_config(codec_id: str, rank: int | None, energy: float | None, method: str, factor_dtype: str,
                 methods: tuple[str, ...] = METHODS) -> None:
    """Exactly one of ``rank`` / ``energy``, a known method and factor dtype; raise :class:`ConfigError`."""
    if (rank is None) == (energy is None):
        raise ConfigError(
            f"{codec_id}: give exactly one of rank=<kept singular values, e.g. 16> or energy=<kept share of the "
            "squared singular values, e.g. 0.9>"
        )
    if rank is not None and rank < 0:
        raise ConfigError(f"{codec_id}: rank must be >= 0, got {rank}")
    if energy is not None and not 0.0 < energy <= 1.0:
        raise ConfigError(f"{codec_id}: energy must be in (0, 1], got {energy}")
    if method not in methods:
        raise ConfigError(f"{codec_id}: method must be one of {', '.join(methods)}; got {method!r}")
    if factor_dtype not in FACTOR_DTYPES:
        raise ConfigError(f"{codec_id}: factor_dtype must be float16 or float32, got {factor_dtype!r}")


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols) of the matrix view of a tensor of ``shape``."""
    if not shape:
        return 1, 1
    return math.prod(shape[:-1]), shape[-1]


def as_matrix(x: np.ndarray) -> np.ndarray:
    """``x`` as a float64 (rows, cols) matrix (see :func:`matrix_shape`)."""
    return np.asarray(x, dtype=np.float64).reshape(matrix_shape(tuple(x.shape)))


def require_finite_float(x: np.ndarray, codec_id: str) -> None:
    """Raise :class:`InputError` unless ``x`` holds finite floating point numbers."""
    if not is_float(x.dtype):
        raise InputError(f"{codec_id} works on floating point data, got {dtype_to_str(x.dtype)}")
    if x.size and not np.all(np.isfinite(np.asarray(x, dtype=np.float64))):
        raise InputError(
            f"{codec_id} cannot represent NaN or Inf (a factorization spreads them over the whole tensor); "
            "replace or mask them first, or use a lossless codec"
        )


def gram(calib: Any, shape: tuple[int, ...], codec_id: str, method: str) -> np.ndarray:
    """``XᵀX / samples`` (cols × cols, float64) of the calibration activations for a weight of ``shape``;
    ``calib`` is X (samples, in) or an accumulated :class:`~tensorpress.formats._calib.Hessian`."""
    from ._calib import second_moment

    h, samples = second_moment(calib, matrix_shape(shape)[1], f"{codec_id}(method={method})",
                               alternative="or use method=svd", need_samples=True, weight_shape=shape)
    return h / samples


def whitener(h: np.ndarray) -> np.ndarray:
    """Lower-triangular ``S`` with ``S Sᵀ = H + λ·mean(diag H)·I`` (invertible for any ``H``)."""
    n = h.shape[0]
    scale = float(np.mean(np.diag(h))) if n else 0.0
    damp = DAMPING * scale if scale > 0 else 1.0
    return np.linalg.cholesky(h + damp * np.eye(n))


def column_weights(h: np.ndarray) -> np.ndarray:
    """The Fisher proxy of ``method=fisher``: ``sqrt(mean_s x_sj²)`` per input column (damped like S)."""
    d = np.diag(h).copy()
    scale = float(np.mean(d)) if d.size else 0.0
    return np.sqrt(d + (DAMPING * scale if scale > 0 else 1.0))


def choose_rank(s: np.ndarray, rank: int | None, energy: float | None, shape: tuple[int, ...],
                codec_id: str) -> int:
    """How many singular values (``s``, descending) to keep; ``rank`` above min(rows, cols) is an error."""
    if rank is not None:
        if rank > s.size:
            raise ConfigError(
                f"{codec_id}: rank={rank} is larger than the matrix allows: a tensor of shape {shape} is a "
                f"{matrix_shape(shape)[0]} x {matrix_shape(shape)[1]} matrix of rank at most {s.size}; "
                f"choose rank <= {s.size} or energy=<share>"
            )
        return rank
    if s.size == 0 or s[0] == 0:
        return 0
    power = np.square(s / s[0])  # normalized first: huge values would overflow when squared
    cumulative = np.cumsum(power)
    return min(s.size, int(np.searchsorted(cumulative, float(energy or 1.0) * cumulative[-1] * (1 - 1e-12))) + 1)


def factorize(w: np.ndarray, rank: int | None, energy: float | None, method: str, calib: Any,
              shape: tuple[int, ...], codec_id: str) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)``, float64 (rows, r) and (r, cols), with ``A·B`` the best rank-r approximation of the matrix
    ``w`` in the metric of ``method``; the singular values are split evenly (√σ into each factor)."""
    rows, cols = w.shape
    if rank is not None:  # a bad rank fails before the work
        choose_rank(np.zeros(min(rows, cols)), rank, None, shape, codec_id)
    target = w
    if method == "activation_aware":
        whiten = whitener(gram(calib, shape, codec_id, method))
        target = w @ whiten
    elif method == "fisher":
        col = column_weights(gram(calib, shape, codec_id, method))
        target = w * col
    if target.size == 0:
        r = choose_rank(np.zeros(0), rank, energy, shape, codec_id)
        return np.zeros((rows, r)), np.zeros((r, cols))
    u, s, vt = np.linalg.svd(target, full_matrices=False)
    r = choose_rank(s, rank, energy, shape, codec_id)
    root = np.sqrt(s[:r])
    a = u[:, :r] * root
    b = root[:, None] * vt[:r]
    if method == "activation_aware":  # un-whiten: B S⁻¹, i.e. solve Sᵀ Bᵀ = (B_w)ᵀ
        b = np.linalg.solve(whiten.T, b.T).T
    elif method == "fisher":
        b = b / col
    return a, b


def store_factor(a: np.ndarray, factor_dtype: str, codec_id: str) -> np.ndarray:
    """A factor in the stored dtype; values that do not fit are a clear error."""
    dt = FACTOR_DTYPES[factor_dtype]
    with np.errstate(over="ignore"):
        out = a.astype(dt)
    if not np.all(np.isfinite(out)):
        raise InputError(
            f"{codec_id}: factor values (largest |value| {float(np.max(np.abs(a))):.4g}) overflow {factor_dtype}; "
            "use factor_dtype=float32, or scale the tensor"
        )
    return out


def load_factors(enc: Any, factor_dtype: str, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Parts ``u`` (rows, r) and ``v`` (r, cols) of a low-rank blob, checked against each other."""
    u = enc.parts.get("u")
    if not isinstance(u, np.ndarray) or u.ndim != 2:
        raise BlobError(f"{enc.codec.codec_id}: part 'u' must be a 2-D array")
    r = u.shape[1]
    dt = FACTOR_DTYPES[factor_dtype]
    return enc.part_array("u", dt, (rows, r)), enc.part_array("v", dt, (r, cols))
