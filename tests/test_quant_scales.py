"""``quant(scale_bits=k)``: group scales and minimums stored as k-bit codes times per-super-group steps
(llama.cpp's K-quant layout), on real images: exact sizes, the declared bound, GPTQ and the scale search on
the stored grid, decode and the matmul operands."""

from __future__ import annotations

import numpy as np
import pytest

import tensorpress as tp
from layer_helpers import output_error
from tensorpress.core.errors import ConfigError
from tensorpress.kernels import get_kernel
from tensorpress.testing import check_codec, check_guarantee


def payload_bits(enc: tp.Encoded) -> int:
    return 8 * sum(np.asarray(p).nbytes for p in enc.parts.values())


def group_scales(enc: tp.Encoded) -> tuple[np.ndarray, np.ndarray]:
    """The (scale, offset) float32 (rows, groups) of a 2-D weight encoded along its last axis."""
    prepared = enc.codec.prepare(enc)
    return prepared.operands[1], prepared.operands[2]


# --- configuration ----------------------------------------------------------------------------------
def test_existing_specs_and_configs_are_unchanged() -> None:
    codec = tp.spec("quant(bits=4, group=128)")
    assert str(codec) == ("quant(bits=4, group=128, axis=-1, symmetric=false, scale_dtype=float16, "
                          "rounding=nearest, act_order=false, damp=0.01, scale=minmax)")
    assert set(codec.to_config()["configuration"]) == {"bits", "group", "axis", "symmetric", "scale_dtype",
                                                       "rounding", "act_order", "damp", "scale"}
    quantized = tp.spec("quant(bits=4, group=32, scale_bits=6)")
    assert str(quantized).endswith("scale=minmax, scale_bits=6)")  # each added parameter: written once set
    assert str(tp.spec("quant(scale_bits=6, super_group=16)")).endswith("scale_bits=6, super_group=16)")
    assert tp.spec(str(quantized)) == quantized != tp.spec("quant(bits=4, group=32)")


@pytest.mark.parametrize("spec,word", [
    ("quant(scale_bits=3)", "scale_bits"), ("quant(scale_bits=9)", "scale_bits"),
    ("quant(scale_bits=-6)", "scale_bits"),
    ("quant(scale_bits=6, super_group=0)", "super_group"), ("quant(scale_bits=6, super_group=257)", "super_group"),
    ("quant(super_group=16)", "super_group"),
])
def test_bad_configs_name_the_parameter(spec: str, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        tp.spec(spec)


# --- sizes ------------------------------------------------------------------------------------------
def test_bits_per_element_are_exact(weight: np.ndarray) -> None:
    # 4-bit codes, a 6-bit scale and a 6-bit minimum per 32, two fp16 steps per 8 groups (256 elements)
    enc = check_codec(tp.spec("quant(bits=4, group=32, scale_bits=6, super_group=8)"), weight)
    assert enc is not None and payload_bits(enc) == 4.5 * weight.size
    assert enc.nbytes == len(enc.to_bytes()) and enc.nbytes * 8 / weight.size < 4.53  # the header: ~1 KB
    # super-groups run over the row-major groups, across rows: a 576-wide weight (18 groups a row) costs the same
    w576 = weight.reshape(-1)[: 288 * 576].reshape(288, 576)
    assert payload_bits(tp.encode(w576, "quant(bits=4, group=32, scale_bits=6)")) == 4.5 * w576.size
    # symmetric: no minimums; 3 + 6/16 + 16/256
    sym = tp.encode(w576, "quant(bits=3, group=16, symmetric=true, scale_bits=6, super_group=16)")
    assert payload_bits(sym) == 3.4375 * w576.size and set(sym.parts) == {"codes", "scale_codes", "scale_steps"}
    # a last super-group shorter than the others (37 · 7 groups = 259 = 32 · 8 + 3) still gets its steps
    odd = tp.encode(weight[:37, :203], "quant(bits=4, group=32, scale_bits=5)")
    assert odd.parts["scale_steps"].shape == (33,) and odd.parts["scale_codes"].size == (259 * 5 + 7) // 8


# --- round trip and bound ---------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [
    "quant(bits=4, group=32, scale_bits=6)",
    "quant(bits=3, group=32, scale_bits=6, scale=search)",
    "quant(bits=2, group=16, scale_bits=4, super_group=16, axis=0)",
    "quant(bits=8, group=100, scale_bits=8, super_group=3, scale_dtype=float32)",
    "quant(bits=3, group=16, symmetric=true, scale_bits=6, super_group=16)",
    "quant(bits=4, group=32, symmetric=true, scale_bits=5, scale=search)",
])
def test_round_trip_keeps_the_bound_on_real_data(spec: str, weight: np.ndarray, disparity: np.ndarray) -> None:
    codec = tp.spec(spec)
    for x in (weight, np.where(np.isfinite(disparity), disparity, 0.0).astype(np.float32)[:200, :300]):
        enc = check_codec(codec, x)  # config, serialization, size accounting, the bound on every element
        assert enc is not None
        assert np.array_equal(tp.Encoded.from_bytes(enc.to_bytes()).decode(), enc.decode())


