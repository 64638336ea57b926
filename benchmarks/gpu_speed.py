"""Compressed products on the GPU: the Triton kernels' W · x against dense cuBLAS products on the same W.

    python benchmarks/gpu_speed.py [--size 4096] [--quick] [--out NAME]

W is a real ``size × size`` matrix (SmolLM2-135M's weights where the model is in the data cache, else stacked
scikit-image samples; the JSON says which), x real too (W's entries, shuffled). Each format is encoded on the
CPU; its kernel operands are moved to the GPU once, as a layer keeps them, and ``matvec`` (batch 1) and
``matmul`` (batch 16) run from them. Every result is checked against the NumPy oracle on the same operands
before it is timed.

Peers on the same W and x: torch's dense float16 and float32 products (cuBLAS), the baseline; where this torch
has them, its int4 weight-only kernel (``_weight_int4pack_mm``, the tinygemm kernel behind torchao's int4
weight-only layout, groups of 128) and 2:4 semi-structured sparsity (``to_sparse_semi_structured``).
A peer that does not run here is listed with the reason.

Times are ``triton.testing.do_bench`` medians (the L2 cache is flushed before every call). Effective GB/s =
bytes the product reads (its operands, x and y) / time, next to the device's copy bandwidth measured in the
same run (bytes read and written by a device-to-device copy). Writes ``benchmarks/results/<out>.json``
(default ``gpu_speed``). Needs a CUDA GPU; ``--interpret`` runs a tiny size in Triton's interpreter on the
CPU, to check the script itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

try:
    from benchmarks.common import print_table, real_stack, write_results
except ImportError:  # run as a script from the benchmarks folder
    from common import print_table, real_stack, write_results  # type: ignore[no-redef]

GB = 1e9
SPECS = {
    "q4 g128": "quant(bits=4, group=128)",
    "q4 g32 sym": "quant(bits=4, group=32, symmetric=true)",
    "q8 g128": "quant(bits=8, group=128)",
    "q3 g128": "quant(bits=3, group=128)",
    "q2 g64": "quant(bits=2, group=64)",
    "nm 2:4 (fp16 values)": "nm(n=2, m=4)",
    "nm 2:4 + q8 values": "nm(n=2, m=4, values=quant(bits=8))",
    "bitmap 50%": "bitmap(sparsity=0.5)",
    "block 1x4 75%": "block(shape=(1, 4), sparsity=0.75)",
    "csr 90%": "csr(sparsity=0.9)",
    "lowrank r256": "lowrank(rank=256)",
    "vq d8 2x8 bits": "vq(dim=8, codebook_bits=8, codebooks=2, iters=3)",
}
QUICK = ("q4 g128", "q8 g128", "nm 2:4 (fp16 values)", "lowrank r256")
BATCHES = (1, 16)


def real_weight(size: int) -> tuple[np.ndarray, str]:
    """``size × size`` float32 of real weights (standardized), and where they came from."""
    if size == 4096:
        try:
            from benchmarks.quant_speed import real_matrix
        except ImportError:
            from quant_speed import real_matrix  # type: ignore[no-redef]
        w, source = real_matrix()
        return np.ascontiguousarray(w, np.float32), source
    flat = real_stack(size * size * 4).ravel()[: size * size]
    return np.ascontiguousarray(((flat - flat.mean()) / flat.std()).reshape(size, size), np.float32), \
        "scikit-image samples"


#: which operand of each format's product is a packed bit stream (moved as its bit patterns, as the kernels do)
STREAMS = {"quant": 0, "nm": 1, "bitmap": 0, "vq": 1}


def operands_on(codec_id: str, operands: tuple[Any, ...], dev: str) -> tuple[Any, ...]:
    """Kernel operands as the Triton kernels take them, moved to ``dev`` once: the packed bit stream as its bit
    patterns, everything else as the kernels' own conversion gives it."""
    from tensorpress.kernels.triton._runtime import to_device

    stream = STREAMS.get(codec_id)
    return tuple(to_device(o, dev, bits=i == stream) if isinstance(o, np.ndarray) else o
                 for i, o in enumerate(operands))


