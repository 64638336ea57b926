"""The header of a GGUF file: its metadata and tensor table, read without touching tensor data.

Layout (little-endian, GGUF versions 2 and 3): ``b"GGUF"``, version ``u32``, tensor count ``u64``,
metadata count ``u64``; each metadata entry is a key string, a value type ``u32`` and the value; each
tensor entry is a name string, ``u32`` dimension count, ``u64`` dimensions (fastest-varying first), ggml type
``u32`` and ``u64`` offset from the data section, which starts at the next multiple of
``general.alignment`` (default 32) after the table. A string is a ``u64`` length and UTF-8 bytes; an array
is an element type ``u32``, a ``u64`` count and the elements.

``gguf.GGUFReader`` builds one NumPy view per metadata part (about 150,000 for a 49k-token vocabulary),
which on a small model costs seconds and over 100 MiB; this reader keeps long arrays (the vocabulary) as
their element count only and walks the file once with bounds checks, so a truncated or hostile file
raises :class:`CheckpointError` instead of reading past its end.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sources import CheckpointError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # ggml tensors have at most 4 dimensions
MAX_KEPT_ARRAY = 1024  # longer metadata arrays are kept as ("array", element type, count)
_STRING, _ARRAY = 8, 9
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
            12: "<d"}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  #: NumPy order (slowest-varying first)
    ggml_type: int
    offset: int  #: absolute byte offset of the tensor's data in the file


@dataclass(frozen=True)
class Header:
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_start: int
    size: int  #: file size in bytes


class _Cursor:
    def __init__(self, buf: Any, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int, what: str) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.buf):
            raise CheckpointError(f"{self.path}: GGUF header ends inside {what} at byte {start}: the file is "
                                  "truncated or not GGUF")
        self.pos += n
        return start

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.scalar("<Q", what)
        start = self.take(n, what)
        try:
            return bytes(self.buf[start:start + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{self.path}: {what} at byte {start} is not UTF-8; the file is damaged") from None

    def skip_string(self, what: str) -> None:
        self.take(self.scalar("<Q", what), what)

    def value(self, kind: int, key: str) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind], f"the value of {key!r}")
        if kind == _STRING:
            return self.string(f"the value of {key!r}")
        if kind == _ARRAY:
            item, count = self.scalar("<I", key), self.scalar("<Q", key)
            if count > len(self.buf):
                raise CheckpointError(f"{self.path}: metadata {key!r} declares {count} elements; the file is damaged")
            if count > MAX_KEPT_ARRAY:
                self._skip_array(item, count, key)
                return ("array", item, count)
            return [self.value(item, key) for _ in range(count)]
        raise CheckpointError(f"{self.path}: metadata {key!r} has unknown value type {kind}; the file is damaged "
                              "or from a newer GGUF version")

    def _skip_array(self, item: int, count: int, key: str) -> None:
        if item in _SCALARS:
            self.take(count * struct.calcsize(_SCALARS[item]), f"the value of {key!r}")
        elif item == _STRING:
            for _ in range(count):
                self.skip_string(f"the value of {key!r}")
        else:
            for _ in range(count):
                self.value(item, key)


def read_header(path: Path) -> Header:
    """Metadata and tensor table of the GGUF file at ``path``; raises :class:`CheckpointError` if malformed."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size < 24:
            raise CheckpointError(f"{path}: {size} bytes is too short for a GGUF file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(_Cursor(buf, path), path, size)


def _parse(cur: _Cursor, path: Path, size: int) -> Header:
    if bytes(cur.buf[:4]) != MAGIC:
        raise CheckpointError(f"{path} is not a GGUF file (it does not start with b'GGUF')")
    cur.take(4, "the magic")
    version = cur.scalar("<I", "the version")
    if version not in VERSIONS:
        raise CheckpointError(f"{path}: GGUF version {version} is not supported (expected {VERSIONS}); "
                              "big-endian files and newer versions are not read")
    n_tensors, n_kv = cur.scalar("<Q", "the tensor count"), cur.scalar("<Q", "the metadata count")
    if n_tensors > size or n_kv > size:
        raise CheckpointError(f"{path}: GGUF header declares {n_tensors} tensors and {n_kv} metadata entries; "
                              "the file is damaged")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string("a metadata key")
        metadata[key] = cur.value(cur.scalar("<I", f"the type of {key!r}"), key)
    table = []
    for _ in range(n_tensors):
        name = cur.string("a tensor name")
        ndim = cur.scalar("<I", f"tensor {name!r}")
        if not 1 <= ndim <= MAX_DIMS:
            raise CheckpointError(f"{path}: tensor {name!r} declares {ndim} dimensions; expected 1 to {MAX_DIMS}")
        dims = struct.unpack_from(f"<{ndim}Q", cur.buf, cur.take(8 * ndim, f"tensor {name!r}"))
        ggml_type, offset = cur.scalar("<I", f"tensor {name!r}"), cur.scalar("<Q", f"tensor {name!r}")
        table.append((name, tuple(int(d) for d in reversed(dims)), int(ggml_type), int(offset)))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise CheckpointError(f"{path}: general.alignment {alignment!r} is not a power of two")
    data_start = -(-cur.pos // alignment) * alignment
    tensors = tuple(TensorInfo(n, s, t, data_start + o) for n, s, t, o in table)
    return Header(int(version), metadata, tensors, data_start, size)
