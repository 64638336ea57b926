"""Checks every codec must pass; the conformance tests run them over the registry on real data.

Plugin authors can call them on their own codecs::

    from tensorpress.testing import check_codec
    check_codec(my_codec, real_array)
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .core.codec import Codec, build, config_of
from .core.dtypes import as_array, is_float
from .core.encoded import Encoded
from .core.errors import InputError


def check_config(codec: Codec) -> None:
    """The spec string and the JSON configuration both rebuild an equal codec; ``str`` is canonical."""
    text = str(codec)
    again = build(text)
    if again != codec or str(again) != text:
        raise AssertionError(f"spec text does not round-trip: {text!r} -> {again!r}")
    conf = json.loads(json.dumps(config_of(codec)))
    if build(conf) != codec:
        raise AssertionError(f"JSON configuration does not round-trip: {conf!r}")
    if not text.startswith(codec.stages[0].codec_id if hasattr(codec, "stages") else codec.codec_id):
        raise AssertionError(f"canonical spec {text!r} does not start with the codec's id")


def _bits(a: np.ndarray) -> np.ndarray:
    """Element bit patterns (for exact comparison with NaN payloads and signed zeros)."""
    a = np.ascontiguousarray(a)
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.kind != "b" else a


def check_encode_decode(codec: Codec, x: Any) -> Encoded | None:
    """Encode, serialize, parse, decode; check shape, dtype, size accounting and the codec's guarantee.

    Returns the :class:`Encoded`, or ``None`` when the codec declares it does not take this input and
    raised :class:`InputError` as it must.
    """
    arr = as_array(x)
    declines = (arr.dtype.kind in "biu" and not codec.accepts_integers) or (
        is_float(arr.dtype)
        and not codec.accepts_nonfinite
        and not bool(np.all(np.isfinite(arr.astype(np.float64))))
    )
    try:
        enc = codec.encode(x)
    except InputError:
        if declines:
            return None
        raise
    if declines:
        raise AssertionError(f"{codec} accepted input it declares it does not take ({arr.dtype})")
    blob = enc.to_bytes()
    if len(blob) != enc.nbytes:
        raise AssertionError(f"nbytes {enc.nbytes} != serialized length {len(blob)}")
    if enc.to_buffer().tobytes() != blob:
        raise AssertionError("to_buffer() and to_bytes() give different blobs")
    y = Encoded.from_bytes(blob).decode()
    if y.shape != arr.shape or y.dtype != arr.dtype:
        raise AssertionError(f"decoded {y.shape} {y.dtype}, expected {arr.shape} {arr.dtype}")
    if not np.array_equal(_bits(enc.decode()), _bits(y)):
        raise AssertionError("decoding the in-memory Encoded and its bytes differ")
    check_guarantee(codec, arr, y)
    return enc


def check_guarantee(codec: Codec, x: np.ndarray, y: np.ndarray) -> None:
    """Every element of ``y`` meets the codec's declared bound against ``x`` (exact for lossless)."""
    if codec.lossless:
        if not np.array_equal(_bits(x), _bits(y)):
            raise AssertionError(f"{codec} is declared lossless but changed the data")
        return
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    finite = np.isfinite(x64)
    if not np.array_equal(np.isnan(x64), np.isnan(y64)) or not np.array_equal(
        x64[~finite & ~np.isnan(x64)], y64[~finite & ~np.isnan(x64)]
    ):
        raise AssertionError(f"{codec} changed NaN or Inf elements")
    tol = np.broadcast_to(np.asarray(codec.tolerance(x), dtype=np.float64), x.shape)
    with np.errstate(invalid="ignore"):  # inf - inf where infinities match
        err = np.abs(x64 - y64)
    bad = finite & ~(err <= tol)
    if np.any(bad):
        i = np.unravel_index(int(np.argmax(bad)), x.shape) if x.ndim else ()
        raise AssertionError(
            f"{codec} breaks its bound on {int(bad.sum())} of {x.size} elements; "
            f"e.g. at {i}: |{x64[i]!r} - {y64[i]!r}| = {err[i]!r} > {tol[i]!r}"
        )


def check_codec(codec: Codec, x: Any) -> Encoded | None:
    """All checks: configuration round trip, then encode/decode with the guarantee."""
    check_config(codec)
    return check_encode_decode(codec, x)
