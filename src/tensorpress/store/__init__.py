"""Storage: the zarr v3 codec ``tensorpress``, its numcodecs twin, and zarr-group containers of tensors.

Names are imported on first use, so ``import tensorpress.store`` stays light (no zarr, no torch) and a
numcodecs user never imports zarr.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .container import Container, save
    from .numcodecs_codec import TensorpressNumcodecs
    from .zarr_codec import TensorpressCodec

__all__ = ["Container", "TensorpressCodec", "TensorpressNumcodecs", "save"]

_HOMES = {
    "Container": "container",
    "save": "container",
    "TensorpressCodec": "zarr_codec",
    "TensorpressNumcodecs": "numcodecs_codec",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
