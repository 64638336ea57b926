"""``quant`` tensors ⇄ GGUF blocks, bit for bit, and a container → GGUF file export.

Five ``quant`` layouts are GGUF block types: groups of 32 along the last axis, fp16 scales, and

================================================  ======  ===========================================
``quant(…, group=32, scale_dtype=float16)``        GGUF    block bytes: value = …
================================================  ======  ===========================================
``bits=8, symmetric=true``                         Q8_0    d, 32 × int8 q: ``d·q``
``bits=4, symmetric=true``                         Q4_0    d, 16 × (q[j] | q[j+16] << 4): ``d·(q − 8)``
``bits=4`` (asymmetric)                            Q4_1    d, m, 16 nibble pairs as Q4_0: ``d·q + m``
``bits=5, symmetric=true``                         Q5_0    d, u32 fifth bits, nibbles: ``d·(q − 16)``
``bits=5`` (asymmetric)                            Q5_1    d, m, u32 fifth bits, nibbles: ``d·q + m``
================================================  ======  ===========================================

Our codes are ``q`` (Q8_0: ``q + 128``), our scale is ``d`` and our minimum ``m``; only the packing differs
(ours: one LSB-first bit stream per tensor). Both sides dequantize in float32 with one rounding at most
(``code·scale`` is exact for fp16 scales and codes below 2**13), so the values agree exactly.

:func:`export_gguf` writes a container's tensors to a GGUF file: tensors in one of these layouts as their
blocks (no re-quantization), every other tensor decoded, as F32. A container converted from a model of a
known architecture gets GGUF tensor names and llama.cpp's q/k row order back (the inverse of what
:mod:`~tensorpress.nn.gguf_source` undoes), the model's hyperparameters from its stored config
(``<arch>.context_length``, ``embedding_length``, ``block_count``, …) and its tokenizer from the stored tokenizer
files: a byte-level BPE ``tokenizer.json`` as GGUF's ``gpt2`` model, a byte-fallback one (SentencePiece-like) as
``llama``, with merges, special token ids and the chat template (``gguf.vocab``'s readers, as llama.cpp's
converter uses them). So the file is a complete model that ``gguf.GGUFReader`` and transformers'
``from_pretrained(…, gguf_file=…)`` read; ``tokenizer.ggml.pre`` (llama.cpp's pre-tokenizer name) is not
known from Hugging Face files and is left out, so llama.cpp falls back to its default pre-tokenizer. Other
containers keep their names under the architecture ``tensorpress``. Reading the file back with
:func:`tensorpress.nn.open_checkpoint` gives the same tensors, and ``GGUFCheckpoint.encoded(name)``
the same ``quant`` data.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..core.encoded import Encoded
from ..core.errors import InputError
from ..formats.quant import GroupQuant
from ..kernels.reference.quant import pack_bits, unpack_bits
from .convert import model_files
from .gguf_source import ARCHITECTURES, GENERIC_ARCHITECTURE, _import_gguf, gguf_name, qk_row_order
from .sources import CheckpointError

BLOCK = 32
#: (bits, symmetric) → GGUF type name
LAYOUTS = {(8, True): "Q8_0", (4, True): "Q4_0", (4, False): "Q4_1", (5, True): "Q5_0", (5, False): "Q5_1"}
#: GGUF key (after ``<arch>.``) → Hugging Face config key, for the model hyperparameters written on export
HYPERPARAMETERS = {
    "context_length": "max_position_embeddings", "embedding_length": "hidden_size", "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size", "rope.dimension_count": "head_dim", "rope.freq_base": "rope_theta",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps", "vocab_size": "vocab_size",
}
#: transformers model_type → GGUF architecture
MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2", "gemma3_text": "gemma3"}


def gguf_type(codec: Any, shape: tuple[int, ...]) -> str | None:
    """The GGUF type name whose blocks hold ``codec``'s encoding of a ``shape`` tensor exactly, or None."""
    if not isinstance(codec, GroupQuant) or not shape:
        return None
    ok = (codec.group == BLOCK and codec.scale_dtype == "float16" and codec.axis % len(shape) == len(shape) - 1
          and shape[-1] % BLOCK == 0 and codec.scale_bits == 0)  # quantized group scales have no GGUF layout
    return LAYOUTS.get((codec.bits, codec.symmetric)) if ok else None


