"""``zstd(level=…)``: Zstandard, lossless. Alone it compresses the array's bytes; in a chain, the blob."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import zstandard

from ..core.codec import Codec, register
from ..core.errors import BlobError, ConfigError


@register
@dataclass(frozen=True)
class Zstd(Codec):
    level: int = 3
    threads: int = 0

    codec_id: ClassVar[str] = "zstd"
    role: ClassVar[str] = "bytes"
    lossless: ClassVar[bool] = True
    positional: ClassVar[str | None] = "level"
    summary: ClassVar[str] = "Zstandard byte compression, lossless"
    examples: ClassVar[tuple[str, ...]] = ("zstd", "zstd(level=19)")

    def validate(self) -> None:
        if not -7 <= self.level <= 22:
            raise ConfigError(f"zstd: level must be in -7..22, got {self.level}")
        if self.threads < 0:
            raise ConfigError(f"zstd: threads must be >= 0 (0 = single-threaded), got {self.threads}")

    def compress(self, data: memoryview, typesize: int = 1) -> bytes:
        return zstandard.ZstdCompressor(level=self.level, threads=self.threads).compress(data)

    def decompress(self, data: memoryview | bytes, size: int) -> bytes:
        try:
            declared = zstandard.frame_content_size(data)
        except zstandard.ZstdError as exc:
            raise BlobError(f"zstd data is corrupt: {exc}") from None
        if declared != size:
            raise BlobError(f"zstd frame declares {declared} bytes, the header {size}")
        try:
            out = zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise BlobError(f"zstd data is corrupt: {exc}") from None
        if len(out) != size:
            raise BlobError(f"zstd data decompressed to {len(out)} bytes, expected {size}")
        return out
