"""Quantized compute speed: W · x straight from ``quant``'s packed codes against dense fp32 products.

    python benchmarks/quant_speed.py [--threads 2,1] [--rounds 5] [--quick]

W is a real 4096×4096 matrix: SmolLM2-135M's projections (dequantized from its GGUF) in layer order; without
the model, stacked scikit-image samples stand in (the JSON says which). x is real too (the model's
weights, shuffled). Encoded with ``quant`` at 2, 3, 4 and 8 bits (asymmetric, fp16 scale and minimum per
group; 4-bit also symmetric groups of 32, the Q4_0 layout); batch 1 (``matvec``) and 16 (``matmul``). Composite
formats (low-rank, outliers, compensated, gear) are timed at batch 1 on the 1536×576 corner of the same
matrix (SmolLM2's MLP shape), each as the sum of its parts' products (:mod:`tensorpress.kernels.composite`).
Peers on the same W and x, same thread count: NumPy/BLAS float32 ``W @ x`` (the baseline), torch float32
``linear``, and torch's dynamic int8 ``Linear`` (weights int8 per channel, activations quantized per call).
numba's threads = the BLAS pool's = torch's, for each count in ``--threads`` (default: all cores, then 1).
Every method is timed in each of ``--rounds`` interleaved rounds and the best run counts, so a burst of
other work on the machine hits them alike; the load average is recorded before and after. Effective GB/s =
bytes the product reads (codes, fp32 scales and offsets; x and y) / time, next to the machine's copy
bandwidth (np.copyto, same run). Writes benchmarks/results/quant_speed.json.
"""

from __future__ import annotations

import argparse
import os
import sys

try:  # first: it fixes the thread pools before NumPy and numba start them
    from benchmarks.threads import THREADS
except ImportError:  # run as a script from the benchmarks folder
    from threads import THREADS  # type: ignore[no-redef]

import warnings
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

import tensorpress as tp
from tensorpress.kernels import get_kernel

try:
    from benchmarks.common import best_time, copy_bandwidth, print_table, real_stack, write_results
except ImportError:  # run as a script from the benchmarks folder
    from common import best_time, copy_bandwidth, print_table, real_stack, write_results  # type: ignore[no-redef]

GB = 1e9
SIZE = 4096
SPECS = {
    "q4 g128": "quant(bits=4, group=128)",
    "q4 g32 sym": "quant(bits=4, group=32, symmetric=true)",
    "q2 g64": "quant(bits=2, group=64)",
    "q3 g128": "quant(bits=3, group=128)",
    "q8 g128": "quant(bits=8, group=128)",
}
MUST = ("q4 g128", 2.0)  # 4-bit g128 matvec at batch 1 on 4096²: at least 2x dense fp32
#: composite formats, multiplied as the sum of their parts' products (kernels.composite), on a model-shaped matrix
COMPOSITES = {
    "lowrank r64": "lowrank(rank=64)",
    "q3 g128 + 1% outliers": "outliers(base=quant(bits=3, group=128), fraction=0.01)",
    "q3 g128 + rank 32 (compensated)": "compensated(base=quant(bits=3, group=128), rank=32)",
    "q4 g64 + rank 4 + 1% outliers (gear)": "gear(base=quant(bits=4, group=64), rank=4, outliers=0.01)",
}


def real_matrix() -> tuple[np.ndarray, str]:
    """4096² float32 of SmolLM2's weights in layer order, or of stacked scikit-image samples."""
    try:
        import gguf

        from tensorpress.datasets import smollm2_gguf

        reader = gguf.GGUFReader(str(smollm2_gguf()))
    except Exception as exc:  # the model or the gguf package is missing: say so and use the stand-in
        print(f"SmolLM2 weights unavailable ({exc!r}); stacking scikit-image samples instead", file=sys.stderr)
        flat = real_stack(SIZE * SIZE * 4).ravel()
        return ((flat - flat.mean()) / flat.std())[: SIZE * SIZE].reshape(SIZE, SIZE), "scikit-image samples"
    tensors = {t.name: t for t in reader.tensors}
    pieces, total, layer = [], 0, 0
    while total < SIZE * SIZE:
        for part in ("ffn_up", "ffn_gate", "ffn_down", "attn_q", "attn_output"):
            t = tensors[f"blk.{layer}.{part}.weight"]
            w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).ravel()
            pieces.append(w)
            total += w.size
        layer += 1
    flat = np.concatenate(pieces)[: SIZE * SIZE]
    return flat.reshape(SIZE, SIZE), f"SmolLM2-135M-Instruct weights (Q4_1 GGUF dequantized), layers 0-{layer - 1}"


