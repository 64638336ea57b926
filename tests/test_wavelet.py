"""``wavelet``: the error bound on every element of real Earth-system fields, exact NaN masks, the
correction layers, the rate and PSNR modes, bad input, and the kernels against the NumPy oracle."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import tensorpress as tp
from conftest import load_real
from tensorpress.core.encoded import Encoded
from tensorpress.core.errors import BlobError, BoundError, ConfigError, InputError
from tensorpress.kernels import get_kernel
from tensorpress.kernels.reference.wavelet import WAVELETS, plan, subbands


def _field(file: str, var: str) -> np.ndarray:
    from tensorpress.datasets import earth_variable

    return load_real(lambda: earth_variable(file, var))


@pytest.fixture(scope="module")
def uwnd() -> np.ndarray:
    """Navy monthly zonal wind, 24 months (24, 73, 144), m/s: smooth, no fill values."""
    return _field("monthly_navy_winds.cdf", "UWND")[:24]


@pytest.fixture(scope="module")
def levitus() -> np.ndarray:
    """Levitus ocean temperature, top 6 depths (6, 180, 360), °C: land is NaN (about 30 %)."""
    return _field("levitus_climatology.cdf", "TEMP")[:6]


@pytest.fixture(scope="module")
def a1b() -> np.ndarray:
    """Met Office model air temperature over North America (240, 37, 49), K."""
    return _field("A1B_north_america.nc", "air_temperature")


def _errors(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    finite = np.isfinite(x)
    return np.abs(y.astype(np.float64)[finite] - x.astype(np.float64)[finite])


def _value_range(x: np.ndarray) -> float:
    return float(np.nanmax(x)) - float(np.nanmin(x))


@pytest.mark.parametrize("wavelet", ["cdf97", "cdf53", "haar"])
@pytest.mark.parametrize("rel", [1e-2, 1e-4])
def test_bound_on_every_element(uwnd: np.ndarray, levitus: np.ndarray, wavelet: str, rel: float) -> None:
    for x in (uwnd[:8], levitus[:2]):
        bound = rel * _value_range(x)
        enc = tp.encode(x, f"wavelet(max_abs={bound!r}, wavelet={wavelet})")
        y = Encoded.from_bytes(enc.to_bytes()).decode()
        assert y.dtype == np.float32 and y.shape == x.shape
        assert _errors(x, y).max() <= bound
        assert np.array_equal(np.isnan(x), np.isnan(y))  # land stays land, exactly
        assert enc.ratio > (4 if rel == 1e-2 else 1.5)


def test_ratio_on_smooth_fields(uwnd: np.ndarray, a1b: np.ndarray, levitus: np.ndarray) -> None:
    """At max error 1e-3 × range the codec is far ahead of lossless coding (zstd-19 gets 1.2-1.4x)."""
    for x, at_least in ((uwnd, 6.5), (a1b, 8.5), (levitus, 25.0)):
        enc = tp.encode(x, "wavelet(rel=0.001)")
        assert enc.ratio > at_least
        assert _errors(x, enc.decode()).max() <= 1e-3 * _value_range(x)


def test_four_axes_and_more(levitus: np.ndarray) -> None:
    cube = np.stack([levitus[:2, :90, :180], levitus[:2, 90:, 180:]])  # (2, 2, 90, 180)
    for x in (cube, cube.reshape(2, 2, 3, 30, 180)):
        y = tp.decode(tp.encode(x, "wavelet(max_abs=0.01)"))
        assert y.shape == x.shape and _errors(x, y).max() <= 0.01


def test_masks_and_special_values_exact(levitus: np.ndarray) -> None:
    x = levitus[0].copy()
    payload = np.array([0x7FC00123], np.uint32).view(np.float32)[0]  # a NaN with a payload
    x[5, 7], x[6, 7], x[100, 0] = np.inf, -np.inf, payload
    enc = tp.encode(x, "wavelet(rel=0.001)")
    y = enc.decode()
    special = ~np.isfinite(x)
    assert np.array_equal(special, ~np.isfinite(y))
    assert np.array_equal(x[special].view(np.uint32), y[special].view(np.uint32))  # bit patterns kept
    assert "specials" in enc.parts  # the payload NaN needs the table; plain NaN and ±Inf do not
    # about 30 % land in this layer: the mask costs a small fraction of a bit per element
    assert 8 * len(enc.parts["mask"]) / x.size < 0.2


def test_nan_only_chunk_is_stored_as_its_mask() -> None:
    """A chunk that is all land holds nothing to approximate: it is kept exactly, in a few bytes."""
    x = np.full((16, 40), np.nan, np.float32)
    x[3, :5] = np.inf
    for spec in ("wavelet(max_abs=0.1)", "wavelet(rel=0.01)", "wavelet(psnr=40)", "wavelet(bits=1)"):
        enc = tp.encode(x, spec)
        y = enc.decode()
        assert np.array_equal(x.view(np.uint32), y.view(np.uint32))
        assert sum(len(p) for p in enc.parts.values()) <= 8


def test_corrections_are_needed_and_enough(uwnd: np.ndarray) -> None:
    """Quantizing wavelet coefficients leaves some elements beyond the bound; the stored corrections fix
    exactly those: without them the decoded field breaks the bound, with them it holds everywhere."""
    x = uwnd[:12]
    bound = 0.02
    enc = tp.encode(x, f"wavelet(max_abs={bound})")
    assert "corrections" in enc.parts and enc.meta["step"] >= 1.5 * bound
    without = Encoded(enc.codec, enc.shape, enc.dtype,
                      {k: v for k, v in enc.parts.items() if k != "corrections"}, enc.meta)
    assert _errors(x, without.decode()).max() > bound
    assert _errors(x, enc.decode()).max() <= bound


def test_exact_elements_where_the_dtype_cannot_hold_the_bound(a1b: np.ndarray) -> None:
    """float16 steps near 300 K are 0.25 K: a 0.2 K bound needs some elements stored exactly."""
    x = a1b[:24].astype(np.float16)
    enc = tp.encode(x, "wavelet(max_abs=0.2)")
    y = enc.decode()
    assert y.dtype == np.float16 and _errors(x, y).max() <= 0.2
    assert "exact" in enc.parts


def test_rel_psnr_and_bits_modes(a1b: np.ndarray) -> None:
    x = a1b[:48]
    span = _value_range(x)
    y = tp.decode(tp.encode(x, "wavelet(rel=0.002)"))
    assert _errors(x, y).max() <= 0.002 * span

    enc = tp.encode(x, "wavelet(psnr=60)")
    err = _errors(x, enc.decode())
    psnr = 20 * math.log10(span / math.sqrt(np.mean(err**2)))
    assert 60 <= psnr < 61.5  # the coarsest step that reaches the target, not a much finer one
    assert psnr == pytest.approx(enc.meta["psnr"])
    assert err.max() == enc.meta["bound"] == tp.spec("wavelet(psnr=60)").tolerance(x)

    for bits in (0.5, 2.0):
        enc = tp.encode(x, f"wavelet(bits={bits})")
        payload = 8 * sum(len(p) for p in enc.parts.values())
        assert 0.9 * bits * x.size <= payload <= bits * x.size  # close to the rate, never above it
        assert _errors(x, enc.decode()).max() == enc.meta["bound"]


def test_bound_and_rate_together(a1b: np.ndarray) -> None:
    x = a1b[:48]
    enc = tp.encode(x, "wavelet(rel=0.01, bits=3)")  # the bound needs about 1 bit per element
    assert _errors(x, enc.decode()).max() <= 0.01 * _value_range(x)
    with pytest.raises(BoundError, match=r"rel=1e-05 needs \d+\.\d+ bits per element .* more than bits=2"):
        tp.encode(x, "wavelet(rel=0.00001, bits=2)")


def test_bad_input_and_config() -> None:
    with pytest.raises(InputError, match="floating point"):
        tp.encode(np.arange(64, dtype=np.int32).reshape(8, 8), "wavelet(max_abs=1)")
    for spec, message in [
        ("wavelet(max_abs=0.1, rel=0.01)", "one bound"),
        ("wavelet(levels=3)", "give a bound"),
        ("wavelet(max_abs=-1)", "max_abs must be"),
        ("wavelet(psnr=0)", "psnr must be"),
        ("wavelet(bits=0)", "bits must be"),
        ("wavelet(max_abs=1, wavelet=db4)", "cdf97, cdf53, haar"),
    ]:
        with pytest.raises(ConfigError, match=message):
            tp.spec(spec)
    x = np.full((4, 4), np.nan, np.float32)
    x[0, 0] = 1.0
    with pytest.raises(BoundError, match="even with every coefficient zero"):
        tp.encode(x, "wavelet(bits=0.01)")


def test_zero_bound_and_unrepresentable_steps_are_exact(uwnd: np.ndarray) -> None:
    x = uwnd[:2]
    for spec in ("wavelet(max_abs=0)", "wavelet(rel=0)", "wavelet(max_abs=1e-30)"):
        enc = tp.encode(x, spec)
        assert enc.meta["mode"] == "exact" and np.array_equal(enc.decode(), x)


def test_corrupt_streams_raise(uwnd: np.ndarray) -> None:
    enc = tp.encode(uwnd[:4], "wavelet(max_abs=0.05)")
    coeffs = enc.parts["coefficients"]
    bad = dataclasses.replace(enc, parts={**enc.parts, "coefficients": coeffs[:3]})
    with pytest.raises(BlobError, match=r"stream header|sizes say"):
        bad.decode()
    bad = dataclasses.replace(enc, meta={**enc.meta, "step": -1.0})
    with pytest.raises(BlobError, match="step"):
        bad.decode()


def test_backends_decode_the_same_bits(uwnd: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoder and decoder may run different backends: every kernel is bit-exact with the oracle."""
    x = uwnd[:3, :40, :48]
    enc = tp.encode(x, "wavelet(max_abs=0.05)")
    fast = enc.decode()
    monkeypatch.setenv("TENSORPRESS_BACKEND", "reference")
    slow = Encoded.from_bytes(enc.to_bytes()).decode()
    assert np.array_equal(fast.view(np.uint32), slow.view(np.uint32))


