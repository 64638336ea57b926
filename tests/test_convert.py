"""Checkpoint conversion on the real SmolLM2 GGUF and on small real checkpoints; GGUF block interop."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import tensorpress
from checkpoint_fixtures import POLICY, SPEC, converted_smollm2, needs, reference_dir, write_small_checkpoint
from tensorpress.cli import main
from tensorpress.nn import convert_checkpoint, open_checkpoint
from tensorpress.nn.convert import model_files, tensor_names
from tensorpress.nn.sources import CheckpointError
from test_llm_data import real

pytestmark = pytest.mark.llm
LAYOUTS = {
    "Q8_0": "quant(bits=8, group=32, symmetric=true)",
    "Q4_0": "quant(bits=4, group=32, symmetric=true)",
    "Q4_1": "quant(bits=4, group=32)",
    "Q5_0": "quant(bits=5, group=32, symmetric=true)",
    "Q5_1": "quant(bits=5, group=32)",
}


@pytest.fixture(scope="module")
def smollm2() -> dict[str, Any]:
    return converted_smollm2()


@pytest.fixture(scope="module")
def gguf_module() -> Any:
    real(lambda: needs("gguf"))
    import gguf
    import gguf.quants

    return gguf


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_nothing_written(path: Path) -> None:
    assert not path.exists()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}")]


# --- reading GGUF -------------------------------------------------------------------------------------


def test_gguf_tensors_equal_what_transformers_loads(smollm2: dict[str, Any], gguf_module: Any) -> None:
    """Every mapped tensor equals transformers' own reading of the file (its fp32 reference folder), and
    the q/k rows really were reordered: llama.cpp's raw order differs."""
    ours, ref = open_checkpoint(smollm2["gguf"]), open_checkpoint(reference_dir())
    assert ours.format == "gguf" and len(ours.entries) == 272 and ours.dropped == []
    assert set(ours.entries) == set(ref.entries)  # lm_head is tied: neither has it
    for name, x in ours:
        assert x.dtype == np.float32 and x.shape == ours.entries[name].shape
        np.testing.assert_array_equal(x, ref.read(name), err_msg=name)
    q = ours.index.tensors[[t.hf_name for t in ours.index.tensors].index("model.layers.0.self_attn.q_proj.weight")]
    raw = np.fromfile(smollm2["gguf"], dtype=np.uint8, count=q.nbytes, offset=q.offset).reshape(q.shape[0], -1)
    as_stored = gguf_module.quants.dequantize(raw, gguf_module.GGMLQuantizationType(q.ggml_type))
    assert not np.array_equal(as_stored, ours.read(q.hf_name))
    assert np.array_equal(np.sort(as_stored, axis=0), np.sort(ours.read(q.hf_name), axis=0))


def test_gemma3_gguf_names_and_norms_as_transformers() -> None:
    """Gemma 3 (another architecture, K-quants): block 0, the final norm and the names match transformers
    (norms lose llama.cpp's +1, q/k rows keep their order)."""
    from tensorpress.datasets import gemma3_gguf
    from tensorpress.nn.models import reference_folder

    ours = open_checkpoint(real(gemma3_gguf))
    ref = open_checkpoint(real(lambda: reference_folder("gemma3")))
    assert set(ours.entries) == set(ref.entries)
    names = [n for n in ours.entries if n.startswith("model.layers.0.") or n == "model.norm.weight"]
    assert any("pre_feedforward_layernorm" in n for n in names) and len(names) == 14
    for name in names:
        np.testing.assert_array_equal(ours.read(name), ref.read(name), err_msg=name)


def test_gguf_quant_blocks_import_exactly(smollm2: dict[str, Any]) -> None:
    """Q8_0 and Q4_1 tensors of the file become quant data without dequantizing; it decodes to the same
    floats as gguf.quants.dequantize (permuted q rows included)."""
    ck = open_checkpoint(smollm2["gguf"])
    for name, spec in [("model.embed_tokens.weight", LAYOUTS["Q8_0"]),
                       ("model.layers.4.self_attn.q_proj.weight", LAYOUTS["Q4_1"]),
                       ("model.layers.4.mlp.down_proj.weight", LAYOUTS["Q4_1"])]:
        enc = ck.encoded(name)
        assert enc is not None and enc.codec == tensorpress.spec(spec)
        np.testing.assert_array_equal(enc.decode(), ck.read(name), err_msg=name)
    assert ck.encoded("model.norm.weight") is None  # F32


