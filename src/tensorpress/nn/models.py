"""The reference networks: the real GGUF models of :mod:`tensorpress.datasets`, dequantized to fp32.

Both models were published already quantized (SmolLM2 in Q4_1, Gemma 3 in a Q4_K_M mix); the fp32 network
that ``transformers`` dequantizes from the file is the reference every compressed variant is measured
against. Reading a GGUF through ``transformers`` takes tens of seconds (it parses the whole tokenizer
vocabulary twice), so the first call saves the result as a plain Hugging Face folder (``config.json``,
tokenizer files, fp32 ``model.safetensors``) under ``<data cache>/models/<name>-fp32`` and later calls load
that folder in a second or two. Nothing is ever fetched from a model hub.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import MissingDependencyError, TensorpressError
from ..datasets import gemma3_gguf, smollm2_gguf
from ..datasets.cache import data_dir

#: reference name → the loader of its GGUF file
REFERENCES: dict[str, Callable[[], Path]] = {"smollm2": smollm2_gguf, "gemma3": gemma3_gguf}
_MARKER = "tensorpress-reference.json"  # written last: a folder without it is incomplete


def reference_folder(name: str = "smollm2") -> Path:
    """The cached Hugging Face folder of the fp32 reference ``name``, built from the GGUF on first use."""
    gguf = _gguf(name)
    target = data_dir() / "models" / f"{name}-fp32"
    if (target / _MARKER).is_file():
        return target
    torch, transformers = _imports()
    try:
        import gguf as _  # noqa: F401  (transformers reads GGUF files with it)
    except ImportError:
        raise MissingDependencyError("gguf", "llm", "reading a GGUF model with transformers") from None
    kwargs: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        _save_fp32(model, tmp)
        tokenizer.save_pretrained(tmp)
        source = {"gguf": gguf.name, "bytes": gguf.stat().st_size, "sha256": _sha256(gguf),
                  "transformers": transformers.__version__, "torch": torch.__version__}
        (tmp / _MARKER).write_text(json.dumps(source, indent=1) + "\n")
        for path in (tmp, *tmp.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if (target / _MARKER).is_file():  # another process finished first
            return target
        if target.exists():  # an incomplete folder from an interrupted run
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_reference(name: str = "smollm2") -> tuple[Any, Any]:
    """``(model, tokenizer)``: the fp32 reference network in eval mode on the CPU, and its tokenizer.

    ``name`` is ``"smollm2"`` (134.5M parameters, Llama) or ``"gemma3"`` (268M, Gemma 3). Every weight
    equals ``gguf.quants.dequantize`` of the file's tensor (GGUF names mapped to Hugging Face names,
    llama.cpp's q/k row permutation undone, Gemma's norm weights stored as ``w - 1``).
    """
    folder = reference_folder(name)
    torch, transformers = _imports()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, local_files_only=True
    )
    return model.eval(), tokenizer


def _save_fp32(model: Any, folder: Path) -> None:
    """``config.json`` and ``model.safetensors`` of a model that transformers loaded from GGUF (its own
    ``save_pretrained`` refuses GGUF-loaded models). Tied tensors are stored once, under their first name."""
    from safetensors.torch import save_file

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)  # the cache path it was read from
    config["torch_dtype"] = config["dtype"] = "float32"
    (folder / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    tensors, seen = {}, set()
    for key, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        tensors[key] = tensor.detach().contiguous()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _gguf(name: str) -> Path:
    if name not in REFERENCES:
        raise TensorpressError(f"unknown reference model {name!r}; expected one of {', '.join(REFERENCES)}")
    return REFERENCES[name]()


def _imports() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "transformers", "llm", "loading a reference model") from None
    return torch, transformers


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
