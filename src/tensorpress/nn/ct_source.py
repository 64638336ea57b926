"""Reading compressed-tensors checkpoints (vLLM / LLM Compressor) as plain float tensors.

A Hugging Face model folder whose ``config.json`` has ``quantization_config`` with ``"quant_method":
"compressed-tensors"`` stores each quantized Linear as several tensors next to its module name::

    pack-quantized           weight_packed  int32 (out, ceil(in·bits/32)), weight_shape int64 [out, in]
    naive-/int-quantized     weight         int8 (out, in)
    float-quantized          weight         float8_e4m3fn (out, in)
    every format             weight_scale   (1,) | (out, 1) | (out, groups) | (out/bh, in/bw), the model's dtype
    asymmetric               weight_zero_point  like weight_scale (int8; pack-quantized: packed along dim 0)
    activation ordering      weight_g_idx   int (in,): the group of each input column

and ``dense`` stores plain weights. This reader turns the parts of each module into one weight tensor
``<module>.weight`` with what the package's own decompressors compute, ``(q − zero_point) · scale`` in the
scale's dtype (float32, bfloat16 or float16), bit for bit: ``q − zero_point`` is a small integer and its product
with a scale is exact in float32, so the single rounding to the scale's dtype is the same as torch's.
Packed codes are ``q + 2**(bits−1)``, each row an LSB-first bit stream in little-endian int32 words (the
layout of compressed-tensors 0.12 and later: words shared across elements for 3, 5, 6 and 7 bits; 2, 4 and 8
bits are the same in every version). Strategies: ``tensor``, ``channel``, ``group`` (the last group shorter
when the input width does not divide; ``weight_g_idx`` when given), ``block``. Other formats (nvfp4, mxfp4,
sparse bitmasks, transforms) are refused with the reason. Activation and KV-cache scales are not weights:
they are left out and listed in ``dropped``.

Decoding is per tensor, in row blocks written straight into the output, so reading one weight holds its
stored parts plus the output array. The config handed on has no ``quantization_config``: the weights it goes
with are plain floats.

Layout match with ``quant``: symmetric int groups along the input axis (``group`` strategy, no ``g_idx``) are
``quant(bits=b, group=g, symmetric=true)`` with codes ``q + 2**(b−1)``, the same bit stream as
``weight_packed`` when a row fills whole bytes, and the same values where each scale is an fp16 number
(``scale_dtype=float32`` otherwise, exact up to float32's rounding of ``code·scale − 2**(b−1)·scale``);
asymmetric groups are ``quant(bits=b, group=g)`` with ``minimum = −(zero_point + 2**(b−1))·scale``.
:meth:`CompressedTensorsCheckpoint.encoded` returns that :class:`~tensorpress.Encoded` without decoding.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.encoded import Encoded
from .sources import CheckpointError, HFDirectory, TensorEntry

METHOD = "compressed-tensors"
#: formats whose weights this reader decodes
QUANTIZED_FORMATS = ("pack-quantized", "naive-quantized", "int-quantized", "float-quantized")
FORMATS = (*QUANTIZED_FORMATS, "dense", "mixed-precision")
STRATEGIES = ("tensor", "channel", "group", "block")
#: stored quantization parameters of a weight, beside ``weight`` / ``weight_packed``
WEIGHT_PARAMS = ("weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx")
#: parameters of activation / KV-cache quantization: not weights, left out
ACTIVATION_PARAMS = ("input_scale", "input_zero_point", "input_global_scale", "output_scale", "output_zero_point",
                     "k_scale", "v_scale", "q_scale", "k_zero_point", "v_zero_point", "q_zero_point")
ROW_BLOCK_ELEMENTS = 1 << 20  # elements decoded at once: bounds the temporaries to a few MiB


@dataclass(frozen=True)
class WeightArgs:
    """The ``weights`` entry of a compressed-tensors scheme (the fields that decoding needs)."""

    num_bits: int
    type: str  #: ``"int"`` or ``"float"``
    symmetric: bool
    strategy: str  #: one of :data:`STRATEGIES`
    group_size: int | None = None
    block: tuple[int, int] | None = None

    @classmethod
    def from_config(cls, d: Any, where: str) -> WeightArgs:
        if not isinstance(d, dict):
            raise CheckpointError(f"{where}: 'weights' must be a JSON object, got {type(d).__name__}")
        bits, kind, group = d.get("num_bits", 8), str(d.get("type", "int")).lower(), d.get("group_size")
        strategy = d.get("strategy") or ("tensor" if group is None else "group" if group > 0 else "channel")
        strategy = str(strategy).lower()
        if d.get("dynamic") not in (None, False):
            raise CheckpointError(f"{where}: dynamic weight quantization ({d.get('dynamic')!r}) stores no weight "
                                  "scales; only static weight quantization can be read")
        if strategy not in STRATEGIES:
            raise CheckpointError(f"{where}: weight strategy {strategy!r} is not supported; expected one of "
                                  f"{', '.join(STRATEGIES)} (tensor_group is the nvfp4 format, not read here)")
        if kind not in ("int", "float") or not isinstance(bits, int) or not (
                1 <= bits <= 8 if kind == "int" else bits == 8):
            raise CheckpointError(f"{where}: {kind} weights of {bits} bits are not supported; expected int of 1 to "
                                  "8 bits or float of 8 bits (fp8 e4m3)")
        if strategy == "group" and not (isinstance(group, int) and group > 0):
            raise CheckpointError(f"{where}: group strategy needs a positive group_size, got {group!r}")
        block = d.get("block_structure")
        if strategy == "block":
            if isinstance(block, str):
                block = [int(v) for v in block.split("x")] if re.fullmatch(r"\d+x\d+", block) else None
            if not (isinstance(block, list) and len(block) == 2 and all(isinstance(v, int) and v > 0 for v in block)):
                raise CheckpointError(f"{where}: block strategy needs block_structure [rows, cols], got {block!r}")
        shape = (int(block[0]), int(block[1])) if strategy == "block" and block else None
        return cls(bits, kind, bool(d.get("symmetric", True)), strategy, group if strategy == "group" else None, shape)


@dataclass(frozen=True)
class Scheme:
    """One entry of ``config_groups``: which modules it targets, their weight quantization and format."""

    name: str
    targets: tuple[str, ...]
    weights: WeightArgs | None
    format: str | None


@dataclass(frozen=True)
class QuantizedWeight:
    """The stored parts of one quantized Linear weight and what they decode to."""

    module: str
    format: str
    args: WeightArgs
    parts: dict[str, str]  #: role (``codes``, ``scale``, ``zero_point``, ``g_idx``) → stored tensor name
    shape: tuple[int, int]
    dtype: np.dtype[Any]


def quantization_config(folder: Path) -> dict[str, Any] | None:
    """The compressed-tensors ``quantization_config`` of the model folder ``folder``, or None when it has none."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); fix or remove it") from None
    qc = config.get("quantization_config") if isinstance(config, dict) else None
    return qc if isinstance(qc, dict) and qc.get("quant_method") == METHOD else None


