"""Real Earth-system data cubes from two packages, fetched on demand into the data cache.

- ``ferret``: the Debian package ``ferret-datasets`` (NOAA PMEL's sample data for the Ferret analysis tool):
  climatologies and monthly fields on global grids, NetCDF3 (classic) big-endian float32 with fill values
  over land / missing observations.
- ``iris_samples``: the PyPI wheel ``iris-sample-data`` (the Met Office's sample data for Iris): Unified Model
  air temperature over North America 1860-2099 under two scenarios, and OSTIA sea surface temperature,
  NetCDF4 (HDF5) float32.

:func:`earth_variable` reads one variable as float32 with every fill / missing value turned into NaN;
:func:`earth_fill_value` gives the value the file used. Times are left as stored (the Ferret files count
from year 0, which calendar libraries refuse: nothing here decodes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import fetch_deb, fetch_pip_wheel
from .sources import DataUnavailable, Source, add

FERRET_DEB = "ferret-datasets"
IRIS_WHEEL = ("iris-sample-data", "2.5.2")
_FERRET_DATA = "usr/share/ferret-vis/data"
_IRIS_DATA = "iris_sample_data/sample_data"


@dataclass(frozen=True)
class EarthFile:
    source: str  #: "ferret" or "iris_samples"
    format: str  #: "netcdf3" (read with scipy) or "netcdf4" (read with netCDF4)
    variables: dict[str, tuple[int, ...]]  #: the data variables and their shapes
    description: str


EARTH_FILES: dict[str, EarthFile] = {
    "monthly_navy_winds.cdf": EarthFile(
        "ferret", "netcdf3", {"UWND": (132, 73, 144), "VWND": (132, 73, 144)},
        "FNOC (US Navy) monthly surface wind components, m/s, 1982-1992 on a 2.5° grid (time, lat, lon)",
    ),
    "levitus_climatology.cdf": EarthFile(
        "ferret", "netcdf3", {"TEMP": (20, 180, 360), "SALT": (20, 180, 360)},
        "Levitus annual ocean climatology: temperature (°C) and salinity (PSU) at 20 depths, 1° grid; "
        "land and sea floor are fill values",
    ),
    "coads_climatology.cdf": EarthFile(
        "ferret", "netcdf3",
        {v: (12, 90, 180) for v in ("SST", "AIRT", "SPEH", "WSPD", "UWND", "VWND", "SLP")},
        "COADS monthly marine climatology, 2° grid: sea surface and air temperature, specific humidity, "
        "wind speed and components, sea level pressure; land is fill values",
    ),
    "ocean_atlas_subset.nc": EarthFile(
        "ferret", "netcdf3", {"TEMP": (12, 19, 90, 180)},
        "monthly ocean temperature climatology at 19 depths, 2° grid (time, depth, lat, lon)",
    ),
    "A1B_north_america.nc": EarthFile(
        "iris_samples", "netcdf4", {"air_temperature": (240, 37, 49)},
        "Met Office Unified Model 1.5 m air temperature (K) over North America, annual means 1860-2099, "
        "SRES A1B scenario",
    ),
    "E1_north_america.nc": EarthFile(
        "iris_samples", "netcdf4", {"air_temperature": (240, 37, 49)},
        "the same model and region under the E1 mitigation scenario",
    ),
    "ostia_monthly.nc": EarthFile(
        "iris_samples", "netcdf4", {"surface_temperature": (54, 18, 432)},
        "OSTIA monthly sea surface temperature (K) on a coarse band of latitudes; land is fill values",
    ),
}


def ferret_dir() -> Path:
    """The folder of the ``ferret-datasets`` files (the package is fetched on first use)."""
    return _folder(fetch_deb(FERRET_DEB) / _FERRET_DATA, "ferret")


def iris_samples_dir() -> Path:
    """The folder of the ``iris-sample-data`` files (the wheel is fetched on first use)."""
    return _folder(fetch_pip_wheel(*IRIS_WHEEL) / _IRIS_DATA, "iris_samples")


def _folder(path: Path, source: str) -> Path:
    if not path.is_dir():
        raise DataUnavailable(f"{path} is missing from the unpacked package; delete {path.parents[2]} and "
                              f"run: python -m tensorpress.datasets fetch {source}")
    return path


def earth_file(name: str) -> Path:
    """Path of one catalogued file."""
    entry = _entry(name)
    folder = ferret_dir() if entry.source == "ferret" else iris_samples_dir()
    path = folder / name
    if not path.is_file():
        raise DataUnavailable(f"{name} is missing from {folder}; run: python -m tensorpress.datasets fetch "
                              f"{entry.source}")
    return path


def earth_fields() -> list[tuple[str, str]]:
    """Every catalogued (file, variable) pair."""
    return [(f, v) for f, entry in EARTH_FILES.items() for v in entry.variables]


def earth_variable(file: str, var: str) -> np.ndarray:
    """One variable as float32, in the file's axis order, fill and missing values as NaN."""
    data, fill = _read(file, var)
    out = data.astype(np.float32)
    for value in fill:
        out[data == value] = np.nan
    return out


