"""Foundation speed: quant decode vs memory bandwidth, blob/container overhead, zstd/blosc vs the libraries.

    python benchmarks/core_speed.py [--mb 64] [--processes 5] [--rounds 30]

Prints ours next to the reference (np.copyto, the bare codec, the library called directly) on the same
real-data buffer in the same run, and writes benchmarks/results/core_speed.json. Numbers are ratios to
read, not assertions. The quant decode paths are timed in rounds that run every path once, in a random
order; each path's overhead is the median over rounds of its time over the bare codec's in the same round,
pooled over several fresh processes (their memory layouts differ), with a bootstrap interval over processes
and rounds.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
import zstandard

import tensorpress as tp
from tensorpress.core import metrics
from tensorpress.core.encoded import Encoded
from tensorpress.kernels import get_kernel

try:
    from benchmarks import common as bench
except ImportError:  # run as a script from the benchmarks folder
    import common as bench  # type: ignore[no-redef]

GB = 1e9


def bandwidth(x: np.ndarray) -> dict[str, Any]:
    dst = np.empty_like(x)
    t_pre = bench.best_time(lambda: np.copyto(dst, x))
    t_new = bench.best_time(lambda: np.copyto(np.empty_like(x), x))
    return {"method": "np.copyto (preallocated)", "side": "reference", "seconds": t_pre,
            "gb_per_s": x.nbytes / t_pre / GB, "note": f"into a fresh array: {x.nbytes / t_new / GB:.2f} GB/s"}


QUANT_SPECS = ("quant(bits=4, group=128)", "quant(bits=8, group=128)", "quant(bits=3, group=64)",
               "quant(bits=4, group=32, symmetric=true)")
QUANT_PATHS = (("numba kernel", "kernel"), ("codec.decode", "codec"), ("codec.decode again", "codec again"),
               ("blob → decode", "blob"), ("container read", "container"), ("zarr array [...]", "zarr"))
# The overheads are a few percent. Within one process, interleaved rounds pin them down to about a percent, but
# two processes differ by more than that (where the buffers landed in memory, what else the machine ran), so
# the rounds of several processes are pooled.
QUANT_PROCESSES = 5
QUANT_ROUNDS = 30  # per process
# The lossless calls take 0.1-0.8 s each. At 9 rounds, one run read our blosc decode at 1.125 of the library's
# time where 15 rounds of the same calls in another process read 0.875, so the medians are taken over more.
LOSSLESS_ROUNDS = 15


def quant_measure(spec: str, x: np.ndarray, workdir: Path, rounds: int, seed: int) -> dict[str, Any]:
    """One process's interleaved rounds of every decode path of ``spec`` on ``x``, and the codec's quality."""
    codec = tp.spec(spec)
    enc = codec.encode(x)
    blob = bench.on_huge_pages(np.frombuffer(enc.to_bytes(), np.uint8))
    # the bare codec reads its parts from huge pages, as the container read does from the chunk file's pages
    enc = Encoded(enc.codec, enc.shape, enc.dtype, {k: bench.on_huge_pages(v) for k, v in enc.parts.items()},
                  enc.meta)
    y = codec.decode(enc)
    g = codec.group
    # the kernel the codec runs, on the stored parts: no blob, no checks, no parameter or shape handling
    kernel = get_kernel("quant", "decode_stored", "numba")
    zero = 1 << (codec.bits - 1)
    path = workdir / f"q{codec.bits}_{g}.zarr"
    tp.save(path, {"w": enc}, progress=False)
    container = tp.open(path)
    # each path's time is read against the bare codec's in the same round. The bare codec runs twice per round
    # and their mean is the base; the two against each other ("codec.decode again") show how far an identical
    # call strays here, the floor under which an overhead cannot be told from noise.
    times = bench.interleaved_times({
        "kernel": lambda: kernel(enc.parts["codes"], enc.parts["scales"], enc.parts.get("mins"), zero, codec.bits,
                                 x.shape[1], g),
        "codec": lambda: codec.decode(enc),
        "codec again": lambda: codec.decode(enc),
        "blob": lambda: Encoded.from_bytes(blob).decode(),
        "container": lambda: container.read("w"),
        "zarr": lambda: container["w"][...],
    }, rounds=rounds, seed=seed)
    container.close()
    return {"times": times, "quality": {"max_abs_error": metrics.max_abs_error(x, y), "rmse": metrics.rmse(x, y),
                                        "bits_per_element": enc.bits_per_element}}


def quant_worker(out: Path, mb: int, rounds: int, seed: int) -> None:
    x = bench.real_stack(mb << 20)
    with tempfile.TemporaryDirectory() as tmp:
        doc = {spec: quant_measure(spec, x, Path(tmp), rounds, seed) for spec in QUANT_SPECS}
    out.write_text(json.dumps(doc))


def quant_rows(mb: int, out_bytes: int, copy_gbps: float, processes: int, rounds: int) -> list[dict[str, Any]]:
    """Rows of the pooled rounds of ``processes`` fresh processes, each decoding its own ``mb`` MB buffer."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(processes):
            out = Path(tmp) / f"quant{p}.json"
            subprocess.run([sys.executable, __file__, "--quant-worker", str(out), "--mb", str(mb), "--rounds",
                            str(rounds), "--seed", str(p)], check=True)
            runs.append(json.loads(out.read_text()))
            print(f"quant: process {p + 1} of {processes} measured", flush=True)
    rows = []
    base = ("codec", "codec again")
    for spec in QUANT_SPECS:
        per_run = [run[spec]["times"] for run in runs]
        times = {k: [t for run in per_run for t in run[k]] for k in per_run[0]}
        groups = np.repeat(np.arange(len(per_run)), [len(run["codec"]) for run in per_run])
        t = {name: min(ts) for name, ts in times.items()}
        t_codec = min(t["codec"], t["codec again"])
        for what, key in QUANT_PATHS:
            against = "codec" if key == "codec again" else base  # the identical call is read against the first
            lo, hi = bench.paired_interval(times, key, against, groups=groups)
            rows.append({"method": f"{spec} {what}", "side": "ours", "seconds": t[key],
                         "gb_per_s": out_bytes / t[key] / GB, "vs_copyto": out_bytes / t[key] / GB / copy_gbps,
                         "overhead_vs_codec": bench.paired_overhead(times, against)[key],
                         "overhead_ci95_low": lo, "overhead_ci95_high": hi,
                         "overhead_per_process": [round(bench.paired_overhead(run, against)[key], 5)
                                                  for run in per_run],
                         "overhead_vs_codec_of_best": t[key] / t_codec - 1, **runs[0][spec]["quality"]})
    return rows


