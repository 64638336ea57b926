"""tensorpress: one compression suite for every stored tensor.

>>> import numpy as np, tensorpress as tp
>>> enc = tp.encode(np.linspace(0, 1, 1000, dtype=np.float32), "quant(bits=8, group=128)")
>>> float(np.abs(tp.decode(enc) - np.linspace(0, 1, 1000)).max()) <= 0.5 / 255 * 0.13
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.codec import CODECS, Codec, build
from .core.encoded import Encoded
from .core.errors import TensorpressError

if TYPE_CHECKING:
    from .store.container import Container

__all__ = [
    "Codec",
    "Encoded",
    "TensorpressError",
    "available",
    "decode",
    "encode",
    "open",
    "save",
    "spec",
    "zarr_codec",
]
__version__ = "0.1.0"


def spec(s: Any) -> Codec:
    """Parse a spec string (``"quant(bits=4, group=128)"``, ``"bitround(keep=7) | zstd"``) or JSON config.

    ``str(spec(s))`` is the canonical form, with every parameter written.
    """
    return build(s)


def encode(x: Any, spec: Any, *, calib: Any = None) -> Encoded:
    """Compress an array (NumPy, CPU torch, anything array-like) with a codec spec."""
    return build(spec).encode(x, calib=calib)


def decode(enc: Encoded | bytes | bytearray | memoryview) -> Any:
    """Rebuild the array from an :class:`Encoded` or its bytes: the original shape and dtype."""
    if not isinstance(enc, Encoded):
        enc = Encoded.from_bytes(enc)
    return enc.decode()


def available() -> list[str]:
    """Registered codec ids (built-in and plugins)."""
    return CODECS.names()


def save(path: Any, tensors: Any, *, spec: Any = "raw", policy: Any = None, **kwargs: Any) -> None:
    """Write ``{name: array or Encoded}`` to a zarr v3 container (a directory, or one ``.zip`` file)."""
    from .store.container import save as _save

    _save(path, tensors, spec=spec, policy=policy, **kwargs)


def open(path: Any) -> Container:
    """Open a container lazily: ``open(p)[name]`` reads and decodes chunk by chunk."""
    from .store.container import Container

    return Container(path)


def zarr_codec(spec: Any) -> Any:
    """The zarr v3 array→bytes codec ``tensorpress`` for ``spec``."""
    from .store.zarr_codec import TensorpressCodec

    return TensorpressCodec(spec=spec)