@pytest.mark.parametrize("wavelet", sorted(WAVELETS))
def test_transforms_match_reference(levitus: np.ndarray, wavelet: str) -> None:
    x = np.nan_to_num(levitus[:3, 40:77, 100:141].astype(np.float64), nan=4.0)  # odd lengths
    wid, levels = WAVELETS[wavelet], plan(x.shape, None)
    forward = {b: get_kernel("wavelet", "forward", b)(x, wid, levels) for b in ("reference", "numba")}
    assert np.array_equal(forward["reference"], forward["numba"])
    back = get_kernel("wavelet", "inverse", "numba")(forward["numba"], wid, levels)
    assert np.array_equal(back, get_kernel("wavelet", "inverse", "reference")(forward["numba"], wid, levels))
    assert np.abs(back - x).max() < 1e-12


def test_coders_match_reference(uwnd: np.ndarray) -> None:
    x = uwnd[:2, 20:45, 30:63].astype(np.float64)
    levels = plan(x.shape, None)
    q = np.rint(get_kernel("wavelet", "forward")(x, 0, levels) / 0.01).astype(np.int64)
    boxes = subbands(x.shape, levels)
    data, sizes = get_kernel("wavelet", "encode", "reference")(q, boxes)
    fast_data, fast_sizes = get_kernel("wavelet", "encode", "numba")(q, boxes)
    assert np.array_equal(data, fast_data) and np.array_equal(sizes, fast_sizes)
    for backend in ("reference", "numba"):
        assert np.array_equal(get_kernel("wavelet", "decode", backend)(data, sizes, boxes, x.shape), q)
    r = np.where(np.abs(q) > 40, q % 7 - 3, 0).reshape(-1)  # a sparse layer, clustered like corrections
    positions = np.flatnonzero(r)
    stream = get_kernel("wavelet", "encode_sparse", "reference")(positions, r[positions])
    assert np.array_equal(stream, get_kernel("wavelet", "encode_sparse", "numba")(positions, r[positions]))
    for backend in ("reference", "numba"):
        got = get_kernel("wavelet", "decode_sparse", backend)(stream, positions.size)
        assert np.array_equal(got[0], positions) and np.array_equal(got[1], r[positions])


