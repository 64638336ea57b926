"""Checkpoint readers: named tensors, one at a time, plus the model's config and tokenizer files.

:func:`open_checkpoint` recognises

- a GGUF file (``.gguf``, or the ``GGUF`` magic): see :mod:`tensorpress.nn.gguf_source`;
- a safetensors file (bfloat16/fp8 included, read without torch);
- a Hugging Face model directory: ``config.json``, tokenizer files and ``*.safetensors`` weights (sharded
  ones through ``model.safetensors.index.json``), or ``pytorch_model.bin`` when there is no safetensors;
  compressed-tensors folders (``quant_method: compressed-tensors``) through :mod:`tensorpress.nn.ct_source`;
- a torch state dict (``.pt``/``.pth``/``.bin``), loaded with ``torch.load(weights_only=True)``: pickles of
  anything but tensors and plain containers are refused, never executed.

A single weights file takes its config and tokenizer files from its own folder when they are there.
Tensor names stay as in the source (GGUF names are mapped to Hugging Face names). Reading is per tensor:
only the tensor asked for is in memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..core.dtypes import as_array
from ..core.errors import InputError, MissingDependencyError, TensorpressError
from ..datasets.tensor_files import TensorFileError, safetensors_index

#: files of a Hugging Face model folder kept next to the weights (tokenizer and generation settings)
MODEL_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja", "chat_template.json",
    "generation_config.json",
)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class CheckpointError(TensorpressError, ValueError):
    """A checkpoint file is missing, malformed or holds something other than named tensors."""


@dataclass(frozen=True)
class TensorEntry:
    """Name, shape and dtype of a tensor as :meth:`Checkpoint.read` returns it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class LazyTensor:
    """A checkpoint tensor that is read when NumPy asks for it (``np.asarray``) and never kept."""

    def __init__(self, checkpoint: Checkpoint, entry: TensorEntry) -> None:
        self.checkpoint, self.entry = checkpoint, entry
        self.shape, self.dtype, self.ndim = entry.shape, entry.dtype, len(entry.shape)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self.checkpoint.read(self.entry.name)
        return data if dtype is None else data.astype(dtype)

    def __repr__(self) -> str:
        return f"<LazyTensor {self.entry.name} {self.shape} {self.dtype}>"


