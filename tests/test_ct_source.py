"""compressed-tensors checkpoints as a source: checkpoints written by the compressed-tensors package itself from
the real SmolLM2 reference, read by our reader and compared with the package's own decompression."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensorpress
from checkpoint_fixtures import needs, reference_dir
from tensorpress.cli import main
from tensorpress.nn import convert_checkpoint, load, open_checkpoint
from tensorpress.nn.ct_source import CompressedTensorsCheckpoint, unpack_int32
from tensorpress.nn.sources import CheckpointError
from test_llm_data import real

pytestmark = pytest.mark.llm
_MARKER = "tensorpress-ct.json"  # written last: a cached folder without it is incomplete
#: the full model, as LLM Compressor's W4A16 preset but with groups of 64 (SmolLM2's 576-wide rows do not
#: divide into 128, which compressed-tensors requires)
FULL = ("pack-quantized", {"num_bits": 4, "strategy": "group", "group_size": 64, "symmetric": True})
#: (format, weights args, model dtype) of the small two-block checkpoints
VARIANTS = {
    "w8-channel-naive": ("naive-quantized", {"num_bits": 8, "strategy": "channel", "symmetric": True}, "float32"),
    "w4-group64-asym-packed": ("pack-quantized", {"num_bits": 4, "strategy": "group", "group_size": 64,
                                                  "symmetric": False}, "float32"),
    "w3-group32-asym-packed": ("pack-quantized", {"num_bits": 3, "strategy": "group", "group_size": 32,
                                                  "symmetric": False}, "float32"),
    "w8-channel-asym-packed": ("pack-quantized", {"num_bits": 8, "strategy": "channel", "symmetric": False},
                               "float32"),
    "w8-tensor-asym-naive": ("naive-quantized", {"num_bits": 8, "strategy": "tensor", "symmetric": False},
                             "float32"),
    "w4-group64-bf16-packed": ("pack-quantized", {"num_bits": 4, "strategy": "group", "group_size": 64,
                                                  "symmetric": True}, "bfloat16"),
    "fp8-channel": ("float-quantized", {"num_bits": 8, "type": "float", "strategy": "channel",
                                        "symmetric": True}, "float32"),
    "fp8-block128": ("float-quantized", {"num_bits": 8, "type": "float", "strategy": "block",
                                         "block_structure": [128, 128], "symmetric": True}, "bfloat16"),
}


@pytest.fixture(scope="module")
def ct() -> Any:
    real(lambda: needs("compressed_tensors"))
    import compressed_tensors

    return compressed_tensors


# --- writing checkpoints with the compressed-tensors package --------------------------------------------------


def _minmax(w: Any, args: Any) -> tuple[Any, Any]:
    """Per-group / channel / tensor / block minimum and maximum of ``w``, shaped as the package's scales."""
    if args.strategy == "group":
        g = w.unflatten(-1, (-1, args.group_size))
        return g.amin(-1), g.amax(-1)
    if args.strategy == "channel":
        return w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    if args.strategy == "tensor":
        return w.amin().reshape(1), w.amax().reshape(1)
    import torch

    bh, bw = args.block_structure
    padded = torch.nn.functional.pad(w, (0, -w.shape[1] % bw, 0, -w.shape[0] % bh), value=float(w[0, 0]))
    b = padded.unflatten(0, (-1, bh)).unflatten(-1, (-1, bw))
    return b.amin((1, 3)), b.amax((1, 3))