def lossless_rows(x: np.ndarray) -> list[dict[str, Any]]:
    raw = x.tobytes()
    # each case: spec, the library's compress, its decompress as usually called (a new bytes object), and its
    # decompress into a NumPy buffer where the library has that (None: it has not)
    cases = [
        ("zstd(level=3)",
         lambda: zstandard.ZstdCompressor(level=3).compress(raw),
         lambda c: np.frombuffer(zstandard.ZstdDecompressor().decompress(c), np.float32),
         None),
        ("blosc(cname=zstd, clevel=5, shuffle=byte)",
         lambda: blosc2.compress2(raw, codec=blosc2.Codec.ZSTD, clevel=5, filters=[blosc2.Filter.SHUFFLE],
                                  typesize=4),
         lambda c: np.frombuffer(blosc2.decompress2(c), np.float32),
         lambda c: blosc2.decompress2(c, dst=np.empty(x.shape, np.float32))),
        ("blosc(cname=lz4, clevel=5, shuffle=byte)",
         lambda: blosc2.compress2(raw, codec=blosc2.Codec.LZ4, clevel=5, filters=[blosc2.Filter.SHUFFLE],
                                  typesize=4),
         lambda c: np.frombuffer(blosc2.decompress2(c), np.float32),
         lambda c: blosc2.decompress2(c, dst=np.empty(x.shape, np.float32))),
    ]
    return [row for case in cases for row in lossless_case(x, *case)]


