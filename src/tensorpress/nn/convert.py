"""Checkpoint conversion: a GGUF / safetensors / Hugging Face / torch checkpoint into a tensorpress container.

The container holds every tensor (a ``policy`` picks each one's spec by name, or leaves it out), each
tokenizer (and generation) file of the model as a 1-d ``uint8`` array of its bytes under ``checkpoint/``
(``checkpoint/tokenizer.json``, stored with ``zstd``), and in its group attribute ``"checkpoint"`` what is
needed to rebuild the model::

    {"version": 1,
     "source": {"name": "SmolLM2-135M-Instruct.Q4_1.gguf", "format": "gguf", "bytes": 98362432},
     "config": {…the model's Hugging Face config.json…},
     "files": {"tokenizer.json": "checkpoint/tokenizer.json", …},
     "dropped": [source tensors with no model counterpart], "skipped": [tensors the policy left out]}

Plain zarr reads a file back as ``zarr.open_array(path + "/checkpoint/tokenizer.json")[:].tobytes()``.
The files are arrays rather than group attributes because zarr re-reads the group's metadata for every
array it creates: a 33 MB tokenizer (Gemma 3's 262k vocabulary) in the attributes made writing its 236
tensors take 95 s instead of a few. Tensors are read, encoded and written one at a time; nothing is
written when any check fails.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..core.codec import build
from ..core.errors import MissingDependencyError, TensorpressError
from .sources import Checkpoint, CheckpointError, LazyTensor, open_checkpoint

ATTR = "checkpoint"
VERSION = 1
SKIP = "skip"
FILES = "checkpoint/"  #: prefix of the arrays holding the model's tokenizer and generation files
FILE_SPEC = "zstd"


def convert_checkpoint(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    spec: Any = "raw",
    policy: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Convert the checkpoint at ``src`` into the container ``out`` (a directory, or a ``.zip`` file).

    ``spec`` encodes every tensor; ``policy`` maps name globs to specs (first match wins; ``"skip"`` leaves the
    tensor out), as in :func:`tensorpress.save`. Every pattern must match a tensor. Returns ``out``.
    """
    import tensorpress

    source, target = Path(os.fspath(src)), Path(os.fspath(out))
    checkpoint = open_checkpoint(source)
    if target.resolve() == source.resolve():
        raise CheckpointError(f"{target}: the output would replace the checkpoint itself; pick another path")
    skipped = _check_policy(checkpoint, spec, policy)
    if progress:
        print(f"{source.name}: reading the model config and tokenizer", file=sys.stderr)
    files = {FILES + name: np.frombuffer(data, np.uint8) for name, data in checkpoint.tokenizer_files().items()}
    attrs = {ATTR: checkpoint_attrs(checkpoint, skipped, list(files))}
    tensors, current = _tracked(checkpoint)
    rules = {f"{FILES}*": FILE_SPEC, **(policy or {})} if files else policy
    try:
        tensorpress.save(target, {**tensors, **files}, spec=spec, policy=rules, attrs=attrs, progress=progress)
    except (CheckpointError, MissingDependencyError):
        raise
    except TensorpressError as exc:  # a codec refused a tensor: say which one
        name = current[0] if current else "?"
        raise CheckpointError(f"{source}: tensor {name!r}: {exc}") from None
    return target


def checkpoint_attrs(checkpoint: Checkpoint, skipped: list[str], file_arrays: list[str]) -> dict[str, Any]:
    """The ``"checkpoint"`` group attribute for ``checkpoint`` (see the module docstring)."""
    return {
        "version": VERSION,
        "source": {"name": checkpoint.path.name, "format": checkpoint.format, "bytes": checkpoint.disk_bytes},
        "config": checkpoint.config(),
        "files": {name.removeprefix(FILES): name for name in file_arrays},
        "dropped": list(checkpoint.dropped),
        "skipped": skipped,
    }


def read_checkpoint_attrs(attrs: Mapping[str, Any], where: object) -> dict[str, Any]:
    """The checked ``"checkpoint"`` attribute of a container's group attributes ``attrs``."""
    meta = attrs.get(ATTR)
    if not isinstance(meta, dict) or not isinstance(meta.get("version"), int):
        raise CheckpointError(f"{where} holds no model checkpoint (no '{ATTR}' attribute); convert one with "
                              "tensorpress convert-checkpoint")
    if meta["version"] > VERSION:
        raise CheckpointError(f"{where}: checkpoint format version {meta['version']} is newer than this "
                              f"tensorpress reads ({VERSION}); upgrade tensorpress")
    return meta


def model_files(container: Any, meta: Mapping[str, Any]) -> dict[str, bytes]:
    """The tokenizer and generation files stored in ``container`` (``meta``: its checkpoint attribute)."""
    out = {}
    for name, array in (meta.get("files") or {}).items():
        if "/" in name or "\\" in name or name in ("", ".", "..") or array not in container:
            raise CheckpointError(f"{container.path}: stored file {name!r} ({array!r}) is not a plain file name "
                                  "or is missing; the container is damaged")
        data = container.read(array)
        if data.dtype != np.uint8 or data.ndim != 1:
            raise CheckpointError(f"{container.path}: {array!r} is {data.dtype} {data.shape}, not the bytes of "
                                  "a file; the container is damaged")
        out[name] = data.tobytes()
    return out


def tensor_names(container: Any, meta: Mapping[str, Any]) -> list[str]:
    """The model tensors of a converted container: every array but the stored files."""
    files = set((meta.get("files") or {}).values())
    return [name for name in container if name not in files]


def _check_policy(checkpoint: Checkpoint, spec: Any, policy: Mapping[str, Any] | None) -> list[str]:
    """Check the spec, the policy's specs and that every pattern matches; returns the skipped names.

    ``tensorpress.save`` checks the same again; doing it here fails before the (slow) config extraction.
    """
    if policy is not None and not isinstance(policy, Mapping):
        raise CheckpointError(f"policy must map name globs to specs, got {type(policy).__name__}")
    rules = list((policy or {}).items())
    for value in [spec, *(s for _, s in rules)]:
        if not (isinstance(value, str) and value.strip() == SKIP):
            build(value)
    used, skipped = set(), []
    for name in checkpoint.entries:
        for i, (pattern, value) in enumerate(rules):
            if isinstance(pattern, str) and fnmatch.fnmatchcase(name, pattern):
                used.add(i)
                if isinstance(value, str) and value.strip() == SKIP:
                    skipped.append(name)
                break
        else:
            if isinstance(spec, str) and spec.strip() == SKIP:
                skipped.append(name)
    unused = [p for i, (p, _) in enumerate(rules) if i not in used]
    if unused:
        sample = ", ".join(itertools.islice(checkpoint.entries, 4))
        raise CheckpointError(f"{checkpoint.path}: policy pattern(s) {', '.join(map(repr, unused))} match no "
                              f"tensor (or only tensors an earlier pattern took); names look like {sample}")
    return skipped


def _tracked(checkpoint: Checkpoint) -> tuple[dict[str, LazyTensor], list[str]]:
    """Lazy tensors that note which one was read last (the one being encoded), for error messages."""
    current: list[str] = []

    class Tracked(LazyTensor):
        def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
            current[:] = [self.entry.name]
            return super().__array__(dtype, copy)

    return {name: Tracked(checkpoint, entry) for name, entry in checkpoint.entries.items()}, current