class Case:
    """One method at one batch: a callable on device tensors, the bytes it reads, what it is."""

    def __init__(self, method: str, side: str, fn: Callable[[], Any], nbytes: int, bpe: float, spec: str = "",
                 error: float | None = None) -> None:
        self.method, self.side, self.fn, self.nbytes, self.bpe, self.spec = method, side, fn, nbytes, bpe, spec
        self.error = error  # max over outputs of |ours - oracle| / (|W|·|x|), where checked
        self.ms = float("nan")


def ours(w: np.ndarray, x: np.ndarray, labels: tuple[str, ...], dev: str, torch: Any) -> dict[int, list[Case]]:
    """Each format's Triton product at each batch, checked against the oracle on the same operands."""
    import tensorpress as tp
    from tensorpress.kernels import get_kernel
    from tensorpress.kernels.composite import CSRProduct, LowRankProduct, VQProduct, product

    out: dict[int, list[Case]] = {b: [] for b in BATCHES}
    for label in labels:
        spec = SPECS[label]
        t0 = time.perf_counter()
        enc = tp.encode(w, spec)
        prod = product(enc)
        if prod is None:
            raise AssertionError(f"{spec} has no compressed product")
        if isinstance(prod, LowRankProduct):
            fmt, host, padded = "lowrank", (prod.u, prod.v), w.shape[1]
        elif isinstance(prod, CSRProduct):
            fmt, host, padded = "csr", (prod.indptr, prod.indices, prod.values), w.shape[1]
        elif isinstance(prod, VQProduct):
            fmt, host, padded = "vq", (prod.book, prod.packed, prod.scales, prod.bits, prod.per, prod.cols), w.shape[1]
        else:
            fmt, host, padded = prod.codec_id, prod.operands, prod.padded  # type: ignore[attr-defined]
        resident = operands_on(fmt, host, dev)
        magnitude = np.abs(tp.decode(enc).astype(np.float64))  # float32 sums in any order: within 1e-5 of |W|·|x|
        nbytes = sum(o.nbytes for o in host if isinstance(o, np.ndarray))
        print(f"{label}: encoded in {time.perf_counter() - t0:.1f} s, {enc.bits_per_element:.3f} bits/element",
              flush=True)
        for batch in BATCHES:
            op = "matvec" if batch == 1 else "matmul"
            rhs = np.zeros((padded, batch), np.float32)
            rhs[: w.shape[1]] = np.resize(x, (batch, w.shape[1])).T
            rhs = rhs[:, 0].copy() if batch == 1 else rhs
            xd = torch.from_numpy(rhs).to(dev)
            kern = get_kernel(fmt, op, "triton")
            ref = get_kernel(fmt, op, "reference")(*host, rhs)[: w.shape[0]]
            got = kern(*resident, xd)[: w.shape[0]].cpu().numpy()
            terms = magnitude @ np.abs(rhs[: w.shape[1]].astype(np.float64))
            err = float((np.abs(got.astype(np.float64) - ref) / (terms + 1e-30)).max())
            if err > 1e-2:
                raise AssertionError(f"{spec} triton {op} disagrees with the oracle: error {err:.2e} of |W|·|x|")
            if err > 1e-5:  # more than float32 sums in another order give: timed, and reported in the results
                print(f"WARNING {spec} triton {op}: error {err:.2e} of |W|·|x| (float32 order gives <= 1e-5)")
            io = rhs.nbytes + w.shape[0] * batch * 4
            out[batch].append(Case(f"{label} (triton)", "ours", lambda k=kern, r=resident, v=xd: k(*r, v),
                                   nbytes + io, enc.bits_per_element, spec, err))
    return out


