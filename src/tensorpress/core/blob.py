"""The one byte format of an ``Encoded``.

Layout (all integers little-endian)::

    0   4 bytes  magic b"TPRS"
    4   u8       format major version (readers refuse a newer major)
    5   u8       format minor version
    6   u16      reserved, zero
    8   u32      header length H
    12  u32      CRC-32C of the header
    16  H bytes  header: UTF-8 JSON {codec, shape, dtype, meta, parts: [{name, kind, offset, nbytes,
                 crc32c, dtype?, shape?}], size}
    …   buffers, each starting at a multiple of 64 bytes from the start of the blob

``kind`` is ``array`` (raw little-endian elements), ``bytes`` or ``encoded`` (a nested blob). Arrays are
returned as read-only views into the input buffer, so a memory-mapped file is decoded without copies.
Every declared size is checked against the buffer before anything is allocated.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import struct
import sys
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np

from .dtypes import contiguous, dtype_from_str, dtype_to_str
from .encoded import Encoded, max_decode_bytes
from .errors import BlobError, TensorpressError

MAGIC = b"TPRS"
VERSION = (1, 0)
ALIGN = 64
_PREFIX = struct.Struct("<4sBBHII")
MAX_HEADER = 16 << 20
MAX_DEPTH = 16


DEFERRED_CRC_BYTES = 1 << 16  # array parts from this size are checked when first read (see CheckedParts)
_THREADED_BYTES = 1 << 20  # parts from this size are checksummed when read, and copied when written, by threads
_THREADS = min(4, os.cpu_count() or 1)  # memory bandwidth is shared: a few threads reach it
_crc_kernel: Any = None  # the Numba CRC module once looked up; False where it cannot run
_pool: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _crc(data: Any, *, reading: bool = False) -> int:
    """CRC-32C of a part or header. google_crc32c takes bytes or ndarrays, not memoryviews; a uint8 view costs no
    copy. ``reading``: a large part is checksummed in slices on the blob threads where Numba is loaded already
    (a decode kernel loads it anyway). The slices run Numba's single-threaded kernel, which releases the GIL; a
    parallel region would leave its OpenMP workers spinning after it, taking the cores from what runs next
    (Blosc's threads lost a third of their speed to them). Writers never use it: loading Numba for a checksum
    costs ~125 MB, and even with Numba loaded, taking the kernel in raised a checkpoint conversion's peak by
    ~60 MB."""
    if type(data) is bytes:  # the header text: no array view needed
        return int(google_crc32c.value(data))
    view = np.frombuffer(data, dtype=np.uint8)
    if reading and view.size >= _THREADED_BYTES and _THREADS > 1 and "numba" in sys.modules:
        kernel = _crc_kernel if _crc_kernel is not None else _find_crc_kernel()
        if kernel:
            return int(kernel.crc32c(view, _blob_pool(), _THREADS))
    return int(google_crc32c.value(view))


def _blob_pool() -> ThreadPoolExecutor:
    global _pool
    with _POOL_LOCK:
        if _pool is None:
            _pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="tensorpress-blob")
        return _pool


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: work handed to it would wait forever."""
    global _pool, _POOL_LOCK
    _pool, _POOL_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _copy_into(out: np.ndarray, src: np.ndarray) -> None:
    """``out[:] = src``; a large copy split over the blob threads (NumPy releases the GIL while copying)."""
    if src.size < _THREADED_BYTES or _THREADS == 1:
        out[:] = src
        return
    bounds = [src.size * i // _THREADS for i in range(_THREADS + 1)]

    def copy(i: int) -> None:
        out[bounds[i] : bounds[i + 1]] = src[bounds[i] : bounds[i + 1]]

    list(_blob_pool().map(copy, range(_THREADS)))


def _find_crc_kernel() -> Any:
    """The Numba CRC-32C module (the ``crc32`` instruction), or False without Numba / SSE 4.2."""
    global _crc_kernel
    try:
        from ..kernels.numba import crc32c as module
    except ImportError:
        _crc_kernel = False
    else:
        _crc_kernel = module if module.available() else False
    return _crc_kernel


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _buffer(part: Any) -> tuple[str, Any, dict[str, Any]]:
    """(kind, buffer, extra header fields) of one part."""
    if isinstance(part, Encoded):
        return "encoded", dumps(part), {}
    if isinstance(part, np.ndarray):
        if part.dtype.byteorder == ">":
            raise TypeError("array parts must be little-endian")
        arr = contiguous(part)
        return "array", arr.reshape(-1).view(np.uint8), {
            "dtype": dtype_to_str(arr.dtype),
            "shape": list(arr.shape),
        }
    if isinstance(part, (bytes, bytearray, memoryview)):
        return "bytes", part, {}
    raise TypeError(f"part of type {type(part).__name__} cannot be serialized")


def _plan(enc: Encoded) -> tuple[bytes, list[Any], list[int], int]:
    from .codec import config_of

    entries, buffers, sizes = [], [], []
    for name, part in enc.parts.items():
        kind, buf, extra = _buffer(part)
        n = memoryview(buf).nbytes
        buffers.append(buf)
        sizes.append(n)
        entries.append({"name": name, "kind": kind, "nbytes": n, "crc32c": _crc(buf), **extra})
    header: dict[str, Any] = {
        "codec": config_of(enc.codec),
        "shape": list(enc.shape),
        "dtype": dtype_to_str(enc.dtype),
        "meta": dict(enc.meta),
        "parts": entries,
    }
    # Offsets depend on the header length, which depends on the offsets' digits: iterate to a fixed point.
    offsets = [0] * len(buffers)
    text = b""
    for _ in range(8):
        pos = _align(_PREFIX.size + len(text))
        for i, n in enumerate(sizes):
            offsets[i] = pos
            pos = _align(pos + n)
        total = offsets[-1] + sizes[-1] if sizes else _PREFIX.size + len(text)
        for entry, off in zip(entries, offsets, strict=True):
            entry["offset"] = off
        header["size"] = total
        new = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
        if new == text:
            break
        text = new
    else:  # pragma: no cover - the digits settle within two rounds
        raise RuntimeError("blob header did not settle")
    return text, buffers, offsets, total


def serialized_size(enc: Encoded) -> int:
    return _plan(enc)[3]


def _pieces(enc: Encoded) -> tuple[list[tuple[int, memoryview]], int]:
    """The blob's non-zero pieces as (offset, bytes) in order — prefix and header first, then each part's
    buffer — and the blob's length; the gaps between them are zero bytes."""
    text, buffers, offsets, total = _plan(enc)
    head = _PREFIX.pack(MAGIC, *VERSION, 0, len(text), _crc(text)) + text
    parts = [(off, memoryview(buf).cast("B")) for buf, off in zip(buffers, offsets, strict=True)]
    return [(0, memoryview(head)), *parts], total


def dumps(enc: Encoded) -> bytes:
    pieces, _ = _pieces(enc)
    joined: list[Any] = []
    pos = 0
    for off, mv in pieces:
        joined += [bytes(off - pos), mv]
        pos = off + mv.nbytes
    return b"".join(joined)  # one copy of the payload


def dumps_array(enc: Encoded) -> np.ndarray:
    """The bytes of :func:`dumps` in a uint8 array. A large ``bytes`` object is fresh memory touched page by
    page; NumPy asks the kernel for huge pages, which makes the one copy of a 40 MB payload 4x faster."""
    pieces, total = _pieces(enc)
    out = np.empty(total, np.uint8)
    pos = 0
    for off, mv in pieces:
        out[pos:off] = 0
        _copy_into(out[off : off + mv.nbytes], np.frombuffer(mv, np.uint8))
        pos = off + mv.nbytes
    return out


def loads(data: bytes | bytearray | memoryview, *, verify: bool = True, limit: int | None = None,
          _depth: int = 0) -> Encoded:
    """Parse a blob; raises :class:`BlobError` saying what is wrong with a bad one. ``limit``: the largest
    decoded size a blob may declare, by default :func:`~tensorpress.core.encoded.max_decode_bytes` now (a reader
    of many blobs, such as a container, looks it up once)."""
    try:
        view = memoryview(data).cast("B").toreadonly()
    except TypeError as exc:
        raise BlobError(f"expected bytes-like blob, got {type(data).__name__}") from exc
    if _depth > MAX_DEPTH:
        raise BlobError(f"blob nests deeper than {MAX_DEPTH} levels")
    if view.nbytes < _PREFIX.size:
        raise BlobError(f"blob is truncated: {view.nbytes} bytes, shorter than the {_PREFIX.size}-byte prefix")
    magic, major, minor, _, hlen, hcrc = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise BlobError(f"not a tensorpress blob: magic {bytes(magic)!r}, expected {MAGIC!r}")
    if major > VERSION[0]:
        raise BlobError(
            f"blob format version {major}.{minor} is newer than this tensorpress reads ({VERSION[0]}.x); "
            "upgrade tensorpress"
        )
    if hlen > MAX_HEADER or _PREFIX.size + hlen > view.nbytes:
        raise BlobError(f"blob is truncated or corrupt: header of {hlen} bytes in a {view.nbytes}-byte blob")
    text = bytes(view[_PREFIX.size : _PREFIX.size + hlen])
    head = _HEADERS.get(text)
    # a cached header is a text that passed its check: the same text with the same stored checksum passes again
    if (head is None or head.crc != hcrc) and _crc(text) != hcrc:
        raise BlobError("blob header is corrupt: checksum mismatch")
    if head is None:
        head = _parse_header(text, hlen, hcrc)
        if hlen <= _CACHED_HEADER_BYTES:
            with _HEADERS_LOCK:  # zarr decodes chunks in worker threads
                if len(_HEADERS) >= _CACHED_HEADERS:
                    _HEADERS.pop(next(iter(_HEADERS)))
                _HEADERS[text] = head
    if head.total > view.nbytes:
        raise BlobError(f"blob is truncated: header declares {head.total} bytes, got {view.nbytes}")
    view = view[: head.total]
    if limit is None:
        limit = max_decode_bytes()
    if head.decoded_bytes > limit:
        raise BlobError(
            f"blob declares a decoded size of {head.decoded_bytes} bytes, over the limit of "
            f"{limit}; raise TENSORPRESS_MAX_DECODE_BYTES if this is intended"
        )
    parts: dict[str, Any] = {}
    pending: dict[str, int] = {}
    for name, kind, off, n, crc, pdtype, pshape in head.parts:
        buf = view[off : off + n]
        if verify and kind == "array" and n >= DEFERRED_CRC_BYTES:
            pending[name] = crc  # checked on first access, or by a decode kernel that reads it anyway
        elif verify and _crc(buf, reading=True) != crc:
            raise BlobError(f"blob part {name!r} is corrupt: checksum mismatch")
        if kind == "array":  # one call makes the view: cheaper than frombuffer + reshape on a cold cache
            parts[name] = np.ndarray(pshape, pdtype, view, off) if n else np.empty(pshape, pdtype)
        elif kind == "bytes":
            parts[name] = buf
        else:
            parts[name] = loads(buf, verify=verify, limit=limit, _depth=_depth + 1)
    meta = copy.deepcopy(head.meta) if head.meta else {}
    return Encoded(head.codec, head.shape, head.dtype, CheckedParts(parts, pending) if pending else parts, meta)


_CACHED_HEADERS = 256  # parsed headers kept, by their text: a container's chunks share a few headers
_CACHED_HEADER_BYTES = 1 << 16
_HEADERS: dict[bytes, _Header] = {}
_HEADERS_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Header:
    """A header checked on its own: everything in it that does not depend on the bytes that follow."""

    crc: int
    codec: Any
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    meta: dict[str, Any]
    total: int
    decoded_bytes: int
    parts: tuple[tuple[str, str, int, int, int, Any, tuple[int, ...]], ...]


def _parse_header(text: bytes, hlen: int, header_crc: int) -> _Header:
    try:
        # ValueError also covers integers longer than Python's digit limit; NaN/Infinity are not JSON.
        header = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise BlobError(f"blob header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise BlobError("blob header is not a JSON object")
    from .codec import MAX_NESTING, nesting_depth

    if nesting_depth(header, MAX_NESTING) > MAX_NESTING:
        raise BlobError(f"blob header nests deeper than {MAX_NESTING} levels")
    total = _get(header, "size", int)
    shape = _shape(_get(header, "shape", list), "blob")
    dtype = _dtype(_get(header, "dtype", str))
    meta = _get(header, "meta", dict)
    parts = []
    names = set()
    spans = []
    for entry in _get(header, "parts", list):
        if not isinstance(entry, dict):
            raise BlobError("blob parts table holds a non-object entry")
        name = _get(entry, "name", str)
        kind = _get(entry, "kind", str)
        off, n = _get(entry, "offset", int), _get(entry, "nbytes", int)
        if off % ALIGN or off < _PREFIX.size + hlen or off + n > total:
            raise BlobError(f"blob part {name!r}: bad offset {off} / size {n} in a {total}-byte blob")
        spans.append((off, off + n, name))
        crc = _get(entry, "crc32c", int)
        if name in names:
            raise BlobError(f"blob part {name!r} appears twice")
        names.add(name)
        pdtype: np.dtype[Any] | None = None
        pshape: tuple[int, ...] = ()
        if kind == "array":
            pdtype = _dtype(_get(entry, "dtype", str))
            pshape = _shape(_get(entry, "shape", list), f"part {name!r}")
            if pdtype.byteorder == ">" or math.prod(pshape) * pdtype.itemsize != n:
                raise BlobError(f"blob part {name!r}: {n} bytes do not hold {pdtype} of shape {pshape}")
        elif kind not in ("bytes", "encoded"):
            raise BlobError(f"blob part {name!r} has unknown kind {kind!r}")
        parts.append((name, kind, off, n, crc, pdtype, pshape))
    spans.sort()
    for (_, end, a), (start, _, b) in itertools.pairwise(spans):
        if start < end:
            raise BlobError(f"blob parts {a!r} and {b!r} overlap")
    from .codec import build

    try:
        codec = build(_get(header, "codec", (dict, list)))
    except TensorpressError:
        raise
    except (TypeError, ValueError) as exc:
        raise BlobError(f"blob names a bad codec configuration: {exc}") from None
    return _Header(header_crc, codec, shape, dtype, meta, total, math.prod(shape) * dtype.itemsize, tuple(parts))


class CheckedParts(Mapping[str, Any]):
    """The parts of a parsed blob whose large array parts are checksummed when first read.

    Checking a part's CRC-32C on its own reads it from memory once more than decoding does; deferred, the
    check runs when the part is first taken — ``parts[name]``, iteration, ``to_bytes`` — or inside a decode
    kernel that reads the part anyway and checks it while it is in cache (:meth:`unchecked` then
    :meth:`confirm`). Decoding is safe on corrupt parts (every kernel accepts any bytes); a mismatch raises
    :class:`BlobError` before anything decoded from the part is returned.
    """

    def __init__(self, parts: dict[str, Any], pending: dict[str, int]) -> None:
        self._parts = parts
        self._pending = pending

    def __getitem__(self, name: str) -> Any:
        part = self._parts[name]
        expected = self._pending.get(name)
        if expected is not None:
            self.confirm(name, _crc(part, reading=True))
        return part

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts)

    def __contains__(self, name: object) -> bool:
        return name in self._parts

    def __len__(self) -> int:
        return len(self._parts)

    def unchecked(self, name: str) -> tuple[Any, int | None]:
        """Part ``name`` without checking it, and the CRC-32C it must have (None once checked)."""
        return self._parts[name], self._pending.get(name)

    def check_all(self) -> None:
        """Check every part not checked yet."""
        for name in list(self._pending):
            self[name]

    def confirm(self, name: str, crc: int) -> None:
        """Record the CRC-32C a kernel computed over part ``name``; raises BlobError when it is not the stored one."""
        expected = self._pending.get(name)
        if expected is not None:
            if crc != expected:
                raise BlobError(f"blob part {name!r} is corrupt: checksum mismatch")
            self._pending.pop(name, None)  # two threads may confirm the same part


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text:.40} overflows a float")
    return value


def _get(obj: dict[str, Any], key: str, kind: Any) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BlobError(f"blob header field {key!r} is missing or malformed: {value!r:.80}")
    if isinstance(value, int) and value < 0:
        raise BlobError(f"blob header field {key!r} is negative: {value}")
    return value


def _shape(value: list[Any], what: str) -> tuple[int, ...]:
    if len(value) > 64 or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise BlobError(f"{what} shape {value!r:.80} is not a list of non-negative integers")
    if math.prod(value) > 1 << 62:
        raise BlobError(f"{what} shape {value!r:.80} is absurdly large")
    return tuple(value)


def _dtype(name: str) -> np.dtype[Any]:
    return dtype_from_str(name)
