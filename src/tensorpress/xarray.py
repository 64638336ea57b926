"""xarray and dask helpers: compress a dataset's variables into a zarr v3 store, chunk-parallel.

    import xarray as xr, tensorpress.xarray as tpx
    ds = xr.open_dataset("monthly_navy_winds.cdf", decode_times=False)
    tpx.compress(ds, {"UWND": "wavelet(max_abs=0.01)", "*": "video(codec=h265, psnr=50)"}, "winds.zarr")
    back = xr.open_zarr("winds.zarr", consolidated=False)   # lazy; coordinates and attributes as in ``ds``

Each compressed variable is a zarr array whose serializer is ``tensorpress.zarr_codec(spec)`` (xarray's
``encoding={var: {"serializer": …, "compressors": None}}``), so any process with tensorpress installed reads it
with plain ``xr.open_zarr`` (``consolidated=False``: zarr v3 has no consolidated metadata in its
specification, so none is written and xarray would warn when it looks for it). Fill values become NaN (the
arrays' zarr fill value) so that codecs keep them in their exact masks instead of coding -1e34 as data; the
original ``_FillValue``/``missing_value`` is kept in the variable's attributes as
``tensorpress_source_fill_value``. Variables that are not floating point, and float
variables no spec names, are copied losslessly with zarr's default codecs.

Conversion runs through dask: every chunk is encoded as its own task, on local threads by default, or on
whatever ``dask.distributed`` client is active. The store is written to a hidden sibling of ``path``, checked
(NaN positions and, with ``max_error``, the error bound on every element) and only then renamed into place.
Needs the ``xarray`` extra (xarray, dask; scipy or netCDF4 to read NetCDF).
"""

from __future__ import annotations

import fnmatch
import math
import os
import secrets
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .core.codec import Codec, build
from .core.errors import BoundError, ConfigError, ContainerError, MissingDependencyError
from .core.metrics import bits_per_element, compression_ratio

if TYPE_CHECKING:
    import xarray as xr

SOURCE_FILL_ATTR = "tensorpress_source_fill_value"


def open_dataset(path: str | os.PathLike[str]) -> xr.Dataset:
    """A NetCDF file (NetCDF3 read by scipy, NetCDF4/HDF5 by netCDF4) or a zarr store, lazily, times not decoded
    (the Ferret sample files count from year 0, which calendar libraries refuse), fill values as NaN."""
    xr, _ = _modules()
    source = Path(os.fspath(path))
    if source.is_dir():
        return xr.open_zarr(source, decode_times=False, consolidated=False)
    with open(source, "rb") as f:  # a missing file raises FileNotFoundError here
        magic = f.read(4)
    if magic[:3] == b"CDF":
        engine = "scipy"
    elif magic == b"\x89HDF":
        engine = "netcdf4"
    else:
        raise ContainerError(f"{source} is neither a NetCDF file nor a zarr store (a directory); it starts with "
                             f"{magic!r}")
    try:
        return xr.open_dataset(source, engine=engine, decode_times=False, decode_timedelta=False)
    except (ImportError, ValueError) as exc:
        if (engine == "netcdf4" and "netCDF4" in str(exc)) or isinstance(exc, ImportError):
            raise MissingDependencyError("netCDF4" if engine == "netcdf4" else "scipy", "xarray",
                                         f"reading {source.name}") from None
        raise


def plan(ds: xr.Dataset, spec: Any) -> dict[str, Codec | None]:
    """The codec of every data variable (None: copied losslessly), checked before anything is written.

    ``spec``: one spec for every float variable, or a mapping of variable names or glob patterns to specs
    (the first matching key wins; ``"*"`` as the last key sets a default).
    """
    rules = [(k, build(v)) for k, v in spec.items()] if isinstance(spec, Mapping) else [("*", build(spec))]
    for key, _ in rules:
        if not isinstance(key, str) or (not any(c in key for c in "*?[") and key not in ds.data_vars):
            raise ConfigError(f"no data variable {key!r} in the dataset; it has {', '.join(map(str, ds.data_vars))}")
    out: dict[str, Codec | None] = {}
    for name, var in ds.data_vars.items():
        codec = next((c for key, c in rules if fnmatch.fnmatchcase(str(name), key)), None)
        is_float = var.dtype.kind == "f"
        if codec is not None and not is_float and not codec.accepts_integers:
            if str(name) in dict(rules):
                raise ConfigError(f"variable {name!r} holds {var.dtype}, which {codec} does not take; give it a "
                                  f"lossless spec such as zstd, or leave it out to copy it as it is")
            codec = None
        out[str(name)] = codec
    return out


