"""``tensorpress convert-dataset`` on real NetCDF files: the table, the bounds, zarr in and out, non-float
variables copied, and failures that write nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import load_real
from tensorpress.cli import main

xr = pytest.importorskip("xarray")
pytest.importorskip("dask")


@pytest.fixture(scope="module")
def winds_nc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 12 months of the US Navy winds file, as a NetCDF3 file, with an int8 'calm' flag added."""
    from tensorpress.datasets.earth import earth_file

    source = load_real(lambda: earth_file("monthly_navy_winds.cdf"))
    with xr.open_dataset(source, decode_times=False, engine="scipy") as ds:
        part = ds.isel(TIME=slice(0, 12)).load()
    part["calm"] = (part.UWND.dims, (np.hypot(part.UWND, part.VWND) < 1).astype(np.int8).data)
    path = tmp_path_factory.mktemp("nc") / "winds.nc"
    part.to_netcdf(path, engine="scipy")
    return path


def _open(path: Path) -> xr.Dataset:
    return xr.open_zarr(path, decode_times=False, consolidated=False)


def test_convert_with_table_and_bounds(tmp_path: Path, winds_nc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "winds.zarr"
    status = main(["convert-dataset", str(winds_nc), str(out), "--spec", "wavelet(max_abs=0.05)",
                   "--var", "VWND=video(codec=h264, psnr=45)", "--quiet"])
    assert status == 0 and capsys.readouterr().out == ""
    with xr.open_dataset(winds_nc, decode_times=False, engine="scipy") as src:
        back = _open(out)
        assert np.max(np.abs(back.UWND.values.astype(np.float64) - src.UWND.values)) <= 0.05
        assert back.VWND.encoding["serializer"].spec.codec == "h264"
        assert np.array_equal(back.calm.values, src.calm.values)
        assert np.array_equal(back.TIME.values, src.TIME.values) and back.attrs == src.attrs
    # the table: every variable with its ratio, max error and PSNR
    again = tmp_path / "again.zarr"
    assert main(["convert-dataset", str(out), str(again), "--max-error", "0.1"]) == 0  # zarr in, zarr out
    text = capsys.readouterr().out
    lines = {line.split()[0]: line for line in text.splitlines() if line.split()}
    assert {"UWND", "VWND", "calm"} <= set(lines)
    assert "wavelet(max_abs=0.1," in lines["UWND"] and "copied" in lines["calm"]
    max_err, psnr = map(float, lines["UWND"].split()[-2:])
    assert max_err <= 0.1 and psnr > 40
    assert f"wrote {again}" in text


def test_failures_write_nothing(tmp_path: Path, winds_nc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w.zarr"
    assert main(["convert-dataset", str(winds_nc), str(out), "--spec", "video(codec=h264, crf=35)",
                 "--max-error", "0.01", "-q"]) == 1
    assert "exceeds --max-error 0.01" in capsys.readouterr().err
    assert main(["convert-dataset", str(winds_nc), str(out), "--var", "WIND=zstd"]) == 1
    assert "no data variable 'WIND'" in capsys.readouterr().err
    assert main(["convert-dataset", str(winds_nc), str(out), "--var", "calm=wavelet(max_abs=1)"]) == 1
    assert "'calm' holds int8" in capsys.readouterr().err
    assert main(["convert-dataset", str(winds_nc), str(out)]) == 1
    assert "give --spec" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    assert main(["convert-dataset", str(winds_nc), str(out), "--spec", "zstd"]) == 1
    assert "exists" in capsys.readouterr().err
    assert main(["convert-dataset", str(tmp_path / "missing.nc"), str(tmp_path / "x.zarr"), "--spec", "zstd"]) == 1
    assert "missing.nc" in capsys.readouterr().err