def write_ct_checkpoint(folder: Path, fmt: str, weights: dict[str, Any], *, layers: int, dtype: str = "float32",
                        linears_only: bool = False) -> None:
    """A compressed-tensors folder of the first ``layers`` blocks of the real SmolLM2 reference: every
    ``*_proj`` Linear quantized with min-max scales (``calculate_qparams``) and stored by the package's own
    compressor for ``fmt``; config written by ``ModelCompressor.update_config``. ``linears_only`` leaves out
    the embedding and norms (the config then still describes the whole model)."""
    import torch
    from compressed_tensors.compressors import BaseCompressor, ModelCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme
    from compressed_tensors.quantization.utils.helpers import calculate_qparams
    from safetensors.torch import save_file

    source = reference_dir()
    ref = open_checkpoint(source)
    args = QuantizationArgs(**weights)
    scheme = QuantizationScheme(targets=["Linear"], weights=args, format=fmt)
    compressor = BaseCompressor.get_value_from_registry(fmt)
    out = {}
    for name in ref.entries:
        parts = name.split(".")
        if name.startswith("model.layers.") and int(parts[2]) >= layers:
            continue
        if linears_only and not name.endswith("_proj.weight"):
            continue
        w = torch.from_numpy(ref.read(name)).to(getattr(torch, dtype))
        if name.endswith("_proj.weight"):
            scale, zero = calculate_qparams(*_minmax(w, args), args)
            state = {"weight": w, "weight_scale": scale.to(w.dtype), "weight_zero_point": zero}
            module = name.removesuffix(".weight")
            out.update({f"{module}.{k}": v.contiguous() for k, v in compressor.compress(state, scheme).items()})
        else:
            out[name] = w
    folder.mkdir(parents=True, exist_ok=True)
    save_file(out, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    config.update(num_hidden_layers=layers, torch_dtype=dtype, dtype=dtype)
    (folder / "config.json").write_text(json.dumps(config))
    qc = QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"], format=fmt,
                            quantization_status="compressed")
    ModelCompressor(quantization_config=qc).update_config(str(folder))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, folder / name)


def full_checkpoint(ct: Any) -> Path:
    """The whole SmolLM2 in W4A16 (groups of 64, pack-quantized), built once into the data cache."""
    from tensorpress.datasets import data_dir

    target = data_dir() / "models" / "smollm2-ct-w4a16-g64"
    stamp = {"compressed_tensors": ct.__version__, "format": FULL[0], "weights": FULL[1]}
    marker = target / _MARKER
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        write_ct_checkpoint(tmp, FULL[0], FULL[1], layers=30)
        (tmp / _MARKER).write_text(json.dumps(stamp))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def package_decompressed(folder: Path) -> dict[str, np.ndarray]:
    """Every tensor of a compressed-tensors folder as the package's own decompressor for the stored format
    gives it (bfloat16 as its int16 bit patterns). Its model-free ``CompressedTensorsDequantizer`` is not used:
    it infers the format from the scheme (pack-quantized for any int scheme) instead of reading it."""
    import torch
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    qc = QuantizationConfig.model_validate(json.loads((folder / "config.json").read_text())["quantization_config"])
    (scheme,) = qc.config_groups.values()
    compressor = BaseCompressor.get_value_from_registry(scheme.format or qc.format)
    params = compressor.compression_param_names(scheme)
    out = {}
    for module in [n.removesuffix("." + params[0]) for n in tensors if n.endswith("_proj." + params[0])]:
        state = {p: tensors.pop(f"{module}.{p}") for p in params}
        out[f"{module}.weight"] = compressor.decompress(state, scheme)["weight"]
    out.update(tensors)
    return {n: (t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()) for n, t in out.items()}


def assert_same_as_package(ours: CompressedTensorsCheckpoint, theirs: dict[str, np.ndarray]) -> None:
    """Same names, shapes, dtypes and bits (bfloat16 compared as its int16 bit patterns)."""
    assert set(ours.entries) == set(theirs)
    for name, entry in ours.entries.items():
        x = ours.read(name)
        assert x.dtype == entry.dtype and x.shape == entry.shape, name
        bits = x.view(np.int16) if x.dtype.name == "bfloat16" else x
        np.testing.assert_array_equal(bits, theirs[name], err_msg=name)


# --- the whole model ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full(ct: Any) -> Path:
    return real(lambda: full_checkpoint(ct))


@pytest.fixture(scope="module")
def full_theirs(full: Path) -> dict[str, np.ndarray]:
    return package_decompressed(full)


