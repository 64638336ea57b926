"""Reading and writing named arrays in the plain formats the command line converts: ``.npy``, ``.npz`` and
``.safetensors`` (bfloat16 and fp8 included, without torch).

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {…}}`` and the raw little-endian
tensor bytes; offsets count from the first byte after the header. Every write is atomic (temp file +
rename), so a failed write leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import ml_dtypes
import numpy as np

from ..core.errors import TensorpressError

SUFFIXES = (".npy", ".npz", ".safetensors")
_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header

_SAFETENSORS_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


class TensorFileError(TensorpressError, ValueError):
    """A tensor file has an unsupported name or format, or its contents are malformed."""


def read_tensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """All arrays of a ``.npy`` (named after the file's stem), ``.npz`` or ``.safetensors`` file.

    Pickled objects are refused. Arrays keep their dtype (bfloat16 as ``ml_dtypes.bfloat16``).
    """
    path = Path(path)
    suffix = _suffix(path, "input")
    try:
        if suffix == ".npy":
            return {path.stem: np.load(path, allow_pickle=False)}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise TensorFileError(f"cannot read {path}: {exc}") from None
    return read_safetensors(path)


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file, in file order, each checked against the file's size."""
    data_start, index = safetensors_index(path)
    with open(path, "rb") as f:
        tensors = {}
        for name, (dtype, shape, begin) in index.items():
            f.seek(data_start + begin)
            tensors[name] = np.fromfile(f, dtype=dtype, count=math.prod(shape)).reshape(shape)
        return tensors


def safetensors_index(
    path: str | os.PathLike[str],
) -> tuple[int, dict[str, tuple[np.dtype[Any], tuple[int, ...], int]]]:
    """``(data_start, {name: (dtype, shape, begin)})`` of a safetensors file, in file order, each entry
    checked against the file's size; tensor ``name`` is at byte ``data_start + begin``. Reads the header."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(8)
        if len(prefix) < 8:
            raise TensorFileError(f"{path} is not a safetensors file: {size} bytes, no header length")
        (hlen,) = struct.unpack("<Q", prefix)
        if hlen > _MAX_HEADER or 8 + hlen > size:
            raise TensorFileError(f"{path}: header length {hlen} does not fit in a {size}-byte file")
        try:
            header = json.loads(f.read(hlen))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TensorFileError(f"{path}: safetensors header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise TensorFileError(f"{path}: safetensors header is not a JSON object")
    data_start, data_len = 8 + hlen, size - 8 - hlen
    return data_start, {
        name: _entry(path, name, entry, data_len) for name, entry in header.items() if name != "__metadata__"
    }


def write_tensors(path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray]) -> None:
    """Write ``tensors`` atomically as ``.npy`` (exactly one array), ``.npz`` or ``.safetensors``.

    NumPy's formats have no bfloat16/fp8: such arrays go to ``.npy``/``.npz`` as float32, which holds every
    value exactly. ``.safetensors`` keeps them as they are.
    """
    path = Path(path)
    suffix = check_output(path, len(tensors))
    if suffix == ".safetensors":
        write_atomic(path, lambda f: _write_safetensors(f, tensors))
        return
    plain = {name: widen_for_numpy(arr) for name, arr in tensors.items()}
    if suffix == ".npy":
        (array,) = plain.values()
        write_atomic(path, lambda f: np.save(f, array, allow_pickle=False))
    else:
        write_atomic(path, lambda f: _write_npz(f, plain))


def check_output(path: str | os.PathLike[str], count: int) -> str:
    """The suffix of an output file for ``count`` tensors; raises if the file kind cannot hold them."""
    suffix = _suffix(Path(path), "output")
    if suffix == ".npy" and count != 1:
        raise TensorFileError(
            f"a .npy file holds one array, not {count}; write a .npz or .safetensors file instead"
        )
    return suffix


def widen_for_numpy(arr: np.ndarray) -> np.ndarray:
    """bfloat16/fp8 arrays as float32 (exact); any other array as it is."""
    return arr.astype(np.float32) if needs_widening(arr.dtype) else arr


def needs_widening(dtype: np.dtype[Any]) -> bool:
    """True for dtypes that ``.npy`` cannot record (ml_dtypes' bfloat16 and fp8)."""
    return dtype.kind == "V"


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _suffix(path: Path, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise TensorFileError(
            f"{what} {path}: expected a {', '.join(SUFFIXES)} file, got {suffix or 'no suffix'!r}"
        )
    return suffix


def _entry(
    path: str | os.PathLike[str], name: str, entry: Any, data_len: int
) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """(dtype, shape, begin) of one header entry, after checking it against the data size."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict):
        raise TensorFileError(f"{where}: header entry is not an object")
    code, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if code not in _SAFETENSORS_DTYPES:
        supported = ", ".join(_SAFETENSORS_DTYPES)
        raise TensorFileError(f"{where}: dtype {code!r} is not supported; supported: {supported}")
    ints = (list, tuple)
    if not isinstance(shape, ints) or not all(type(d) is int and d >= 0 for d in shape):
        raise TensorFileError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if not isinstance(offsets, ints) or len(offsets) != 2 or not all(type(o) is int for o in offsets):
        raise TensorFileError(f"{where}: data_offsets {offsets!r} is not [begin, end]")
    dtype = _SAFETENSORS_DTYPES[code]
    begin, end = offsets
    if not 0 <= begin <= end <= data_len or end - begin != math.prod(shape) * dtype.itemsize:
        raise TensorFileError(
            f"{where}: bytes {begin}..{end} do not hold {code} of shape {tuple(shape)} "
            f"in {data_len} bytes of data"
        )
    return dtype, tuple(shape), begin


def _write_npz(f: IO[bytes], arrays: Mapping[str, np.ndarray]) -> None:
    # np.savez's own keyword arguments would clash with tensors named "file" or "allow_pickle"
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, arr in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, arr, allow_pickle=False)


def _write_safetensors(f: IO[bytes], tensors: Mapping[str, np.ndarray]) -> None:
    codes = {dtype: code for code, dtype in _SAFETENSORS_DTYPES.items()}
    little = {}
    for name, arr in tensors.items():
        arr = arr.astype(arr.dtype.newbyteorder("<")) if arr.dtype.byteorder == ">" else arr
        if arr.dtype not in codes:
            raise TensorFileError(f"tensor {name!r}: dtype {arr.dtype} cannot be stored in safetensors")
        little[name] = arr
    # Wider elements first: every tensor then starts at a multiple of its element size, as in safetensors.
    order = sorted(little, key=lambda n: -little[n].dtype.itemsize)
    offsets, pos = {}, 0
    for name in order:
        offsets[name] = [pos, pos + little[name].nbytes]
        pos += little[name].nbytes
    header = {
        name: {"dtype": codes[arr.dtype], "shape": list(arr.shape), "data_offsets": offsets[name]}
        for name, arr in little.items()
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    f.write(struct.pack("<Q", len(text)) + text)
    for name in order:
        f.write(np.ascontiguousarray(little[name]).reshape(-1).view(np.uint8).data)
