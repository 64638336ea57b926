"""The torch side: checkpoint conversion and loading, compressed ``Linear`` layers, GGUF interop.

Names are imported on first use, so ``import tensorpress.nn`` stays light: torch and transformers load only
when a function that needs them runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .convert import convert_checkpoint
    from .linear import CompressedLinear
    from .loading import load
    from .sources import open_checkpoint

__all__ = ["CompressedLinear", "convert_checkpoint", "load", "open_checkpoint"]

_HOMES = {
    "CompressedLinear": "linear",
    "convert_checkpoint": "convert",
    "load": "loading",
    "open_checkpoint": "sources",
}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())