def to_blocks(enc: Encoded) -> tuple[str, np.ndarray]:
    """``(GGUF type name, blocks)``: uint8 (rows, n / 32 · block bytes) in GGUF's layout, rows as in ``enc``."""
    kind = gguf_type(enc.codec, enc.shape)
    if kind is None:
        raise InputError(f"{enc.codec} on shape {enc.shape} is no GGUF block layout: use quant(bits=8|4|5, "
                         "group=32, scale_dtype=float16) along the last axis, whose length divides by 32")
    codec = cast(GroupQuant, enc.codec)  # gguf_type checked it
    bits, n = codec.bits, enc.shape[-1]
    rows = enc.size // n
    nb = rows * (n // BLOCK)
    codes = _unpack(enc.part_array("codes", np.uint8), bits, enc.size).reshape(nb, BLOCK)
    fields: list[np.ndarray] = [enc.part_array("scales", np.float16, (rows, n // BLOCK)).reshape(nb, 1).view(np.uint8)]
    if not codec.symmetric:
        fields.append(enc.part_array("mins", np.float16, (rows, n // BLOCK)).reshape(nb, 1).view(np.uint8))
    if bits == 8:
        fields.append(codes ^ np.uint8(0x80))  # code = q + 128: flipping the top bit gives q's int8 bits
    else:
        if bits == 5:
            high = (codes >> 4).astype(np.uint32) << np.arange(BLOCK, dtype=np.uint32)
            fields.append(np.bitwise_or.reduce(high, axis=1).astype("<u4").reshape(nb, 1).view(np.uint8))
        low = codes & np.uint8(0x0F)
        fields.append(low[:, :16] | (low[:, 16:] << 4))
    return kind, np.concatenate(fields, axis=1).reshape(rows, -1)


def _unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Codes of the LSB-first stream; 8 and 4 bits without the reference's one-byte-per-bit expansion."""
    if bits == 8:
        return packed[:count]
    if bits == 4 and count % 2 == 0:
        return np.stack([packed & np.uint8(0x0F), packed >> 4], axis=1).reshape(-1)[:count]
    return unpack_bits(packed, bits, count)


def from_blocks(blocks: np.ndarray, kind: str, shape: tuple[int, ...]) -> Encoded:
    """The float32 ``quant`` :class:`Encoded` of GGUF blocks (uint8, any shape with the right byte count)."""
    layout = {v: k for k, v in LAYOUTS.items()}
    if kind not in layout:
        raise InputError(f"GGUF type {kind} has no quant layout; expected one of {', '.join(layout)}")
    bits, symmetric = layout[kind]
    n = shape[-1] if shape else 0
    size = int(np.prod(shape, dtype=np.int64))
    if not shape or n % BLOCK:
        raise InputError(f"shape {shape}: GGUF {kind} rows must be a positive multiple of {BLOCK} long")
    rows, nb = size // n, size // BLOCK
    head = 2 if symmetric else 4
    width = head + (BLOCK if bits == 8 else 16) + (4 if bits == 5 else 0)
    flat = np.ascontiguousarray(blocks, dtype=np.uint8).reshape(-1)
    if flat.size != nb * width:
        raise InputError(f"{flat.size} bytes of GGUF {kind} blocks do not hold shape {shape} ({nb * width} expected)")
    b = flat.reshape(nb, width)
    scales = b[:, 0:2].copy().view(np.float16).reshape(rows, n // BLOCK)
    if bits == 8:
        codes = b[:, head:] ^ np.uint8(0x80)
    else:
        qs = b[:, width - 16:]
        codes = np.concatenate([qs & np.uint8(0x0F), qs >> 4], axis=1)
        if bits == 5:
            qh = b[:, head:head + 4].copy().view("<u4").reshape(nb, 1)
            codes |= (((qh >> np.arange(BLOCK, dtype=np.uint32)) & 1) << 4).astype(np.uint8)
    parts: dict[str, Any] = {"codes": pack_bits(codes, bits), "scales": scales}
    if not symmetric:
        parts["mins"] = b[:, 2:4].copy().view(np.float16).reshape(rows, n // BLOCK)
    codec = GroupQuant(bits=bits, group=BLOCK, symmetric=symmetric, scale_dtype="float16")
    return Encoded(codec, tuple(shape), np.dtype(np.float32), parts, {})


def export_gguf(container: str | os.PathLike[str], out: str | os.PathLike[str], *,
                progress: bool = True) -> list[dict[str, Any]]:
    """Write the tensors of ``container`` to the GGUF file ``out`` (atomically); one row per tensor:
    ``{"name", "gguf_name", "type", "bytes"}``."""
    import tensorpress

    gguf = _import_gguf()
    target = Path(os.fspath(out))
    with tensorpress.open(container) as c:
        arch_name, names, heads = _naming(c)
        files = set(((c.attrs.get("checkpoint") or {}).get("files") or {}).values())
        plan = []
        for row in c.info():
            name, shape = row["name"], tuple(row["shape"])
            if name in files:  # tokenizer files: a GGUF model keeps its tokenizer as metadata, not tensors
                continue
            kind = gguf_type(tensorpress.spec(row["spec"]), shape)
            if kind is not None and name.endswith("norm.weight") and ARCHITECTURES[arch_name].norm_offset:
                kind = None  # Gemma norms get their offset back, which needs the decoded values
            plan.append((name, names(name), shape, kind))
        tmp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}")
        try:
            writer = gguf.GGUFWriter(tmp, arch_name)
            writer.add_string("general.name", c.path.name)
            if heads:
                writer.add_uint32(f"{arch_name}.attention.head_count", heads[0])
                writer.add_uint32(f"{arch_name}.attention.head_count_kv", heads[1])
                meta = c.attrs.get("checkpoint") or {}
                _add_hyperparameters(writer, arch_name, meta.get("config") or {})
                stored = {k: v for k, v in (meta.get("files") or {}).items() if v in c}  # a subset may lack them
                _add_tokenizer(gguf, writer, model_files(c, {**meta, "files": stored}))
            for _, gname, shape, kind in plan:
                qtype = gguf.GGMLQuantizationType[kind or "F32"]
                block, type_size = gguf.GGML_QUANT_SIZES[qtype]
                nbytes = int(np.prod(shape, dtype=np.int64)) // block * type_size
                writer.add_tensor_info(gname, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
            writer.write_header_to_file(tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            rows = []
            for name, gname, shape, kind in _progress(plan, progress, target):
                data = _tensor_data(c, name, gname, shape, kind, arch_name, heads)
                writer.write_tensor_data(data)
                rows.append({"name": name, "gguf_name": gname, "type": kind or "F32", "bytes": data.nbytes})
            writer.close()
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return rows


def _add_hyperparameters(writer: Any, arch_name: str, config: dict[str, Any]) -> None:
    """The model's hyperparameters from its Hugging Face config (those it has), as llama.cpp names them."""
    rope = config.get("rope_parameters")  # transformers 5 keeps rope_theta in there
    rope = rope if isinstance(rope, dict) else {}
    values = {key: config.get(name, rope.get(name)) for key, name in HYPERPARAMETERS.items()}
    if values["rope.dimension_count"] is None and config.get("hidden_size") and config.get("num_attention_heads"):
        values["rope.dimension_count"] = config["hidden_size"] // config["num_attention_heads"]
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, int):
            writer.add_uint32(f"{arch_name}.{key}", value)
        else:
            writer.add_float32(f"{arch_name}.{key}", value)


def _add_tokenizer(gguf: Any, writer: Any, files: dict[str, bytes]) -> str | None:
    """GGUF tokenizer metadata from the model's tokenizer files; the tokenizer model written (``gpt2`` or
    ``llama``), or None when the files are no tokenizer ``gguf.vocab`` reads."""
    import gguf.vocab

    if "tokenizer.json" not in files and "vocab.json" not in files:
        return None
    with tempfile.TemporaryDirectory(prefix="tensorpress-tokenizer-") as tmp:
        folder = Path(tmp)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        for kind in (gguf.vocab.BpeVocab, gguf.vocab.LlamaHfVocab):
            try:
                vocab = kind(folder)
            except (FileNotFoundError, TypeError):  # not this kind of tokenizer
                continue
            tokens, scores, types = zip(*vocab.all_tokens(), strict=True)
            writer.add_tokenizer_model(vocab.tokenizer_model)
            writer.add_token_list(list(tokens))
            writer.add_token_scores(list(scores))
            writer.add_token_types(list(types))
            special = gguf.vocab.SpecialVocab(folder, load_merges=kind is gguf.vocab.BpeVocab, n_vocab=len(tokens))
            special.add_to_gguf(writer, quiet=True)
            return str(vocab.tokenizer_model)
    return None


def _tensor_data(c: Any, name: str, gname: str, shape: tuple[int, ...], kind: str | None, arch_name: str,
                 heads: tuple[int, int] | None) -> np.ndarray:
    if kind is not None:
        data = to_blocks(c.encoded(name))[1]
    else:
        data = np.ascontiguousarray(c.read(name), dtype=np.float32)
        offset = ARCHITECTURES[arch_name].norm_offset
        if offset and name.endswith("norm.weight"):
            data = data + np.float32(offset)
        data = data.reshape(-1, shape[-1]) if shape else data.reshape(1, 1)
    if heads and ARCHITECTURES[arch_name].permute_qk and (".attn_q." in gname or ".attn_k." in gname):
        order = qk_row_order(data.shape[0], heads[0] if ".attn_q." in gname else heads[1])
        data = data[np.argsort(order)]
    return np.ascontiguousarray(data)


def _naming(c: Any) -> tuple[str, Any, tuple[int, int] | None]:
    """(GGUF architecture, HF name → GGUF name, (heads, kv heads) or None) for a container."""
    config = (c.attrs.get("checkpoint") or {}).get("config") or {}
    arch_name = MODEL_TYPES.get(config.get("model_type", ""))
    if arch_name is None:
        for name in c:
            if len(name.encode()) >= 64:
                raise CheckpointError(f"tensor name {name!r} is too long for GGUF (63 bytes at most)")
        return GENERIC_ARCHITECTURE, lambda name: name, None
    arch = ARCHITECTURES[arch_name]

    def names(name: str) -> str:
        gname = gguf_name(name, arch)
        if gname is None:
            raise CheckpointError(f"{c.path}: tensor {name!r} has no GGUF name in a {arch_name} model")
        return gname

    heads = int(config.get("num_attention_heads", 0))
    return arch_name, names, (heads, int(config.get("num_key_value_heads", heads)))


def _progress(plan: list[Any], enabled: bool, target: Path) -> Any:
    if not enabled or len(plan) < 2:
        return plan
    import sys

    from tqdm import tqdm

    return tqdm(plan, desc=f"writing {target.name}", unit="tensor", file=sys.stderr, leave=False)
