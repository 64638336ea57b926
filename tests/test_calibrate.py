"""Calibration capture on the real SmolLM2 reference and the calibration split of the Austen text."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import tensorpress as tp
from tensorpress.core.errors import InputError, TensorpressError
from test_llm_data import real

pytestmark = pytest.mark.llm
TOKENS = 256
CONTEXT = 128
DOWN = "model.layers.3.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def smollm2() -> tuple[Any, Any]:
    from tensorpress.nn.models import load_reference

    return real(lambda: load_reference("smollm2"))


@pytest.fixture(scope="module")
def texts() -> tuple[str, str]:
    from tensorpress.datasets import text_split

    return real(lambda: text_split("austen"))


def test_calibration_text_is_not_the_held_out_text(texts: tuple[str, str]) -> None:
    from tensorpress.nn.calibrate import calibration_text

    calib, heldout = texts
    assert calibration_text("austen") == calib
    assert heldout[1000:1400] not in calib


def test_activations_are_the_layers_real_inputs(smollm2: tuple[Any, Any], texts: tuple[str, str]) -> None:
    import torch

    from tensorpress.nn.calibrate import activations
    from tensorpress.nn.eval import tokenize

    model, tokenizer = smollm2
    xs = activations(model, tokenizer, texts[0], rows=64, max_tokens=TOKENS, context=CONTEXT, progress=False)
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert sorted(xs) == sorted(f"{n}.weight" for n in linears) and len(xs) == 30 * 7 + 1
    assert xs[DOWN].shape == (64, 1536) and xs["lm_head.weight"].shape == (64, 576)
    assert xs[DOWN].dtype == np.float32
    q, k = xs["model.layers.0.self_attn.q_proj.weight"], xs["model.layers.0.self_attn.k_proj.weight"]
    assert q is k  # fed the same tensor: stored once
    # layer 0's attention input does not depend on context: the normed embedding of each chosen token
    ids = tokenize(tokenizer, texts[0], TOKENS)
    picks = np.linspace(0, TOKENS - 1, 64).round().astype(int)
    with torch.no_grad():
        layer0 = model.model.layers[0].input_layernorm(model.model.embed_tokens(torch.tensor([ids])))[0]
    np.testing.assert_allclose(q, layer0[torch.from_numpy(picks)].numpy(), rtol=1e-5, atol=1e-6)
    again = activations(model, tokenizer, texts[0], rows=64, max_tokens=TOKENS, context=CONTEXT, progress=False,
                        select=lambda n: n == DOWN)
    assert list(again) == [DOWN] and np.array_equal(again[DOWN], xs[DOWN])  # deterministic


def test_hessians_accumulate_every_token(smollm2: tuple[Any, Any], texts: tuple[str, str]) -> None:
    from tensorpress.nn.calibrate import activations, hessians

    model, tokenizer = smollm2
    hs = hessians(model, tokenizer, texts[0], max_tokens=TOKENS, context=CONTEXT, progress=False)
    h = hs[DOWN]
    assert h.samples == TOKENS and h.matrix.shape == (1536, 1536) and h.matrix.dtype == np.float64
    assert hs["model.layers.3.mlp.gate_proj.weight"] is hs["model.layers.3.mlp.up_proj.weight"]
    assert hs["model.layers.3.self_attn.o_proj.weight"] is not hs["model.layers.3.self_attn.q_proj.weight"]
    np.testing.assert_array_equal(h.matrix, h.matrix.T)
    every = activations(model, tokenizer, texts[0], rows=TOKENS, max_tokens=TOKENS, context=CONTEXT,
                        select=lambda n: n == DOWN, progress=False)[DOWN].astype(np.float64)
    assert every.shape == (TOKENS, 1536)
    np.testing.assert_allclose(h.matrix, every.T @ every, rtol=1e-4, atol=1e-4 * np.abs(h.matrix).max())


def test_gptq_on_a_real_layer_beats_nearest_on_held_out_text(smollm2: tuple[Any, Any],
                                                            texts: tuple[str, str]) -> None:
    """Layer 3's o_proj (576 inputs), H from 1024 calibration tokens. With so few tokens per input GPTQ
    overfits the calibration set at damp=0.01 (measured: far lower error there, little gain held out), so the
    held-out check uses damp=0.1."""
    from tensorpress.formats._calib import Hessian
    from tensorpress.nn.calibrate import activations

    model, tokenizer = smollm2
    name = "model.layers.3.self_attn.o_proj.weight"
    w = model.get_parameter(name).detach().numpy()
    pick = {"select": lambda n: n == name, "progress": False, "context": 512}
    x_cal = activations(model, tokenizer, texts[0], rows=1024, max_tokens=1024, **pick)[name].astype(np.float64)
    h = Hessian.of(x_cal)  # every token: what hessians() gives (checked above)
    x_eval = activations(model, tokenizer, texts[1], rows=512, max_tokens=512, **pick)[name].astype(np.float64)

    def out_err(spec: str, x: np.ndarray, calib: Any = None) -> float:
        y = tp.spec(spec).encode(w, calib=calib).decode().astype(np.float64)
        return float(np.linalg.norm((y - w) @ x.T) / np.linalg.norm(w @ x.T))

    for bits in (3, 4):
        rtn = [out_err(f"quant(bits={bits}, group=128)", x) for x in (x_cal, x_eval)]
        fit = out_err(f"quant(bits={bits}, group=128, rounding=gptq)", x_cal, h)
        held = out_err(f"quant(bits={bits}, group=128, rounding=gptq, damp=0.1)", x_eval, h)
        print(f"{name} {bits}-bit g128 output error: nearest {rtn}, gptq on its calibration tokens {fit:.4f}, "
              f"gptq(damp=0.1) held out {held:.4f}")
        assert fit < 0.8 * rtn[0] and held < 0.9 * rtn[1]


def test_bad_requests_say_what_is_wrong(smollm2: tuple[Any, Any], texts: tuple[str, str]) -> None:
    from tensorpress.nn.calibrate import activations, hessians

    model, tokenizer = smollm2
    with pytest.raises(InputError, match="rows"):
        activations(model, tokenizer, texts[0], rows=0, progress=False)
    with pytest.raises(TensorpressError, match="select"):
        hessians(model, tokenizer, texts[0], select=lambda n: False, progress=False)
    with pytest.raises(InputError, match="no tokens"):
        hessians(model, tokenizer, "", progress=False)
