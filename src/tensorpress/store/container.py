"""Containers: a zarr v3 group (a directory, or one ``.zip`` file) holding one array per tensor.

Layout:

- each tensor is a zarr array named as the tensor, with the ``tensorpress`` codec as its serializer and its
  spec in the array attributes (``{"tensorpress": {"spec": "quant(bits=4, …)"}}``, for people);
- a ``/`` in a tensor name makes nested groups (``"vision/patch.weight"`` is array ``patch.weight`` in
  group ``vision``); dots are kept as they are (``"model.layers.0.weight"`` is one array);
- bfloat16 and fp8 tensors, which zarr 3.1 has no data type for, are arrays of their unsigned bit pattern
  (``uint16``/``uint8``) with ``"dtype": "bfloat16"`` in their ``tensorpress`` attribute; plain zarr reads
  the bits, :class:`Container` gives the real type back;
- group attributes hold the caller's ``attrs`` plus ``"tensorpress": {"version": 1, "tensors": [names]}``
  (the names in the order they were given);
- big-endian input is stored little-endian (same values; ``encoded(name)`` of an array input is little-endian);
- an empty tensor has no chunk at all (zarr stores none), so ``encoded(name)`` encodes it afresh with its spec.

By default a tensor is one chunk: methods such as GPTQ, low-rank or VQ need the whole matrix. Edge chunks
are padded with zeros to the chunk shape, as zarr does. Writes go to a hidden sibling first and are moved
into place when complete; a failure removes it and leaves any existing container at the path untouched.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import math
import mmap
import os
import secrets
import shutil
import sys
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore, ZipStore

from ..core.blob import loads
from ..core.codec import Codec, build
from ..core.dtypes import ML_DTYPE_NAMES, as_array, dtype_from_str
from ..core.encoded import Encoded, max_decode_bytes
from ..core.errors import ContainerError
from ..core.metrics import bits_per_element, compression_ratio
from .zarr_codec import TensorpressCodec

_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux only
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)

ATTR = "tensorpress"
VERSION = 1
AUTO_CHUNK_BYTES = 16 << 20
SKIP = "skip"


# --- writing ---------------------------------------------------------------------------------------------


def save(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Any],
    *,
    spec: Any = "raw",
    policy: Mapping[str, Any] | None = None,
    chunks: tuple[int | None, ...] | str | None = None,
    attrs: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> None:
    """Write ``{name: array or Encoded}`` to a container at ``path`` (a ``.zip`` suffix makes one zip file).

    ``spec`` encodes every array; ``policy`` maps glob patterns (``fnmatch``) to specs, the first matching
    pattern wins and ``"skip"`` leaves the tensor out. An ``Encoded`` is stored as is, as its array's single
    chunk. ``chunks``: ``None`` (each tensor one chunk), ``"auto"`` (axis 0 split into ~16 MiB chunks) or a
    chunk shape (``None`` entries span the whole axis). ``attrs`` (JSON) go into the group attributes.
    Everything is checked before anything is written; an existing container at ``path`` is replaced only
    once the new one is complete.
    """
    target = Path(os.fspath(path))
    plan = _plan(tensors, spec, policy)
    group_attrs = _group_attrs(attrs, [name for name, _, _ in plan])
    is_zip = target.suffix.lower() == ".zip"
    _check_replaceable(target, is_zip)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}")
    try:
        store = ZipStore(tmp, mode="w") if is_zip else LocalStore(tmp)
        try:
            root = zarr.create_group(store=store, zarr_format=3, attributes=group_attrs)
            for name, value, codec in _progress(plan, target, progress):
                if isinstance(value, Encoded):
                    _write_encoded(root, name, value)
                else:
                    _write_array(root, name, value, codec, chunks)
        finally:
            store.close()
        _move_into_place(tmp, target, is_zip)
    except BaseException:
        _remove(tmp)
        raise


def _plan(
    tensors: Mapping[str, Any], spec: Any, policy: Mapping[str, Any] | None
) -> list[tuple[str, Any, Codec]]:
    """(name, value, codec) of every tensor to store, with every spec and name checked."""
    if not isinstance(tensors, Mapping):
        raise ContainerError(f"expected a mapping of tensor name → array or Encoded, got {type(tensors).__name__}")
    default = _codec_or_skip(spec)
    if policy is not None and not isinstance(policy, Mapping):
        raise ContainerError(f"policy must map glob patterns to specs, got {type(policy).__name__}")
    rules = [(_pattern(p), _codec_or_skip(s)) for p, s in (policy or {}).items()]
    used: set[int] = set()
    plan = []
    for name, value in tensors.items():
        _check_name(name)
        codec = default
        for i, (pattern, rule) in enumerate(rules):
            if fnmatch.fnmatchcase(name, pattern):
                used.add(i)
                codec = rule
                break
        if codec is not None:
            plan.append((name, value, codec))
    unused = [pattern for i, (pattern, _) in enumerate(rules) if i not in used]
    if unused:
        sample = ", ".join(repr(n) for n in itertools.islice(tensors, 5))
        raise ContainerError(
            f"policy pattern(s) {', '.join(map(repr, unused))} match no tensor (or only tensors an earlier "
            f"pattern already took); tensor names look like {sample}; fix or remove the pattern"
        )
    _check_nesting([name for name, _, _ in plan])
    return plan


def _pattern(pattern: Any) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise ContainerError(f"policy keys must be glob patterns such as '*.weight', got {pattern!r}")
    return pattern


def _codec_or_skip(spec: Any) -> Codec | None:
    return None if isinstance(spec, str) and spec.strip() == SKIP else build(spec)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ContainerError(f"tensor names must be non-empty strings, got {name!r}")
    for part in name.split("/"):
        if not part or set(part) == {"."} or part.startswith("__") or part == "zarr.json" or "\x00" in part:
            raise ContainerError(
                f"tensor name {name!r} cannot be stored: each '/'-separated part must be non-empty, not only "
                "dots, not start with '__' and not be 'zarr.json'; rename the tensor"
            )


def _check_nesting(names: list[str]) -> None:
    stored = set(names)
    for name in names:
        parts = name.split("/")
        for k in range(1, len(parts)):
            prefix = "/".join(parts[:k])
            if prefix in stored:
                raise ContainerError(
                    f"tensor {prefix!r} would also have to be the group holding {name!r}; rename one of them"
                )


def _group_attrs(attrs: Mapping[str, Any] | None, names: list[str]) -> dict[str, Any]:
    out = dict(attrs or {})
    if ATTR in out:
        raise ContainerError(f"the group attribute {ATTR!r} is reserved for tensorpress; rename that key")
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ContainerError(f"attrs must be JSON-serializable: {exc}") from None
    out[ATTR] = {"version": VERSION, "tensors": names}
    return out


def _progress(plan: list[Any], target: Path, enabled: bool) -> Iterator[Any]:
    if not enabled or len(plan) <= 1:
        yield from plan
        return
    from tqdm import tqdm

    yield from tqdm(plan, desc=f"saving {target.name}", unit="tensor", file=sys.stderr)


def _storage_dtype(dtype: np.dtype[Any]) -> tuple[np.dtype[Any], dict[str, Any]]:
    """The zarr dtype of a tensor and the attribute that restores its own dtype."""
    if dtype.name in ML_DTYPE_NAMES:
        return np.dtype(f"<u{dtype.itemsize}"), {"dtype": dtype.name}
    return (dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype), {}


def _create(root: zarr.Group, name: str, shape: tuple[int, ...], dtype: np.dtype[Any], chunks: tuple[int, ...],
            codec: Codec) -> zarr.Array:
    storage, extra = _storage_dtype(dtype)
    return root.create_array(
        name,
        shape=shape,
        dtype=storage,
        chunks=chunks,
        serializer=TensorpressCodec(spec=codec),
        compressors=None,
        filters=None,
        fill_value=0,
        attributes={ATTR: {"spec": str(codec), **extra}},
    )


def _put(arr: zarr.Array, coords: tuple[int, ...], enc: Encoded) -> None:
    """Store ``enc``'s blob as the chunk at grid ``coords``, byte for byte."""
    key = arr.metadata.encode_chunk_key(coords)
    sync((arr.store_path / key).set(default_buffer_prototype().buffer.from_array_like(enc.to_buffer())))