def test_earth_catalogue() -> None:
    from tensorpress.datasets import EARTH_FILES, SOURCES, earth_fill_value

    assert SOURCES["ferret"].fetch is not None and SOURCES["iris_samples"].fetch is not None
    assert "public domain" in SOURCES["ferret"].licence
    assert "Open Government" in SOURCES["iris_samples"].licence
    for file, entry in EARTH_FILES.items():
        for var, shape in entry.variables.items():
            x = _field(file, var)
            assert x.shape == shape and x.dtype == np.float32
            assert np.isfinite(x).mean() > 0.5
    assert load_real(lambda: earth_fill_value("monthly_navy_winds.cdf", "UWND")) == pytest.approx(-99.9)
    assert load_real(lambda: earth_fill_value("A1B_north_america.nc", "air_temperature")) is None
    sst = _field("coads_climatology.cdf", "SST")
    assert 0.4 < np.isnan(sst).mean() < 0.5  # land


def test_zarr_imports_next_to_the_peers() -> None:
    """zfpy 1.0.1.post0 breaks ``import numcodecs`` (so ``import zarr``); the peers extra pins 1.0.1."""
    import subprocess
    import sys

    pytest.importorskip("zfpy", reason="the peers extra is not installed")
    code = "import zfpy, pysz, numcodecs, zarr, importlib.metadata as m; print(m.version('zfpy'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1.0.1"
