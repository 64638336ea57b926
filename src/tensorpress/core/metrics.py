"""The one place for size and quality measures. Errors are computed in float64 on finite elements."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x).astype(np.float64)
    b = np.asarray(y).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return a, b


def bits_per_element(nbytes: int, n_elements: int) -> float:
    """Stored bits per original element (bits per pixel per band for images and cubes)."""
    return 8.0 * nbytes / n_elements if n_elements else math.inf


def compression_ratio(original_nbytes: int, compressed_nbytes: int) -> float:
    return original_nbytes / compressed_nbytes if compressed_nbytes else math.inf


def max_abs_error(x: Any, y: Any) -> float:
    a, b = _pair(x, y)
    d = np.abs(a - b)
    return float(np.nanmax(d)) if d.size and not np.all(np.isnan(d)) else 0.0


def rmse(x: Any, y: Any) -> float:
    a, b = _pair(x, y)
    return float(np.sqrt(np.nanmean((a - b) ** 2))) if a.size else 0.0


def psnr(x: Any, y: Any, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB; the peak is ``data_range`` or the reference's max − min."""
    a, _ = _pair(x, y)
    if data_range is None:
        data_range = float(np.nanmax(a) - np.nanmin(a)) if a.size else 0.0
    err = rmse(x, y)
    if err == 0.0:
        return math.inf
    return 20.0 * math.log10(data_range / err) if data_range > 0 else -math.inf


def relative_frobenius_error(x: Any, y: Any) -> float:
    """‖x − y‖_F / ‖x‖_F."""
    a, b = _pair(x, y)
    norm = float(np.linalg.norm(a.ravel()))
    diff = float(np.linalg.norm((a - b).ravel()))
    return diff / norm if norm else (0.0 if diff == 0 else math.inf)


def summary(x: Any, y: Any, nbytes: int, data_range: float | None = None) -> dict[str, float]:
    """Ratio, bpe and error measures of one reconstruction, as a table row."""
    a = np.asarray(x)
    return {
        "ratio": compression_ratio(a.nbytes, nbytes),
        "bits_per_element": bits_per_element(nbytes, a.size),
        "max_abs_error": max_abs_error(x, y),
        "rmse": rmse(x, y),
        "psnr_db": psnr(x, y, data_range),
        "rel_frobenius": relative_frobenius_error(x, y),
    }
