"""The numcodecs codec ``tensorpress``, for zarr v2 arrays and other numcodecs users.

Configuration: ``{"id": "tensorpress", "spec": <JSON config of the codec or chain>}``, the same spec as
the zarr v3 codec. ``encode`` turns an array into one tensorpress blob; ``decode`` gives the array back
(shape and dtype from the blob), copied into ``out`` when one is given. Importing this module registers the
codec with numcodecs (the ``numcodecs.codecs`` entry point does the same for processes that do not).
"""

from __future__ import annotations

from typing import Any

import numcodecs.registry
import numpy as np
from numcodecs.abc import Codec as NumcodecsCodec
from numcodecs.compat import ensure_contiguous_ndarray, ensure_ndarray, ndarray_copy

from ..core.codec import build, config_of
from ..core.encoded import Encoded
from ..core.errors import ConfigError


class TensorpressNumcodecs(NumcodecsCodec):
    """numcodecs wrapper of a tensorpress codec; ``spec`` is a spec string, JSON configuration or Codec.

    ``encode`` keeps an ndarray's shape and dtype in the blob; any other buffer is taken as flat bytes.
    """

    codec_id = "tensorpress"

    def __init__(self, spec: Any = "raw") -> None:
        self.codec = build(spec)
        self.spec = config_of(self.codec)

    def encode(self, buf: Any) -> bytes:
        arr = buf if isinstance(buf, np.ndarray) else ensure_ndarray(buf)
        return self.codec.encode(arr).to_bytes()

    def decode(self, buf: Any, out: Any = None) -> Any:
        data = Encoded.from_bytes(ensure_contiguous_ndarray(buf).view(np.uint8))
        arr = data.decode()
        if out is None:
            return arr
        dst = ensure_ndarray(out)
        if dst.dtype != arr.dtype and dst.dtype.newbyteorder("=") == arr.dtype.newbyteorder("="):
            arr = arr.astype(dst.dtype)
        return ndarray_copy(np.ascontiguousarray(arr), out)

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "spec": self.spec}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TensorpressNumcodecs:
        conf = dict(config)
        codec_id = conf.pop("id", cls.codec_id)
        if codec_id != cls.codec_id or set(conf) != {"spec"}:
            raise ConfigError(f'expected {{"id": "tensorpress", "spec": …}}, got {dict(config)!r}')
        return cls(spec=conf["spec"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={str(self.codec)!r})"


numcodecs.registry.register_codec(TensorpressNumcodecs)