class Case:
    """One method at one batch: a callable, the bytes it reads, what it is."""

    def __init__(self, method: str, side: str, fn: Callable[[], Any], nbytes: int, bpe: float, spec: str = "") -> None:
        self.method, self.side, self.fn, self.nbytes, self.bpe, self.spec = method, side, fn, nbytes, bpe, spec
        self.seconds = float("inf")


def torch_cases(w: np.ndarray, rhs: np.ndarray, io: int) -> list[Case]:
    try:
        import torch
    except ImportError:
        return []
    batch = 1 if rhs.ndim == 1 else rhs.shape[1]
    wt = torch.from_numpy(np.ascontiguousarray(w))
    xt = torch.from_numpy(np.ascontiguousarray(rhs.reshape(w.shape[1], batch).T))
    linear = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(wt)
    out = [Case("torch fp32 linear", "peer", lambda: torch.nn.functional.linear(xt, wt), w.nbytes + io, 32.0)]
    with warnings.catch_warnings():
        # torch.ao's dynamic quantization is deprecated in favour of torchao, but still works and ships with torch
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        qlinear = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear},
                                                         dtype=torch.qint8)
    nbytes = w.size + 8 * w.shape[0]  # int8 weights, a scale and zero point per output channel

    def int8() -> Any:
        with torch.no_grad():
            return qlinear(xt)

    out.append(Case("torch int8 dynamic linear", "peer", int8, nbytes + io, 8.0 * nbytes / w.size))
    return out


def cases(w: np.ndarray, x: np.ndarray, batch: int) -> list[Case]:
    rows, cols = w.shape
    rhs = x if batch == 1 else np.ascontiguousarray(np.resize(x, (batch, cols)).T)
    io = rhs.nbytes + rows * batch * 4
    out = [Case("dense fp32 (NumPy/BLAS)", "peer", lambda: w @ rhs, w.nbytes + io, 32.0)]
    out += torch_cases(w, rhs, io)
    op = "matvec" if batch == 1 else "matmul"
    for label, spec in SPECS.items():
        enc = tp.encode(w, spec)
        prepared = enc.codec.prepare(enc)  # type: ignore[attr-defined]  # quant has it
        kern = get_kernel("quant", op, "numba")
        ref = get_kernel("quant", op, "reference")(*prepared.operands, rhs)
        got = kern(*prepared.operands, rhs)
        if not np.allclose(got, ref, rtol=1e-4, atol=1e-3 * float(np.abs(ref).max())):
            raise AssertionError(f"{spec} numba {op} disagrees with the reference")
        out.append(Case(f"{label} (numba)", "ours", lambda k=kern, p=prepared: k(*p.operands, rhs),
                        prepared.nbytes + io, enc.bits_per_element, spec))
    return out


