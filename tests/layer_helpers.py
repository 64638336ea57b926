"""Shared measure of the layer-level tests: how far a compressed weight moves a layer's outputs."""

from __future__ import annotations

import numpy as np


def output_error(w: np.ndarray, y: np.ndarray, x: np.ndarray) -> float:
    """Relative error of the layer's outputs on the activations ``x`` (samples × in): ‖(W − Ŵ)Xᵀ‖ / ‖W Xᵀ‖."""
    diff = (y.astype(np.float64) - w) @ x.T.astype(np.float64)
    return float(np.linalg.norm(diff) / np.linalg.norm(w.astype(np.float64) @ x.T))