def is_compressed_tensors(folder: Path) -> bool:
    """Whether ``folder`` is a model folder whose config declares compressed-tensors quantization."""
    return folder.is_dir() and quantization_config(folder) is not None


class CompressedTensorsCheckpoint(HFDirectory):
    """A compressed-tensors model folder as a :class:`~tensorpress.nn.sources.Checkpoint` of float weights."""

    format = "compressed-tensors"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        qc = quantization_config(path)
        if qc is None:
            raise CheckpointError(f"{path}: config.json declares no compressed-tensors quantization_config")
        self.quantization = qc
        where = f"{path / 'config.json'}: quantization_config"
        self.schemes, self.ignore, default_format = _parse(qc, where)
        stored, self.stored = self.entries, dict(self.entries)
        self.weights: dict[str, QuantizedWeight] = {}
        entries: dict[str, TensorEntry] = {}
        used: set[str] = set()
        for name in stored:
            module, _, param = name.rpartition(".")
            if param == "weight_packed" or (param == "weight" and f"{module}.weight_scale" in stored):
                qw = self._describe(module, default_format)
                self.weights[qw.module + ".weight"] = qw
                entries[qw.module + ".weight"] = TensorEntry(qw.module + ".weight", qw.shape, qw.dtype)
                used.update(qw.parts.values(), [f"{module}.weight_shape"])
        for name, entry in stored.items():
            if name in used or name in entries:
                continue
            param = name.rpartition(".")[2]
            if param in ACTIVATION_PARAMS:
                self.dropped.append(name)
            elif param in WEIGHT_PARAMS:
                raise CheckpointError(f"{path}: {name!r} has no quantized weight beside it (no weight_packed, or "
                                      "weight with weight_scale); the checkpoint is incomplete")
            else:
                entries[name] = entry
        self.entries = _in_stored_order(entries, self.weights, list(stored))

    def read(self, name: str) -> np.ndarray:
        qw = self.weights.get(name)
        if qw is None:
            return super().read(name)
        out_rows, n = qw.shape
        scale = self._part(qw, "scale")
        zero = self._zero_point(qw, scale.shape)
        columns = self._columns(qw, scale.shape)
        codes = self._part(qw, "codes")
        compute = np.float64 if scale.dtype == np.float64 else np.float32
        out = np.empty(qw.shape, dtype=qw.dtype)
        step = max(1, ROW_BLOCK_ELEMENTS // max(n, 1))
        for r in range(0, out_rows, step):
            rows = slice(r, min(r + step, out_rows))
            q: Any  # float32 (float64 with float64 scales)
            if qw.format == "pack-quantized":
                q = unpack_int32(codes[rows], qw.args.num_bits, n).astype(compute) - (1 << (qw.args.num_bits - 1))
            else:
                q = codes[rows].astype(compute)
            if zero is not None:
                q -= _expand(zero, qw, rows, columns)
            q *= _expand(scale, qw, rows, columns).astype(compute, copy=False)
            out[rows] = q
        return out

    def encoded(self, name: str) -> Encoded | None:
        """Tensor ``name`` as the ``quant`` data its stored parts are, without decoding; None when its layout is
        no ``quant`` layout (see the module docstring). Decodes to :meth:`read` exactly when every scale (and
        minimum) is an fp16 number, within float32 rounding otherwise."""
        from ..formats.quant import GroupQuant
        from ..kernels.reference.quant import pack_bits

        qw = self.weights.get(name)
        if qw is None or qw.args.type != "int" or qw.args.strategy != "group" or "g_idx" in qw.parts:
            return None
        bits, group = qw.args.num_bits, qw.args.group_size or 0
        rows, n = qw.shape
        scale = self._part(qw, "scale").astype(np.float32)
        if scale.shape != (rows, -(-n // group)):
            return None
        offset = 1 << (bits - 1)
        codes = self._part(qw, "codes")
        if qw.format == "pack-quantized":
            codes = unpack_int32(codes, bits, n)
        else:
            codes = (codes.astype(np.int16) + offset).astype(np.uint8)
        parts: dict[str, Any] = {"codes": pack_bits(codes.reshape(-1), bits)}
        if qw.args.symmetric:
            stored, mins = scale, None
        else:
            zero = self._zero_point(qw, scale.shape)
            mins = -(zero.astype(np.float32) + offset) * scale if zero is not None else -offset * scale
            stored = scale
        exact = all(np.array_equal(v.astype(np.float16).astype(np.float32), v) for v in (stored, mins)
                    if v is not None)
        dtype = np.float16 if exact else np.float32
        parts["scales"] = stored.astype(dtype)
        if mins is not None:
            parts["mins"] = mins.astype(dtype)
        codec = GroupQuant(bits=bits, group=group, symmetric=qw.args.symmetric,
                           scale_dtype="float16" if exact else "float32")
        return Encoded(codec, qw.shape, qw.dtype, parts, {})

    def config(self) -> dict[str, Any] | None:
        config = super().config()
        if config is not None:
            config = {k: v for k, v in config.items() if k != "quantization_config"}
        return config

    # --- describing and reading one weight --------------------------------------------------------------------

    def _describe(self, module: str, default_format: str | None) -> QuantizedWeight:
        stored, where = self.stored, f"{self.path}: module {module!r}"
        scheme = self._scheme(module)
        if scheme.weights is None:
            raise CheckpointError(f"{where} is stored quantized, but its scheme {scheme.name!r} quantizes no weights")
        packed = f"{module}.weight_packed" in stored
        fmt = scheme.format or default_format or ("pack-quantized" if packed else None)
        if fmt in (None, "dense", "mixed-precision"):
            fmt = "pack-quantized" if packed else "float-quantized" if scheme.weights.type == "float" else \
                "naive-quantized"
        if fmt not in QUANTIZED_FORMATS:
            raise CheckpointError(f"{where}: format {fmt!r} is not supported; expected one of "
                                  f"{', '.join(QUANTIZED_FORMATS)} (or dense)")
        if (fmt == "pack-quantized") != packed:
            raise CheckpointError(f"{where}: format {fmt!r} but {'weight_packed' if packed else 'weight'} is stored; "
                                  "the checkpoint does not match its config")
        args = scheme.weights
        parts = {"codes": f"{module}.weight_packed" if packed else f"{module}.weight",
                 "scale": f"{module}.weight_scale"}
        for role in ("zero_point", "g_idx"):
            if f"{module}.weight_{role}" in stored:
                parts[role] = f"{module}.weight_{role}"
        if not args.symmetric and "zero_point" not in parts:
            raise CheckpointError(f"{where}: asymmetric weights but no weight_zero_point is stored")
        codes, scale = stored[parts["codes"]], stored[parts["scale"]]
        if packed:
            shape = self._packed_shape(module, codes, args.num_bits)
        else:
            want = np.dtype(np.int8) if args.type == "int" else None
            if len(codes.shape) != 2 or (want is not None and codes.dtype != want) or (
                    want is None and codes.dtype.name != "float8_e4m3fn"):
                raise CheckpointError(f"{where}: weight is {codes.dtype} {codes.shape}; {fmt} {args.type} weights "
                                      f"are 2-d {'int8' if want is not None else 'float8_e4m3fn'}")
            shape = (int(codes.shape[0]), int(codes.shape[1]))
        if scale.dtype.kind != "f" and scale.dtype.name != "bfloat16":
            raise CheckpointError(f"{where}: weight_scale is {scale.dtype}; expected a float dtype")
        qw = QuantizedWeight(module, fmt, args, parts, shape, np.dtype(scale.dtype))
        self._check_scale_shape(qw, scale.shape, "weight_scale")
        return qw

    def _scheme(self, module: str) -> Scheme:
        """The scheme that targets ``module``: exact names first, then regexes, then class names (in order)."""
        best: tuple[int, int, Scheme] | None = None
        for i, scheme in enumerate(self.schemes):
            for target in scheme.targets:
                rank = 0 if target == module else 1 if target.startswith("re:") and re.match(target[3:], module) \
                    else 2 if target.isidentifier() else None
                if rank is not None and (best is None or (rank, i) < best[:2]):
                    best = (rank, i, scheme)
        if best is None:
            raise CheckpointError(f"{self.path}: module {module!r} is stored quantized but no config group "
                                  "targets it; the checkpoint does not match its config")
        return best[2]

    def _packed_shape(self, module: str, codes: TensorEntry, bits: int) -> tuple[int, int]:
        where = f"{self.path}: module {module!r}"
        shape_name = f"{module}.weight_shape"
        if shape_name not in self.stored:
            raise CheckpointError(f"{where}: weight_packed without weight_shape; the checkpoint is incomplete")
        shape = super().read(shape_name).reshape(-1)
        if shape.size != 2 or shape.dtype.kind not in "iu" or np.any(shape < 0):
            raise CheckpointError(f"{where}: weight_shape {shape.tolist()} is not a 2-d shape")
        rows, n = int(shape[0]), int(shape[1])
        if codes.dtype != np.int32 or codes.shape != (rows, -(-n * bits // 32)):
            raise CheckpointError(f"{where}: weight_packed is {codes.dtype} {codes.shape}; a {rows}x{n} weight of "
                                  f"{bits} bits packs into int32 ({rows}, {-(-n * bits // 32)})")
        return rows, n

    def _check_scale_shape(self, qw: QuantizedWeight, shape: tuple[int, ...], what: str) -> None:
        rows, n = qw.shape
        args = qw.args
        if args.strategy == "tensor":
            ok = math.prod(shape) == 1
            want = "(1,)"
        elif args.strategy == "channel":
            ok = shape in ((rows, 1), (rows,))
            want = f"({rows}, 1)"
        elif args.strategy == "group":
            groups = -(-n // (args.group_size or 1))
            ok = len(shape) == 2 and shape[0] == rows and ("g_idx" in qw.parts or shape[1] == groups)
            want = f"({rows}, {groups})"
        else:
            bh, bw = args.block or (1, 1)
            ok = shape == (-(-rows // bh), -(-n // bw))
            want = f"({-(-rows // bh)}, {-(-n // bw)})"
        if not ok:
            raise CheckpointError(f"{self.path}: module {qw.module!r}: {what} has shape {shape}; a {args.strategy} "
                                  f"quantized {rows}x{n} weight has {want}")

    def _part(self, qw: QuantizedWeight, role: str) -> np.ndarray:
        return super().read(qw.parts[role])

    def _zero_point(self, qw: QuantizedWeight, scale_shape: tuple[int, ...]) -> np.ndarray | None:
        if "zero_point" not in qw.parts:
            return None
        zero = self._part(qw, "zero_point")
        packed = qw.format == "pack-quantized" and qw.args.strategy in ("group", "channel")
        if packed:  # packed along the output axis: rows of the transpose are the bit streams
            rows = scale_shape[0]
            if zero.dtype != np.int32 or zero.shape != (-(-rows * qw.args.num_bits // 32), scale_shape[1]):
                raise CheckpointError(f"{self.path}: module {qw.module!r}: weight_zero_point is {zero.dtype} "
                                      f"{zero.shape}; packed zero points of {scale_shape} are int32 "
                                      f"({-(-rows * qw.args.num_bits // 32)}, {scale_shape[1]})")
            zero = unpack_int32(zero.T, qw.args.num_bits, rows).T.astype(np.int16) - (1 << (qw.args.num_bits - 1))
        elif math.prod(zero.shape) != math.prod(scale_shape):
            raise CheckpointError(f"{self.path}: module {qw.module!r}: weight_zero_point has shape {zero.shape}, "
                                  f"weight_scale {scale_shape}; they must match")
        return zero.reshape(scale_shape)

    def _columns(self, qw: QuantizedWeight, scale_shape: tuple[int, ...]) -> np.ndarray | None:
        """Group of each input column (``group`` strategy), from ``weight_g_idx`` when stored."""
        if qw.args.strategy != "group":
            return None
        n = qw.shape[1]
        if "g_idx" not in qw.parts:
            return np.arange(n) // (qw.args.group_size or 1)
        g_idx = self._part(qw, "g_idx").reshape(-1)
        if g_idx.shape != (n,) or g_idx.dtype.kind not in "iu" or (n and not (
                g_idx.min() >= 0 and g_idx.max() < scale_shape[1])):
            raise CheckpointError(f"{self.path}: module {qw.module!r}: weight_g_idx must hold {n} group numbers "
                                  f"below {scale_shape[1]}, got {g_idx.dtype} {g_idx.shape}")
        return g_idx.astype(np.intp)


def unpack_int32(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Codes of compressed-tensors' packing: (rows, words) int32, each row an LSB-first stream of ``bits``-bit
    codes in little-endian words → uint8 (rows, count), the codes as stored (``q + 2**(bits−1)``)."""
    rows = packed.shape[0]
    data = np.ascontiguousarray(packed, dtype="<i4").view(np.uint8).reshape(rows, -1)
    if bits == 8:
        codes = data
    elif bits == 4:
        codes = np.stack([data & np.uint8(0x0F), data >> 4], axis=2).reshape(rows, -1)
    else:
        planes = np.unpackbits(data, axis=1, bitorder="little")[:, :count * bits].reshape(rows, count, bits)
        codes = (planes << np.arange(bits, dtype=np.uint8)).sum(axis=2, dtype=np.uint8)
    return codes[:, :count]


def _expand(values: np.ndarray, qw: QuantizedWeight, rows: slice, columns: np.ndarray | None) -> np.ndarray:
    """Per-element scale (or zero point) of the weight rows ``rows``, broadcastable to (rows, in)."""
    strategy = qw.args.strategy
    if strategy == "tensor":
        return values.reshape(1, 1)
    if strategy == "channel":
        return values.reshape(-1, 1)[rows]
    if strategy == "group":
        return values[rows][:, columns]
    bh, bw = qw.args.block or (1, 1)
    r0, r1 = rows.start, rows.stop
    block_rows = values[r0 // bh:-(-r1 // bh)]
    per_row = np.repeat(block_rows, bh, axis=0)[r0 - (r0 // bh) * bh:][:r1 - r0]
    return np.repeat(per_row, bw, axis=1)[:, :qw.shape[1]]


def _parse(qc: dict[str, Any], where: str) -> tuple[list[Scheme], list[str], str | None]:
    """(schemes, ignore list, model-wide format) of a quantization_config, refusing what cannot be read."""
    fmt = qc.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise CheckpointError(f"{where}: format {fmt!r} is not supported; expected one of {', '.join(FORMATS)}")
    for key, what in (("sparsity_config", "sparse weights"), ("transform_config", "weight transforms (rotations)")):
        if qc.get(key):
            raise CheckpointError(f"{where}: {key} is set: {what} are not supported; decompress the model with "
                                  "compressed-tensors first")
    groups = qc.get("config_groups")
    if not isinstance(groups, dict):
        raise CheckpointError(f"{where}: expected 'config_groups' to be a JSON object, got {type(groups).__name__}")
    schemes = []
    for name, scheme in groups.items():
        if not isinstance(scheme, dict) or not isinstance(scheme.get("targets"), list):
            raise CheckpointError(f"{where}: config group {name!r} must be an object with a 'targets' list "
                                  "(preset names as groups are not supported)")
        weights = scheme.get("weights")
        args = None if weights is None else WeightArgs.from_config(weights, f"{where}: group {name!r}")
        group_format = scheme.get("format")
        if group_format is not None and group_format not in FORMATS:
            raise CheckpointError(f"{where}: group {name!r} has format {group_format!r}, which is not supported; "
                                  f"expected one of {', '.join(FORMATS)}")
        schemes.append(Scheme(str(name), tuple(str(t) for t in scheme["targets"]), args, group_format))
    ignore = qc.get("ignore") or []
    return schemes, [str(i) for i in ignore], fmt if fmt != "mixed-precision" else None


def _in_stored_order(entries: dict[str, TensorEntry], weights: dict[str, QuantizedWeight],
                     stored: list[str]) -> dict[str, TensorEntry]:
    """``entries`` in the order of the stored tensors, each decoded weight where its codes are."""
    position = {name: i for i, name in enumerate(stored)}
    key = {name: position[weights[name].parts["codes"]] if name in weights else position[name] for name in entries}
    return {name: entries[name] for name in sorted(entries, key=key.__getitem__)}
