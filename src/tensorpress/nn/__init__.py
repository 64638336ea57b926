"""The torch side: checkpoint conversion and loading, compressed ``Linear`` layers, GGUF interop.

Names are imported on first use, so ``import tensorpress.nn`` stays light: torch and transformers load only
when a function that needs them runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