def test_quantized_scales_cost_little_accuracy(weight: np.ndarray) -> None:
    """6-bit scales are within a few percent of fp16 scales; more scale bits, less error."""
    def rmse(spec: str) -> float:
        return float(np.sqrt(np.mean(np.square(tp.decode(tp.encode(weight, spec)) - weight))))

    fp16 = rmse("quant(bits=4, group=32)")
    by_bits = {k: rmse(f"quant(bits=4, group=32, scale_bits={k})") for k in (4, 6, 8)}
    assert by_bits[8] <= by_bits[6] <= by_bits[4] and by_bits[4] > by_bits[8]
    assert fp16 < by_bits[6] < 1.1 * fp16, (fp16, by_bits)


def test_each_super_group_uses_its_largest_scale_code(weight: np.ndarray) -> None:
    """The steps are sized by each super-group's largest min-max scale: that group takes the top code."""
    bits = 6
    enc = tp.encode(weight, f"quant(bits=4, group=32, scale_bits={bits})")
    unpack = get_kernel("quant", "unpack", "reference")
    codes = unpack(enc.parts["scale_codes"], bits, 512 * 16).astype(np.int64).reshape(-1, 8)
    assert np.all(codes.max(axis=1) == (1 << bits) - 1)
    mins = unpack(enc.parts["min_codes"], bits, 512 * 16).astype(np.int64) - (1 << (bits - 1))
    assert mins.min() >= -(1 << (bits - 1)) and mins.max() < 1 << (bits - 1) and mins.min() < 0 < mins.max()
    scale, offset = group_scales(enc)
    step = np.repeat(enc.parts["scale_steps"].astype(np.float32), 8).reshape(512, 16)
    assert np.array_equal(scale, codes.reshape(512, 16) * step)  # exact products of fp16 steps
    lo = weight.reshape(512, 16, 32).min(axis=2)
    hi = weight.reshape(512, 16, 32).max(axis=2)
    assert np.all(offset <= lo) and np.all(offset + 15 * scale >= hi)  # the codes cover every group


def test_symmetric_keeps_signed_scales(weight: np.ndarray) -> None:
    """The sign of a symmetric scale (which side gets the extra level) survives quantization."""
    enc = tp.encode(weight, "quant(bits=3, group=16, symmetric=true, scale_bits=6, super_group=16)")
    scale, offset = group_scales(enc)
    assert np.any(scale < 0) and np.any(scale > 0)
    assert np.array_equal(offset, -4 * scale)
    plain_scale, _ = group_scales(tp.encode(weight, "quant(bits=3, group=16, symmetric=true)"))
    same = (plain_scale != 0) & (scale != 0)
    assert np.mean(np.sign(scale[same]) == np.sign(plain_scale[same])) > 0.99


