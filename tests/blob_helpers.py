"""Building blobs by hand for the robustness tests: the prefix, a JSON header, and a payload region.

Hand-built blobs put their first part at ``BASE`` (4096), so any test header up to ~4 KB fits in front of
the payload and a header can be edited without moving the parts.
"""

from __future__ import annotations

import contextlib
import copy
import json
import signal
import struct
import threading
from collections.abc import Iterator
from typing import Any

import google_crc32c
import numpy as np

PREFIX = struct.Struct("<4sBBHII")  # magic, major, minor, reserved, header length, CRC-32C of the header
BASE = 4096
ALIGN = 64

Part = tuple[str, str, bytes, dict[str, Any]]  # name, kind, payload, extra header fields


def crc(data: Any) -> int:
    return int(google_crc32c.value(bytes(data)))


def pack(
    header: dict[str, Any] | bytes,
    region: bytes = b"",
    *,
    magic: bytes = b"TPRS",
    major: int = 1,
    minor: int = 0,
    header_crc: int | None = None,
) -> bytes:
    """Prefix + header text; then, when ``region`` is given, zeros up to ``BASE`` and the region."""
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    check = crc(text) if header_crc is None else header_crc
    out = PREFIX.pack(magic, major, minor, 0, len(text), check) + text
    if region:
        if len(out) > BASE:
            raise ValueError(f"test header of {len(text)} bytes does not fit before the payload at {BASE}")
        out += bytes(BASE - len(out)) + region
    return out


def layout(
    codec: Any, shape: tuple[int, ...], dtype: str, parts: list[Part], meta: dict[str, Any] | None = None
) -> tuple[dict[str, Any], bytes]:
    """A well-formed header (offsets, sizes, checksums filled in) and its payload region."""
    entries, region = [], bytearray()
    for name, kind, data, extra in parts:
        entry = {"name": name, "kind": kind, "offset": BASE + len(region), "nbytes": len(data)}
        entries.append({**entry, "crc32c": crc(data), **extra})
        region += data + bytes(-len(data) % ALIGN)
    header = {
        "codec": codec,
        "shape": list(shape),
        "dtype": dtype,
        "meta": meta or {},
        "parts": entries,
        "size": BASE + len(region),
    }
    return header, bytes(region)


def raw_layout(arr: np.ndarray) -> tuple[dict[str, Any], bytes]:
    """Header and region of a ``raw`` blob of a little-endian array."""
    arr = np.ascontiguousarray(arr)
    part = ("data", "array", arr.tobytes(), {"dtype": arr.dtype.str, "shape": list(arr.shape)})
    return layout({"name": "raw", "configuration": {}}, arr.shape, arr.dtype.str, [part])


def read_header(blob: bytes) -> dict[str, Any]:
    _, _, _, _, hlen, _ = PREFIX.unpack_from(blob, 0)
    header: dict[str, Any] = json.loads(blob[PREFIX.size : PREFIX.size + hlen])
    return header


def relayout(blob: bytes) -> tuple[dict[str, Any], bytes]:
    """A real blob's header and parts moved to the hand-built layout (parts from ``BASE``)."""
    header = copy.deepcopy(read_header(blob))
    region = bytearray()
    for entry in header["parts"]:
        data = blob[entry["offset"] : entry["offset"] + entry["nbytes"]]
        entry["offset"] = BASE + len(region)
        region += data + bytes(-len(data) % ALIGN)
    header["size"] = BASE + len(region)
    return header, bytes(region)


def payload_spans(blob: bytes) -> list[tuple[str, int, int]]:
    """(part name, start, end) of every top-level part of a well-formed blob."""
    return [(e["name"], e["offset"], e["offset"] + e["nbytes"]) for e in read_header(blob)["parts"]]


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail instead of hanging: raise TimeoutError after ``seconds`` (POSIX main thread; elsewhere no limit)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"took longer than {seconds} s: a hang on hostile input")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