def peers(w: np.ndarray, x: np.ndarray, batch: int, dev: str, torch: Any) -> tuple[list[Case], dict[str, str]]:
    """Dense cuBLAS products and torch's quantized/sparse kernels where they run; the reasons where not."""
    rows, cols = w.shape
    xs = np.ascontiguousarray(np.resize(x, (batch, cols)))  # (batch, cols): torch's linear layout
    io16, io32 = xs.size * 2 + rows * batch * 2, xs.size * 4 + rows * batch * 4
    w16 = torch.from_numpy(w).to(dev, torch.float16)
    w32 = torch.from_numpy(w).to(dev)
    x16 = torch.from_numpy(xs).to(dev, torch.float16)
    x32 = torch.from_numpy(xs).to(dev)
    lin = torch.nn.functional.linear
    cases = [Case("dense fp16 (cuBLAS)", "peer", lambda: lin(x16, w16), w16.numel() * 2 + io16, 16.0),
             Case("dense fp32 (cuBLAS)", "peer", lambda: lin(x32, w32), w32.numel() * 4 + io32, 32.0)]
    skipped: dict[str, str] = {}
    dense = lin(x32.double(), w32.double()).cpu().numpy()
    try:
        cases.append(_int4_tinygemm(w, xs, dense, dev, torch, io16))
    except Exception as exc:  # a torch without the kernel, or a layout it rejects: say so
        skipped["torch int4 tinygemm g128"] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        cases.append(_semi_structured(w, xs, dense, dev, torch, io16))
    except Exception as exc:
        skipped["torch 2:4 semi-structured fp16"] = f"{type(exc).__name__}: {exc}"[:300]
    return cases, skipped