# --- choosing the parameters on the stored grid ------------------------------------------------------
def group_sse(weight: np.ndarray, spec: str) -> np.ndarray:
    """Squared error of each group of 32 of the (512 × 512) weight after ``spec``: (512, 16)."""
    y = tp.decode(tp.encode(weight, spec)).astype(np.float64)
    return np.square(y - weight).reshape(512, 16, 32).sum(axis=2)


def test_search_never_loses_to_min_max_on_the_stored_grid(weight: np.ndarray) -> None:
    """The search tries the min-max range too and measures the stored (quantized) grid's error, so no group
    ends worse than min-max with the same steps."""
    minmax = group_sse(weight, "quant(bits=3, group=32, scale_bits=6)")
    search = group_sse(weight, "quant(bits=3, group=32, scale_bits=6, scale=search)")
    assert np.all(search <= minmax * (1 + 1e-6) + 1e-12)
    assert search.sum() < 0.8 * minmax.sum()


@pytest.mark.parametrize("coded", ["", ", scale_bits=6"])
def test_refine_never_loses_to_search(weight: np.ndarray, coded: str) -> None:
    """The least-squares refits are kept only where they lower a group's error: no group ends worse than the
    search alone, the whole tensor ends better, and the bound of ``search`` still holds on every element;
    symmetric groups only search."""
    search = group_sse(weight, f"quant(bits=4, group=32{coded}, scale=search)")
    refine = group_sse(weight, f"quant(bits=4, group=32{coded}, scale=refine)")
    assert np.all(refine <= search * (1 + 1e-6) + 1e-12)
    assert refine.sum() < 0.995 * search.sum()
    codec = tp.spec(f"quant(bits=4, group=32{coded}, scale=refine)")
    check_guarantee(codec, weight, tp.decode(codec.encode(weight)))
    sym = "quant(bits=3, group=16, symmetric=true{}, scale={})"
    assert np.array_equal(tp.decode(tp.encode(weight, sym.format(coded, "refine"))),
                          tp.decode(tp.encode(weight, sym.format(coded, "search"))))


@pytest.mark.parametrize("params", ["group=32", "group=16, symmetric=true, super_group=16", "group=32, scale=search"])
def test_gptq_beats_round_to_nearest_with_quantized_scales(layer: tuple[np.ndarray, ...], params: str) -> None:
    w, x_cal, x_eval = layer
    spec = f"quant(bits=3, {params}, scale_bits=6)"
    rtn = tp.spec(spec).encode(w).decode()
    codec = tp.spec(spec.replace(")", ", rounding=gptq)"))
    enc = codec.encode(w, calib=x_cal)
    y = enc.decode()
    check_guarantee(codec, w, y)  # within half a step of each group's original range
    assert output_error(w, y, x_eval) < 0.8 * output_error(w, rtn, x_eval)
    assert payload_bits(enc) == payload_bits(tp.spec(spec).encode(w))  # same layout as round-to-nearest
    assert np.array_equal(tp.Encoded.from_bytes(enc.to_bytes()).decode(), y)


# --- decode and the matmul operands -----------------------------------------------------------------
def test_prepared_operands_are_the_decoded_ones(weight: np.ndarray, inputs: np.ndarray) -> None:
    for spec in ("quant(bits=4, group=32, scale_bits=6)", "quant(bits=3, group=16, symmetric=true, scale_bits=6)"):
        enc = tp.encode(weight[:300, :448], spec)
        prepared = enc.codec.prepare(enc)
        dense = tp.decode(enc)
        assert np.array_equal(get_kernel("quant", "decode", "reference")(*prepared.operands), dense)
        x = inputs[:448, :4]
        y = prepared(x).astype(np.float64)
        expected = dense.astype(np.float64) @ x
        assert np.max(np.abs(y - expected)) <= 1e-5 * np.max(np.abs(dense) @ np.abs(x))


def test_no_gguf_layout_for_quantized_scales() -> None:
    from tensorpress.nn.gguf_export import gguf_type

    assert gguf_type(tp.spec("quant(bits=4, group=32)"), (64, 256)) == "Q4_1"
    assert gguf_type(tp.spec("quant(bits=4, group=32, scale_bits=6)"), (64, 256)) is None
