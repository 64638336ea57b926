"""Reading GGUF checkpoints (llama.cpp's format) as Hugging Face tensors, config and tokenizer files.

Tensor names are mapped to the names transformers uses (``blk.0.attn_q.weight`` →
``model.layers.0.self_attn.q_proj.weight``), and each tensor is turned into what transformers loads from the
same file: quantized blocks are dequantized to float32 with ``gguf.quants.dequantize``; the rows of Llama's
query and key projections, which llama.cpp's converter interleaves for its RoPE layout, are put back in
Hugging Face order; Gemma's norm weights, stored by llama.cpp as ``1 + w``, lose the ``1``. Tensors that
exist only for llama.cpp (``rope_freqs``) are dropped: transformers computes them.

The header is read by :mod:`tensorpress.nn.gguf_header`; one tensor is read at a time with plain file
reads, in row blocks that are dequantized straight into the output array. The file's index and its config
and tokenizer files are remembered per file (path, size, modification time), so converting one model with
several specs reads them once. The config and tokenizer come from transformers (``AutoConfig`` and a fast
tokenizer with ``gguf_file=``), saved as Hugging Face files, in a child process
(:mod:`tensorpress.nn.gguf_metadata`).
"""

from __future__ import annotations

import base64
import functools
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.encoded import Encoded
from ..core.errors import MissingDependencyError
from .gguf_header import TensorInfo, read_header
from .sources import Checkpoint, CheckpointError, TensorEntry

DEQUANT_BLOCK_ELEMENTS = 1 << 20  # elements dequantized at once: bounds the temporaries to a few MiB
#: tensors llama.cpp stores for itself; transformers computes them, so they are left out
LLAMA_CPP_ONLY = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")

_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LLAMA_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GEMMA_BLOCK = {
    **_LLAMA_BLOCK,
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}


@dataclass(frozen=True)
class Architecture:
    """How one GGUF architecture's tensors become Hugging Face tensors."""

    block: dict[str, str]  #: GGUF block tensor → HF module path inside ``model.layers.N``
    permute_qk: bool = False  #: undo llama.cpp's RoPE row interleaving of q_proj/k_proj
    norm_offset: float = 0.0  #: subtracted from every ``*norm.weight`` (Gemma stores 1 + w)
    verbatim: bool = False  #: names are kept as they are (files written by tensorpress from plain tensors)