# --- converting the real model ------------------------------------------------------------------------


def test_conversion_memory_and_speed(smollm2: dict[str, Any]) -> None:
    """Musts: peak memory above the footprint after imports < 1.5 x the largest tensor + the file size;
    at most one core-minute per 100M parameters (this process and its config/tokenizer child)."""
    m = smollm2["measured"]
    print(json.dumps(m))
    assert m["cli_status"] == 0
    assert m["largest_tensor_bytes"] == 49152 * 576 * 4 and m["parameters"] == 134_515_008
    assert m["peak_above_baseline_bytes"] < 1.5 * m["largest_tensor_bytes"] + m["disk_bytes"]
    assert m["cpu_seconds"] + m["child_cpu_seconds"] < 60 * m["parameters"] / 1e8


def test_converted_container(smollm2: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """Directory and .zip hold every tensor with the policy's spec, the config and the tokenizer files
    (readable with plain zarr), and `tensorpress info` lists them."""
    files = ["checkpoint/chat_template.jinja", "checkpoint/tokenizer.json", "checkpoint/tokenizer_config.json"]
    with tensorpress.open(smollm2["dir"]) as d, tensorpress.open(smollm2["zip"]) as z:
        rows, zrows = d.info(), z.info()
        names = list(open_checkpoint(smollm2["gguf"]).entries)
        assert [r["name"] for r in rows] == [r["name"] for r in zrows] == names + files
        assert [r["stored_bytes"] for r in rows] == [r["stored_bytes"] for r in zrows]
        specs = {r["name"]: r["spec"] for r in rows}
        assert specs["model.embed_tokens.weight"] == str(tensorpress.spec(POLICY["model.embed_tokens.weight"]))
        assert specs["model.layers.7.self_attn.k_proj.weight"] == str(tensorpress.spec(LAYOUTS["Q4_0"]))
        assert specs["model.layers.7.mlp.up_proj.weight"] == str(tensorpress.spec(SPEC))
        assert specs["model.layers.7.post_attention_layernorm.weight"] == "raw()"
        assert specs["checkpoint/tokenizer.json"].startswith("zstd(")
        total = sum(r["stored_bytes"] for r in rows if r["name"] in names)
        assert 0.8e8 < total < 0.95e8  # about 5.2 bits per weight
        source = open_checkpoint(smollm2["gguf"])
        np.testing.assert_array_equal(d.read("model.norm.weight"), source.read("model.norm.weight"))
        emb, back = source.read("model.embed_tokens.weight"), z.read("model.embed_tokens.weight")
        assert np.linalg.norm(back - emb) / np.linalg.norm(emb) < 0.01
    meta = zarr.open_group(str(smollm2["dir"]), mode="r").attrs["checkpoint"]
    assert meta["version"] == 1 and meta["config"]["model_type"] == "llama"
    assert meta["config"]["num_hidden_layers"] == 30 and meta["config"]["tie_word_embeddings"] is True
    assert meta["source"] == {"name": smollm2["gguf"].name, "format": "gguf", "bytes": 98362432}
    assert sorted(meta["files"].values()) == files
    text = zarr.open_array(str(smollm2["dir"] / meta["files"]["tokenizer.json"]), mode="r")[:].tobytes()
    assert len(json.loads(text)["model"]["vocab"]) == 49152
    code, out, _ = run(capsys, "info", smollm2["zip"])
    assert code == 0 and "model.layers.29.mlp.down_proj.weight" in out and "checkpoint/tokenizer.json" in out
    assert "total (275 tensors)" in out  # 272 tensors and 3 tokenizer files


def test_bad_sources_fail_in_one_line_and_write_nothing(smollm2: dict[str, Any], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    gguf = smollm2["gguf"]
    out = tmp_path / "out.zip"
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({**POLICY, "model.layers.*.mlp.gate.weight": "skip"}))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(gguf.read_bytes()[:5_000_000])
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + bytes(range(256)) * 40)
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"\x00" * 100)
    cases = [
        ((gguf, out, "--spec", SPEC, "--policy", policy), ["'model.layers.*.mlp.gate.weight'", "match no tensor"]),
        ((truncated, out, "--spec", SPEC), ["truncated.gguf", "token_embd.weight", "truncated"]),
        ((garbage, out, "--spec", SPEC), ["garbage.gguf", "GGUF"]),
        ((not_gguf, out, "--spec", SPEC), ["model.gguf", "not a GGUF file"]),
        ((tmp_path / "missing.gguf", out, "--spec", SPEC), ["missing.gguf", "no such file"]),
        ((gguf, out, "--spec", "quant(bits=99)"), ["bits"]),
        ((gguf, gguf, "--spec", SPEC), ["would replace the checkpoint"]),
    ]
    for argv, words in cases:
        code, _, err = run(capsys, "convert-checkpoint", *argv)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("tensorpress: error: "), err
        assert all(w in lines[0] for w in words), (lines[0], words)
        assert_nothing_written(out)
    assert gguf.stat().st_size == 98362432