def composite_cases(w: np.ndarray, x: np.ndarray) -> list[Case]:
    """Batch 1 on a (rows, cols) matrix: dense fp32, and each composite as the sum of its parts' products."""
    from tensorpress.kernels.composite import product

    io = x.nbytes + w.shape[0] * 4
    out = [Case("dense fp32 (NumPy/BLAS)", "peer", lambda: w @ x, w.nbytes + io, 32.0)]
    for label, spec in COMPOSITES.items():
        enc = tp.encode(w, spec)
        prod = product(enc)
        if prod is None:
            raise AssertionError(f"{spec} has no compressed product")
        dense = tp.decode(enc).astype(np.float64) @ x
        if not np.allclose(prod(x), dense, rtol=1e-3, atol=1e-3 * float(np.abs(dense).max())):
            raise AssertionError(f"{spec}: the sum of the parts' products disagrees with the decoded product")
        out.append(Case(f"{label} (numba, sum of parts)", "ours", lambda p=prod: p(x), prod.nbytes + io,
                        enc.bits_per_element, spec))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default=",".join(map(str, THREADS)),
                        help="comma-separated thread counts for numba, BLAS and torch alike (default: all cores, 1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="batch 1 only")
    args = parser.parse_args()
    import threadpoolctl

    w, source = real_matrix()
    w = np.ascontiguousarray(w, dtype=np.float32)
    x = np.ascontiguousarray(np.random.default_rng(0).permutation(w[:64].ravel())[:SIZE] * 10, dtype=np.float32)
    copy_gbps = copy_bandwidth()
    print(f"copy bandwidth {copy_gbps:.1f} GB/s; weights: {source}")
    groups = [(batch, cases(w, x, batch)) for batch in ((1,) if args.quick else (1, 16))]
    model = np.ascontiguousarray(w[:1536, :576])  # SmolLM2's MLP shape (up_proj), real weights
    small = composite_cases(model, np.ascontiguousarray(x[:576]))
    rows_out: list[dict[str, Any]] = []
    loads: dict[str, Any] = {}
    for threads in THREADS:
        numba.set_num_threads(threads)
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
        with threadpoolctl.threadpool_limits(threads):
            before = os.getloadavg()
            for batch, group in groups:
                for case in group:
                    case.seconds = float("inf")
                for _ in range(args.rounds):
                    for case in group:
                        case.seconds = min(case.seconds, best_time(case.fn, repeat=10 if batch == 1 else 4))
                rows_out += _rows(group, batch, copy_gbps, threads)
            for case in small:
                case.seconds = float("inf")
            for _ in range(args.rounds):
                for case in small:
                    case.seconds = min(case.seconds, best_time(case.fn, repeat=20))
            rows_out += _rows(small, 1, copy_gbps, threads, "1536x576")
            loads[str(threads)] = {"before": before, "after": os.getloadavg()}
        print(f"threads {threads}: load average {loads[str(threads)]}")
    print_table(rows_out, ["threads", "shape", "batch", "method", "side", "bits_per_element", "ms", "speedup_vs_dense",
                           "gb_per_s", "of_copy_bandwidth"])
    label, need = MUST
    musts = {}
    for threads in THREADS:
        row = next(r for r in rows_out if r["threads"] == threads and r["batch"] == 1 and r["shape"] == f"{SIZE}x{SIZE}"
                   and r["method"].startswith(label))
        met = row["speedup_vs_dense"] >= need
        musts[f"{label} batch 1 @ {threads} threads"] = {"speedup": row["speedup_vs_dense"], "must": need, "met": met}
        print(f"{threads} threads, {label} batch 1: {row['speedup_vs_dense']:.2f}x dense fp32 (must >= {need}x): "
              f"{'met' if met else 'MISSED'}")
    path = write_results("quant_speed", rows_out, {
        "threads": THREADS, "load_average": loads, "copy_bandwidth_gb_per_s": copy_gbps, "weights": source,
        "shape": [SIZE, SIZE], "musts_4096_batch1": musts,
        "notes": "x and y float32; kernel operands prepared once (as a layer keeps them: codes, fp32 scales and "
                 "offsets); each time is the best of rounds x repeats, methods interleaved in every round",
    })
    print(f"wrote {path}")


def _rows(group: list[Case], batch: int, copy_gbps: float, threads: int,
          shape: str = f"{SIZE}x{SIZE}") -> list[dict[str, Any]]:
    dense = group[0].seconds
    return [{"threads": threads, "shape": shape, "batch": batch, "method": c.method, "side": c.side,
             "spec": c.spec, "bits_per_element": round(c.bpe, 3), "seconds": c.seconds, "ms": c.seconds * 1e3,
             "speedup_vs_dense": dense / c.seconds, "gb_per_s": c.nbytes / c.seconds / GB,
             "of_copy_bandwidth": c.nbytes / c.seconds / GB / copy_gbps} for c in group]


if __name__ == "__main__":
    main()
