"""``blosc(cname=…, clevel=…, shuffle=…)``: Blosc2 with byte/bit shuffling, lossless."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import blosc2

from ..core.codec import Codec, register
from ..core.errors import BlobError, ConfigError

_CODECS = {"zstd": blosc2.Codec.ZSTD, "lz4": blosc2.Codec.LZ4, "lz4hc": blosc2.Codec.LZ4HC,
           "blosclz": blosc2.Codec.BLOSCLZ, "zlib": blosc2.Codec.ZLIB}
_SHUFFLES = {"none": blosc2.Filter.NOFILTER, "byte": blosc2.Filter.SHUFFLE, "bit": blosc2.Filter.BITSHUFFLE}


@register
@dataclass(frozen=True)
class Blosc(Codec):
    cname: str = "zstd"
    clevel: int = 5
    shuffle: str = "byte"
    typesize: int = 0

    codec_id: ClassVar[str] = "blosc"
    role: ClassVar[str] = "bytes"
    lossless: ClassVar[bool] = True
    summary: ClassVar[str] = "Blosc2 (shuffle + zstd/lz4/...), lossless, multi-threaded"
    examples: ClassVar[tuple[str, ...]] = ("blosc", "blosc(cname=lz4, clevel=9, shuffle=bit)")

    def validate(self) -> None:
        if self.cname not in _CODECS:
            raise ConfigError(f"blosc: cname must be one of {sorted(_CODECS)}, got {self.cname!r}")
        if self.shuffle not in _SHUFFLES:
            raise ConfigError(f"blosc: shuffle must be one of {sorted(_SHUFFLES)}, got {self.shuffle!r}")
        if not 0 <= self.clevel <= 9:
            raise ConfigError(f"blosc: clevel must be in 0..9, got {self.clevel}")
        if not 0 <= self.typesize <= 255:
            raise ConfigError(f"blosc: typesize must be in 0..255 (0 = the element size), got {self.typesize}")

    def compress(self, data: memoryview, typesize: int = 1) -> bytes:
        if data.nbytes == 0:
            return b""
        out: bytes = blosc2.compress2(
            data, codec=_CODECS[self.cname], clevel=self.clevel, filters=[_SHUFFLES[self.shuffle]],
            typesize=min(self.typesize or typesize, 255),
        )
        return out

    def decompress(self, data: memoryview | bytes, size: int) -> bytes:
        if size == 0:
            if len(data):
                raise BlobError("blosc data present for an empty array")
            return b""
        try:
            nbytes, _, _ = blosc2.get_cbuffer_sizes(data)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise BlobError(f"blosc data is corrupt: {exc}") from None
        if nbytes != size:
            raise BlobError(f"blosc data declares {nbytes} bytes, the header {size}")
        try:
            out: bytes = blosc2.decompress2(data)
        except (RuntimeError, ValueError) as exc:
            raise BlobError(f"blosc data is corrupt: {exc}") from None
        if len(out) != size:
            raise BlobError(f"blosc data decompressed to {len(out)} bytes, expected {size}")
        return out
