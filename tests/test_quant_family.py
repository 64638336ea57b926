"""GPTQ rounding and scale search in ``quant``, and the float formats fp8 / nf4 / mxfp4, on real images.

A "layer" here is real data: the weight W is the camera photo (standardized rows, 256 × 512) and the
activations X are rows of the moon and brick photos (512 features); calibration and evaluation use
disjoint rows (even / odd).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import tensorpress as tp
from layer_helpers import output_error
from tensorpress.core.errors import ConfigError, InputError
from tensorpress.formats._calib import Hessian
from tensorpress.formats.mxfp4 import E2M1
from tensorpress.formats.nf4 import nf4_levels
from tensorpress.kernels import get_kernel
from tensorpress.testing import check_guarantee


# --- GPTQ --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_beats_round_to_nearest_on_held_out_activations(layer: tuple[np.ndarray, ...], bits: int) -> None:
    w, x_cal, x_eval = layer
    nearest = tp.spec(f"quant(bits={bits}, group=128)")
    y_rtn = nearest.encode(w).decode()
    errors = {}
    for extra in ("", ", act_order=true", ", scale=search"):
        codec = tp.spec(f"quant(bits={bits}, group=128, rounding=gptq{extra})")
        y = codec.encode(w, calib=x_cal).decode()
        check_guarantee(codec, w, y)  # the honest bound of rounding=gptq holds on every element
        errors[extra] = output_error(w, y, x_eval)
    rtn = output_error(w, y_rtn, x_eval)
    print(f"{bits}-bit g128 output error on held-out rows: nearest {rtn:.4f}, gptq {errors}")
    assert all(e < 0.8 * rtn for e in errors.values()), (rtn, errors)
    # GPTQ trades weight error for output error: it must not win on the weights themselves by accident
    assert np.linalg.norm(y - w) > np.linalg.norm(y_rtn - w)


def test_gptq_keeps_the_stored_layout(layer: tuple[np.ndarray, ...]) -> None:
    """Same parts, shapes and dtypes as round-to-nearest: decode, kernels and GGUF export are unchanged."""
    w, x_cal, _ = layer
    rtn = tp.encode(w, "quant(bits=4, group=128)")
    gptq = tp.spec("quant(bits=4, group=128, rounding=gptq, act_order=true)").encode(w, calib=x_cal)
    for name in ("codes", "scales", "mins"):
        a, b = rtn.part_array(name, np.uint8 if name == "codes" else np.float16), gptq.part_array(
            name, np.uint8 if name == "codes" else np.float16)
        assert a.shape == b.shape
    assert abs(gptq.nbytes - rtn.nbytes) <= 64  # only the header's spec text differs
    decoded = gptq.decode()
    assert np.array_equal(tp.core.Encoded.from_bytes(gptq.to_bytes()).decode(), decoded)
    scales = gptq.part_array("scales", np.float16).astype(np.float32)
    mins = gptq.part_array("mins", np.float16).astype(np.float32)
    oracle = get_kernel("quant", "decode", "reference")
    reference = oracle(gptq.part_array("codes", np.uint8), scales, mins, 4, 512, 128)
    assert np.array_equal(reference, decoded)


def test_gptq_group_32_exports_to_gguf_blocks(layer: tuple[np.ndarray, ...]) -> None:
    gguf = pytest.importorskip("gguf")
    from tensorpress.nn.gguf_export import to_blocks

    w, x_cal, _ = layer
    enc = tp.spec("quant(bits=4, group=32, symmetric=true, rounding=gptq)").encode(w, calib=x_cal)
    kind, blocks = to_blocks(enc)
    assert kind == "Q4_0"
    back = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_0).reshape(w.shape)
    np.testing.assert_allclose(back, enc.decode(), rtol=0, atol=1e-6)


def test_hessian_is_interchangeable_with_activations(layer: tuple[np.ndarray, ...]) -> None:
    w, x_cal, _ = layer
    codec = tp.spec("quant(bits=3, group=64, rounding=gptq, scale=search)")
    assert codec.encode(w, calib=x_cal).to_bytes() == codec.encode(w, calib=Hessian.of(x_cal)).to_bytes()
    halves = Hessian.of(x_cal[:200]) + Hessian.of(x_cal[200:])
    assert halves.samples == len(x_cal)
    np.testing.assert_allclose(halves.matrix, Hessian.of(x_cal).matrix, rtol=1e-12)


def test_gptq_tolerance_is_a_finite_bound_of_the_group_range(layer: tuple[np.ndarray, ...]) -> None:
    w, _, _ = layer
    tol = np.asarray(tp.spec("quant(bits=4, group=128, rounding=gptq)").tolerance(w))
    groups = w.reshape(256, 4, 128)
    span = (groups.max(axis=2) - groups.min(axis=2)).repeat(128, axis=1)
    assert np.all(np.isfinite(tol)) and np.all(tol <= span * (1 + 0.5 / 15) * (1 + 1e-3) + 1e-5)
    assert np.all(tol >= span / 2)


def test_bad_calibration_and_options_are_named() -> None:
    w = np.ones((4, 64), np.float32)
    with pytest.raises(InputError, match="calib"):
        tp.encode(w, "quant(bits=4, rounding=gptq)")
    with pytest.raises(InputError, match="calib"):
        tp.spec("quant(bits=4, rounding=gptq)").encode(w, calib=np.ones((10, 63)))
    with pytest.raises(InputError, match="calib"):
        tp.spec("quant(bits=4, rounding=gptq)").encode(w, calib=Hessian(np.eye(32), 1))
    with pytest.raises(InputError, match="calib"):
        tp.spec("quant(bits=4, rounding=gptq)").encode(w, calib=np.full((10, 64), np.nan))
    for bad, word in (("rounding=stochastic", "rounding"), ("act_order=true", "act_order"),
                      ("scale=mse", "scale"), ("damp=-1", "damp")):
        with pytest.raises(ConfigError, match=word):
            tp.spec(f"quant(bits=4, {bad})")


def test_gptq_survives_rank_deficient_and_dead_inputs(layer: tuple[np.ndarray, ...]) -> None:
    """Fewer samples than inputs, and inputs that are always 0: damping keeps the factorization alive."""
    w, x_cal, _ = layer
    few = x_cal[:64].copy()
    few[:, :20] = 0.0
    codec = tp.spec("quant(bits=4, group=128, rounding=gptq, damp=0)")
    y = codec.encode(w, calib=few).decode()
    check_guarantee(codec, w, y)
    assert np.all(np.isfinite(y))


# --- scale search ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [3, 4])
def test_scale_search_lowers_error_on_real_data(camera: np.ndarray, disparity: np.ndarray, bits: int) -> None:
    finite = np.where(np.isfinite(disparity), disparity, 0.0)[:256, :512].astype(np.float32)
    for x in (camera.astype(np.float32), finite):
        plain = tp.spec(f"quant(bits={bits}, group=128)")
        search = tp.spec(f"quant(bits={bits}, group=128, scale=search)")
        y0, y1 = plain.encode(x).decode(), search.encode(x).decode()
        check_guarantee(search, x, y1)
        e0, e1 = np.linalg.norm(y0 - x), np.linalg.norm(y1 - x)
        assert e1 < e0, (e0, e1)  # min-max is among the candidates, and never the best everywhere


def test_scale_search_weighted_by_calibration(layer: tuple[np.ndarray, ...]) -> None:
    w, x_cal, _ = layer
    d = np.einsum("ij,ij->j", x_cal.astype(np.float64), x_cal)
    codec = tp.spec("quant(bits=3, group=128, scale=search)")
    weighted, plain = codec.encode(w, calib=x_cal).decode(), codec.encode(w).decode()
    cost = [float((np.square(y.astype(np.float64) - w) * d).sum()) for y in (weighted, plain)]
    assert cost[0] < cost[1]


# --- float formats -----------------------------------------------------------------------------------
def test_nf4_levels_are_the_qlora_normal_quantiles() -> None:
    levels = nf4_levels()
    assert levels.shape == (16,) and np.all(np.diff(levels) > 0)
    assert levels[0] == -1.0 and levels[-1] == 1.0 and 0.0 in levels
    assert (levels > 0).sum() == 8 and (levels < 0).sum() == 7
    # values printed in the QLoRA paper's appendix
    np.testing.assert_allclose(levels[[1, 7, 8, 14]], [-0.6961928, 0.0, 0.0795803, 0.7229568], atol=1e-6)


def test_nf4_packing_and_size(camera: np.ndarray) -> None:
    x = camera.astype(np.float32) - 128
    enc = tp.encode(x, "nf4(group=64)")
    assert enc.part_array("codes", np.uint8).size == x.size // 2
    scales = enc.part_array("scales", np.float16, (512, 8)).astype(np.float32)
    assert np.array_equal(scales, np.abs(x).reshape(512, 8, 64).max(axis=2))  # integers: exact in fp16
    codes = enc.part_array("codes", np.uint8)
    unpacked = np.stack([codes & 15, codes >> 4], axis=1).reshape(512, 512)  # low nibble first
    manual = nf4_levels().astype(np.float32)[unpacked] * scales.repeat(64, axis=1)
    assert np.array_equal(manual, enc.decode())
    parts = enc.nbytes - len(enc.to_bytes()) + x.size // 2 + scales.size * 2
    assert parts <= x.size // 2 + scales.size * 2


def test_mxfp4_blocks(camera: np.ndarray, disparity: np.ndarray) -> None:
    finite = np.where(np.isfinite(disparity), disparity, 0.0).astype(np.float32)[:, :736] / 97.0 - 0.3
    for x in (camera.astype(np.float32) / 255 - 0.5, finite):
        enc = tp.encode(x, "mxfp4(block=32)")
        rows, blocks = x.shape[0], x.shape[1] // 32
        e = enc.part_array("scales", np.uint8, (rows, blocks)).astype(np.int64) - 127
        assert enc.part_array("codes", np.uint8).size * 8 + e.size * 8 == 4.25 * x.size
        amax = np.abs(x).reshape(rows, blocks, 32).max(axis=2)
        scale = np.ldexp(1.0, e)
        nonzero = amax > 0
        assert np.all(amax <= 6 * scale) and np.all(amax[nonzero] > 3 * scale[nonzero])  # smallest exponent
        y = enc.decode().astype(np.float64).reshape(rows, blocks, 32) / scale[..., None]
        assert np.all(np.isin(np.abs(y), E2M1))
        check_guarantee(tp.spec("mxfp4(block=32)"), x, enc.decode())


def test_mxfp4_rounds_ties_to_even() -> None:
    ties = np.array([6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -5.0, -0.25], np.float32)
    got = tp.decode(tp.encode(ties, "mxfp4(block=32)"))
    assert got.tolist() == [6.0, 0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -4.0, -0.0]


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_fp8_codes_are_the_scaled_values_in_fp8(faces: np.ndarray, fmt: str) -> None:
    x = faces.reshape(200, 625).astype(np.float32) - 0.4
    enc = tp.encode(x, f"fp8({fmt}, group=125)")
    dtype = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}[fmt]
    scales = enc.part_array("scales", np.float32, (200, 5)).astype(np.float64)
    fmax = float(ml_dtypes.finfo(dtype).max)
    amax = np.abs(x.astype(np.float64)).reshape(200, 5, 125).max(axis=2)
    assert np.all(scales * fmax >= amax) and np.all(scales * fmax <= amax * (1 + 2**-23))
    codes = enc.part_array("codes", np.uint8, (x.size,)).view(dtype).reshape(200, 625)
    expected = (x / scales.repeat(125, axis=1)).astype(np.float32).astype(dtype)
    assert np.array_equal(codes.view(np.uint8), expected.view(np.uint8))
    assert x.size + scales.size * 4 < enc.nbytes < x.size + scales.size * 4 + 1024  # codes, scales, header
    rel = np.linalg.norm(enc.decode() - x) / np.linalg.norm(x)
    assert rel < {"e4m3": 0.04, "e5m2": 0.08}[fmt]


def test_float_formats_rank_by_precision(camera: np.ndarray) -> None:
    """On the same real data: 8-bit fp8 e4m3 < e5m2 < 4-bit formats in error (more mantissa, less error)."""
    x = camera.astype(np.float32) / 255 - 0.45
    err = {s: float(np.linalg.norm(tp.decode(tp.encode(x, s)) - x) / np.linalg.norm(x))
           for s in ("fp8(e4m3)", "fp8(e5m2)", "nf4(group=64)", "mxfp4(block=32)")}
    assert err["fp8(e4m3)"] < err["fp8(e5m2)"] < min(err["nf4(group=64)"], err["mxfp4(block=32)"])