def test_full_model_equals_package_decompression(full: Path, full_theirs: dict[str, np.ndarray]) -> None:
    """All 272 tensors of the W4A16 SmolLM2: our reading equals the package's decompression bit for bit;
    the 210 quantized Linears are one float32 weight each, on a 16-level grid per group of 64."""
    ours = open_checkpoint(full)
    assert isinstance(ours, CompressedTensorsCheckpoint) and ours.format == "compressed-tensors"
    assert len(ours.weights) == 30 * 7 and len(ours.entries) == 272 and ours.dropped == []
    assert not any(n.endswith(("_packed", "_scale", "_shape")) for n in ours.entries)
    assert "quantization_config" not in (ours.config() or {}) and set(ours.tokenizer_files()) >= {"tokenizer.json"}
    assert_same_as_package(ours, full_theirs)
    w = ours.read("model.layers.3.mlp.down_proj.weight")
    assert w.shape == (576, 1536) and w.dtype == np.float32
    levels = [np.unique(g).size for g in w[:8].reshape(-1, 64)]
    assert max(levels) <= 16 and min(levels) >= 8
    ref = open_checkpoint(reference_dir()).read("model.layers.3.mlp.down_proj.weight")
    rel = np.linalg.norm(w - ref) / np.linalg.norm(ref)
    assert 0.01 < rel < 0.2  # 4-bit error, not a copy and not noise


