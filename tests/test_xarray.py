"""tensorpress.xarray on real Earth-system files: zarr stores xarray reads lazily with coordinates and
attributes intact, bounds on every element, exact NaN masks, per-variable specs, atomic writes, and the same
conversion on a dask.distributed cluster of two worker processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tensorpress as tp
from conftest import load_real
from tensorpress.core.errors import BoundError, ConfigError

xr = pytest.importorskip("xarray")
pytest.importorskip("dask")
tpx = pytest.importorskip("tensorpress.xarray")


def _open(name: str) -> xr.Dataset:
    from tensorpress.datasets.earth import earth_file

    path = load_real(lambda: earth_file(name))
    return xr.open_dataset(path, decode_times=False, engine="scipy")


@pytest.fixture(scope="module")
def winds() -> xr.Dataset:
    """US Navy monthly surface winds UWND/VWND (132, 73, 144), 2 years of it."""
    return _open("monthly_navy_winds.cdf").isel(TIME=slice(0, 24)).load()


@pytest.fixture(scope="module")
def ocean() -> xr.Dataset:
    """Levitus temperature and salinity, top 4 depths of a 60 x 120 region (land as NaN)."""
    return _open("levitus_climatology.cdf").isel(ZAXLEVITR=slice(0, 4), YAXLEVITR=slice(60, 120),
                                                  XAXLEVITR=slice(100, 220)).load()


def test_store_read_back_lazily_with_coordinates_and_attributes(tmp_path: Path, ocean: xr.Dataset) -> None:
    out = tpx.compress(ocean, "wavelet(max_abs=0.01)", tmp_path / "ocean.zarr", chunks={"ZAXLEVITR": 2})
    back = xr.open_zarr(tmp_path / "ocean.zarr", decode_times=False, consolidated=False)
    assert back.TEMP.chunks is not None  # lazy: dask arrays, read chunk by chunk
    assert back.attrs == ocean.attrs and set(back.coords) == set(ocean.coords)
    for name, coord in ocean.coords.items():
        assert np.array_equal(back[name].values, coord.values)
    for name in ("TEMP", "SALT"):
        x, y = ocean[name].values, back[name].values
        assert np.array_equal(np.isnan(y), np.isnan(x)) and np.isnan(x).any()
        assert np.nanmax(np.abs(y.astype(np.float64) - x)) <= 0.01
        assert {k: v for k, v in back[name].attrs.items() if k != tpx.SOURCE_FILL_ATTR} == ocean[name].attrs
        assert back[name].attrs[tpx.SOURCE_FILL_ATTR] == pytest.approx(-1e10)
    rows = {r["name"]: r for r in tpx.report(ocean, out)}
    assert rows["TEMP"]["max_abs_error"] <= 0.01 and rows["TEMP"]["ratio"] > 3
    assert rows["SALT"]["stored_bytes"] < ocean.SALT.nbytes / 3


def test_plain_xarray_encoding_with_the_zarr_codec(tmp_path: Path, winds: xr.Dataset) -> None:
    ds = winds.copy()
    for var in ds.variables.values():
        var.encoding = {}
    codec = tp.zarr_codec("wavelet(max_abs=0.01)")
    ds.to_zarr(tmp_path / "w.zarr", encoding={"UWND": {"serializer": codec, "compressors": None}},
               zarr_format=3, consolidated=False)
    back = xr.open_zarr(tmp_path / "w.zarr", decode_times=False, consolidated=False)
    assert np.max(np.abs(back.UWND.values.astype(np.float64) - winds.UWND.values)) <= 0.01
    assert np.array_equal(back.VWND.values, winds.VWND.values)


def test_per_variable_specs_and_integer_variables_copied(winds: xr.Dataset) -> None:
    ds = winds.assign(calm=(winds.UWND.dims, (np.hypot(winds.UWND, winds.VWND) < 1).astype(np.int8).data))
    out = tpx.compress(ds, {"UWND": "wavelet(max_abs=0.05)", "*": "bitround(keep=6) | zstd"})  # in memory
    rows = {r["name"]: r for r in tpx.report(ds, out)}
    assert rows["UWND"]["spec"].startswith("wavelet") and rows["UWND"]["max_abs_error"] <= 0.05
    assert rows["VWND"]["spec"].startswith("bitround")
    x = winds.VWND.values.astype(np.float64)
    assert np.all(np.abs(out.VWND.values - x) <= np.abs(x) * 2.0**-7)
    assert rows["calm"]["spec"].startswith("copied") and rows["calm"]["max_abs_error"] == 0
    assert np.array_equal(out.calm.values, ds.calm.values) and 0 < ds.calm.values.mean() < 1


def test_failures_write_nothing(tmp_path: Path, winds: xr.Dataset) -> None:
    target = tmp_path / "w.zarr"
    with pytest.raises(BoundError, match="exceeds --max-error"):
        tpx.compress(winds, "video(codec=h264, crf=30)", target, max_error=0.1)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="no data variable 'WIND'"):
        tpx.compress(winds, {"WIND": "zstd"}, target)
    ds = winds.assign(calm=(winds.UWND.dims, np.zeros(winds.UWND.shape, np.int8)))
    with pytest.raises(ConfigError, match="'calm' holds int8"):
        tpx.compress(ds, {"calm": "wavelet(max_abs=1)"}, target)
    assert list(tmp_path.iterdir()) == []


def test_conversion_on_a_distributed_cluster(tmp_path: Path, winds: xr.Dataset) -> None:
    """The same conversion on a dask.distributed cluster of two worker processes (10-25 s on 2 cores)."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        out = tpx.compress(winds, "wavelet(max_abs=0.02)", tmp_path / "w.zarr", chunks={"TIME": 6})
        workers = client.run(lambda: True)
    assert len(workers) == 2
    back = xr.open_zarr(tmp_path / "w.zarr", decode_times=False, consolidated=False)
    assert back.UWND.chunks[0] == (6, 6, 6, 6)
    for name in ("UWND", "VWND"):
        assert np.max(np.abs(back[name].values.astype(np.float64) - winds[name].values)) <= 0.02
    assert all(r["ratio"] > 2 for r in tpx.report(winds, out))
