"""lowrank, outliers, compensated and gear on real data: a SmolLM2 weight with its real input activations
(layer 0's q_proj, fed the normalized token embeddings of held-in Austen text) and scikit-image photos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensorpress as tp
from layer_helpers import output_error
from tensorpress.core.errors import ConfigError, InputError
from tensorpress.core.metrics import relative_frobenius_error
from test_llm_data import real

CALIB_CHARS = 16_000  # about 3,900 tokens of the calibration novels


def layer0_q_proj() -> tuple[np.ndarray, np.ndarray]:
    """SmolLM2's ``model.layers.0.self_attn.q_proj.weight`` (576, 576) float32 and its real inputs
    (tokens, 576) float32: RMSNorm(token embeddings) · input_layernorm weight, on calibration text."""
    from safetensors import safe_open
    from tokenizers import Tokenizer

    from tensorpress.datasets import text_split
    from tensorpress.nn.models import reference_folder

    folder = Path(reference_folder("smollm2"))
    eps = json.loads((folder / "config.json").read_text())["rms_norm_eps"]
    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text_split("austen")[0][:CALIB_CHARS]).ids
    with safe_open(folder / "model.safetensors", "np") as f:
        emb = f.get_tensor("model.embed_tokens.weight")
        gain = f.get_tensor("model.layers.0.input_layernorm.weight").astype(np.float64)
        w = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
    h = emb[np.asarray(ids)].astype(np.float64)
    x = h / np.sqrt(np.mean(h * h, axis=1, keepdims=True) + eps) * gain
    return w, x.astype(np.float32)


@pytest.fixture(scope="module")
def layer0() -> tuple[np.ndarray, np.ndarray]:
    return real(layer0_q_proj)


def roundtrip(spec: str, w: np.ndarray, calib: Any = None) -> tuple[tp.Encoded, np.ndarray]:
    enc = tp.encode(w, spec, calib=calib)
    blob = enc.to_bytes()
    assert len(blob) == enc.nbytes
    y = tp.Encoded.from_bytes(blob).decode()
    assert y.shape == w.shape and y.dtype == w.dtype
    return enc, y


# --- lowrank ---------------------------------------------------------------------------------------------
def test_lowrank_svd_is_the_eckart_young_optimum(camera: np.ndarray) -> None:
    x = camera.astype(np.float32) / 255
    s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    for r in (8, 64):
        enc, y = roundtrip(f"lowrank(rank={r}, factor_dtype=float32)", x)
        best = float(np.sqrt(np.sum(s[r:] ** 2) / np.sum(s**2)))
        assert relative_frobenius_error(x, y) == pytest.approx(best, rel=1e-4)
        assert enc.parts["u"].shape == (512, r) and enc.parts["v"].shape == (r, 512)
        # every stored byte is the factors plus a small header
        assert enc.nbytes - 4 * r * 1024 < 600


def test_lowrank_energy_keeps_the_fewest_singular_values(camera: np.ndarray) -> None:
    x = camera.astype(np.float64) / 255
    s2 = np.linalg.svd(x, compute_uv=False) ** 2
    share = np.cumsum(s2) / s2.sum()
    enc = tp.encode(x, "lowrank(energy=0.95)")
    r = enc.parts["u"].shape[1]
    assert share[r - 1] >= 0.95 > share[r - 2]


def test_lowrank_fp16_factors_cost_half(camera: np.ndarray) -> None:
    x = camera.astype(np.float32) / 255
    e16, y16 = roundtrip("lowrank(rank=32)", x)
    e32, y32 = roundtrip("lowrank(rank=32, factor_dtype=float32)", x)
    assert e16.nbytes < 0.52 * e32.nbytes
    assert relative_frobenius_error(x, y16) < relative_frobenius_error(x, y32) * 1.01


@pytest.mark.llm
def test_lowrank_activation_aware_and_fisher_beat_svd_on_the_layer_outputs(layer0: Any) -> None:
    w, x = layer0
    errors = {m: output_error(w, roundtrip(f"lowrank(rank=64, method={m})", w, x)[1], x)
              for m in ("svd", "activation_aware", "fisher")}
    assert errors["activation_aware"] < 0.8 * errors["svd"]
    assert errors["fisher"] < errors["svd"]
    assert errors["activation_aware"] <= errors["fisher"]  # the full whitening is the optimum for this metric


@pytest.mark.llm
def test_lowrank_bad_input_names_the_parameter(layer0: Any) -> None:
    w, _ = layer0
    with pytest.raises(ConfigError, match="rank=577"):
        tp.encode(w, "lowrank(rank=577)")
    for method in ("activation_aware", "fisher"):
        with pytest.raises(InputError, match=f"method={method}.*calib"):
            tp.encode(w, f"lowrank(rank=8, method={method})")
    with pytest.raises(InputError, match=r"\(samples, 576\)"):
        tp.encode(w, "lowrank(rank=8, method=activation_aware)", calib=np.ones((10, 5), np.float32))
    with pytest.raises(ConfigError, match="exactly one of rank"):
        tp.spec("lowrank(rank=8, energy=0.5)")
    with pytest.raises(ConfigError, match="method"):
        tp.spec("compensated(rank=8, method=fisher)")


# --- outliers --------------------------------------------------------------------------------------------
@pytest.mark.llm
def test_outliers_keep_the_worst_fitted_weights(layer0: Any) -> None:
    w, _ = layer0
    base_enc, base_y = roundtrip("quant(bits=3, group=128)", w)
    enc, y = roundtrip("outliers(base=quant(bits=3, group=128), fraction=0.01)", w)
    sparse = enc.parts["outliers"]
    indptr = sparse.parts["indptr"]
    assert int(indptr[-1]) == pytest.approx(0.01 * w.size, abs=2)  # zero residuals are not stored
    # SmolLM2 was published on a 4-bit grid, so its weights have few true outliers: a modest gain
    assert relative_frobenius_error(w, y) < 0.95 * relative_frobenius_error(w, base_y)
    # the stored weights come back to fp16 precision of their residual
    resid = sparse.decode()
    dense = resid != 0
    assert np.all(np.abs(y[dense] - w[dense]) <= 2.0**-11 * np.abs(resid[dense]) + 1e-7)
    # SpQR's refit: without the outliers no group's range grows, and many shrink
    refit, first = enc.parts["base"].parts["scales"], base_enc.parts["scales"]
    assert np.all(refit <= first) and np.mean(refit < first) > 0.3


@pytest.mark.llm
def test_outliers_threshold_and_calibration(layer0: Any) -> None:
    w, x = layer0
    base_err = np.abs(w - tp.decode(tp.encode(w, "quant(bits=2, group=64)")))
    t = float(np.quantile(base_err, 0.99))
    enc, y = roundtrip(f"outliers(base=quant(bits=2, group=64), threshold={t!r})", w)
    far = base_err > t
    assert 0.009 * w.size < int(enc.parts["outliers"].parts["indptr"][-1]) <= int(far.sum())
    # what the base fitted worst now comes back to the fp16 precision of its residual
    assert np.max(np.abs(w - y)[far]) < 2.0**-10 * float(base_err.max())
    spec = "outliers(base=quant(bits=2, group=64), fraction=0.02)"
    plain = output_error(w, tp.decode(tp.encode(w, spec)), x)
    weighted = output_error(w, tp.decode(tp.encode(w, spec, calib=x)), x)
    assert weighted < plain


def test_outliers_any_base_and_real_photo(astronaut_gray: np.ndarray) -> None:
    img = astronaut_gray
    base_y = tp.decode(tp.encode(img, "lowrank(rank=16)"))
    _, y = roundtrip("outliers(base=lowrank(rank=16), fraction=0.02)", img)
    assert relative_frobenius_error(img, y) < 0.9 * relative_frobenius_error(img, base_y)


@pytest.fixture(scope="module")
def astronaut_gray() -> np.ndarray:
    from conftest import load_real
    from tensorpress.datasets import photo

    rgb = load_real(lambda: photo("astronaut"))
    return (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255


# --- compensated -----------------------------------------------------------------------------------------
@pytest.mark.llm
def test_compensated_corrects_the_base_error(layer0: Any) -> None:
    w, x = layer0
    _, base_y = roundtrip("quant(bits=2, group=64)", w)
    enc, y = roundtrip("compensated(base=quant(bits=2, group=64), rank=32)", w)
    assert relative_frobenius_error(w, y) < relative_frobenius_error(w, base_y)
    parts = enc.codec.components(enc)
    total = sum(p.decode().astype(np.float64) for p in parts.values())
    assert np.array_equal(total.astype(np.float32), y)
    u, v = parts["correction"].codec.factors(parts["correction"])
    assert u.shape == (576, 32) and v.shape == (32, 576)
    # in the activation eigenspace (EoRA) the same rank buys more on the layer's outputs
    _, y_aa = roundtrip("compensated(base=quant(bits=2, group=64), rank=32, method=activation_aware)", w, x)
    assert output_error(w, y_aa, x) < 0.9 * output_error(w, y, x)
    with pytest.raises(ConfigError, match="rank=600"):
        tp.encode(w, "compensated(base=quant(bits=2, group=64), rank=600)")


def test_compensated_full_rank_is_nearly_exact(camera: np.ndarray) -> None:
    img = camera[:96, :128].astype(np.float32) / 255
    _, y = roundtrip("compensated(base=quant(bits=2, group=32), rank=96, factor_dtype=float32)", img)
    assert np.max(np.abs(y - img)) < 1e-5


# --- gear ------------------------------------------------------------------------------------------------
@pytest.mark.llm
def test_gear_parts_and_error(layer0: Any) -> None:
    w, _ = layer0
    _, base_y = roundtrip("quant(bits=3, group=64)", w)
    enc, y = roundtrip("gear(base=quant(bits=3, group=64), rank=8, outliers=0.01)", w)
    parts = enc.codec.components(enc)
    assert set(parts) == {"base", "correction", "outliers"}
    assert relative_frobenius_error(w, y) < 0.95 * relative_frobenius_error(w, base_y)
    resid = parts["outliers"].decode()
    kept = resid != 0
    top = np.abs(w) >= np.sort(np.abs(w), axis=None)[-round(0.01 * w.size)]
    assert kept.sum() <= top.sum() and np.all(top[kept])  # the outliers are the largest magnitudes
    assert np.all(np.abs(y[kept] - w[kept]) <= 2.0**-11 * np.abs(resid[kept]) + 1e-7)


@pytest.mark.llm
def test_gear_on_a_kv_like_tensor(layer0: Any) -> None:
    w, x = layer0
    keys = (x[:1024].astype(np.float64) @ w.T.astype(np.float64)).astype(np.float32)  # real query vectors
    _, base_y = roundtrip("quant(bits=2, group=64)", keys)
    _, y = roundtrip("gear(base=quant(bits=2, group=64), rank=4, outliers=0.02)", keys)
    assert relative_frobenius_error(keys, y) < 0.8 * relative_frobenius_error(keys, base_y)


# --- nesting, serialization, containers ------------------------------------------------------------------
NESTED = (
    "outliers(base=quant(bits=3, group=64), fraction=0.01)",
    "compensated(base=vq(dim=4, codebook_bits=6, iters=3), rank=4, method=activation_aware)",
    "gear(base=quant(bits=4, group=32) | zstd(level=3), rank=4, outliers=0.01)",
    "compensated(base=outliers(base=quant(bits=2, group=32), fraction=0.005), rank=8)",
)


@pytest.mark.llm
@pytest.mark.parametrize("spec", NESTED)
def test_nested_specs_round_trip_and_survive_a_container(spec: str, layer0: Any, tmp_path: Path) -> None:
    w, x = layer0
    codec = tp.spec(spec)
    assert tp.spec(str(codec)) == codec and str(tp.spec(str(codec))) == str(codec)
    w = w[:128]
    enc = tp.encode(w, codec, calib=x)
    y = enc.decode()
    assert np.array_equal(tp.Encoded.from_bytes(enc.to_bytes()).decode(), y)
    tp.save(tmp_path / "c.zarr", {"w": enc})
    store = tp.open(tmp_path / "c.zarr")
    assert np.array_equal(store["w"], y)
    assert store.encoded("w").nbytes == enc.nbytes


@pytest.mark.parametrize("spec", ["lowrank(rank=8, method=activation_aware)",
                                  "compensated(base=quant(bits=3, group=64), rank=8, method=activation_aware)",
                                  "vq(dim=5, codebook_bits=4)",
                                  "outliers(base=quant(bits=3, group=64), fraction=0.01)"])
def test_a_hessian_calibrates_like_its_activations(faces: np.ndarray, spec: str) -> None:
    """``calib`` may be the accumulated Xᵀ X that tensorpress.nn.calibrate collects over many tokens."""
    from tensorpress.formats._calib import Hessian

    flat = faces.reshape(faces.shape[0], -1).astype(np.float64)
    flat -= flat.mean(axis=0)
    w, x = flat[:128].astype(np.float32), flat[128:]
    np.testing.assert_array_equal(tp.decode(tp.encode(w, spec, calib=Hessian.of(x))),
                                  tp.decode(tp.encode(w, spec, calib=x)))