def _write_encoded(root: zarr.Group, name: str, enc: Encoded) -> None:
    arr = _create(root, name, enc.shape, enc.dtype, _whole(enc.shape), enc.codec)
    if enc.size or not enc.shape:
        _put(arr, (0,) * len(enc.shape), enc)


def _write_array(root: zarr.Group, name: str, value: Any, codec: Codec, chunks: Any) -> None:
    x = as_array(value)
    if x.dtype.byteorder == ">":
        x = x.astype(x.dtype.newbyteorder("<"))
    shape = tuple(x.shape)
    chunk = _chunk_shape(name, shape, x.dtype.itemsize, chunks)
    arr = _create(root, name, shape, x.dtype, chunk, codec)
    grid = [range(math.ceil(n / c)) for n, c in zip(shape, chunk, strict=True)]
    for coords in itertools.product(*grid):
        region = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(coords, chunk, shape, strict=True))
        block = np.asarray(x[region])
        if block.shape != chunk:  # an edge chunk: zarr chunks all have the chunk shape
            padded = np.zeros(chunk, dtype=x.dtype)
            padded[tuple(slice(0, s) for s in block.shape)] = block
            block = padded
        _put(arr, coords, codec.encode(block))


def _whole(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(1, n) for n in shape)  # zarr chunk sides are at least 1, even for empty axes


