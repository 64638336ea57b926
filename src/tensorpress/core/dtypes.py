"""Dtype names that survive JSON, and normalisation of user input into NumPy arrays.

bfloat16 and the fp8 types come from ``ml_dtypes``; NumPy spells them as opaque ``V`` types, so they are
written by name. Every other dtype is written as NumPy's ``dtype.str`` (byte order included).
"""

from __future__ import annotations

import re
from typing import Any

import ml_dtypes
import numpy as np

from .errors import BlobError, InputError

ML_DTYPE_NAMES = ("bfloat16", "float8_e4m3fn", "float8_e5m2")
_ML_DTYPES = {name: np.dtype(getattr(ml_dtypes, name)) for name in ML_DTYPE_NAMES}
_ALLOWED_KINDS = "biuf"
_DTYPE_STR = re.compile(r"[<>|][biuf][0-9]{1,2}\Z")


def dtype_to_str(dtype: np.dtype[Any]) -> str:
    """Name of ``dtype`` for JSON headers: ``'bfloat16'`` or NumPy's ``'<f4'``-style string."""
    for name, ml in _ML_DTYPES.items():
        if dtype == ml:
            return name
    if dtype.kind not in _ALLOWED_KINDS:
        raise InputError(f"unsupported dtype {dtype}: expected bool, integer or floating point data")
    return dtype.str


def dtype_from_str(name: str) -> np.dtype[Any]:
    """Inverse of :func:`dtype_to_str`; raises :class:`BlobError` on anything else."""
    if name in _ML_DTYPES:
        return _ML_DTYPES[name]  # type: ignore[no-any-return]  # ml_dtypes is untyped
    # Only '<f4'-style names reach NumPy: it warns about (or misreads) many other strings.
    if not isinstance(name, str) or not _DTYPE_STR.match(name):
        raise BlobError(f"unsupported dtype {name!r:.40} in header: expected a bool, integer or float type")
    try:
        dtype = np.dtype(name)
    except TypeError as exc:
        raise BlobError(f"unknown dtype {name!r} in header") from exc
    if dtype.kind not in _ALLOWED_KINDS or dtype.str != name:
        raise BlobError(f"unsupported dtype {name!r} in header: expected a bool, integer or float type")
    return dtype


def is_float(dtype: np.dtype[Any]) -> bool:
    """True for IEEE-like floating types, bfloat16 and fp8 included."""
    return dtype.kind == "f" or any(dtype == ml for ml in _ML_DTYPES.values())


def native(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """``dtype`` in this machine's byte order."""
    return dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype


def as_array(x: Any) -> np.ndarray:
    """Turn user input into a NumPy array without copying where possible.

    Accepts NumPy arrays of any byte order and strides, CPU torch tensors (bfloat16 included), and anything
    ``np.asarray`` understands. Raises :class:`InputError` for object, string and complex data.
    """
    if type(x).__module__.startswith("torch"):
        x = _torch_to_numpy(x)
    arr = np.asarray(x)
    if arr.dtype.kind not in _ALLOWED_KINDS and not any(arr.dtype == ml for ml in _ML_DTYPES.values()):
        raise InputError(
            f"cannot compress an array of dtype {arr.dtype}: expected bool, integer or floating point data"
        )
    return arr


def _torch_to_numpy(t: Any) -> Any:
    import torch

    if not isinstance(t, torch.Tensor):
        raise InputError(f"expected a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise InputError(f"tensor is on {t.device}; move it to the CPU first (tensor.cpu())")
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(_ML_DTYPES["bfloat16"])
    if t.dtype == torch.float8_e4m3fn:
        return t.contiguous().view(torch.uint8).numpy().view(_ML_DTYPES["float8_e4m3fn"])
    if t.dtype == torch.float8_e5m2:
        return t.contiguous().view(torch.uint8).numpy().view(_ML_DTYPES["float8_e5m2"])
    return np.asarray(t.numpy())


def to_little_endian(arr: np.ndarray) -> np.ndarray:
    """C-contiguous little-endian copy (or view when it already is)."""
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return contiguous(arr)


def contiguous(arr: np.ndarray) -> np.ndarray:
    """C-contiguous ``arr`` (a view when it already is); unlike ``np.ascontiguousarray``, 0-d stays 0-d."""
    return arr if arr.flags.c_contiguous else np.array(arr, order="C")


def byte_view(arr: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array as a flat memoryview (works for bfloat16 too)."""
    flat: Any = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return memoryview(flat)