GENERIC_ARCHITECTURE = "tensorpress"
ARCHITECTURES = {
    GENERIC_ARCHITECTURE: Architecture({}, verbatim=True),
    "llama": Architecture(_LLAMA_BLOCK, permute_qk=True),
    "qwen2": Architecture(_LLAMA_BLOCK),
    "qwen3": Architecture(_LLAMA_BLOCK),
    "gemma2": Architecture(_GEMMA_BLOCK, norm_offset=1.0),
    "gemma3": Architecture(_GEMMA_BLOCK, norm_offset=1.0),
}


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file: where its bytes are and what it becomes."""

    gguf_name: str
    hf_name: str
    ggml_type: int
    shape: tuple[int, ...]  #: NumPy order (rows last-but-one), as the dequantized array comes out
    offset: int  #: absolute byte offset in the file
    nbytes: int


@dataclass(frozen=True)
class GGUFIndex:
    architecture: str
    heads: int
    kv_heads: int
    tensors: tuple[GGUFTensor, ...]
    dropped: tuple[str, ...]


def hf_name(gguf_name: str, arch: Architecture) -> str | None:
    """The transformers name of a GGUF tensor, or None when there is none."""
    if arch.verbatim:
        return gguf_name
    stem, dot, suffix = gguf_name.rpartition(".")
    if not dot or suffix not in ("weight", "bias"):
        return None
    if stem in _TOP:
        return f"{_TOP[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in arch.block:
        return f"model.layers.{int(parts[1])}.{arch.block[parts[2]]}.{suffix}"
    return None


def gguf_name(name: str, arch: Architecture) -> str | None:
    """Inverse of :func:`hf_name`."""
    if arch.verbatim:
        return name
    stem, _, suffix = name.rpartition(".")
    top = {v: k for k, v in _TOP.items()}
    if stem in top:
        return f"{top[stem]}.{suffix}"
    parts = stem.split(".", 3)
    block = {v: k for k, v in arch.block.items()}
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[2].isdigit() and parts[3] in block:
        return f"blk.{int(parts[2])}.{block[parts[3]]}.{suffix}"
    return None


def qk_row_order(rows: int, heads: int) -> np.ndarray:
    """Row ``i`` of the Hugging Face q/k projection is row ``order[i]`` of llama.cpp's.

    llama.cpp stores each head's rows as interleaved pairs (``h, i, j``) where transformers has two halves
    (``h, j, i``), with ``j`` in {0, 1} and ``i`` below half the head size.
    """
    half = rows // heads // 2
    return np.arange(rows).reshape(heads, half, 2).swapaxes(1, 2).reshape(-1)


class GGUFCheckpoint(Checkpoint):
    """A GGUF file as a :class:`Checkpoint` (see the module docstring)."""

    format = "gguf"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        stat = path.stat()
        self._key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        self.index = _read_index(*self._key)
        self.arch = ARCHITECTURES[self.index.architecture]
        self._by_name = {t.hf_name: t for t in self.index.tensors}
        self.entries = {t.hf_name: TensorEntry(t.hf_name, t.shape, _output_dtype(t.ggml_type))
                        for t in self.index.tensors}
        self.dropped = list(self.index.dropped)

    def read(self, name: str) -> np.ndarray:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
        from gguf.quants import dequantize

        t = self._by_name[name]
        qtype = GGMLQuantizationType(t.ggml_type)
        block, type_size = GGML_QUANT_SIZES[qtype]
        rows, n = int(np.prod(t.shape[:-1], dtype=np.int64)), t.shape[-1]
        row_bytes = n // block * type_size
        order = self._row_order(t, rows)
        out = np.empty((rows, n), dtype=_output_dtype(t.ggml_type))
        step = max(1, DEQUANT_BLOCK_ELEMENTS // max(n, 1))
        with open(self.path, "rb") as f:
            if order is not None:  # q/k projections are small: read them whole and reorder the rows
                raw = self._read_bytes(f, t, 0, rows * row_bytes).reshape(rows, row_bytes)[order]
            for r in range(0, rows, step):
                count = min(step, rows - r)
                chunk = (raw[r:r + count] if order is not None
                         else self._read_bytes(f, t, r * row_bytes, count * row_bytes).reshape(count, row_bytes))
                out[r:r + count] = dequantize(chunk, qtype)
        if self.arch.norm_offset and name.endswith("norm.weight"):
            out -= np.asarray(self.arch.norm_offset, dtype=out.dtype)
        return out.reshape(t.shape)

    def encoded(self, name: str) -> Encoded | None:
        """Tensor ``name`` as the ``quant`` data its GGUF blocks are (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), without
        dequantizing; None for other types. Decodes to exactly what :meth:`read` gives."""
        from gguf import GGMLQuantizationType

        from .gguf_export import LAYOUTS, from_blocks

        t = self._by_name[name]
        qtype = GGMLQuantizationType(t.ggml_type)
        if qtype.name not in LAYOUTS.values() or (self.arch.norm_offset and name.endswith("norm.weight")):
            return None
        rows = int(np.prod(t.shape[:-1], dtype=np.int64))
        with open(self.path, "rb") as f:
            raw = self._read_bytes(f, t, 0, t.nbytes).reshape(rows, -1)
        order = self._row_order(t, rows)
        return from_blocks(raw if order is None else raw[order], qtype.name, t.shape)

    def _row_order(self, t: GGUFTensor, rows: int) -> np.ndarray | None:
        if self.arch.permute_qk and (".attn_q." in t.gguf_name or ".attn_k." in t.gguf_name):
            return qk_row_order(rows, self.index.heads if ".attn_q." in t.gguf_name else self.index.kv_heads)
        return None

    def _read_bytes(self, f: Any, t: GGUFTensor, start: int, count: int) -> np.ndarray:
        f.seek(t.offset + start)
        raw = np.frombuffer(f.read(count), dtype=np.uint8)
        if raw.size != count:
            raise CheckpointError(f"{self.path}: tensor {t.gguf_name!r} is cut short: the file is truncated or "
                                  "changed while read; fetch it again")
        return raw

    def config(self) -> dict[str, Any] | None:
        return _metadata(*self._key)[0]

    def tokenizer_files(self) -> dict[str, bytes]:
        return dict(_metadata(*self._key)[1])


def _output_dtype(ggml_type: int) -> np.dtype[Any]:
    import ml_dtypes
    from gguf import GGMLQuantizationType as Q

    kinds = {Q.F16: np.dtype(np.float16), Q.BF16: np.dtype(ml_dtypes.bfloat16), Q.F64: np.dtype(np.float64),
             Q.I8: np.dtype(np.int8), Q.I16: np.dtype(np.int16), Q.I32: np.dtype(np.int32),
             Q.I64: np.dtype(np.int64)}
    return kinds.get(Q(ggml_type), np.dtype(np.float32))


def _import_gguf() -> Any:
    try:
        import gguf
        import gguf.quants
    except ImportError:
        raise MissingDependencyError("gguf", "llm", "reading GGUF checkpoints") from None
    return gguf


@functools.lru_cache(maxsize=4)
def _read_index(path: str, size: int, mtime_ns: int) -> GGUFIndex:
    """Tensor table and attention geometry of a GGUF file (cached per path, size and modification time)."""
    gguf = _import_gguf()
    header = read_header(Path(path))
    arch_name = header.metadata.get("general.architecture")
    if arch_name not in ARCHITECTURES:
        raise CheckpointError(f"{path}: GGUF architecture {arch_name!r} is not supported; supported: "
                              f"{', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[arch_name]
    heads = header.metadata.get(f"{arch_name}.attention.head_count", 0)
    kv_heads = header.metadata.get(f"{arch_name}.attention.head_count_kv", heads)
    if not (isinstance(heads, int) and isinstance(kv_heads, int)):  # per-layer lists: not these models
        raise CheckpointError(f"{path}: per-layer attention head counts are not supported")
    tensors, dropped = [], []
    for t in header.tensors:
        name = hf_name(t.name, arch)
        if name is None:
            if t.name in LLAMA_CPP_ONLY:
                dropped.append(t.name)
                continue
            raise CheckpointError(f"{path}: GGUF tensor {t.name!r} has no Hugging Face counterpart in a "
                                  f"{arch_name} model; the file may be from a newer llama.cpp")
        nbytes = _check_tensor(gguf, path, t, size)
        if arch.permute_qk and (".attn_q." in t.name or ".attn_k." in t.name):
            h = heads if ".attn_q." in t.name else kv_heads
            if h <= 0 or len(t.shape) != 2 or t.shape[0] % (2 * h):
                raise CheckpointError(f"{path}: GGUF tensor {t.name!r} of shape {t.shape} does not split into "
                                      f"{h} heads; the file's attention metadata is inconsistent")
        tensors.append(GGUFTensor(t.name, name, t.ggml_type, t.shape, t.offset, nbytes))
    return GGUFIndex(arch_name, heads, kv_heads, tuple(tensors), tuple(dropped))


def _check_tensor(gguf: Any, path: str, t: TensorInfo, size: int) -> int:
    """Bytes of tensor ``t``, after checking its type, shape and extent."""
    try:
        qtype = gguf.GGMLQuantizationType(t.ggml_type)
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise CheckpointError(f"{path}: GGUF tensor {t.name!r} has unknown ggml type {t.ggml_type}; the file "
                              "is damaged or newer than the installed gguf package (upgrade it)") from None
    if not _dequantizable(gguf, qtype):
        raise CheckpointError(f"{path}: GGUF tensor {t.name!r} is {qtype.name}, which the installed gguf "
                              "package cannot dequantize; upgrade gguf")
    if t.shape[-1] % block:
        raise CheckpointError(f"{path}: GGUF tensor {t.name!r} of shape {t.shape}: rows of {t.shape[-1]} do not "
                              f"split into {qtype.name} blocks of {block}; the file is malformed")
    nbytes = int(np.prod(t.shape, dtype=np.int64)) // block * type_size
    if t.offset + nbytes > size:
        raise CheckpointError(f"{path}: GGUF tensor {t.name!r} ends past the end of the {size}-byte file: "
                              "the file is truncated; fetch it again")
    return nbytes


@functools.lru_cache(maxsize=64)
def _dequantizable(gguf: Any, qtype: Any) -> bool:
    type_size = gguf.GGML_QUANT_SIZES[qtype][1]
    try:
        gguf.quants.dequantize(np.zeros((1, type_size), np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


@functools.lru_cache(maxsize=4)
def _metadata(path: str, size: int, mtime_ns: int) -> tuple[dict[str, Any], tuple[tuple[str, bytes], ...]]:
    """(config.json as a dict, ((file name, bytes), …) of the tokenizer files), built by transformers in a
    child process (see :mod:`tensorpress.nn.gguf_metadata`)."""
    with tempfile.TemporaryDirectory(prefix="tensorpress-gguf-") as tmp:
        out = Path(tmp) / "metadata.json"
        proc = subprocess.run([sys.executable, "-m", "tensorpress.nn.gguf_metadata", path, str(out)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not out.is_file():
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            why = lines[-1].strip() if lines else f"exit status {proc.returncode}"
            raise CheckpointError(f"{path}: no model config and tokenizer from this GGUF file: {why}")
        result = json.loads(out.read_text(encoding="utf-8"))
    files = tuple((name, base64.b64decode(data)) for name, data in result["files"].items())
    return result["config"], files
