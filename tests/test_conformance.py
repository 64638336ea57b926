"""Every registered codec, every one of its example specs, on real data in every dtype it should take.

A new codec is tested here the moment it registers: give it ``examples`` and honest ``tolerance``.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorpress as tp
from tensorpress.core import CODECS
from tensorpress.testing import check_codec, check_config, check_encode_decode

SPECS = [spec for _, cls in CODECS.items() for spec in cls.examples]


def test_every_codec_has_examples() -> None:
    for name, cls in CODECS.items():
        assert cls.examples, f"{name} declares no examples for the conformance tests"
        assert cls.summary, f"{name} has no one-line summary"


@pytest.fixture(scope="module")
def real_inputs(camera: np.ndarray, disparity: np.ndarray, faces: np.ndarray) -> dict[str, np.ndarray]:
    """Real arrays in the dtypes people store: photos as integers, measurements as floats."""
    crop = disparity[100:228, 200:456]  # keeps some +inf pixels (no stereo match)
    assert np.isinf(crop).any()
    finite = np.where(np.isfinite(disparity), disparity, 0.0)[:256, :384]
    return {
        "camera_u8": camera,
        "camera_i16": camera.astype(np.int16) - 128,
        "camera_i32": camera.astype(np.int32) * 7 - 900,
        "faces_f64": faces,
        "faces_f32": faces.astype(np.float32),
        "disparity_f32_inf": crop,
        "disparity_f32": finite,
        "disparity_f16": finite.astype(np.float16),
        "disparity_bf16": finite.astype(ml_dtypes.bfloat16),
        "disparity_bf16_inf": crop.astype(ml_dtypes.bfloat16),
        "disparity_f64_bigendian": finite.astype(">f8"),
        "faces_f32_strided": faces.astype(np.float32)[::3, 2:, ::2],
        "camera_bool": camera > 128,
    }


@pytest.mark.parametrize("spec", SPECS)
def test_config_round_trip(spec: str) -> None:
    check_config(tp.spec(spec))


@pytest.mark.parametrize("spec", SPECS)
def test_real_data(spec: str, real_inputs: dict[str, np.ndarray]) -> None:
    codec = tp.spec(spec)
    took = [name for name, x in real_inputs.items() if check_encode_decode(codec, x) is not None]
    # a codec must at least take finite float data; declining anything else is declared and checked
    assert "disparity_f32" in took and "faces_f64" in took


EDGE_CASES = {
    "0-d": np.float32(2.5),
    "empty": np.zeros((0, 7), np.float32),
    "empty-last-axis": np.zeros((3, 0), np.float64),
    "one": np.ones((1,), np.float16),
    "odd": np.arange(1, 8, dtype=np.float32).reshape(7, 1),
    "constant": np.full((5, 130), -3.25, np.float32),
    "bigendian-i4": np.arange(-50, 50, dtype=">i4").reshape(10, 10),
    "negative-zero": np.array([-0.0, 0.0, -0.0, 1e-30], np.float32),
    "subnormal": np.array([1e-40, -3e-42, 1e-45, 0.0], np.float32),
    "huge-f64": np.array([1e300, -1e300, 5.0, 0.0]),
    "nan": np.array([1.0, np.nan, 2.0, np.inf, -np.inf], np.float32),
}


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_cases(spec: str, case: str) -> None:
    x = EDGE_CASES[case]
    codec = tp.spec(spec)
    try:
        check_codec(codec, x)
    except tp.TensorpressError as exc:
        # the only acceptable refusal of a finite float array is a clear error about magnitude
        assert case in ("huge-f64",) and "float32" in str(exc), exc


def test_torch_input_bfloat16() -> None:
    torch = pytest.importorskip("torch")
    t = torch.linspace(-3, 3, 1000).reshape(10, 100).to(torch.bfloat16)
    for spec in ("zstd", "quant(bits=8, group=32)"):
        y = tp.decode(tp.encode(t, spec))
        assert y.dtype == np.dtype(ml_dtypes.bfloat16) and y.shape == (10, 100)
    exact = tp.decode(tp.encode(t, "raw"))
    assert torch.equal(torch.from_numpy(exact.view(np.int16).copy()).view(torch.bfloat16), t)


_DTYPES = [np.dtype(d) for d in ("<f2", "<f4", ">f4", "<f8", "<i1", "<u2", ">i4")] + [np.dtype(ml_dtypes.bfloat16)]


@st.composite
def _arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9))
    if dtype.kind == "f" or dtype == np.dtype(ml_dtypes.bfloat16):
        values = st.floats(-1e4, 1e4, allow_nan=False, width=16 if dtype.itemsize == 2 else 32)
        raw = draw(hnp.arrays(np.float32, shape, elements=values))
        arr = raw.astype(dtype)
    else:
        info = np.iinfo(dtype)
        arr = draw(hnp.arrays(dtype, shape, elements=st.integers(max(info.min, -30000), min(info.max, 30000))))
    if arr.ndim >= 2 and draw(st.booleans()):
        arr = arr[:, ::-1]  # a non-contiguous view
    return arr


@pytest.mark.parametrize("spec", SPECS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=_arrays())
def test_property_any_shape_and_dtype(spec: str, x: np.ndarray) -> None:
    """Shapes and dtypes Hypothesis picks (0-d, empty, strided, both byte orders): the same checks."""
    check_encode_decode(tp.spec(spec), x)