class Checkpoint:
    """Named tensors of a model file or folder; ``entries`` lists them in file order without reading them."""

    format: ClassVar[str] = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, TensorEntry] = {}
        self.dropped: list[str] = []  #: source tensors with no counterpart in the model (left out)

    def read(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a NumPy array (bfloat16 as ``ml_dtypes.bfloat16``)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any] | None:
        """The model's Hugging Face ``config.json`` as a dict, or None when the source has none."""
        return _read_json(self.path.parent / "config.json")

    def tokenizer_files(self) -> dict[str, bytes]:
        """Tokenizer and generation files by name (``tokenizer.json``, …), as bytes."""
        return _model_files(self.path.parent)

    def lazy(self) -> dict[str, LazyTensor]:
        """``{name: LazyTensor}`` for every tensor: a mapping that ``tensorpress.save`` streams from."""
        return {name: LazyTensor(self, entry) for name, entry in self.entries.items()}

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(name, array)`` pairs, one tensor in memory at a time."""
        for name in self.entries:
            yield name, self.read(name)

    @property
    def disk_bytes(self) -> int:
        """Size of the source on disk."""
        return self.path.stat().st_size

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} ({len(self.entries)} tensors)>"


def open_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """The right reader for ``path`` (see the module docstring); raises :class:`CheckpointError`."""
    p = Path(os.fspath(path))
    if p.is_dir():
        from .ct_source import CompressedTensorsCheckpoint, is_compressed_tensors

        return CompressedTensorsCheckpoint(p) if is_compressed_tensors(p) else HFDirectory(p)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such file or directory")
    suffix = p.suffix.lower()
    with open(p, "rb") as f:
        magic = f.read(4)
    if suffix == ".gguf" or magic == b"GGUF":
        from .gguf_source import GGUFCheckpoint

        return GGUFCheckpoint(p)
    if suffix == ".safetensors":
        return SafetensorsFile(p)
    if suffix in TORCH_SUFFIXES or magic[:2] == b"PK":
        return TorchFile(p)
    raise CheckpointError(f"{p}: not a checkpoint: expected a .gguf, .safetensors or torch state dict "
                          f"({', '.join(TORCH_SUFFIXES)}) file, or a Hugging Face model folder")


class SafetensorsFile(Checkpoint):
    format = "safetensors"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._start, self._index = safetensors_index(path)
        except TensorFileError as exc:
            raise CheckpointError(str(exc)) from None
        self.entries = {n: TensorEntry(n, shape, dtype) for n, (dtype, shape, _) in self._index.items()}

    def read(self, name: str) -> np.ndarray:
        dtype, shape, begin = self._index[name]
        count = int(np.prod(shape, dtype=np.int64))
        with open(self.path, "rb") as f:
            f.seek(self._start + begin)
            data = np.fromfile(f, dtype=dtype, count=count)
        if data.size != count:
            raise CheckpointError(f"{self.path}: tensor {name!r} is cut short: the file changed while read")
        return data.reshape(shape)


class TorchFile(Checkpoint):
    """A ``torch.save``-d ``{name: tensor}`` dict, memory-mapped when its format allows."""

    format = "torch"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        state = _torch_load(path)
        self._tensors: dict[str, Any] = {}
        for name, tensor in state.items():
            try:
                arr = as_array(tensor)  # a view: nothing is read yet
            except (InputError, TypeError) as exc:
                raise CheckpointError(f"{path}: tensor {name!r}: {exc}") from None
            self._tensors[name] = tensor
            self.entries[name] = TensorEntry(name, tuple(arr.shape), arr.dtype)

    def read(self, name: str) -> np.ndarray:
        return np.array(as_array(self._tensors[name]))


def _torch_load(path: Path) -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "torch", "reading torch state dicts") from None
    import pickle
    import zipfile

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # files in torch's legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused: the pickle holds objects other than tensors, which are never unpickled "
            f"(weights_only=True: {first}); save a plain state dict: torch.save(model.state_dict(), path)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable torch file ({type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None
    is_dict = isinstance(state, dict)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)] if is_dict else None
    if bad is None or bad or not all(isinstance(k, str) for k in state):
        what = f"a {type(state).__name__}" if bad is None else f"non-tensor entries {bad[:3]}"
        raise CheckpointError(f"{path}: expected a state dict {{name: tensor}}, got {what}; save one with "
                              "torch.save(model.state_dict(), path)")
    return state


class HFDirectory(Checkpoint):
    """A Hugging Face model folder: its safetensors shards (or ``pytorch_model.bin``) as one checkpoint."""

    format = "hf-directory"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._parts: dict[str, Checkpoint] = {}
        for file in self._weight_files():
            part = SafetensorsFile(file) if file.suffix == ".safetensors" else TorchFile(file)
            for name, entry in part.entries.items():
                if name in self.entries:
                    raise CheckpointError(f"{path}: tensor {name!r} is in two weight files; remove one")
                self.entries[name] = entry
                self._parts[name] = part

    def _weight_files(self) -> list[Path]:
        index = self.path / "model.safetensors.index.json"
        if index.is_file():
            mapping = _read_json(index) or {}
            shards = mapping.get("weight_map") if isinstance(mapping, dict) else None
            if not isinstance(shards, dict):
                raise CheckpointError(f"{index}: expected a JSON object with a 'weight_map'; fix the file")
            files = [self.path / str(s) for s in dict.fromkeys(shards.values())]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{index} names shard(s) {missing} that are not in {self.path}; "
                                      "download the missing shards")
            return files
        files = sorted(self.path.glob("*.safetensors")) or sorted(self.path.glob("pytorch_model*.bin"))
        if not files:
            raise CheckpointError(f"{self.path}: no *.safetensors or pytorch_model.bin weights in the folder")
        return files

    def read(self, name: str) -> np.ndarray:
        return self._parts[name].read(name)

    def config(self) -> dict[str, Any] | None:
        return _read_json(self.path / "config.json")

    def tokenizer_files(self) -> dict[str, bytes]:
        return _model_files(self.path)

    @property
    def disk_bytes(self) -> int:
        return sum(part.disk_bytes for part in set(self._parts.values()))


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); fix or remove it") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _model_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in MODEL_FILES if (folder / name).is_file()}