def lossless_case(x: np.ndarray, spec: str, lib_encode: Any, lib_decode: Any, lib_decode_into: Any) -> list[
        dict[str, Any]]:
    codec = tp.spec(spec)
    lib_blob = lib_encode()
    ours_blob = codec.encode(x).to_bytes()
    assert np.array_equal(tp.decode(ours_blob), x) and np.array_equal(lib_decode(lib_blob), x.ravel())
    assert np.array_equal(tp.decode(codec.encode(x).to_buffer()), x)  # blosc2 output varies run to run
    view = memoryview(x.reshape(-1).view(np.uint8))
    # ``to_buffer`` is the blob containers and the zarr codec write; ``to_bytes`` makes a Python bytes object,
    # whose fresh memory the kernel hands out 4 KiB page by page (NumPy's buffer gets huge pages).
    # ``compress call`` is our codec's compressor alone, no blob: what the blob itself costs on top of it.
    fns = {
        "encode library": lib_encode,
        "encode ours to_buffer": lambda: codec.encode(x).to_buffer(),
        "encode ours to_bytes": lambda: codec.encode(x).to_bytes(),
        "compress call": lambda: codec.compress(view, 4),
        "decode library": lambda: lib_decode(lib_blob),
        "decode ours": lambda: tp.decode(ours_blob),
    }
    if lib_decode_into is not None:
        fns["decode library into buffer"] = lambda: lib_decode_into(lib_blob)
    times = bench.interleaved_times(fns, rounds=LOSSLESS_ROUNDS)
    paired_enc = bench.paired_overhead(times, "encode library")
    paired_dec = bench.paired_overhead(times, "decode library")
    paired_call = bench.paired_overhead(times, "compress call")
    paired_into = bench.paired_overhead(times, "decode library into buffer") if lib_decode_into is not None else None
    rows = []
    for side, blob_len, enc_key, dec_key in (
        ("library", len(lib_blob), "encode library", "decode library"),
        ("ours", len(ours_blob), "encode ours to_buffer", "decode ours"),
        ("ours (to_bytes)", len(ours_blob), "encode ours to_bytes", "decode ours"),
    ):
        te, td = min(times[enc_key]), min(times[dec_key])
        row = {"method": spec, "side": side, "ratio": x.nbytes / blob_len,
               "bits_per_element": 8 * blob_len / x.size,
               "encode_gb_per_s": x.nbytes / te / GB, "decode_gb_per_s": x.nbytes / td / GB,
               "encode_time_vs_library": 1 + paired_enc[enc_key],
               "decode_time_vs_library": 1 + paired_dec[dec_key]}
        if side != "library":
            row["encode_time_vs_own_compress_call"] = 1 + paired_call[enc_key]
        if paired_into is not None:
            row["decode_time_vs_library_into_buffer"] = 1 + paired_into[dec_key]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64, help="buffer size in MB (>= 64 keeps caches honest)")
    parser.add_argument("--processes", type=int, default=QUANT_PROCESSES,
                        help="processes whose quant rounds are pooled")
    parser.add_argument("--rounds", type=int, default=QUANT_ROUNDS, help="quant rounds per process")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--quant-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quant_worker:
        quant_worker(args.quant_worker, args.mb, args.rounds, args.seed)
        return
    x = bench.real_stack(args.mb << 20)
    print(f"buffer: {x.shape} float32, {x.nbytes / 2**20:.0f} MiB of stacked real images and measurements")
    bw = bandwidth(x)
    print(f"np.copyto: {bw['gb_per_s']:.2f} GB/s ({bw['note']})")
    qrows = quant_rows(args.mb, x.nbytes, bw["gb_per_s"], args.processes, args.rounds)
    bench.print_table(qrows, ["method", "gb_per_s", "vs_copyto", "overhead_vs_codec", "overhead_ci95_low",
                              "overhead_ci95_high", "overhead_vs_codec_of_best", "bits_per_element", "max_abs_error"])
    lrows = lossless_rows(x)
    bench.print_table(lrows, ["method", "side", "ratio", "encode_gb_per_s", "decode_gb_per_s",
                              "encode_time_vs_library", "decode_time_vs_library", "decode_time_vs_library_into_buffer",
                              "encode_time_vs_own_compress_call"])
    kernel_vs_copy = [r["vs_copyto"] for r in qrows if r["method"].endswith("numba kernel")]
    containers = [r for r in qrows if r["method"].endswith("container read")]
    repeats = [r for r in qrows if r["method"].endswith("codec.decode again")]
    ours = [r for r in lrows if r["side"] == "ours"]
    as_bytes = [r for r in lrows if r["side"] == "ours (to_bytes)"]
    summary = {
        "quant_numba_decode_vs_copyto_min": min(kernel_vs_copy),
        "container_overhead_vs_codec_max": max(r["overhead_vs_codec"] for r in containers),
        "container_overhead_ci95_high_max": max(r["overhead_ci95_high"] for r in containers),
        "container_overhead_single_process_max": max(max(r["overhead_per_process"]) for r in containers),
        "quant_processes": args.processes,
        "quant_rounds_per_process": args.rounds,
        "identical_call_overhead_abs_max": max(abs(r["overhead_vs_codec"]) for r in repeats),
        "lossless_encode_time_vs_library_max": max(r["encode_time_vs_library"] for r in ours),
        "lossless_decode_time_vs_library_max": max(r["decode_time_vs_library"] for r in ours),
        "lossless_encode_to_bytes_time_vs_library_max": max(r["encode_time_vs_library"] for r in as_bytes),
        "lossless_decode_time_vs_library_into_buffer_max": max(r.get("decode_time_vs_library_into_buffer", 0.0)
                                                                 for r in ours),
        "lossless_encode_time_vs_own_compress_call_max": max(r["encode_time_vs_own_compress_call"] for r in ours),
        "buffer_mib": x.nbytes / 2**20,
    }
    print({k: round(v, 4) if isinstance(v, float) and math.isfinite(v) else v for k, v in summary.items()})
    path = bench.write_results("core_speed", [bw, *qrows, *lrows], {"summary": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