def test_reading_streams_in_row_blocks(full: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a quantized weight holds its stored parts, the output and one row block of temporaries
    (at most 32 bytes per element of a block), whatever the weight's size; the blocks join up exactly."""
    import tracemalloc

    from tensorpress.nn import ct_source

    ours = open_checkpoint(full)
    name = "model.layers.7.mlp.gate_proj.weight"  # 1536 x 576
    whole = ours.read(name)
    block = 1 << 15
    monkeypatch.setattr(ct_source, "ROW_BLOCK_ELEMENTS", block)
    parts = sum(ours.stored[p].nbytes for p in ours.weights[name].parts.values())
    tracemalloc.start()
    try:
        x = ours.read(name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(x, whole)
    print(f"read {name}: peak {peak / 2**20:.2f} MiB = output {x.nbytes / 2**20:.2f} + parts {parts / 2**20:.2f} "
          f"+ {(peak - x.nbytes - parts) / 2**20:.2f} MiB")
    assert peak < x.nbytes + parts + 32 * block


def test_convert_and_load_full_model(full: Path, full_theirs: dict[str, np.ndarray], tmp_path: Path) -> None:
    """``convert-checkpoint`` of the W4A16 folder (quant 8-bit g64 on top, norms raw): ``load`` gives a model
    whose perplexity is finite and within 1% of the package-decompressed model's, which itself sits above the
    fp32 reference's (4-bit weights)."""
    import torch
    import transformers

    from tensorpress.datasets import text_split
    from tensorpress.nn.eval import apply_weights, perplexity
    from tensorpress.nn.models import load_reference

    spec = "quant(bits=8, group=64, symmetric=true)"
    out = convert_checkpoint(full, tmp_path / "ct.zip", spec=spec, policy={"*norm.weight": "raw"}, progress=False)
    with tensorpress.open(out) as c:
        meta = c.attrs["checkpoint"]
        assert meta["source"]["format"] == "compressed-tensors" and "quantization_config" not in meta["config"]
        assert c.encoded("model.layers.0.mlp.up_proj.weight").codec == tensorpress.spec(spec)
        assert c.encoded("model.norm.weight").codec.codec_id == "raw"
        np.testing.assert_array_equal(c.read("model.norm.weight"), full_theirs["model.norm.weight"])

    heldout = real(lambda: text_split("austen"))[1]
    kwargs: dict[str, Any] = {"context": 64, "max_tokens": 128, "progress": False}
    ours = perplexity(*load(out), heldout, **kwargs)
    config = transformers.AutoConfig.from_pretrained(full, local_files_only=True)
    del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    apply_weights(model, full_theirs)
    tokenizer = transformers.AutoTokenizer.from_pretrained(full, local_files_only=True)
    theirs = perplexity(model, tokenizer, heldout, **kwargs)
    reference = perplexity(*load_reference("smollm2"), heldout, **kwargs)
    print(f"perplexity: fp32 reference {reference:.3f}, package W4A16 {theirs:.3f}, converted (8-bit on top) "
          f"{ours:.3f}")
    assert math.isfinite(ours) and abs(ours / theirs - 1) < 0.01
    assert reference < theirs < 2 * reference


# --- formats, strategies, dtypes ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_equal_package_decompression(variant: str, tmp_path: Path, ct: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A real block in each format/strategy/dtype: every weight equals the package's decompression (bfloat16
    bit for bit); packed 3-bit codes straddle int32 words; fp8 blocks of 128 rows cover a partial last block
    and are read in row blocks of 86/32 rows that cut across them."""
    from tensorpress.nn import ct_source

    monkeypatch.setattr(ct_source, "ROW_BLOCK_ELEMENTS", 50_000)
    fmt, weights, dtype = VARIANTS[variant]
    write_ct_checkpoint(tmp_path, fmt, weights, layers=1, dtype=dtype, linears_only=True)
    ours = open_checkpoint(tmp_path)
    assert isinstance(ours, CompressedTensorsCheckpoint) and len(ours.weights) == 7
    assert {e.dtype.name for e in ours.entries.values()} == {dtype}
    assert_same_as_package(ours, package_decompressed(tmp_path))


def test_unpack_matches_package_packing(ct: Any) -> None:
    """Our unpacking of compressed-tensors' int32 words gives back the codes the package packed, for every
    width 1-8 and a row length that leaves a partial last word."""
    import torch
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    w = open_checkpoint(reference_dir()).read("model.layers.0.self_attn.k_proj.weight")[:, :77]
    for bits in range(1, 9):
        q = np.clip(np.round(w / np.abs(w).max() * 2 ** (bits - 1)), -2 ** (bits - 1), 2 ** (bits - 1) - 1)
        packed = pack_to_int32(torch.from_numpy(q.astype(np.int8)), bits).numpy()
        assert packed.shape == (w.shape[0], -(-77 * bits // 32))
        codes = unpack_int32(packed, bits, 77).astype(np.int16) - 2 ** (bits - 1)
        np.testing.assert_array_equal(codes, q.astype(np.int16), err_msg=f"{bits} bits")


def test_g_idx_groups_columns_by_activation_order(tmp_path: Path, ct: Any) -> None:
    """``weight_g_idx`` (GPTQ activation order: groups of columns taken in a permuted order): the weight
    stored with its columns in the original order decodes to the package's decompression of the permuted
    layout, columns put back."""
    import torch
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.utils.helpers import calculate_qparams
    from safetensors.torch import load_file, save_file

    weights = VARIANTS["w4-group64-asym-packed"][1]
    write_ct_checkpoint(tmp_path, "naive-quantized", weights, layers=1, linears_only=True)
    name = "model.layers.0.mlp.down_proj"
    w = open_checkpoint(reference_dir()).read(f"{name}.weight")
    perm = np.argsort(-np.linalg.norm(w, axis=0), kind="stable")  # columns by decreasing norm
    args = QuantizationArgs(**weights)
    scheme = QuantizationScheme(targets=["Linear"], weights=args, format="naive-quantized")
    permuted = torch.from_numpy(w[:, perm].copy())
    scale, zero = calculate_qparams(*_minmax(permuted, args), args)
    state = BaseCompressor.get_value_from_registry("naive-quantized").compress(
        {"weight": permuted, "weight_scale": scale, "weight_zero_point": zero}, scheme)
    expected = BaseCompressor.get_value_from_registry("naive-quantized").decompress(state, scheme)["weight"].numpy()
    inverse = np.argsort(perm)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors[f"{name}.weight"] = state["weight"][:, torch.from_numpy(inverse)].contiguous()
    tensors[f"{name}.weight_scale"], tensors[f"{name}.weight_zero_point"] = state["weight_scale"], state[
        "weight_zero_point"]
    tensors[f"{name}.weight_g_idx"] = torch.from_numpy((inverse // 64).astype(np.int32))
    save_file(tensors, str(tmp_path / "model.safetensors"))
    ours = open_checkpoint(tmp_path)
    assert ours.weights[f"{name}.weight"].parts["g_idx"] == f"{name}.weight_g_idx"
    np.testing.assert_array_equal(ours.read(f"{name}.weight"), expected[:, inverse])


def test_encoded_is_the_quant_layout(tmp_path: Path, ct: Any) -> None:
    """Symmetric int groups are ``quant(symmetric=true)`` data as stored: with fp16-valued scales the codes
    are the very bytes of ``weight_packed`` and decode to the same values; asymmetric groups get minimums."""
    fmt, weights, _ = VARIANTS["w4-group64-asym-packed"]
    write_ct_checkpoint(tmp_path / "fp16", "pack-quantized", {**FULL[1], "scale_dtype": "float16"}, layers=1,
                        linears_only=True)
    write_ct_checkpoint(tmp_path / "asym", fmt, weights, layers=1, linears_only=True)
    name = "model.layers.0.mlp.gate_proj.weight"
    ours = open_checkpoint(tmp_path / "fp16")
    enc = ours.encoded(name)
    assert enc is not None and enc.codec == tensorpress.spec("quant(bits=4, group=64, symmetric=true)")
    stored = ours.stored[name.replace(".weight", ".weight_packed")]
    assert enc.parts["codes"].tobytes() == open_checkpoint(tmp_path / "fp16").read(stored.name).tobytes()
    np.testing.assert_array_equal(enc.decode(), ours.read(name))
    assert enc.nbytes < 1536 * 576 * 4.5 / 8 + 4096  # 4 bits + one fp16 scale per 64, plus the header

    asym = open_checkpoint(tmp_path / "asym")
    enc = asym.encoded(name)
    assert enc is not None and enc.codec.symmetric is False and "mins" in enc.parts
    x = asym.read(name)
    np.testing.assert_allclose(enc.decode(), x, rtol=0, atol=float(np.abs(x).max()) * 2.0 ** -22)
    assert asym.encoded("model.layers.0.mlp.gate_proj.bias") is None


# --- bad input ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(ct: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ct") / "w4"
    write_ct_checkpoint(folder, "pack-quantized", VARIANTS["w4-group64-asym-packed"][1], layers=1,
                        linears_only=True)
    return folder


def _edit_config(src: Path, dst: Path, change: Any) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    change(config["quantization_config"])
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize(("change", "message"), [
    (lambda q: q.update(format="nvfp4-pack-quantized"), "format 'nvfp4-pack-quantized' is not supported"),
    (lambda q: q["config_groups"]["group_0"]["weights"].update(strategy="tensor_group"), "tensor_group"),
    (lambda q: q.update(transform_config={"config_groups": {"u": {}}}), "transform_config is set"),
    (lambda q: q["config_groups"]["group_0"].update(targets=["re:.*never"]), "no config group targets it"),
    (lambda q: q["config_groups"]["group_0"]["weights"].update(num_bits=3), "weight_packed is int32"),
])
def test_bad_config_is_one_clear_error(small: Path, tmp_path: Path, change: Any, message: str) -> None:
    bad = _edit_config(small, tmp_path / "bad", change)
    with pytest.raises(CheckpointError, match=message) as info:
        open_checkpoint(bad)
    assert "\n" not in str(info.value) and str(bad) in str(info.value)
    assert main(["--quiet", "convert-checkpoint", str(bad), str(tmp_path / "out.zip"), "--spec", "raw"]) == 1
    assert not (tmp_path / "out.zip").exists()


def test_missing_part_is_one_clear_error(small: Path, tmp_path: Path) -> None:
    """A weight whose zero points are missing (asymmetric) and scales with no weight are refused by name."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(small, tmp_path / "bad")
    tensors = load_file(str(small / "model.safetensors"))
    del tensors["model.layers.0.mlp.up_proj.weight_zero_point"]
    save_file(tensors, str(tmp_path / "bad" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"'model\.layers\.0\.mlp\.up_proj'.*no weight_zero_point"):
        open_checkpoint(tmp_path / "bad")
    del tensors["model.layers.0.mlp.up_proj.weight_packed"]
    save_file(tensors, str(tmp_path / "bad" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"'model\.layers\.0\.mlp\.up_proj\.weight_s\w+' has no quantized weight"):
        open_checkpoint(tmp_path / "bad")
    with pytest.raises(CheckpointError, match="no quantized weight"):
        convert_checkpoint(tmp_path / "bad", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