def _chunk_shape(name: str, shape: tuple[int, ...], itemsize: int, chunks: Any) -> tuple[int, ...]:
    whole = _whole(shape)
    if chunks is None or not shape:
        return whole
    if chunks == "auto":
        total = math.prod(shape) * itemsize
        pieces = max(1, math.ceil(total / AUTO_CHUNK_BYTES))
        return (max(1, math.ceil(shape[0] / pieces)), *whole[1:])
    if not isinstance(chunks, (tuple, list)) or len(chunks) != len(shape):
        raise ContainerError(
            f"chunks={chunks!r} does not fit tensor {name!r} of shape {shape}: expected None, 'auto' or "
            f"a tuple of {len(shape)} positive ints (None for a whole axis)"
        )
    out = []
    for c, w in zip(chunks, whole, strict=True):
        if c is None:
            out.append(w)
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c > 0:
            out.append(int(c))
        else:
            raise ContainerError(f"chunks={chunks!r}: chunk sides must be positive ints or None, got {c!r}")
    return tuple(out)


def _is_container(path: Path, is_zip: bool) -> bool:
    if is_zip:
        if not path.is_file() or not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            return "zarr.json" in zf.namelist()
    return path.is_dir() and (path / "zarr.json").is_file()


def _check_replaceable(target: Path, is_zip: bool) -> None:
    if (target.exists() or target.is_symlink()) and not _is_container(target, is_zip):
        raise ContainerError(
            f"{target} exists and is not a zarr container; refusing to replace it: remove it or pick another path"
        )


def _move_into_place(tmp: Path, target: Path, is_zip: bool) -> None:
    if is_zip or not target.exists():
        os.replace(tmp, target)  # atomic for files; a new directory simply appears
        return
    # Directories cannot replace a non-empty directory in one step: move the old one aside first.
    old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --- reading ---------------------------------------------------------------------------------------------