def compress(
    ds: xr.Dataset,
    spec: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    chunks: Mapping[str, int] | str | None = None,
    max_error: float | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> xr.Dataset:
    """Write ``ds`` to a zarr v3 store at ``path`` (in memory when None) with tensorpress codecs; open it lazily.

    ``chunks``: ``None`` keeps ``ds``'s dask chunks (one chunk per variable when it has none), a mapping
    ``{dim: size}`` or ``"auto"`` rechunks. ``max_error``: every element of every compressed variable must be
    within it, else :class:`BoundError` and nothing is written. ``progress``: a progress bar on stderr (local
    schedulers). The result is opened with times not decoded; use :func:`report` on it for sizes and errors.
    """
    xr, dask = _modules()
    codecs = plan(ds, spec)
    source = _prepared(ds, codecs, chunks)
    encoding = {name: _encoding(codec) for name, codec in codecs.items()}
    if path is None:
        import zarr.storage

        store = zarr.storage.MemoryStore()
        _write(source, store, encoding, progress, dask)
        out = xr.open_zarr(store, consolidated=False, decode_times=False)
        _verify(ds, out, codecs, max_error, dask)
        out.encoding["source"] = store  # where report() finds the stored sizes
        return out
    target = Path(os.fspath(path))
    if target.exists() and not overwrite:
        raise ContainerError(f"{target} exists; remove it or pass overwrite=True")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}")
    try:
        _write(source, str(tmp), encoding, progress, dask)
        _verify(ds, xr.open_zarr(tmp, consolidated=False, decode_times=False), codecs, max_error, dask)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return xr.open_zarr(target, consolidated=False, decode_times=False)


def report(original: xr.Dataset, compressed: xr.Dataset) -> list[dict[str, Any]]:
    """One row per data variable of ``compressed``: name, shape, dtype, spec, stored_bytes (its chunks),
    original_bytes, ratio, bits_per_element, max_abs_error and psnr_db (finite elements; peak = value range,
    as :func:`tensorpress.metrics.psnr`)."""
    _, dask = _modules()
    rows, pending = [], []
    for name, var in compressed.data_vars.items():
        ref = original[name]
        serializer = var.encoding.get("serializer")
        spec = getattr(serializer, "spec", None)
        stored = _stored_bytes(compressed, str(name))
        rows.append({
            "name": str(name), "shape": tuple(var.shape), "dtype": str(var.dtype),
            "spec": str(spec) if spec is not None else "copied (zarr default codecs)",
            "stored_bytes": stored, "original_bytes": ref.nbytes,
            "ratio": compression_ratio(ref.nbytes, stored), "bits_per_element": bits_per_element(stored, ref.size),
        })
        pending.append(_error_terms(ref, var))
    for row, (max_err, mse, lo, hi, _) in zip(rows, dask.compute(*pending), strict=True):
        rmse, span = math.sqrt(float(mse)) if np.isfinite(mse) else 0.0, float(hi - lo) if np.isfinite(hi) else 0.0
        row["max_abs_error"] = float(max_err) if np.isfinite(max_err) else 0.0
        row["psnr_db"] = math.inf if rmse == 0 else (20 * math.log10(span / rmse) if span > 0 else -math.inf)
    return rows


# --- steps ---------------------------------------------------------------------------------------------------


def _modules() -> tuple[Any, Any]:
    try:
        import dask
        import xarray
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "xarray", "xarray", "tensorpress.xarray") from None
    return xarray, dask


def _prepared(ds: xr.Dataset, codecs: Mapping[str, Codec | None], chunks: Mapping[str, int] | str | None) -> Any:
    """``ds`` as dask arrays in the requested chunks, NetCDF encodings dropped, fill values as NaN."""
    out = ds.copy()
    for name, var in out.variables.items():
        fill = var.encoding.get("_FillValue", var.encoding.get("missing_value"))
        var.encoding = {}
        if codecs.get(str(name)) is not None and fill is not None and not _is_nan(fill):
            var.attrs[SOURCE_FILL_ATTR] = float(np.asarray(fill).reshape(-1)[0])
    if chunks is None:
        return out.chunk({}) if not out.chunks else out
    return out.chunk(chunks)