def earth_fill_value(file: str, var: str) -> float | None:
    """The fill value the file uses for ``var`` (``_FillValue``, else ``missing_value``), or None."""
    _, fill = _read(file, var)
    return float(fill[0]) if fill else None


def _entry(name: str) -> EarthFile:
    if name not in EARTH_FILES:
        raise KeyError(f"unknown Earth-system file {name!r}; catalogued: {', '.join(EARTH_FILES)}")
    return EARTH_FILES[name]


def _read(file: str, var: str) -> tuple[np.ndarray, list[float]]:
    """(raw values as stored, the fill values to mask: _FillValue first, then missing_value)."""
    entry = _entry(file)
    if var not in entry.variables:
        raise KeyError(f"{file} has no catalogued variable {var!r}; it has {', '.join(entry.variables)}")
    path = earth_file(file)
    if entry.format == "netcdf3":
        from scipy.io import netcdf_file

        with netcdf_file(path, "r", mmap=False) as nc:
            v = nc.variables[var]
            data = np.array(v.data)
            attrs = dict(v._attributes)
    else:
        try:
            import netCDF4
        except ImportError as exc:
            raise DataUnavailable(f"reading {file} (NetCDF4/HDF5) needs the netCDF4 package: "
                                  "pip install 'tensorpress[xarray]'") from exc
        with netCDF4.Dataset(path) as ds:
            v = ds.variables[var]
            v.set_auto_maskandscale(False)
            data = np.array(v[...])
            attrs = {k: v.getncattr(k) for k in v.ncattrs()}
    if data.shape != entry.variables[var]:
        raise DataUnavailable(f"{file}:{var} has shape {data.shape}, catalogued {entry.variables[var]}")
    if "scale_factor" in attrs or "add_offset" in attrs:  # none of the catalogued files packs its data
        raise DataUnavailable(f"{file}:{var} is packed (scale_factor/add_offset): not supported here")
    fill = [float(np.asarray(attrs[k]).reshape(-1)[0]) for k in ("_FillValue", "missing_value") if k in attrs]
    return data, list(dict.fromkeys(fill))


add(Source(
    name="ferret",
    package=f"Debian: {FERRET_DEB} (apt-get download + dpkg -x, never installed)",
    how=f"NetCDF3 files in {_FERRET_DATA}, read with scipy.io.netcdf_file",
    licence="public domain: NOAA/PMEL data, a work of the US government; the package's "
    "/usr/share/doc/ferret-datasets/copyright gives 'Copyright: 2010 NOAA, US.gov' under the Ferret License "
    "Agreement, which states 'THIS SOFTWARE AND ITS DOCUMENTATION ARE IN THE PUBLIC DOMAIN'",
    contents="monthly_navy_winds.cdf (UWND/VWND 132x73x144), levitus_climatology.cdf (TEMP/SALT 20x180x360), "
    "coads_climatology.cdf (7 variables 12x90x180), ocean_atlas_subset.nc (TEMP 12x19x90x180); "
    "float32 with fill values",
    fetch=ferret_dir,
))
add(Source(
    name="iris_samples",
    package=f"pip: {IRIS_WHEEL[0]}=={IRIS_WHEEL[1]} (wheel downloaded, never installed nor imported)",
    how=f"NetCDF4 files in {_IRIS_DATA}, read with netCDF4 (tensorpress[xarray])",
    licence="UK Open Government Licence: the wheel's METADATA says 'License: Open Government' and "
    "'© British Crown copyright, 2018 … under the terms of the Open Government Licence'",
    contents="A1B_north_america.nc / E1_north_america.nc (air_temperature 240x37x49, K), "
    "ostia_monthly.nc (surface_temperature 54x18x432, K, land as fill values)",
    fetch=iris_samples_dir,
))
