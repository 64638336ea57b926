"""Storage: the zarr v3 codec ``tensorpress``, its numcodecs twin, and zarr-group containers of tensors.

Names are imported on first use, so ``import tensorpress.store`` stays light (no zarr, no torch) and a
numcodecs user never imports zarr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())
