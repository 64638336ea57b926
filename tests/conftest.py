"""Shared fixtures: real sample data (skipped on a laptop when missing, a failure under CI)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tensorpress.datasets import DataUnavailable

# Triton decides at decoration time whether a kernel is interpreted: without a GPU every Triton kernel module must
# be imported in interpreter mode, whichever test imports it first (the Triton tests set it too).
if not os.path.exists("/dev/nvidia0") and not os.environ.get("CUDA_VISIBLE_DEVICES"):
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
