"""Shared fixtures: real sample data (skipped on a laptop when missing, a failure under CI)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tensorpress.datasets import DataUnavailable

# Triton decides when a kernel is first built whether it is interpreted: without a GPU every Triton kernel must be
# built in interpreter mode, whichever test builds it first. With a GPU the Triton tests run the compiled kernels.
HAS_GPU = any(os.path.exists(p) for p in ("/dev/nvidia0", "/proc/driver/nvidia/version")) or bool(
    os.environ.get("CUDA_VISIBLE_DEVICES"))
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def load_real(loader: Callable[[], Any]) -> Any:
    """Call a dataset loader; missing data skips the test, except under CI where it fails."""
    try:
        return loader()
    except DataUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"real data missing in CI: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def camera() -> np.ndarray:
    from tensorpress.datasets import photo

    return load_real(lambda: photo("camera"))


@pytest.fixture(scope="session")
def disparity() -> np.ndarray:
    from tensorpress.datasets import disparity as load

    return load_real(load)


@pytest.fixture(scope="session")
def faces() -> np.ndarray:
    from tensorpress.datasets import face_stack

    return load_real(face_stack)


HAS_TRITON = importlib.util.find_spec("triton") is not None and importlib.util.find_spec("torch") is not None


@pytest.fixture
def triton_backend(monkeypatch: pytest.MonkeyPatch) -> str:
    """The Triton kernels' backend name: compiled on a GPU, else in Triton's interpreter on the CPU; skips
    without triton and torch."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    if not HAS_GPU:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    return "triton"


@pytest.fixture(scope="module")
def weight(camera: np.ndarray) -> np.ndarray:
    """A real 512×512 matrix (the camera photo), zero mean and unit variance: a weight for kernel tests."""
    a = camera.astype(np.float64)
    return ((a - a.mean()) / a.std()).astype(np.float32)


@pytest.fixture(scope="module")
def inputs(faces: np.ndarray) -> np.ndarray:
    """Real right-hand sides: 16 centred faces, flattened (625 each), as columns."""
    flat = faces.reshape(faces.shape[0], -1)[:16].astype(np.float64)
    return np.ascontiguousarray((flat - flat.mean()).T, dtype=np.float32)


def rhs(inputs: np.ndarray, rows: int, batch: int | None) -> np.ndarray:
    """``inputs`` repeated to ``rows`` rows: one column (batch None) or ``batch`` columns."""
    x = np.resize(inputs, (rows, inputs.shape[1]))  # repeats the real faces to any length
    return np.ascontiguousarray(x[:, 0] if batch is None else x[:, :batch])


@pytest.fixture(scope="module")
def layer(camera: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W (256 × 512) float32, X_calib (512 × 512), X_eval (512 × 512)): standardized camera rows as the
    weight, rows of the moon and brick photos as its inputs; calibration and evaluation rows disjoint."""
    from tensorpress.datasets import photo

    w = camera[:256].astype(np.float64)
    w = ((w - w.mean(axis=1, keepdims=True)) / (w.std(axis=1, keepdims=True) + 1.0)).astype(np.float32)
    x = np.concatenate([photo("moon"), photo("brick")]).astype(np.float32) / 255.0
    return w, x[0::2], x[1::2]
