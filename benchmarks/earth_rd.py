"""Rate-distortion of ``wavelet`` against SZ3, ZFP, bitround+zstd and zstd on real Earth-system fields.

    python benchmarks/earth_rd.py [--quick]

For each field and each max-abs bound (1e-2, 1e-3, 1e-4 × the finite value range) every compressor is run
on the same array in the same process; every element of every reconstruction is checked against the bound
(a compressor that misses it is reported as such). Throughput is the median of repeated runs, bound check of
ours included (it is part of our encoder). PSNR vs bits per value curves go to a PNG.

Fill values: SZ3 and ZFP take no NaN, so they get the array with its NaN cells filled by our smooth fill
(the same the wavelet codec uses internally), plus the cost of the NaN mask (zstd-19 of the packed bit
mask) added to their size; errors are measured on the finite cells only. bitround and zstd keep NaN as is.

Writes benchmarks/results/earth_rd.json and benchmarks/results/earth_rd.png.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
import zstandard

import tensorpress as tp
from tensorpress.codecs._wavelet_layers import smooth_fill
from tensorpress.codecs.bitround import round_mantissa
from tensorpress.datasets import earth_variable

try:
    from benchmarks.common import RESULTS, best_time, print_table, write_results
except ImportError:  # run as a script from the benchmarks folder
    from common import RESULTS, best_time, print_table, write_results  # type: ignore[no-redef]

FIELDS = [
    ("monthly_navy_winds.cdf", "UWND"),
    ("A1B_north_america.nc", "air_temperature"),
    ("levitus_climatology.cdf", "TEMP"),
    ("coads_climatology.cdf", "SST"),
    ("ostia_monthly.nc", "surface_temperature"),
    ("ocean_atlas_subset.nc", "TEMP"),
]
RELATIVE_BOUNDS = (1e-2, 1e-3, 1e-4)
#: the xarrayvideo paper's ERA5 points (bits per pixel per band, PSNR dB), drawn for reference
XARRAYVIDEO_ERA5 = ((0.1, 46.58), (1.0, 62.90))
MB = 1e6


class Method:
    """One compressor: ``encode(x, bound) -> payload`` and ``decode(payload) -> array``."""

    def __init__(self, name: str, side: str, encode: Callable[[np.ndarray, float], Any],
                 decode: Callable[[Any], np.ndarray], size: Callable[[Any], int], fills_nan: bool,
                 timed: bool = True) -> None:
        self.name, self.side, self.encode, self.decode, self.size = name, side, encode, decode, size
        self.fills_nan = fills_nan  # takes the filled array; its size gets the mask cost added
        self.timed = timed  # throughput measured (ours, SZ3, ZFP); not for the zstd-19 based ones


def _ours() -> Method:
    return Method("wavelet (cdf97, max_abs)", "ours",
                  lambda x, b: tp.spec(f"wavelet(max_abs={b!r})").encode(x),
                  lambda e: e.decode(), lambda e: e.nbytes, False)


def _sz3() -> Method | None:
    try:
        from pysz import sz, szConfig, szErrorBoundMode
    except ImportError:
        return None

    def enc(x: np.ndarray, bound: float) -> Any:
        cfg = szConfig()
        cfg.errorBoundMode = szErrorBoundMode.ABS
        cfg.absErrorBound = bound
        data, _ = sz.compress(np.ascontiguousarray(x), cfg)
        return data, x.shape

    return Method("SZ3 (pysz, ABS)", "peer", enc,
                  lambda p: sz.decompress(p[0], np.float32, p[1])[0], lambda p: int(p[0].nbytes), True)


def _zfp() -> Method | None:
    try:
        import zfpy
    except ImportError:
        return None
    return Method("ZFP (zfpy, tolerance)", "peer",
                  lambda x, b: zfpy.compress_numpy(np.ascontiguousarray(x), tolerance=b),
                  zfpy.decompress_numpy, len, True)


def _bitround() -> Method:
    def enc(x: np.ndarray, bound: float) -> Any:
        # the fewest mantissa bits whose rounding keeps every element within the bound: 2^-(k+1) max|x|
        # <= bound is enough, a few bits less often suffice too, so start below and go up
        big = float(np.nanmax(np.abs(x)))
        keep = max(0, math.ceil(math.log2(big / bound)) - 4) if bound > 0 and big > 0 else 23
        while keep < 23 and _max_error(x, round_mantissa(x, keep)) > bound:
            keep += 1
        return tp.spec(f"bitround(keep={keep}) | zstd(level=19)").encode(x)

    return Method("bitround+zstd-19 (ours)", "ours", enc, lambda e: e.decode(), lambda e: e.nbytes, False,
                  timed=False)


def _zstd() -> Method:
    return Method("zstd-19 (lossless)", "peer",
                  lambda x, b: zstandard.ZstdCompressor(level=19).compress(np.ascontiguousarray(x).tobytes()),
                  lambda p: zstandard.ZstdDecompressor().decompress(p), len, False, timed=False)


def _max_error(x: np.ndarray, y: np.ndarray) -> float:
    finite = np.isfinite(x)
    return float(np.max(np.abs(y.astype(np.float64)[finite] - x.astype(np.float64)[finite])))


def _psnr(x: np.ndarray, y: np.ndarray) -> float:
    finite = np.isfinite(x)
    err = y.astype(np.float64)[finite] - x.astype(np.float64)[finite]
    span = float(x[finite].max()) - float(x[finite].min())
    mse = float(np.mean(err * err))
    return math.inf if mse == 0 else 20 * math.log10(span) - 10 * math.log10(mse)


def _decoded(method: Method, payload: Any, x: np.ndarray) -> np.ndarray:
    y = method.decode(payload)
    if isinstance(y, bytes):  # zstd gives bytes
        y = np.frombuffer(y, x.dtype).reshape(x.shape)
    return np.asarray(y)


def case(method: Method, x: np.ndarray, filled: np.ndarray, mask_bytes: int, bound: float,
         repeat: int) -> dict[str, Any]:
    src = filled if method.fills_nan else x
    start = time.perf_counter()
    payload = method.encode(src, bound)
    first = time.perf_counter() - start
    y = _decoded(method, payload, x)
    size = method.size(payload) + (mask_bytes if method.fills_nan else 0)
    err = _max_error(x, y)
    row: dict[str, Any] = {
        "method": method.name, "side": method.side, "bound": bound,
        "ratio": x.nbytes / size, "bits_per_element": 8 * size / x.size, "max_abs_error": err,
        "meets_bound": bool(err <= bound) if method.name != "zstd-19 (lossless)" else bool(err == 0),
        "psnr": _psnr(x, y),
    }
    if repeat and method.timed:
        t_enc = best_time(lambda: method.encode(src, bound), repeat=repeat, warmup=0) if first < 20 else first
        t_dec = best_time(lambda: _decoded(method, payload, x), repeat=repeat)
        row["encode_MBps"] = x.nbytes / t_enc / MB
        row["decode_MBps"] = x.nbytes / t_dec / MB
    return row


def rd_curves(fields: dict[str, np.ndarray], sz3: Method | None, zfp: Method | None) -> list[dict[str, Any]]:
    """PSNR vs bits per value: ours in PSNR mode and in max-abs mode, peers across their bounds."""
    rows = []
    for name, x in fields.items():
        filled = smooth_fill(x.astype(np.float64), np.isfinite(x)).astype(np.float32)
        mask_bytes = _mask_bytes(x)
        span = float(np.nanmax(x)) - float(np.nanmin(x))
        for target in (30, 40, 50, 60, 70, 80):
            enc = tp.encode(x, f"wavelet(psnr={target})")
            rows.append({"curve": "wavelet (cdf97, psnr)", "field": name,
                         "bits_per_element": enc.bits_per_element, "psnr": _psnr(x, enc.decode())})
        for rel in (3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4):
            for m in (_ours(), sz3, zfp, _bitround()):
                if m is not None:
                    r = case(m, x, filled, mask_bytes, rel * span, repeat=0)
                    rows.append({"curve": m.name, "field": name, "bits_per_element": r["bits_per_element"],
                                 "psnr": r["psnr"]})
    return rows


def _mask_bytes(x: np.ndarray) -> int:
    mask = ~np.isfinite(x)
    if not mask.any():
        return 0
    return len(zstandard.ZstdCompressor(level=19).compress(np.packbits(mask).tobytes()))


def plot(curves: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(dict.fromkeys(r["field"] for r in curves))
    cols = 3
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for curve in dict.fromkeys(r["curve"] for r in curves):
            pts = sorted((r["bits_per_element"], r["psnr"]) for r in curves
                         if r["field"] == name and r["curve"] == curve and math.isfinite(r["psnr"]))
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=curve)
        ax.plot(*zip(*XARRAYVIDEO_ERA5, strict=True), "k*", ms=9, label="xarrayvideo ERA5 (paper)")
        ax.set_xscale("log")
        ax.set_xlabel("bits per value")
        ax.set_ylabel("PSNR (dB, peak = value range)")
        ax.set_title(name, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two fields, no timing, no plot, no result file")
    parser.add_argument("--threads", type=int, default=1,
                        help="numba threads for ours (default 1: SZ3 and ZFP run on one thread)")
    args = parser.parse_args(argv)
    numba.set_num_threads(args.threads)
    fields = {f"{f}:{v}": earth_variable(f, v) for f, v in (FIELDS[:2] if args.quick else FIELDS)}
    sz3, zfp = _sz3(), _zfp()
    if sz3 is None or zfp is None:
        print("SZ3 (pysz) or ZFP (zfpy) is missing: pip install 'tensorpress[peers]'", file=sys.stderr)
    methods = [m for m in (_ours(), sz3, zfp, _bitround(), _zstd()) if m is not None]
    rows = []
    for name, x in fields.items():
        filled = smooth_fill(x.astype(np.float64), np.isfinite(x)).astype(np.float32)
        mask_bytes = _mask_bytes(x)
        span = float(np.nanmax(x)) - float(np.nanmin(x))
        for rel in RELATIVE_BOUNDS:
            for m in methods:
                if m.name.startswith("zstd") and rel != RELATIVE_BOUNDS[0]:
                    continue  # lossless: one row per field
                row = {"dataset": name, "shape": list(x.shape), "nan_fraction": float(np.isnan(x).mean()),
                       "rel_bound": rel, **case(m, x, filled, mask_bytes, rel * span, 0 if args.quick else 3)}
                rows.append(row)
                print(f"{name:48s} {rel:7.0e} {m.name:26s} ratio {row['ratio']:7.2f}  "
                      f"max err/bound {row['max_abs_error'] / (rel * span):.4f}  "
                      f"{'ok' if row['meets_bound'] else 'MISSES BOUND'}", flush=True)
    print_table(rows, ["dataset", "rel_bound", "method", "ratio", "bits_per_element", "max_abs_error",
                       "psnr", "meets_bound", "encode_MBps", "decode_MBps"])
    if args.quick:
        return 0
    extra: dict[str, Any] = {
        "numba_threads": numba.get_num_threads(),
        "peers_threads": 1,
        "note": "SZ3/ZFP get the NaN cells smoothly filled and pay the zstd-19 packed mask on top",
    }
    curves = rd_curves(fields, sz3, zfp)
    extra["rd_curves"] = curves
    png = RESULTS / "earth_rd.png"
    extra["plot"] = png.name if plot(curves, png) else "matplotlib missing: no plot"
    print(f"wrote {write_results('earth_rd', rows, extra)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
