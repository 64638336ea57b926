"""Checkpoint conversion: a GGUF / safetensors / Hugging Face / torch checkpoint into a tensorpress container.

The container holds every tensor (a ``policy`` picks each one's spec by name, or leaves it out), and in its
group attribute ``"checkpoint"`` what is needed to rebuild the model::

    {"version": 1,
     "source": {"name": "SmolLM2-135M-Instruct.Q4_1.gguf", "format": "gguf", "bytes": 98362432},
     "config": {…the model's Hugging Face config.json…},
     "files": {"tokenizer.json": {"text": "…"}, "tokenizer.model": {"base64": "…"}, …},
     "dropped": [source tensors with no model counterpart], "skipped": [tensors the policy left out]}

Tokenizer (and generation) files are kept whole: UTF-8 files as text, others base64-encoded, so plain zarr
reads them back (``zarr.open_group(path).attrs["checkpoint"]["files"]``). Tensors are read, encoded and
written one at a time; nothing is written when any check fails.
"""

from __future__ import annotations

import base64
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
    attrs = {ATTR: checkpoint_attrs(checkpoint, skipped)}
    tensors, current = _tracked(checkpoint)
    try:
        tensorpress.save(target, tensors, spec=spec, policy=policy, attrs=attrs, progress=progress)
    except (CheckpointError, MissingDependencyError):
        raise
    except TensorpressError as exc:  # a codec refused a tensor: say which one
        name = current[0] if current else "?"
        raise CheckpointError(f"{source}: tensor {name!r}: {exc}") from None
    return target


def checkpoint_attrs(checkpoint: Checkpoint, skipped: list[str]) -> dict[str, Any]:
    """The ``"checkpoint"`` group attribute for ``checkpoint`` (see the module docstring)."""
    files: dict[str, dict[str, str]] = {}
    for name, data in checkpoint.tokenizer_files().items():
        try:
            files[name] = {"text": data.decode("utf-8")}
        except UnicodeDecodeError:
            files[name] = {"base64": base64.b64encode(data).decode("ascii")}
    return {
        "version": VERSION,
        "source": {"name": checkpoint.path.name, "format": checkpoint.format, "bytes": checkpoint.disk_bytes},
        "config": checkpoint.config(),
        "files": files,
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


def model_files(meta: Mapping[str, Any]) -> dict[str, bytes]:
    """Tokenizer and generation files stored by :func:`checkpoint_attrs`, as bytes."""
    out = {}
    for name, entry in (meta.get("files") or {}).items():
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise CheckpointError(f"stored file name {name!r} is not a plain file name; the container is damaged")
        if isinstance(entry, dict) and isinstance(entry.get("text"), str):
            out[name] = entry["text"].encode("utf-8")
        elif isinstance(entry, dict) and isinstance(entry.get("base64"), str):
            out[name] = base64.b64decode(entry["base64"])
        else:
            raise CheckpointError(f"stored file {name!r} has neither 'text' nor 'base64'; the container is damaged")
    return out


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
