"""Objects of an R package's lazy-load database (``data/Rdata.rdx`` + ``data/Rdata.rdb``), read without R.

The ``.rdx`` file is a gzip-compressed serialized R list ``{variables: {name: [offset, length]},
references, compressed}``. Each object sits in the ``.rdb`` file at ``offset`` as ``length`` bytes: a 4-byte
big-endian uncompressed size, then (``compressed`` 2 or 3 only) one type byte ``Z``/``2``/``X``/``0``, then
the compressed serialization (zlib by default, bzip2, xz, or none). The PyPI ``rdata`` package parses the
serializations; it is imported only when a database is read.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import MissingDependencyError
from .sources import DataUnavailable

_DECOMPRESS: dict[bytes, Callable[[bytes], bytes]] = {
    b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress, b"0": bytes,
}


def read_lazyload(stem: Path) -> dict[str, Any]:
    """Every object of the database ``stem.rdx``/``stem.rdb``, converted by ``rdata`` (character vectors
    become NumPy string arrays), in the index's order."""
    rdx, rdb = stem.with_suffix(".rdx"), stem.with_suffix(".rdb")
    index = _parse(gzip.decompress(rdx.read_bytes()), rdx)
    try:
        variables, compressed = index["variables"], int(index["compressed"][0])
    except (KeyError, TypeError, IndexError, ValueError):
        raise DataUnavailable(f"{rdx} is not an R lazy-load index (no variables/compressed)") from None
    data = rdb.read_bytes()
    out = {}
    for name, (offset, length) in variables.items():
        out[str(name)] = _parse(_unpack(data[int(offset):int(offset) + int(length)], compressed, rdb), rdb)
    return out


def _unpack(record: bytes, compressed: int, where: Path) -> bytes:
    if len(record) < 5:
        raise DataUnavailable(f"{where}: a record of {len(record)} bytes is too short; fetch it again")
    (size,) = struct.unpack(">I", record[:4])
    if compressed in (2, 3):
        kind, body = record[4:5], record[5:]
        if kind not in _DECOMPRESS:
            raise DataUnavailable(f"{where}: unknown compression type {kind!r}, expected one of Z, 2, X, 0")
        raw = _DECOMPRESS[kind](body)
    else:
        raw = zlib.decompress(record[4:]) if compressed else record[4:]
    if len(raw) != size:
        raise DataUnavailable(f"{where}: a record decompressed to {len(raw)} bytes, its header says {size}")
    return raw


def _parse(serialized: bytes, where: Path) -> Any:
    try:
        import rdata
    except ImportError:
        raise MissingDependencyError("rdata", "llm", f"reading the R data in {where}") from None
    return rdata.conversion.convert(rdata.parser.parse_data(serialized, extension=".rds"))
