"""Loading converted checkpoints back as transformers models: decoded and with CompressedLinear layers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensorpress
from checkpoint_fixtures import converted_smollm2, needs, write_small_checkpoint
from tensorpress.nn import CompressedLinear, convert_checkpoint, load
from tensorpress.nn.sources import CheckpointError
from test_llm_data import real

pytestmark = pytest.mark.llm
PROMPT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"


@pytest.fixture(scope="module")
def smollm2() -> dict[str, Any]:
    return converted_smollm2()


@pytest.fixture(scope="module")
def decoded(smollm2: dict[str, Any]) -> tuple[Any, Any]:
    return load(smollm2["dir"], mode="decoded")


@pytest.fixture(scope="module")
def compressed(smollm2: dict[str, Any]) -> tuple[Any, Any]:
    return load(smollm2["zip"], mode="compressed")


@pytest.fixture(scope="module")
def heldout() -> str:
    from tensorpress.datasets import text_split

    return real(lambda: text_split("austen"))[1]


def test_compressed_mode_keeps_the_stored_data(smollm2: dict[str, Any], compressed: tuple[Any, Any]) -> None:
    """Every quantized Linear (7 per block) is a CompressedLinear holding the stored blob, not a decoded
    copy; the tied lm_head stays the decoded embedding."""
    import torch

    model, _ = compressed
    layers = {n: m for n, m in model.named_modules() if isinstance(m, CompressedLinear)}
    assert len(layers) == 30 * 7
    assert not any(isinstance(m, torch.nn.Linear) for n, m in model.named_modules() if n != "lm_head")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with tensorpress.open(smollm2["zip"]) as c:
        layer = layers["model.layers.5.self_attn.v_proj"]
        assert layer.encoded.to_bytes() == c.encoded("model.layers.5.self_attn.v_proj.weight").to_bytes()
        np.testing.assert_array_equal(layer.weight_array(), c.read("model.layers.5.self_attn.v_proj.weight"))
    stored = sum(m.nbytes for m in layers.values())
    weights = sum(m.in_features * m.out_features for m in layers.values())
    assert 4.2 < 8 * stored / weights < 4.6  # 4-bit codes plus fp16 scales (and minimums), headers included


def test_decoded_mode_holds_the_decoded_tensors(smollm2: dict[str, Any], decoded: tuple[Any, Any]) -> None:
    model, tokenizer = decoded
    state = model.state_dict()
    with tensorpress.open(smollm2["dir"]) as c:
        for name in ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                     "model.layers.29.mlp.down_proj.weight", "model.norm.weight"]:
            np.testing.assert_array_equal(state[name].numpy(), c.read(name))
    np.testing.assert_array_equal(state["lm_head.weight"].numpy(), state["model.embed_tokens.weight"].numpy())
    assert tokenizer("Hello world")["input_ids"] == [19556, 905]


def test_generation_and_logits_equal_in_both_modes(decoded: tuple[Any, Any], compressed: tuple[Any, Any]) -> None:
    import torch

    (m1, tok), (m2, tok2) = decoded, compressed
    ids = tok(PROMPT, return_tensors="pt")
    assert torch.equal(ids["input_ids"], tok2(PROMPT, return_tensors="pt")["input_ids"])
    with torch.no_grad():
        assert torch.equal(m1(**ids).logits, m2(**ids).logits)
        g1 = m1.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)
        g2 = m2.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)
    assert torch.equal(g1, g2) and g1.shape[1] == ids["input_ids"].shape[1] + 4
    text = tok.decode(g1[0, ids["input_ids"].shape[1]:])
    assert any(c.isalpha() for c in text)


def test_perplexity_equal_in_both_modes(decoded: tuple[Any, Any], compressed: tuple[Any, Any], heldout: str) -> None:
    """The same number from both modes; near the fp32 reference's (4-bit RTN on the MLP costs some)."""
    from tensorpress.nn.eval import perplexity
    from tensorpress.nn.models import load_reference

    kwargs: dict[str, Any] = {"context": 64, "max_tokens": 128, "progress": False}
    p1 = perplexity(*decoded, heldout, **kwargs)
    p2 = perplexity(*compressed, heldout, **kwargs)
    reference = perplexity(*load_reference("smollm2"), heldout, **kwargs)
    print(f"perplexity: reference {reference:.4f}, converted {p1:.4f}")
    assert p1 == p2 and math.isfinite(p1)
    assert reference < p1 < 2 * reference


def test_small_hf_checkpoint_loads_as_transformers_does(tmp_path: Path) -> None:
    """A real 2-block checkpoint converted losslessly (zstd) and loaded gives transformers' own logits."""
    real(lambda: needs("transformers"))
    import torch
    import transformers

    write_small_checkpoint(tmp_path / "small", layers=2)
    out = convert_checkpoint(tmp_path / "small", tmp_path / "small.zip", spec="zstd", progress=False)
    ours, tokenizer = load(out, mode="compressed")
    assert sum(isinstance(m, CompressedLinear) for m in ours.modules()) == 2 * 7
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "small", dtype=torch.float32)
    ids = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(ours(**ids).logits, theirs.eval()(**ids).logits)


def test_load_errors(tmp_path: Path) -> None:
    """Newer formats, missing config, skipped tensors, a non-checkpoint container: one clear error each."""
    real(lambda: needs("transformers"))
    write_small_checkpoint(tmp_path / "small", layers=1)
    out = convert_checkpoint(tmp_path / "small", tmp_path / "c", spec="raw", progress=False)

    def edit(change: Any) -> None:
        meta = json.loads((out / "zarr.json").read_text())
        change(meta["attributes"])
        (out / "zarr.json").write_text(json.dumps(meta))

    edit(lambda a: a["checkpoint"].update(version=2))
    with pytest.raises(CheckpointError, match="checkpoint format version 2 is newer"):
        load(out)
    edit(lambda a: (a["checkpoint"].update(version=1), a["tensorpress"].update(version=99)))
    with pytest.raises(tensorpress.TensorpressError, match=r"format version 99.*upgrade tensorpress"):
        load(out)
    edit(lambda a: (a["tensorpress"].update(version=1), a["checkpoint"].update(config=None)))
    with pytest.raises(CheckpointError, match="no model config"):
        load(out)
    with pytest.raises(CheckpointError, match="mode must be"):
        load(out, mode="lazy")
    convert_checkpoint(tmp_path / "small", tmp_path / "skipped", spec="raw", policy={"*.mlp.up_proj.*": "skip"},
                       progress=False)
    with pytest.raises(CheckpointError, match=r"lacks tensor\(s\) \['model.layers.0.mlp.up_proj.weight'\]"):
        load(tmp_path / "skipped")
    tensorpress.save(tmp_path / "plain", {"x": np.zeros(3, np.float32)}, progress=False)
    with pytest.raises(CheckpointError, match="holds no model checkpoint"):
        load(tmp_path / "plain")
