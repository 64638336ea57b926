"""The ``video`` codec on real Earth-system cubes: ffv1 exact on the codes, NaN masks, PSNR targets, bands in
yuv444 planes and PCA, and clear errors (bad config, integer input, a missing ffmpeg or encoder, corrupt data)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import tensorpress as tp
from conftest import load_real
from tensorpress.codecs import video
from tensorpress.core import metrics
from tensorpress.core.encoded import Encoded
from tensorpress.core.errors import BlobError, BoundError, ConfigError, InputError, MissingDependencyError


@pytest.fixture(scope="module", autouse=True)
def _needs_ffmpeg() -> None:
    if not video.available_codecs():
        if os.environ.get("CI"):
            pytest.fail("no ffmpeg binary in CI: the test extra installs imageio-ffmpeg")
        pytest.skip("no ffmpeg binary: pip install 'tensorpress[video]'")


def _earth(file: str, var: str) -> np.ndarray:
    from tensorpress.datasets.earth import earth_variable

    return load_real(lambda: earth_variable(file, var))


@pytest.fixture(scope="module")
def winds() -> np.ndarray:
    """US Navy monthly surface wind, u component (m/s): 24 months of 73 x 144, no fill values."""
    return _earth("monthly_navy_winds.cdf", "UWND")[:24]


@pytest.fixture(scope="module")
def ocean() -> np.ndarray:
    """Levitus ocean temperature (°C), top 6 depths, 60 x 120: land as NaN."""
    return _earth("levitus_climatology.cdf", "TEMP")[:6, 60:120, 100:220]


def test_ffv1_is_exact_on_the_codes(winds: np.ndarray) -> None:
    enc = tp.encode(winds, "video(codec=ffv1, bits=16)")
    y = tp.decode(enc.to_bytes())
    assert y.dtype == np.float32 and y.shape == winds.shape
    lo, hi = float(winds.min()), float(winds.max())
    codes = np.rint((winds.astype(np.float64) - lo) / (hi - lo) * 65535)
    again = np.rint((y.astype(np.float64) - lo) / (hi - lo) * 65535)
    assert np.array_equal(codes, again)  # every 16-bit code came back
    half_step = (hi - lo) / (2 * 65535)
    ulp = np.spacing(np.abs(winds)).astype(np.float64)
    assert np.all(np.abs(y.astype(np.float64) - winds) <= half_step + ulp)


def test_fewer_bits_smaller_and_within_half_a_step(winds: np.ndarray) -> None:
    sizes = []
    for bits in (8, 10, 12):
        enc = tp.encode(winds, f"video(codec=ffv1, bits={bits})")
        err = metrics.max_abs_error(winds, tp.decode(enc))
        assert err <= (winds.max() - winds.min()) / (2 * (2**bits - 1)) * (1 + 1e-6) + 1e-5
        sizes.append(enc.nbytes)
    assert sizes[0] < sizes[1] < sizes[2]


def test_nan_mask_kept_exactly(ocean: np.ndarray) -> None:
    nan = np.isnan(ocean)
    assert 0.05 < nan.mean() < 0.5  # land
    for spec in ("video(codec=h264, crf=12)", "video(codec=ffv1, bits=12)"):
        enc = tp.encode(ocean, spec)
        y = tp.decode(enc.to_bytes())
        assert np.array_equal(np.isnan(y), nan)
        err = np.abs(y[~nan].astype(np.float64) - ocean[~nan])
        assert err.max() == pytest.approx(enc.meta["max_abs"])
        assert float(np.max(tp.spec(spec).tolerance(ocean))) >= err.max()


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_psnr_target_reached(codec: str) -> None:
    air = _earth("A1B_north_america.nc", "air_temperature")[:60]
    low = tp.encode(air, f"video(codec={codec}, psnr=42)")
    high = tp.encode(air, f"video(codec={codec}, psnr=52)")
    for enc, target in ((low, 42), (high, 52)):
        assert metrics.psnr(air, tp.decode(enc)) >= target
        assert enc.meta["psnr"] == pytest.approx(metrics.psnr(air, tp.decode(enc)), abs=1e-6)
    assert low.meta["crf"] > high.meta["crf"] and low.nbytes < high.nbytes


def test_av1_on_a_small_cube(winds: np.ndarray) -> None:
    x = winds[:6, :32, :48]
    enc = tp.encode(x, "video(codec=av1, crf=20, bits=10)")
    assert metrics.psnr(x, tp.decode(enc)) > 35 and enc.bits_per_element < 8


def test_bands_as_yuv444_and_pca() -> None:
    cube = np.stack([_earth("coads_climatology.cdf", v)[:, 20:70, :96] for v in ("SST", "AIRT", "SLP", "WSPD")],
                    axis=-1)  # (12, 50, 96, 4), land NaN in SST
    enc = tp.encode(cube, "video(codec=ffv1, bits=12)")
    assert sorted(p for p in enc.parts if p.startswith("video")) == ["video0", "video1"]  # 3 planes + 1
    y = tp.decode(enc)
    assert np.array_equal(np.isnan(y), np.isnan(cube))
    span = np.nanmax(cube, axis=(0, 1, 2)) - np.nanmin(cube, axis=(0, 1, 2))
    assert np.all(np.nanmax(np.abs(y - cube), axis=(0, 1, 2)) <= span / (2 * 4095) * 1.001 + 1e-3)
    # PCA: the bands' common variation goes into fewer planes
    pca = tp.encode(cube, "video(codec=ffv1, bits=12, pca=3)")
    assert pca.parts["pca_basis"].shape == (4, 3) and "video1" not in pca.parts
    yp = tp.decode(pca.to_bytes())
    assert np.nanmax(np.abs(yp - cube)) == pytest.approx(pca.meta["max_abs"], rel=1e-6)
    full = tp.decode(tp.encode(cube, "video(codec=ffv1, bits=16, pca=4)"))
    assert metrics.psnr(cube[..., 2], full[..., 2]) > 60  # all components kept: only quantization is lost


def test_encoding_is_deterministic(ocean: np.ndarray) -> None:
    spec = "video(codec=h265, crf=20, bits=10)"
    assert tp.encode(ocean, spec).to_bytes() == tp.encode(ocean, spec).to_bytes()


def test_bad_config_and_input(winds: np.ndarray) -> None:
    with pytest.raises(ConfigError, match=r"h264 takes bits=8 \| 10, got 16"):
        tp.spec("video(codec=h264, bits=16)")
    with pytest.raises(ConfigError, match="ffv1 is lossless"):
        tp.spec("video(codec=ffv1, crf=10)")
    with pytest.raises(ConfigError, match="codec must be one of"):
        tp.spec("video(codec=vp9)")
    with pytest.raises(InputError, match="floating point"):
        tp.encode(np.rint(winds).astype(np.int16), "video")
    with pytest.raises(InputError, match="pca=2 needs"):
        tp.encode(winds, "video(codec=ffv1, pca=2)")
    with pytest.raises(BoundError, match="out of reach"):
        tp.encode(winds[:4], "video(codec=h264, bits=8, psnr=80)")


def test_missing_ffmpeg_or_encoder(monkeypatch: pytest.MonkeyPatch, winds: np.ndarray) -> None:
    monkeypatch.setattr(video, "ffmpeg_encoders", lambda: frozenset({"ffv1"}))
    with pytest.raises(MissingDependencyError, match=r"libx264.*tensorpress\[video\]"):
        tp.encode(winds[:2], "video(codec=h264)")
    video.ffmpeg_exe.cache_clear()
    monkeypatch.setitem(__import__("sys").modules, "imageio_ffmpeg", None)
    monkeypatch.setattr(video.shutil, "which", lambda name: None)
    try:
        with pytest.raises(MissingDependencyError, match="imageio-ffmpeg"):
            tp.encode(winds[:2], "video(codec=ffv1)")
    finally:
        video.ffmpeg_exe.cache_clear()


def test_corrupt_stream_is_a_clear_error(winds: np.ndarray) -> None:
    enc = tp.encode(winds[:4], "video(codec=h264, crf=20)")
    stream = bytes(enc.parts["video0"])
    bad = Encoded(enc.codec, enc.shape, enc.dtype, {**enc.parts, "video0": stream[: len(stream) // 3]}, enc.meta)
    with pytest.raises(BlobError, match="video"):
        tp.decode(bad.to_bytes())


def test_nan_only_chunk() -> None:
    """Central Africa in the ocean climatology: every cell is land."""
    land = _earth("levitus_climatology.cdf", "TEMP")[:4, 95:110, 0:15]
    assert np.isnan(land).all()
    for spec in ("video(codec=h265, psnr=40)", "video(codec=ffv1, bits=8)"):
        enc = tp.encode(land, spec)
        assert enc.meta["mode"] == "mask" and enc.nbytes < land.nbytes / 8  # the header, a tiny mask stream
        y = tp.decode(enc.to_bytes())
        assert y.shape == land.shape and np.isnan(y).all()
