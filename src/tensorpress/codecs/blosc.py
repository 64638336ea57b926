"""``blosc(cname=…, clevel=…, shuffle=…)``: Blosc2 with byte/bit shuffling, lossless.

Compression goes through the C library that python-blosc2's wheel ships beside its extension, where it is
there: ``blosc2_compress`` writes straight into a NumPy buffer. ``blosc2.compress2`` returns a fresh
``bytes`` object, whose memory the kernel hands out 4 KiB page by page: at 64 MB that is half the call's
time. Both make the same Blosc2 chunk format, and ``compress2`` is the fallback.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import blosc2
import numpy as np

from ..core.codec import Codec, register
from ..core.errors import BlobError, ConfigError

_CODECS = {"zstd": blosc2.Codec.ZSTD, "lz4": blosc2.Codec.LZ4, "lz4hc": blosc2.Codec.LZ4HC,
           "blosclz": blosc2.Codec.BLOSCLZ, "zlib": blosc2.Codec.ZLIB}
_SHUFFLES = {"none": blosc2.Filter.NOFILTER, "byte": blosc2.Filter.SHUFFLE, "bit": blosc2.Filter.BITSHUFFLE}


_C_SHUFFLES = {"none": 0, "byte": 1, "bit": 2}  # the C API's doshuffle
_MAX_OVERHEAD = 32  # BLOSC2_MAX_OVERHEAD: a chunk never exceeds its input by more
_MAX_C_BYTES = (1 << 31) - 1 - _MAX_OVERHEAD  # sizes are int32 in the C API
_c_lib: Any = None  # the C library once loaded; False where it is not there
_C_LOCK = threading.Lock()  # the C API's compressor and thread count are global settings
_forked = False  # set in a forked child: the library's state came from a parent whose threads it lacks


def _after_fork_in_child() -> None:
    """A forked child gets a fresh lock (the parent's may be held by a thread it lacks) and runs Blosc on the
    calling thread alone: with Blosc's worker threads, forked children hung inside ``decompress2`` in 4 of 5 runs
    of the fork test while both cores were kept busy, and in none of 5 with one thread."""
    global _C_LOCK, _forked
    _C_LOCK = threading.Lock()
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _threads() -> int:
    """Blosc's threads for a call: python-blosc2's setting, one in a forked child."""
    return 1 if _forked else max(1, min(blosc2.nthreads, 1 << 15))


def _c_library() -> Any:
    global _c_lib
    if _c_lib is None:
        _c_lib = False
        # settings in BLOSC_* variables override the C API's arguments: then only compress2 does as asked
        if not any(key.startswith("BLOSC_") for key in os.environ):
            here = os.path.join(os.path.dirname(blosc2.__file__), "lib")
            found = [path for pattern in ("libblosc2.so*", "libblosc2*.dylib")
                     for path in sorted(glob.glob(os.path.join(here, pattern)))]
            for path in found:
                try:
                    lib = ctypes.CDLL(path)
                    lib.blosc1_set_compressor.argtypes = [ctypes.c_char_p]
                    lib.blosc2_set_nthreads.argtypes = [ctypes.c_int16]
                    lib.blosc2_compress.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int32, ctypes.c_void_p,
                                                    ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32]
                    lib.blosc2_init()
                except (OSError, AttributeError):
                    continue
                _c_lib = lib
                break
    return _c_lib


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

    def __post_init__(self) -> None:
        if self.shuffle is None:  # the spec grammar reads the bare word ``none`` as None: here it is the name
            object.__setattr__(self, "shuffle", "none")
        super().__post_init__()

    def validate(self) -> None:
        if self.cname not in _CODECS:
            raise ConfigError(f"blosc: cname must be one of {sorted(_CODECS)}, got {self.cname!r}")
        if self.shuffle not in _SHUFFLES:
            raise ConfigError(f"blosc: shuffle must be one of {sorted(_SHUFFLES)}, got {self.shuffle!r}")
        if not 0 <= self.clevel <= 9:
            raise ConfigError(f"blosc: clevel must be in 0..9, got {self.clevel}")
        if not 0 <= self.typesize <= 255:
            raise ConfigError(f"blosc: typesize must be in 0..255 (0 = the element size), got {self.typesize}")

    def compress(self, data: memoryview, typesize: int = 1) -> bytes | memoryview:
        if data.nbytes == 0:
            return b""
        typesize = min(self.typesize or typesize, 255)
        lib: Any = _c_library() if data.nbytes <= _MAX_C_BYTES and not _forked else None
        if lib:
            src = np.frombuffer(data, np.uint8)
            out = np.empty(src.size + _MAX_OVERHEAD, np.uint8)
            with _C_LOCK:
                known = lib.blosc1_set_compressor(self.cname.encode()) >= 0
                lib.blosc2_set_nthreads(_threads())
                n = (lib.blosc2_compress(self.clevel, _C_SHUFFLES[self.shuffle], typesize, src.ctypes.data, src.size,
                                         out.ctypes.data, out.size) if known else -1)
            if n > 0:
                out.resize(n, refcheck=False)  # gives the unused tail back without copying
                return out.data
        out_bytes: bytes = blosc2.compress2(
            data, codec=_CODECS[self.cname], clevel=self.clevel, filters=[_SHUFFLES[self.shuffle]],
            typesize=typesize, nthreads=_threads(),
        )
        return out_bytes

    def decompress(self, data: memoryview | bytes, size: int) -> bytes | np.ndarray:
        """Into a NumPy buffer: fresh memory that the kernel hands out in huge pages, where a ``bytes`` result
        is touched 4 KiB page by page (about twice the time at 64 MB); the decoded array is writable too."""
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
        out = np.empty(size, np.uint8)
        try:
            written = blosc2.decompress2(data, dst=out, nthreads=_threads())
        except (RuntimeError, ValueError) as exc:
            raise BlobError(f"blosc data is corrupt: {exc}") from None
        if written is not None and written != size:  # python-blosc2 returns None when filling ``dst``
            raise BlobError(f"blosc data decompressed to {written} bytes, expected {size}")
        return out