class Container(Mapping[str, Any]):
    """A container opened read-only: ``c[name]`` is the lazy zarr array (slices decode chunk by chunk).

    bfloat16/fp8 tensors come as a :class:`BitPatternArray`, a lazy view with the real dtype. Use as a
    context manager, or call :meth:`close`, to release a ``.zip`` file. :meth:`read` and :meth:`encoded` refuse
    a blob that declares more than ``TENSORPRESS_MAX_DECODE_BYTES`` as the environment had it at opening.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.fspath(path))
        if not self.path.exists():
            raise ContainerError(f"no container at {self.path}: the path does not exist")
        if self.path.is_file():
            if not zipfile.is_zipfile(self.path):
                raise ContainerError(f"{self.path} is not a container: a file that is not a zip archive")
            self._store: Any = ZipStore(self.path, mode="r")
        else:
            self._store = LocalStore(self.path, read_only=True)
        try:
            self._group = zarr.open_group(store=self._store, mode="r", zarr_format=3)
        except Exception as exc:  # zarr raises several kinds for "no group here"
            self._store.close()
            raise ContainerError(f"{self.path} is not a zarr v3 container: {exc}") from exc
        meta = self._group.attrs.get(ATTR)
        version = meta.get("version", VERSION) if isinstance(meta, dict) else VERSION
        if not isinstance(version, int) or version > VERSION:
            self._store.close()
            raise ContainerError(f"{self.path} was written in container format version {version!r}; this "
                                 f"tensorpress reads up to {VERSION}: upgrade tensorpress")
        self._names = self._list_names()
        self._arrays: dict[str, zarr.Array] = {}
        self._tensors: dict[str, _Tensor] = {}
        self._limit = max_decode_bytes()  # read once: the environment lookup costs tens of µs on a cold cache

    def _list_names(self) -> list[str]:
        meta = self._group.attrs.get(ATTR)
        if isinstance(meta, dict) and isinstance(meta.get("tensors"), list):
            return [str(n) for n in meta["tensors"]]
        # a zarr group written by other tools: every array in it, nested ones by their path
        return sorted(p for p, node in self._group.members(max_depth=None) if isinstance(node, zarr.Array))

    # --- Mapping ----------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        arr, dtype = self._array(name), self._tensor(name).dtype
        return BitPatternArray(arr, dtype) if dtype != arr.dtype else arr

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def _array(self, name: str) -> zarr.Array:
        if name not in self._names:
            raise KeyError(name)
        if name not in self._arrays:
            node = self._group[name]
            if not isinstance(node, zarr.Array):
                raise ContainerError(f"{self.path}: {name!r} is a group, not a tensor")
            self._arrays[name] = node
        return self._arrays[name]

    def _tensor(self, name: str) -> _Tensor:
        """What reading tensor ``name`` needs from its metadata, worked out once: the container is never
        rewritten in place, and zarr's metadata properties cost tens of microseconds each on a cold cache."""
        if name not in self._tensors:
            arr = self._array(name)
            codec = _tensorpress_codec(arr)
            key = arr.metadata.encode_chunk_key((0,) * arr.ndim)
            local = isinstance(self._store, LocalStore)
            self._tensors[name] = _Tensor(_logical_dtype(arr), codec,
                                          codec is not None and tuple(arr.chunks) == _whole(arr.shape), key,
                                          os.path.join(self._store.root, arr.path, *key.split("/")) if local else None,
                                          math.prod(arr.shape))
        return self._tensors[name]

    # --- tensorpress views --------------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        """Group attributes given to :func:`save` (model config, CF attributes, …)."""
        return {k: v for k, v in self._group.attrs.asdict().items() if k != ATTR}

    def encoded(self, name: str) -> Encoded:
        """The stored :class:`Encoded` of a single-chunk tensor, not decoded (what ``save`` was given)."""
        return self._encoded(name, self._tensor(name), mapped=False)

    def _encoded(self, name: str, tensor: _Tensor, *, mapped: bool) -> Encoded:
        codec = tensor.codec
        if tensor.size and tensor.single_chunk:  # the common case, on the plan alone
            data = self._chunk_bytes(name, tensor, mapped=mapped)
            if data is not None:
                return loads(data, limit=self._limit)
        arr = self._array(name)
        if codec is None:
            raise ContainerError(f"{self.path}: {name!r} is not stored with the tensorpress codec alone")
        if not tensor.single_chunk:
            raise ContainerError(
                f"{self.path}: {name!r} of shape {arr.shape} is stored in chunks of {arr.chunks}; encoded() "
                f"needs a single-chunk tensor: read it with c[{name!r}][...] or save it with chunks=None"
            )
        dtype = tensor.dtype
        if tensor.size == 0:  # no chunk exists for an empty array: encode the empty tensor afresh
            return codec.spec.encode(np.zeros(arr.shape, dtype))
        # a chunk never written holds the fill value
        return codec.spec.encode(np.full(arr.shape, arr.fill_value).astype(arr.dtype).view(dtype))

    def _chunk_bytes(self, name: str, tensor: _Tensor, *, mapped: bool) -> Any:
        """The stored bytes of a tensor's first chunk, or None where none was written. A directory container's
        chunk file is read directly; ``mapped`` memory-maps it instead, so parts are decoded in place with no copy
        at all (the descriptor is closed once mapped; the mapping lives as long as the arrays viewing it). Containers
        are written by renaming a finished directory, never rewritten in place, so a mapping stays valid."""
        file = tensor.chunk_file
        if file is not None:
            if not mapped:
                try:
                    return Path(file).read_bytes()
                except FileNotFoundError:
                    return None
            # a bare descriptor: a Python file object costs more than mapping the pages of a large chunk
            try:
                fd = os.open(file, _OPEN_FLAGS)
            except FileNotFoundError:
                return None
            try:
                if os.name != "posix":
                    return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                # populated up front: one call maps every page, where touching them faults in 64 KiB steps
                return mmap.mmap(fd, 0, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ)
            except ValueError:  # an empty file cannot be mapped
                return b""
            finally:
                os.close(fd)
        buf = sync((self._array(name).store_path / tensor.chunk_key).get(default_buffer_prototype()))
        return None if buf is None else buf.to_bytes()

    def read(self, name: str) -> np.ndarray:
        """The whole tensor, decoded. A single-chunk tensor is decoded straight from its blob, which saves the
        copy zarr makes from the decoded chunk into its output array; several chunks go through zarr."""
        tensor = self._tensor(name)
        if tensor.single_chunk:
            out = self._encoded(name, tensor, mapped=True).decode()
            # a codec may hand back a view of the stored parts: give the caller memory of its own
            return out if out.flags.writeable else out.copy()
        return np.asarray(self[name][...])

    def info(self) -> list[dict[str, Any]]:
        """One row per tensor: name, shape, dtype, spec, stored_bytes (sum of its chunks), original_bytes,
        ratio and bits_per_element."""
        rows = []
        for name in self._names:
            arr, dtype = self._array(name), self._tensor(name).dtype
            stored = sync(_chunk_bytes(self._store, arr.path))
            size = math.prod(arr.shape)
            original = size * dtype.itemsize
            rows.append({
                "name": name,
                "shape": tuple(arr.shape),
                "dtype": dtype.name,
                "spec": _spec_text(arr),
                "stored_bytes": stored,
                "original_bytes": original,
                "ratio": compression_ratio(original, stored),
                "bits_per_element": bits_per_element(stored, size),
            })
        return rows

    # --- lifetime -----------------------------------------------------------------------------------------
    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Container({str(self.path)!r}, {len(self._names)} tensors)"


