"""Loading a converted checkpoint back as a working transformers model.

``load(path)`` rebuilds the model from the config stored in the container
(``AutoModelForCausalLM.from_config``, float32), the tokenizer from the stored tokenizer files, and fills the
weights:

- ``mode="decoded"``: every tensor is decoded into its parameter;
- ``mode="compressed"``: each ``nn.Linear`` whose weight was stored with a codec other than ``raw`` becomes a
  :class:`~tensorpress.nn.CompressedLinear` that keeps the stored :class:`~tensorpress.Encoded` and, per
  forward, multiplies straight from it (inputs of a few tokens, for formats with a compressed product) or
  decodes it. Other tensors (embeddings, norms, raw weights) are decoded. A weight tied to another
  parameter (``lm_head`` sharing the input embeddings, as in SmolLM2) stays tied and decoded.

Both modes give the same outputs bit for bit on the decoded path (long prompts, perplexity runs); the fused
kernels (a generation step, a short prompt) agree with it within float32 rounding.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import MissingDependencyError
from .convert import model_files, read_checkpoint_attrs, tensor_names
from .sources import CheckpointError

MODES = ("decoded", "compressed")


def load(path: str | os.PathLike[str], *, mode: str = "decoded") -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a container written by ``convert-checkpoint``; the model is in eval mode.

    ``tokenizer`` is None when the container holds no tokenizer files.
    """
    import tensorpress

    if mode not in MODES:
        raise CheckpointError(f"mode must be one of {MODES}, got {mode!r}")
    torch, transformers = _imports()
    with tensorpress.open(path) as container:
        meta = read_checkpoint_attrs(container.attrs, container.path)
        if not isinstance(meta.get("config"), dict):
            raise CheckpointError(f"{container.path} holds no model config (its source had none); convert a "
                                  "source with a config.json next to the weights")
        with tempfile.TemporaryDirectory(prefix="tensorpress-model-") as tmp:
            files = model_files(container, meta)
            config, tokenizer = _config_and_tokenizer(transformers, meta["config"], files, Path(tmp))
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        _fill(torch, model, container, tensor_names(container, meta), mode)
    model.eval()
    return model, tokenizer


def _imports() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "transformers", "llm", "loading a model") from None
    return torch, transformers


def _config_and_tokenizer(transformers: Any, config_dict: dict[str, Any], files: dict[str, bytes],
                          folder: Path) -> tuple[Any, Any]:
    import json

    (folder / "config.json").write_text(json.dumps(config_dict), encoding="utf-8")
    for name, data in files.items():
        (folder / name).write_bytes(data)
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    tokenizer = None
    if any(name.startswith(("tokenizer", "vocab")) for name in files):
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return config, tokenizer


def _fill(torch: Any, model: Any, container: Any, stored: list[str], mode: str) -> None:
    """Put every stored tensor into ``model``; in compressed mode swap eligible Linear layers."""
    from .linear import CompressedLinear

    params = dict(model.named_parameters(remove_duplicate=False))
    persistent = {n: b for n, b in model.named_buffers() if n in model.state_dict()}
    targets = {**params, **persistent}
    unknown = [n for n in stored if n not in targets]
    if unknown:
        raise CheckpointError(f"{container.path}: tensor(s) {unknown[:3]} are not in the "
                              f"{type(model).__name__} built from the stored config; the container does not "
                              "belong to this model type")
    shared = _shared_names(params)
    linears = {f"{n}.weight": (n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    loaded = set()
    for name in stored:
        target = targets[name]
        if tuple(target.shape) != tuple(container[name].shape):
            raise CheckpointError(f"{container.path}: tensor {name!r} has shape {tuple(container[name].shape)}, "
                                  f"the model expects {tuple(target.shape)}")
        if mode == "compressed" and name in linears and name not in shared:
            enc = container.encoded(name)
            if enc.codec.codec_id != "raw":
                module_name = linears[name][0]
                bias_name = f"{module_name}.bias"
                bias = torch.from_numpy(_float32(container.read(bias_name))) if bias_name in container else None
                model.set_submodule(module_name, CompressedLinear(enc, bias))
                loaded.update({name, bias_name} if bias is not None else {name})
                continue
        with torch.no_grad():
            target.copy_(torch.from_numpy(_float32(container.read(name))))
        loaded.add(name)
    # a tied weight is loaded through the parameter it shares
    loaded |= {n for n in shared if shared[n] in loaded}
    missing = [n for n in targets if n not in loaded]
    if missing:
        raise CheckpointError(f"{container.path} lacks tensor(s) {missing[:3]}{' …' if len(missing) > 3 else ''} "
                              f"of the model ({len(missing)} missing); a policy that skipped them cannot be loaded")


def _shared_names(params: dict[str, Any]) -> dict[str, str]:
    """``{name: first name}`` for parameters that are the same tensor as an earlier one (tied weights)."""
    first: dict[int, str] = {}
    shared = {}
    for name, p in params.items():
        key = id(p)
        if key in first:
            shared[name] = first[key]
            shared[first[key]] = name  # neither side of a tie may become a CompressedLinear
        else:
            first[key] = name
    return shared


def _float32(x: np.ndarray) -> np.ndarray:
    out = np.asarray(x, dtype=np.float32)
    return out if out.flags.writeable else out.copy()