# --- other sources, made from the real model's tensors ---------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    real(lambda: needs("safetensors"))
    folder = tmp_path_factory.mktemp("small") / "smollm2-2-layers"
    return folder, write_small_checkpoint(folder, layers=2, shards=2)


def test_hf_directory_with_shards(small: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    folder, tensors = small
    out = convert_checkpoint(folder, tmp_path / "small", spec="raw",
                             policy={"*.mlp.*": "quant(bits=8, group=64)"}, progress=False)
    with tensorpress.open(out) as c:
        meta = c.attrs["checkpoint"]
        assert tensor_names(c, meta) == list(tensors)
        assert model_files(c, meta)["tokenizer.json"] == (folder / "tokenizer.json").read_bytes()
        for name, x in tensors.items():
            y = c.read(name)
            if ".mlp." in name:
                assert np.max(np.abs(y - x)) <= np.ptp(x) / 255
            else:
                np.testing.assert_array_equal(y, x)
    assert meta["config"]["num_hidden_layers"] == 2 and meta["source"]["format"] == "hf-directory"


def test_bfloat16_safetensors_file(tmp_path: Path) -> None:
    """A lone bf16 safetensors file: bf16 kept, config and tokenizer taken from its folder."""
    real(lambda: needs("safetensors"))
    tensors = write_small_checkpoint(tmp_path / "bf16", layers=1, bfloat16=True)
    out = convert_checkpoint(tmp_path / "bf16" / "model.safetensors", tmp_path / "bf16.zip", spec="zstd",
                             progress=False)
    with tensorpress.open(out) as c:
        for name, x in tensors.items():
            y = c.read(name)
            assert y.dtype == x.dtype and y.tobytes() == x.tobytes()
        assert c.attrs["checkpoint"]["config"]["num_hidden_layers"] == 1


def test_torch_state_dict(small: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    real(lambda: needs("torch"))
    import torch

    _, tensors = small
    path = tmp_path / "state.pt"
    torch.save({n: torch.from_numpy(x) for n, x in tensors.items()}, path)
    out = convert_checkpoint(path, tmp_path / "state", spec="raw", progress=False)
    with tensorpress.open(out) as c:
        assert list(c) == list(tensors)
        for name, x in tensors.items():
            np.testing.assert_array_equal(c.read(name), x)
        assert c.attrs["checkpoint"]["config"] is None  # nothing next to the file


class _OpensAFile:
    """Unpickling this object would create a file: proof that the pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_torch_pickle_with_objects_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    real(lambda: needs("torch"))
    import torch

    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(4, 4), "extra": _OpensAFile(marker)}, path)
    code, _, err = run(capsys, "convert-checkpoint", path, tmp_path / "out", "--spec", "raw")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "evil.pt" in err and "weights_only" in err
    assert not marker.exists()
    assert_nothing_written(tmp_path / "out")
    torch.save([torch.zeros(2)], path)  # tensors, but not a {name: tensor} dict
    with pytest.raises(CheckpointError, match="expected a state dict"):
        convert_checkpoint(path, tmp_path / "out", progress=False)


# --- GGUF export -----------------------------------------------------------------------------------------


def test_quant_and_gguf_blocks_convert_exactly_both_ways(smollm2: dict[str, Any], gguf_module: Any) -> None:
    """On a real weight: our quant → GGUF blocks dequantize (gguf package) to our decoded values; the gguf
    package's own quantization → our quant decodes to its values; blocks → quant → blocks is the identity."""
    from tensorpress.nn.gguf_export import from_blocks, to_blocks

    w = open_checkpoint(smollm2["gguf"]).read("model.layers.3.mlp.gate_proj.weight")
    for kind, spec in LAYOUTS.items():
        qtype = gguf_module.GGMLQuantizationType[kind]
        enc = tensorpress.encode(w, spec)
        got, blocks = to_blocks(enc)
        assert got == kind
        np.testing.assert_array_equal(gguf_module.quants.dequantize(blocks, qtype), enc.decode(), err_msg=kind)
        theirs = gguf_module.quants.quantize(w, qtype)
        ours = from_blocks(theirs, kind, w.shape)
        np.testing.assert_array_equal(ours.decode(), gguf_module.quants.dequantize(theirs, qtype), err_msg=kind)
        np.testing.assert_array_equal(to_blocks(ours)[1], theirs.reshape(w.shape[0], -1))
        again = tensorpress.decode(ours.to_bytes())
        np.testing.assert_array_equal(again, ours.decode())


def test_export_model_container_round_trip(smollm2: dict[str, Any], tmp_path: Path) -> None:
    """A converted model's tensors → GGUF (llama names, llama.cpp q/k row order) → read back: the same
    values, and the same quant data for tensors stored in GGUF block layouts."""
    from tensorpress.nn.gguf_export import export_gguf

    keep = ["model.embed_tokens.weight", "model.norm.weight"]
    with tensorpress.open(smollm2["dir"]) as c:
        keep += [n for n in c if n.startswith("model.layers.0.")]
        subset = {n: c.encoded(n) for n in keep}
        attrs = {"checkpoint": c.attrs["checkpoint"]}
    tensorpress.save(tmp_path / "subset", subset, attrs=attrs, progress=False)
    rows = export_gguf(tmp_path / "subset", tmp_path / "subset.gguf", progress=False)
    types = {r["name"]: r["type"] for r in rows}
    assert types["model.embed_tokens.weight"] == "Q8_0" and types["model.layers.0.self_attn.q_proj.weight"] == "Q4_0"
    assert types["model.layers.0.mlp.up_proj.weight"] == "F32" and types["model.norm.weight"] == "F32"
    assert {r["gguf_name"] for r in rows} >= {"token_embd.weight", "blk.0.attn_q.weight", "output_norm.weight"}
    back = open_checkpoint(tmp_path / "subset.gguf")
    assert back.index.architecture == "llama" and list(back.entries) == keep
    with tensorpress.open(tmp_path / "subset") as c:
        for name in keep:
            np.testing.assert_array_equal(back.read(name), c.read(name), err_msg=name)
            enc = back.encoded(name)
            if types[name] != "F32":
                original = c.encoded(name)
                assert enc is not None and enc.codec == original.codec
                for part, value in original.parts.items():
                    np.testing.assert_array_equal(enc.parts[part], value, err_msg=f"{name}/{part}")


def test_export_plain_container(camera: np.ndarray, tmp_path: Path) -> None:
    """Any container: tensors in a GGUF layout go as blocks, the rest as F32, names kept."""
    real(lambda: needs("gguf"))
    from tensorpress.nn.gguf_export import export_gguf

    x = camera.astype(np.float32) / 255
    specs = {**{f"camera_{k.lower()}": s for k, s in LAYOUTS.items()}, "camera_g128": "quant(bits=4, group=128)"}
    tensorpress.save(tmp_path / "images.zip", {n: x for n in specs}, policy=specs, progress=False)
    rows = export_gguf(tmp_path / "images.zip", tmp_path / "images.gguf", progress=False)
    assert [r["type"] for r in rows] == [*LAYOUTS, "F32"]
    back = open_checkpoint(tmp_path / "images.gguf")
    with tensorpress.open(tmp_path / "images.zip") as c:
        for name in specs:
            np.testing.assert_array_equal(back.read(name), c.read(name), err_msg=name)
    sizes = {r["type"]: r["bytes"] for r in rows}
    assert sizes["Q4_0"] == x.size // 32 * 18 and sizes["Q8_0"] == x.size // 32 * 34


def test_export_failure_leaves_nothing(tmp_path: Path) -> None:
    real(lambda: needs("gguf"))
    from tensorpress.nn.gguf_export import export_gguf

    tensorpress.save(tmp_path / "c", {"x" * 70: np.zeros(32, np.float32)}, progress=False)
    with pytest.raises(CheckpointError, match="too long for GGUF"):
        export_gguf(tmp_path / "c", tmp_path / "c.gguf", progress=False)
    assert_nothing_written(tmp_path / "c.gguf")
    assert os.listdir(tmp_path) == ["c"]
