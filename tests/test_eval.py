"""The evaluation harness on the real SmolLM2 reference and held-out Austen text."""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import numpy as np
import pytest

from tensorpress.core.errors import InputError, TensorpressError
from tensorpress.nn.eval import (
    _windows,
    apply_weights,
    format_results,
    layer_output_errors,
    perplexity,
    tokenize,
)
from test_llm_data import real

pytestmark = pytest.mark.llm
TOKENS = 512


@pytest.fixture(scope="module")
def smollm2() -> tuple[Any, Any]:
    from tensorpress.nn.models import load_reference

    return real(lambda: load_reference("smollm2"))


@pytest.fixture(scope="module")
def heldout() -> str:
    from tensorpress.datasets import text_split

    return real(lambda: text_split("austen"))[1]


def test_reference_weights_equal_the_gguf_tensors(smollm2: tuple[Any, Any]) -> None:
    """Every fp32 weight is gguf.quants.dequantize of the file's tensor, named and laid out as llama.cpp
    wrote it (q/k rows permuted for its rotary layout); the tied lm_head is the embedding."""
    gguf = pytest.importorskip("gguf")
    from tensorpress.datasets import smollm2_gguf

    model, _ = smollm2
    reader = gguf.GGUFReader(smollm2_gguf())
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, model.config.num_hidden_layers)
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 272
    used = set()
    heads = {"attn_q": model.config.num_attention_heads, "attn_k": model.config.num_key_value_heads}
    for key, param in model.state_dict().items():
        stem, suffix = key.rsplit(".", 1)
        name = "token_embd.weight" if key == "lm_head.weight" else f"{names.get_name(stem)}.{suffix}"
        t = tensors[name]
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(param.shape)
        h = heads.get(name.split(".")[2] if name.startswith("blk.") else "")
        if h:
            w = w.reshape(h, w.shape[0] // h // 2, 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)
        assert np.array_equal(param.numpy(), w), key
        used.add(name)
    assert used == set(tensors)


def test_perplexity_is_sane_and_deterministic(smollm2: tuple[Any, Any], heldout: str) -> None:
    model, tokenizer = smollm2
    ppl = perplexity(model, tokenizer, heldout, max_tokens=TOKENS, progress=False)
    print(f"SmolLM2 fp32 perplexity on the first {TOKENS} tokens of Persuasion: {ppl:.3f}")
    assert math.isfinite(ppl) and 10 < ppl < 60
    assert perplexity(model, tokenizer, heldout, max_tokens=TOKENS, progress=False) == ppl
    # the same words in a random order are far less predictable: the harness scores real predictions
    words = heldout[:4 * TOKENS].split()
    random.Random(0).shuffle(words)
    shuffled = perplexity(model, tokenizer, " ".join(words), max_tokens=TOKENS // 2, progress=False)
    assert shuffled > 5 * ppl


def test_overlapping_windows_give_more_context(smollm2: tuple[Any, Any], heldout: str) -> None:
    model, tokenizer = smollm2
    short = perplexity(model, tokenizer, heldout, context=32, max_tokens=128, progress=False)
    sliding = perplexity(model, tokenizer, heldout, context=32, stride=8, max_tokens=128, progress=False)
    assert sliding < short  # every token after the first window sees at least 24 tokens, not 0 to 31


def test_layer_errors_are_zero_for_the_same_model_and_grow_after_a_perturbation(
    smollm2: tuple[Any, Any], heldout: str
) -> None:
    model, tokenizer = smollm2
    same = layer_output_errors(model, model, tokenizer, heldout, context=128, max_tokens=128, progress=False)
    assert len(same) == 30 * 7 + 1 and set(same.values()) == {0.0}

    perturbed = copy.deepcopy(model)
    name = "model.layers.3.mlp.down_proj.weight"
    w = model.state_dict()[name].numpy()
    noise = np.random.default_rng(0).standard_normal(w.shape).astype(np.float32)
    apply_weights(perturbed, {name: w + 0.05 * np.abs(w).mean() * noise})
    errors = layer_output_errors(model, perturbed, tokenizer, heldout, context=128, max_tokens=128,
                                 progress=False)
    order = list(errors)
    hit = order.index("model.layers.3.mlp.down_proj")
    assert all(errors[n] == 0.0 for n in order[:hit])  # upstream of the change: untouched
    assert 0.0 < errors[order[hit]] < 0.5
    assert all(errors[n] > 0.0 for n in order[hit + 1:])  # the change reaches every later layer


def test_apply_weights_checks_names_and_shapes(smollm2: tuple[Any, Any]) -> None:
    model, _ = smollm2
    with pytest.raises(TensorpressError, match="no parameter 'nope'"):
        apply_weights(model, {"nope": np.zeros(3)})
    with pytest.raises(InputError, match="does not match"):
        apply_weights(model, {"model.norm.weight": np.zeros(3)})


def test_windows_score_every_token_once() -> None:
    for n, context, stride, skip in ((1000, 128, 128, True), (1000, 128, 48, True), (1000, 64, 64, False),
                                     (129, 128, 128, True), (5, 128, 1, False)):
        scored = [b + i for b, e, s in _windows(n, context, stride, skip) for i in range(s, e - b)]
        assert all(e - b <= context for b, e, _ in _windows(n, context, stride, skip))
        if stride == context:
            expected = [i for i in range(n) if not (skip and i % context == 0)]
        else:
            expected = list(range(1 if skip else 0, n))
        assert scored == expected, (n, context, stride, skip)
    with pytest.raises(InputError, match="context"):
        _windows(10, 1, 1, True)


def test_tokenize_keeps_the_tokens_of_the_whole_text(smollm2: tuple[Any, Any], heldout: str) -> None:
    _, tokenizer = smollm2
    whole = tokenizer(heldout[:20_000], add_special_tokens=False)["input_ids"]
    assert tokenize(tokenizer, heldout, 300) == whole[:300]
    with pytest.raises(InputError, match="max_tokens"):
        tokenize(tokenizer, heldout, 0)


def test_results_table_shows_the_change_against_the_reference() -> None:
    rows = [{"model": "smollm2", "method": "reference", "bits": 32.0, "perplexity": 20.0},
            {"model": "smollm2", "method": "quant(bits=8)", "bits": 8.25, "perplexity": 20.1}]
    table = format_results(rows)
    assert table.splitlines()[0].split() == ["model", "method", "bits/weight", "perplexity", "Δ", "ppl", "%"]
    assert table.splitlines()[-1].split()[-1] == "0.5"
    assert "weight rel err" not in table