def _int4_tinygemm(w: np.ndarray, xs: np.ndarray, dense: np.ndarray, dev: str, torch: Any, io: int) -> Case:
    """torch's int4 weight-only product, groups of 128 along the input axis, asymmetric (as torchao packs it)."""
    rows, cols = w.shape
    group = 128
    wt = torch.from_numpy(w).to(dev).reshape(rows, cols // group, group)
    lo, hi = wt.amin(dim=2, keepdim=True), wt.amax(dim=2, keepdim=True)
    scale = ((hi - lo) / 15).clamp(min=1e-8)
    q = ((wt - lo) / scale).round().clamp(0, 15).to(torch.int32).reshape(rows, cols)
    zero = lo + 8 * scale  # tinygemm dequantizes (q - 8) · scale + zero
    sz = torch.stack([scale.squeeze(2), zero.squeeze(2)], dim=2).transpose(0, 1).contiguous().to(torch.bfloat16)
    xb = torch.from_numpy(xs).to(dev, torch.bfloat16)
    errors = []
    for first, second in ((0, 1), (1, 0)):  # which of two neighbours takes the high nibble differs by version
        packed = torch.ops.aten._convert_weight_to_int4pack(
            (q[:, first::2] << 4 | q[:, second::2]).to(torch.uint8).contiguous(), 8)

        def run(p: Any = packed) -> Any:
            return torch.ops.aten._weight_int4pack_mm(xb, p, group, sz)

        got = run().float().cpu().numpy()
        errors.append(float(np.abs(got - dense).max() / np.abs(dense).max()))
        if errors[-1] < 0.2:
            break
    else:
        raise AssertionError(f"the int4 product is off by {min(errors):.2f} of max |y| in both nibble orders")
    err = errors[-1]
    nbytes = rows * cols // 2 + sz.numel() * 2 + io
    return Case("torch int4 tinygemm g128", "peer", run, nbytes, 4.0 + 32 / group, "", err)


def _semi_structured(w: np.ndarray, xs: np.ndarray, dense: np.ndarray, dev: str, torch: Any, io: int) -> Case:
    """torch's 2:4 semi-structured fp16 product on W pruned to the two largest of every four."""
    from torch.sparse import to_sparse_semi_structured

    wt = torch.from_numpy(w).to(dev, torch.float16)
    r, c = wt.shape
    blocks = wt.reshape(r, c // 4, 4)
    keep = blocks.abs().argsort(dim=2, descending=True)[:, :, :2]
    mask = torch.zeros_like(blocks, dtype=torch.bool).scatter_(2, keep, True)
    pruned = (blocks * mask).reshape(r, c)
    sparse = to_sparse_semi_structured(pruned)
    x16 = torch.from_numpy(xs).to(dev, torch.float16)
    pad = max(0, 8 - x16.shape[0])  # the sparse kernels want at least 8 rows of x
    xp = torch.cat([x16, torch.zeros(pad, c, dtype=x16.dtype, device=dev)]) if pad else x16

    def run() -> Any:
        return torch.mm(sparse, xp.t())

    want = pruned.double() @ x16.double().t()
    got = run()[:, : x16.shape[0]]
    err = float((got.double() - want).abs().max() / want.abs().max())
    if err > 1e-2:
        raise AssertionError(f"the 2:4 product is off by {err:.2e} of max |y|")
    nbytes = r * c + r * c // 8 + xp.numel() * 2 + r * xp.shape[0] * 2  # half the values, 2-bit indices per kept
    return Case("torch 2:4 semi-structured fp16", "peer", run, nbytes, 8.0 + 2.0, "", err)


def copy_bandwidth(dev: str, torch: Any, bench: Callable[..., float]) -> float:
    """Device-to-device copy of 1 GiB: bytes read and written per second, in GB/s."""
    src = torch.empty(1 << 28, dtype=torch.float32, device=dev).uniform_()
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / (ms * 1e-3) / GB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--interpret", action="store_true",
                        help="a 256 × 256 run in Triton's interpreter on the CPU (checks the script; no timings)")
    parser.add_argument("--out", default="gpu_speed")
    args = parser.parse_args()
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    if args.interpret:
        dev, size = "cpu", 256

        def bench(fn: Callable[[], Any]) -> float:
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
    else:
        if not torch.cuda.is_available():
            sys.exit("gpu_speed: no CUDA GPU here (run with --interpret to check the script on the CPU)")
        import triton.testing

        dev, size = "cuda", args.size

        def bench(fn: Callable[[], Any]) -> float:
            return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))

    w, source = real_weight(size)
    if args.interpret:
        w = np.ascontiguousarray(w[:size, :size])
    x = np.ascontiguousarray(np.random.default_rng(0).permutation(w[:8].ravel())[:size], np.float32)
    copy_gbps = copy_bandwidth(dev, torch, bench) if dev == "cuda" else float("nan")
    gpu = torch.cuda.get_device_name() if dev == "cuda" else "Triton interpreter (CPU)"
    print(f"{gpu}: copy bandwidth {copy_gbps:.0f} GB/s; weights: {source}", flush=True)
    labels = QUICK if args.quick else tuple(SPECS)
    mine = ours(w, x, labels, dev, torch)
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for batch in BATCHES:
        theirs, why = peers(w, x, batch, dev, torch)
        skipped.update({f"{k} (batch {batch})": v for k, v in why.items()})
        group = theirs + mine[batch]
        for case in group:
            case.ms = bench(case.fn)
        fp16 = group[0].ms
        rows += [{"shape": f"{size}x{size}", "batch": batch, "method": c.method, "side": c.side, "spec": c.spec,
                  "bits_per_element": round(c.bpe, 3), "ms": c.ms, "speedup_vs_dense_fp16": fp16 / c.ms,
                  "gb_per_s": c.nbytes / (c.ms * 1e-3) / GB,
                  "of_copy_bandwidth": c.nbytes / (c.ms * 1e-3) / GB / copy_gbps,
                  "max_error_vs_oracle": c.error} for c in group]
    print_table(rows, ["batch", "method", "side", "bits_per_element", "ms", "speedup_vs_dense_fp16", "gb_per_s",
                       "of_copy_bandwidth"])
    for name, reason in skipped.items():
        print(f"peer not run: {name}: {reason}")
    if args.interpret:
        print("interpreter run: nothing written")
        return
    path = write_results(args.out, rows, {
        "gpu": gpu, "torch": torch.__version__, "triton": __import__("triton").__version__,
        "copy_bandwidth_gb_per_s": copy_gbps, "weights": source, "shape": [size, size],
        "peers_not_run": skipped,
        "notes": "x and y float32 for ours (fp16/bf16 for the torch peers); operands moved to the GPU once; "
                 "times are do_bench medians with the L2 flushed before each call; ours' errors are max over "
                 "outputs of |y - oracle| / (|W|·|x|); the peers' are max |y - dense fp64| / max |dense fp64|",
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
