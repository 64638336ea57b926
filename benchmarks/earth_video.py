"""Rate-distortion of the ``video`` codec (h264, h265, av1 by crf; ffv1 by bits) on the real Earth-system
fields of ``earth_rd.py``, next to ``wavelet``, SZ3, ZFP and bitround+zstd measured in the same run.

    python benchmarks/earth_video.py [--quick]

Every point is one encode of the whole field (time, y, x) with every byte counted (header, NaN mask, video
streams); PSNR has the finite value range as peak, over the finite cells. The 4-D ocean atlas (time, depth,
lat, lon) is given to the video codec as (time × depth) frames. The xarrayvideo paper's ERA5 points (46.58 dB
at 0.1 bits per value, 62.90 dB at 1) are drawn for reference, and each curve is read at 0.1 and 1 bit per value
(log-linear between its points). A last table puts seven COADS variables into one cube of 7 bands, coded with
PCA to 3 components in one yuv444 video, against each variable coded on its own: the xarrayvideo layout.

Writes benchmarks/results/earth_video.json and benchmarks/results/earth_video.png.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from typing import Any

import numba
import numpy as np

import tensorpress as tp
from tensorpress.codecs.video import ffmpeg_exe
from tensorpress.datasets import earth_variable

try:
    from benchmarks.common import RESULTS, print_table, write_results
    from benchmarks.earth_rd import FIELDS, XARRAYVIDEO_ERA5, _max_error, _psnr, _sz3, _zfp, plot, rd_curves
except ImportError:  # run as a script from the benchmarks folder
    from common import RESULTS, print_table, write_results  # type: ignore[no-redef]
    from earth_rd import (  # type: ignore[no-redef]
        FIELDS,
        XARRAYVIDEO_ERA5,
        _max_error,
        _psnr,
        _sz3,
        _zfp,
        plot,
        rd_curves,
    )

#: curve name → (spec template, the values of its knob)
VIDEO_CURVES: dict[str, tuple[str, tuple[int, ...]]] = {
    "video h264 10-bit (crf)": ("video(codec=h264, bits=10, crf={})", (0, 8, 16, 24, 32, 40)),
    "video h265 12-bit (crf)": ("video(codec=h265, bits=12, crf={})", (0, 8, 16, 24, 32, 40)),
    "video av1 10-bit (crf)": ("video(codec=av1, bits=10, crf={})", (8, 20, 32, 44, 56)),
    "video ffv1 (bits)": ("video(codec=ffv1, bits={})", (8, 10, 12, 16)),
}
COADS_BANDS = ("SST", "AIRT", "SPEH", "WSPD", "UWND", "VWND", "SLP")
MB = 1e6


def video_point(curve: str, spec: str, name: str, x: np.ndarray) -> dict[str, Any]:
    frames = x.reshape(-1, *x.shape[-2:]) if x.ndim > 3 else x
    start = time.perf_counter()
    enc = tp.encode(frames, spec)
    t_enc = time.perf_counter() - start
    blob = enc.to_bytes()
    start = time.perf_counter()
    y = tp.decode(blob).reshape(x.shape)
    t_dec = time.perf_counter() - start
    return {"curve": curve, "field": name, "spec": spec, "side": "ours", "bits_per_element": 8 * len(blob) / x.size,
            "psnr": _psnr(x, y), "max_abs_error": _max_error(x, y), "encode_MBps": x.nbytes / t_enc / MB,
            "decode_MBps": x.nbytes / t_dec / MB}


def at_rate(points: list[dict[str, Any]], bpe: float) -> float | None:
    """PSNR of a curve at ``bpe`` bits per value, log-linear between its two nearest points (None outside)."""
    pts = sorted((p["bits_per_element"], p["psnr"]) for p in points if math.isfinite(p["psnr"]))
    for (b0, p0), (b1, p1) in itertools.pairwise(pts):
        if b0 <= bpe <= b1 and b1 > b0:
            return p0 + (p1 - p0) * (math.log(bpe) - math.log(b0)) / (math.log(b1) - math.log(b0))
    return None


def reference_table(curves: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(r["field"] for r in curves):
        for curve in dict.fromkeys(r["curve"] for r in curves):
            pts = [r for r in curves if r["field"] == name and r["curve"] == curve]
            if pts:
                rows.append({"field": name, "curve": curve,
                             "psnr_at_0.1": at_rate(pts, XARRAYVIDEO_ERA5[0][0]),
                             "psnr_at_1": at_rate(pts, XARRAYVIDEO_ERA5[1][0])})
    return rows


def bands_table(crfs: tuple[int, ...]) -> list[dict[str, Any]]:
    """Seven COADS variables: one 7-band cube with pca=3 vs each variable alone, h265 12-bit at each crf."""
    fields = [earth_variable("coads_climatology.cdf", v) for v in COADS_BANDS]
    cube = np.stack(fields, axis=-1)
    rows = []
    for crf in crfs:
        pca = tp.encode(cube, f"video(codec=h265, bits=12, crf={crf}, pca=3)")
        y = tp.decode(pca.to_bytes())
        alone = [tp.encode(f, f"video(codec=h265, bits=12, crf={crf})") for f in fields]
        rows.append({
            "crf": crf,
            "pca3_bits_per_element": pca.bits_per_element,
            "pca3_mean_psnr": float(np.mean([_psnr(f, y[..., i]) for i, f in enumerate(fields)])),
            "separate_bits_per_element": 8 * sum(e.nbytes for e in alone) / cube.size,
            "separate_mean_psnr": float(np.mean([_psnr(f, e.decode()) for f, e in zip(fields, alone, strict=True)])),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two fields, no peers, no plot, no result file")
    args = parser.parse_args(argv)
    numba.set_num_threads(1)
    chosen = FIELDS[:2] if args.quick else FIELDS
    fields = {f"{f}:{v}": earth_variable(f, v) for f, v in chosen}
    curves: list[dict[str, Any]] = []
    for name, x in fields.items():
        for curve, (template, knobs) in VIDEO_CURVES.items():
            for knob in knobs:
                row = video_point(curve, template.format(knob), name, x)
                curves.append(row)
                print(f"{name:44s} {row['spec']:40s} {row['bits_per_element']:7.3f} bpv  {row['psnr']:6.2f} dB  "
                      f"enc {row['encode_MBps']:6.2f} MB/s", flush=True)
    if not args.quick:
        curves += [{**r, "side": "ours" if r["curve"].startswith(("wavelet", "bitround")) else "peer"}
                   for r in rd_curves(fields, _sz3(), _zfp())]
    table = reference_table(curves)
    print_table(table, ["field", "curve", "psnr_at_0.1", "psnr_at_1"])
    bands = bands_table((8, 16, 24, 32) if not args.quick else (16,))
    print_table(bands, list(bands[0]))
    if args.quick:
        return 0
    png = RESULTS / "earth_video.png"
    extra: dict[str, Any] = {
        "ffmpeg": ffmpeg_exe().rsplit("/", 1)[-1],
        "xarrayvideo_era5_reference": [{"bits_per_element": b, "psnr": p} for b, p in XARRAYVIDEO_ERA5],
        "note": "video encoders single-threaded (deterministic output); throughput includes the encoder's own "
                "decode that measures the error it reached; SZ3/ZFP pay the packed NaN mask as in earth_rd",
        "at_reference_rates": table,
        "pca_bands": bands,
        "plot": png.name if plot(curves, png) else "matplotlib missing: no plot",
    }
    print(f"wrote {write_results('earth_video', curves, extra)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