class BitPatternArray:
    """Lazy view of a zarr array of bit patterns as its real dtype (bfloat16, fp8).

    ``view[key]`` reads only the chunks ``key`` touches, like the zarr array ``view.zarr_array`` it wraps.
    """

    def __init__(self, array: zarr.Array, dtype: np.dtype[Any]) -> None:
        self.zarr_array = array
        self.dtype = dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.zarr_array.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self.zarr_array.chunks)

    @property
    def attrs(self) -> Any:
        return self.zarr_array.attrs

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.zarr_array[key]).view(self.dtype)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<BitPatternArray {self.zarr_array.path} shape={self.shape} dtype={self.dtype.name}>"


class _Tensor(NamedTuple):
    dtype: np.dtype[Any]  # the tensor's dtype (bfloat16 and float8 are stored as their bit patterns)
    codec: TensorpressCodec | None  # the array's codec when it is tensorpress alone
    single_chunk: bool  # stored with tensorpress alone, as one chunk
    chunk_key: str  # the key of its first chunk
    chunk_file: str | None  # that chunk's file in a directory container, else None
    size: int  # its number of elements


def _logical_dtype(arr: zarr.Array) -> np.dtype[Any]:
    meta = arr.attrs.get(ATTR)
    name = meta.get("dtype") if isinstance(meta, dict) else None
    if name is None:
        return np.dtype(arr.dtype)
    if name not in ML_DTYPE_NAMES:
        raise ContainerError(f"array {arr.path!r} declares an unknown tensor dtype {name!r}")
    dtype = dtype_from_str(name)
    if dtype.itemsize != np.dtype(arr.dtype).itemsize:
        raise ContainerError(f"array {arr.path!r}: {name} does not fit its {arr.dtype} storage")
    return dtype


def _tensorpress_codec(arr: zarr.Array) -> TensorpressCodec | None:
    codecs = list(getattr(arr.metadata, "codecs", ()))
    if len(codecs) == 1 and isinstance(codecs[0], TensorpressCodec):
        return codecs[0]
    return None


def _spec_text(arr: zarr.Array) -> str:
    meta = arr.attrs.get(ATTR)
    if isinstance(meta, dict) and isinstance(meta.get("spec"), str):
        return meta["spec"]
    codec = _tensorpress_codec(arr)
    if codec is not None:
        return str(codec.spec)
    names = [c.to_dict().get("name", "?") for c in getattr(arr.metadata, "codecs", ())]
    return "zarr: " + " | ".join(map(str, names))


async def _chunk_bytes(store: Any, path: str) -> int:
    """Bytes of every chunk stored under the array at ``path`` (its metadata document excluded)."""
    prefix = f"{path}/"
    total = 0
    async for key in store.list_prefix(prefix):
        if key != prefix + "zarr.json":
            total += await store.getsize(key)
    return int(total)
