"""``Encoded``: what a codec produced — its configuration, the original shape and dtype, JSON metadata and
named parts (ndarrays, bytes, or nested ``Encoded``), so formats compose."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BlobError

if TYPE_CHECKING:
    from .codec import Codec

Part = "np.ndarray | bytes | Encoded"
MAX_DECODE_DEPTH = 32
_DECODE_DEPTH: ContextVar[int] = ContextVar("tensorpress_decode_depth", default=0)


def max_decode_bytes() -> int:
    """Largest decoded size a blob may declare (``TENSORPRESS_MAX_DECODE_BYTES``; default: physical RAM)."""
    env = os.environ.get("TENSORPRESS_MAX_DECODE_BYTES")
    if env:
        return int(env)
    return _physical_memory()


@cache
def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 36


@dataclass(frozen=True, eq=False)
class Encoded:
    """A compressed tensor.

    ``shape``/``dtype`` are the original array's; ``parts`` maps names to little-endian ndarrays, bytes or
    nested ``Encoded``; ``meta`` is JSON-serializable. ``nbytes == len(to_bytes())``.
    """

    codec: Codec
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    parts: Mapping[str, Any]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def decode(self) -> np.ndarray:
        """The original array: ``shape`` and ``dtype`` as recorded; a bad blob raises ``BlobError``."""
        # Chains hold nested blobs inside compressed bytes, which the parser's depth limit cannot see.
        depth = _DECODE_DEPTH.get()
        if depth >= MAX_DECODE_DEPTH:
            raise BlobError(f"encoded data nests deeper than {MAX_DECODE_DEPTH} levels")
        token = _DECODE_DEPTH.set(depth + 1)
        try:
            out = self.codec.decode(self)
            check_rest = getattr(self.parts, "check_all", None)
            if check_rest is not None:  # parts the decoder left unchecked: nothing returns from a corrupt blob
                check_rest()
        finally:
            _DECODE_DEPTH.reset(token)
        if out.shape != self.shape or out.dtype != self.dtype:
            raise BlobError(
                f"{self.codec.codec_id} data decoded to shape {out.shape} {out.dtype}, but its header "
                f"records {self.shape} {self.dtype}: the blob is inconsistent"
            )
        return out

    def to_bytes(self) -> bytes:
        from .blob import dumps

        return dumps(self)

    def to_buffer(self) -> np.ndarray:
        """The bytes of :meth:`to_bytes` in a read-write uint8 array: the same blob, made faster for large
        data (what containers and the zarr codec write)."""
        from .blob import dumps_array

        return dumps_array(self)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *, verify: bool = True) -> Encoded:
        """Parse a blob (zero-copy: array parts are read-only views into ``data``)."""
        from .blob import loads

        return loads(data, verify=verify)

    @cached_property
    def nbytes(self) -> int:
        """Compressed size in bytes, header included."""
        from .blob import serialized_size

        return serialized_size(self)

    @property
    def size(self) -> int:
        """Number of elements of the original array."""
        return math.prod(self.shape)

    @property
    def bits_per_element(self) -> float:
        return 8.0 * self.nbytes / self.size if self.size else math.inf

    @property
    def ratio(self) -> float:
        """Original bytes / compressed bytes."""
        return self.size * self.dtype.itemsize / self.nbytes

    # --- part access with checks (decoders call these; a bad blob raises BlobError) -------------------
    def _part(self, name: str) -> Any:
        try:
            return self.parts[name]
        except KeyError:
            raise BlobError(
                f"{self.codec.codec_id} data has no part {name!r} (parts: {sorted(self.parts)})"
            ) from None

    def _unchecked(self, name: str) -> tuple[Any, int | None]:
        unchecked = getattr(self.parts, "unchecked", None)
        return unchecked(name) if unchecked is not None else (self.parts[name], None)

    def part_array(
        self, name: str, dtype: Any, shape: tuple[int, ...] | None = None
    ) -> np.ndarray:
        """Part ``name`` as an ndarray of ``dtype`` (and ``shape`` when given)."""
        return self._check_array(name, self._part(name), dtype, shape)

    def part_array_unchecked(
        self, name: str, dtype: Any, shape: tuple[int, ...] | None = None
    ) -> tuple[np.ndarray, int | None]:
        """Like :meth:`part_array` for a kernel that checksums the part while decoding it: the array, and the
        CRC-32C it must have when the blob's check of it was left to the reader (else None). The caller
        reports what it computed with :meth:`confirm_part` before returning anything decoded from it."""
        try:
            arr, expected = self._unchecked(name)
        except KeyError:
            self._part(name)  # raises the missing-part error
            raise
        return self._check_array(name, arr, dtype, shape), expected

    def confirm_part(self, name: str, crc: int) -> None:
        """The CRC-32C a kernel computed over part ``name``; raises BlobError when it is not the stored one."""
        confirm = getattr(self.parts, "confirm", None)
        if confirm is not None:
            confirm(name, crc)

    def _check_array(self, name: str, arr: Any, dtype: Any, shape: tuple[int, ...] | None) -> np.ndarray:
        want = np.dtype(dtype)
        if not isinstance(arr, np.ndarray) or arr.dtype != want:
            got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
            raise BlobError(f"{self.codec.codec_id} part {name!r}: expected {want} array, got {got}")
        if shape is not None and tuple(arr.shape) != tuple(shape):
            raise BlobError(
                f"{self.codec.codec_id} part {name!r}: expected shape {tuple(shape)}, got {arr.shape}"
            )
        return arr

    def part_bytes(self, name: str) -> bytes | memoryview:
        data = self._part(name)
        if not isinstance(data, (bytes, memoryview)):
            raise BlobError(f"{self.codec.codec_id} part {name!r}: expected bytes, got {type(data).__name__}")
        return data

    def part_encoded(self, name: str) -> Encoded:
        data = self._part(name)
        if not isinstance(data, Encoded):
            raise BlobError(f"{self.codec.codec_id} part {name!r}: expected nested data")
        return data

    def __repr__(self) -> str:
        return (
            f"Encoded({self.codec}, shape={self.shape}, dtype={self.dtype}, nbytes={self.nbytes}, "
            f"parts={sorted(self.parts)})"
        )