def _encoding(codec: Codec | None) -> dict[str, Any]:
    if codec is None:
        return {}
    from .store.zarr_codec import TensorpressCodec

    return {"serializer": TensorpressCodec(spec=codec), "compressors": None, "filters": None, "_FillValue": np.nan}


def _write(source: Any, store: Any, encoding: dict[str, Any], progress: bool, dask: Any) -> None:
    delayed = source.to_zarr(store, mode="w", encoding=encoding, zarr_format=3, consolidated=False, compute=False)
    if progress:
        with _TqdmCallback():
            dask.compute(delayed)
    else:
        dask.compute(delayed)


def _verify(ds: xr.Dataset, out: xr.Dataset, codecs: Mapping[str, Codec | None], max_error: float | None,
            dask: Any) -> None:
    """NaN positions kept and, with ``max_error``, every element within it; else raise (nothing is kept)."""
    names = list(codecs)
    terms = dask.compute(*[_error_terms(ds[n], out[n]) for n in names])
    for name, (max_err, _, _, _, nan_moved) in zip(names, terms, strict=True):
        if int(nan_moved):
            raise BoundError(f"variable {name!r}: {int(nan_moved)} NaN position(s) changed in the round trip")
        if codecs[name] is None and float(max_err) > 0:
            raise BoundError(f"variable {name!r} was to be copied losslessly but changed by {float(max_err)}")
        if max_error is not None and float(max_err) > max_error:
            raise BoundError(f"variable {name!r}: max abs error {float(max_err):.6g} exceeds --max-error "
                             f"{max_error:g} with {codecs[name]}; choose a tighter spec (e.g. "
                             f"wavelet(max_abs={max_error:g}))")


def _error_terms(ref: Any, var: Any) -> Any:
    """Lazy (max abs error, mean squared error, min, max, NaN positions changed) over finite elements."""
    import dask.array as da

    a = da.asarray(ref.data).astype(np.float64) if ref.dtype.kind in "biuf" else None
    b = da.asarray(var.data).astype(np.float64) if ref.dtype.kind in "biuf" else None
    if a is None or b is None:
        same = (da.asarray(ref.data) != da.asarray(var.data)).sum()
        return same.astype(np.float64), 0.0, 0.0, 0.0, 0
    finite = da.isfinite(a)
    diff = da.where(finite, da.abs(a - b), np.nan)
    nan_moved = (da.isnan(a) != da.isnan(b)).sum()
    return (da.nanmax(diff), da.nanmean(diff * diff), da.nanmin(da.where(finite, a, np.nan)),
            da.nanmax(da.where(finite, a, np.nan)), nan_moved)


def _stored_bytes(ds: xr.Dataset, name: str) -> int:
    """Bytes of the chunks of ``name`` in the store ``ds`` was opened from (metadata excluded)."""
    import zarr

    store = ds.encoding.get("source")
    if store is None:
        raise ContainerError(f"cannot find the zarr store of variable {name!r}: give a dataset that compress() "
                             "returned or xr.open_zarr opened")
    arr = zarr.open_array(store, path=name, mode="r")
    return int(arr.nbytes_stored()) - len(_metadata_bytes(arr))


def _metadata_bytes(arr: Any) -> bytes:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buf = sync((arr.store_path / "zarr.json").get(default_buffer_prototype()))
    return b"" if buf is None else buf.to_bytes()


def _is_nan(value: Any) -> bool:
    return bool(np.all(np.isnan(np.asarray(value, dtype=np.float64))))


class _TqdmCallback:
    """A dask local-scheduler callback drawing a tqdm bar over the graph's tasks."""

    def __init__(self) -> None:
        from dask.callbacks import Callback
        from tqdm import tqdm

        bar: list[Any] = []

        class Bar(Callback):
            def _start_state(self, dsk: Any, state: Any) -> None:
                bar.append(tqdm(total=sum(len(state[k]) for k in ("ready", "waiting", "running")), unit="task",
                                desc="compressing", file=sys.stderr, leave=False))

            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
                bar[0].update(1)

            def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
                if bar:
                    bar[0].close()

        self._callback = Bar()

    def __enter__(self) -> _TqdmCallback:
        self._callback.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._callback.__exit__(*exc)
