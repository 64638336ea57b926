"""``raw``: the array's bytes as they are (little-endian), for tensors that must stay exact and fast."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.codec import Codec, register, restore_dtype
from ..core.dtypes import to_little_endian
from ..core.encoded import Encoded


@register
@dataclass(frozen=True)
class Raw(Codec):
    codec_id: ClassVar[str] = "raw"
    lossless: ClassVar[bool] = True
    summary: ClassVar[str] = "uncompressed little-endian bytes (zero-copy to read)"
    examples: ClassVar[tuple[str, ...]] = ("raw",)

    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        return self._make(x, {"data": to_little_endian(x)}, {})

    def decode_array(self, enc: Encoded) -> np.ndarray:
        self._check_owner(enc)
        data = enc.part_array("data", enc.dtype.newbyteorder("<") if enc.dtype.itemsize > 1 else enc.dtype,
                              enc.shape)
        return restore_dtype(data, enc.dtype)
