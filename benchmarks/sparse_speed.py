"""Sparse compute speed: W · x on compressed weights (2:4, bitmap-70%, block 1×4 at 75%) against dense BLAS.

    python benchmarks/sparse_speed.py [--threads 2,1] [--rounds 5] [--quick]

Weights are real: SmolLM2-135M's projections (dequantized from its GGUF) at their own shapes (576×576,
1536×576, 576×1536) — one layer's matrix again and again (it stays in the cache), and every layer's in turn
(as a forward pass reads them: from memory) — and a 4096×4096 matrix filled with the model's weights in
order. Without the model, stacked scikit-image samples stand in (the JSON says which). Kept values are
float16, x and y float32.
Ours and the dense baseline (NumPy/BLAS float32 ``W @ x``) run with the same thread count: numba's threads
= the BLAS pool's (set before NumPy loads, limited per run with threadpoolctl), for each count in
``--threads`` (default: all cores, then 1). scipy's CSR (float32) is a
reference point. Every method is timed in each of ``--rounds`` interleaved rounds (the best run counts), so
a burst of other work on the machine hits them alike. Effective GB/s = bytes the product reads (the
compressed operands, x and y) / time, next to the machine's copy bandwidth (np.copyto, same run).
Writes benchmarks/results/sparse_speed.json. Numbers are ratios to read, not assertions.
"""

from __future__ import annotations

import argparse
import sys

try:  # first: it fixes the thread pools before NumPy and numba start them
    from benchmarks.threads import THREADS
except ImportError:  # run as a script from the benchmarks folder
    from threads import THREADS  # type: ignore[no-redef]

from typing import Any

import numba
import numpy as np

import tensorpress as tp
from tensorpress.formats.csr import CSRSparse
from tensorpress.formats.topk import TopK
from tensorpress.kernels import get_kernel

try:
    from benchmarks.common import best_time, copy_bandwidth, print_table, real_stack, write_results
except ImportError:  # run as a script from the benchmarks folder
    from common import best_time, copy_bandwidth, print_table, real_stack, write_results  # type: ignore[no-redef]

GB = 1e9
SPECS = {
    "2:4": "nm(n=2, m=4)",
    "bitmap-70%": "bitmap(sparsity=0.7)",
    "block-1x4-75%": "block(shape=(1, 4), sparsity=0.75)",
}
MUSTS = {"2:4": 1.3, "bitmap-70%": 1.5, "block-1x4-75%": 2.0}  # speed-up over dense at batch 1, 4096²


MODEL_SHAPES = {"576x576": "attn_q", "1536x576": "ffn_up", "576x1536": "ffn_down"}
LAYERS = 30  # SmolLM2-135M's decoder layers


def llm_matrices() -> tuple[dict[str, list[np.ndarray]], str]:
    """Real weights: for each model shape its projection in every layer (SmolLM2's attn_q, ffn_up, ffn_down),
    and a 4096² matrix of the model's weights in order; or, without the model, scikit-image data."""
    try:
        import gguf

        from tensorpress.datasets import smollm2_gguf

        reader = gguf.GGUFReader(str(smollm2_gguf()))
    except Exception as exc:  # the model or the gguf package is missing: say so and use the stand-in
        print(f"SmolLM2 weights unavailable ({exc!r}); stacking scikit-image samples instead", file=sys.stderr)
        flat = real_stack(4096 * 4096 * 4).ravel()
        flat = (flat - flat.mean()) / flat.std()
        mats = {"4096x4096": [flat[: 4096 * 4096].reshape(4096, 4096)]}
        for name in MODEL_SHAPES:
            rows, cols = map(int, name.split("x"))
            mats[name] = [np.roll(flat, 7919 * i)[: rows * cols].reshape(rows, cols) for i in range(LAYERS)]
        return mats, "scikit-image samples (stacked)"

    def weight(name: str) -> np.ndarray:
        t = next(t for t in reader.tensors if t.name == name)
        return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)

    mats = {name: [weight(f"blk.{i}.{part}.weight") for i in range(LAYERS)] for name, part in MODEL_SHAPES.items()}
    pieces, total, layer = [], 0, 0
    while total < 4096 * 4096:
        for part in ("ffn_up", "ffn_gate", "ffn_down", "attn_q", "attn_output"):
            w = weight(f"blk.{layer}.{part}.weight").ravel()
            pieces.append(w)
            total += w.size
        layer += 1
    mats["4096x4096"] = [np.concatenate(pieces)[: 4096 * 4096].reshape(4096, 4096)]
    return mats, f"SmolLM2-135M-Instruct weights (Q4_1 GGUF dequantized; 4096² = layers 0-{layer - 1} in order)"


class Case:
    """One method on one matrix: a callable, the bytes it reads, what it is."""

    def __init__(self, method: str, side: str, fn: Any, nbytes: int, bpe: float, spec: str = "") -> None:
        self.method, self.side, self.fn, self.nbytes, self.bpe, self.spec = method, side, fn, nbytes, bpe, spec
        self.seconds = float("inf")


def cases(name: str, w: np.ndarray, x: np.ndarray, batch: int) -> list[Case]:
    rows, cols = w.shape
    w32 = np.ascontiguousarray(w, dtype=np.float32)
    w16 = w32.astype(np.float16)
    rhs = x if batch == 1 else np.ascontiguousarray(np.resize(x, (batch, cols)).T)
    io = rhs.nbytes + rows * batch * 4
    out = [Case("dense fp32 (NumPy/BLAS)", "peer", lambda: w32 @ rhs, w32.nbytes + io, 32.0)]
    for label, spec in SPECS.items():
        enc = tp.encode(w16, spec)
        prepared = enc.codec.prepare(enc)  # type: ignore[attr-defined]  # nm, bitmap and block have it
        op = "matvec" if batch == 1 else "matmul"
        kern = get_kernel(prepared.codec_id, op, "numba")
        xp = np.zeros((prepared.padded, *rhs.shape[1:]), np.float32)
        xp[:cols] = rhs
        ref = get_kernel(prepared.codec_id, op, "reference")(*prepared.operands, xp)[:rows]
        got = kern(*prepared.operands, xp)[:rows]
        scale = np.abs(tp.decode(enc).astype(np.float64)) @ np.abs(rhs.astype(np.float64))
        if not np.all(np.abs(got - ref) <= 1e-5 * scale + 1e-6):
            raise AssertionError(f"{spec} numba {op} disagrees with the reference on {name}")
        out.append(Case(f"{label} fp16 (numba)", "ours", lambda k=kern, p=prepared, v=xp: k(*p.operands, v),
                        prepared.nbytes + io, enc.bits_per_element, spec))
    try:
        import scipy.sparse as sparse

        for s in (0.5, 0.7):
            enc = tp.encode(w32, f"csr(sparsity={s})")
            indptr, indices, values, shape = CSRSparse(sparsity=s).csr_parts(enc)
            mat = sparse.csr_array((values, indices.astype(np.int32), indptr.astype(np.int32)), shape=shape)
            nb = mat.data.nbytes + mat.indices.nbytes + mat.indptr.nbytes
            out.append(Case(f"scipy CSR {int(s * 100)}% fp32", "reference", lambda m=mat: m @ rhs, nb + io,
                            8.0 * nb / w.size, f"csr(sparsity={s})"))
    except ImportError:
        pass
    return out


def stream_cases(ws: list[np.ndarray], x: np.ndarray) -> list[Case]:
    """One product with each layer's matrix in turn (as a forward pass does): the weights come from memory."""
    rows, _ = ws[0].shape
    w32 = [np.ascontiguousarray(w, dtype=np.float32) for w in ws]
    io = len(ws) * (x.nbytes + rows * 4)

    def dense() -> None:
        for w in w32:
            w @ x

    out = [Case(f"dense fp32 (NumPy/BLAS), {len(ws)} layers", "peer", dense, sum(w.nbytes for w in w32) + io, 32.0)]
    for label, spec in SPECS.items():
        encs = [tp.encode(w.astype(np.float16), spec) for w in ws]
        preps = [e.codec.prepare(e) for e in encs]  # type: ignore[attr-defined]  # nm, bitmap and block have it
        kern = get_kernel(preps[0].codec_id, "matvec", "numba")
        xp = np.zeros(preps[0].padded, np.float32)
        xp[: x.shape[0]] = x

        def ours(k: Any = kern, ps: list[Any] = preps, v: np.ndarray = xp) -> None:
            for p in ps:
                k(*p.operands, v)

        bpe = sum(e.nbytes for e in encs) * 8 / sum(w.size for w in ws)
        out.append(Case(f"{label} fp16 (numba), {len(ws)} layers", "ours", ours,
                        sum(p.nbytes for p in preps) + io, bpe, spec))
    return out


def activation_cases(w: np.ndarray, x: np.ndarray) -> list[Case]:
    """Sparse activations (topk per token) times a dense fp32 weight, against the dense product."""
    rows = w.shape[0]
    wt = np.ascontiguousarray(w.T, dtype=np.float32)
    w32 = np.ascontiguousarray(w, dtype=np.float32)
    out = [Case("dense fp32 (NumPy/BLAS)", "peer", lambda: w32 @ x, w32.nbytes + x.nbytes + rows * 4, 32.0)]
    for frac in (0.5, 0.1):
        codec = TopK(fraction=frac)
        enc = codec.encode(x[None, :])
        vals, idx = codec.operands(enc)
        kern = get_kernel("topk", "spmv_dense", "numba")
        k = vals.shape[1]
        out.append(Case(f"topk {int(frac * 100)}% activations x dense fp32 (numba)", "ours",
                        lambda v=vals, i=idx, kk=kern: kk(v, i, wt), k * rows * 4 + vals.nbytes + idx.nbytes + rows * 4,
                        32.0, f"topk(fraction={frac})"))
    return out


def measure(all_cases: list[Case], rounds: int, repeat: int) -> None:
    for _ in range(rounds):
        for case in all_cases:
            case.seconds = min(case.seconds, best_time(case.fn, repeat=repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default=",".join(map(str, THREADS)),
                        help="comma-separated thread counts for numba and BLAS alike (default: all cores, then 1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="4096² only, batch 1")
    args = parser.parse_args()
    try:
        import threadpoolctl
    except ImportError:
        threadpoolctl = None
    mats, source = llm_matrices()
    copy_gbps = copy_bandwidth()
    print(f"copy bandwidth {copy_gbps:.1f} GB/s")
    rows_out: list[dict[str, Any]] = []
    shapes = ["4096x4096"] if args.quick else ["4096x4096", "576x576", "1536x576", "576x1536"]
    rng = np.random.default_rng(0)
    # x: real values too (the model's attention weights, shuffled), one per shape
    xs = {name: np.ascontiguousarray(rng.permutation(mats["576x576"][0].ravel())[: mats[name][0].shape[1]] * 10,
                                     dtype=np.float32) for name in shapes}
    # (shape label, batch, cases, repeats), built once: the encodings are shared by every thread count
    groups: list[tuple[str, Any, list[Case], int]] = []
    for name in shapes:
        w, x = mats[name][0], xs[name]
        for batch in (1,) if args.quick or name != "4096x4096" else (1, 16):
            groups.append((name, batch, cases(name, w, x, batch), 30 if w.size < 4096 * 4096 else 20))
        if name == "4096x4096":
            groups.append((name, "1 (sparse x)", activation_cases(w, x), 15))
        else:
            groups.append((f"{name} x{len(mats[name])}", 1, stream_cases(mats[name], x), 10))
    blas_threads: dict[int, Any] = {}
    for threads in THREADS:
        numba.set_num_threads(threads)
        limit = threadpoolctl.threadpool_limits(threads) if threadpoolctl else None
        if threadpoolctl:
            blas_threads[threads] = [p["num_threads"] for p in threadpoolctl.threadpool_info()
                                     if p["user_api"] == "blas"]
        print(f"threads: numba {numba.get_num_threads()}, BLAS {blas_threads.get(threads)}")
        for label, batch, group, repeat in groups:
            for case in group:
                case.seconds = float("inf")
            measure(group, args.rounds, repeat)
            rows_out += _rows(group, label, batch, copy_gbps, threads)
        if limit is not None:
            limit.restore_original_limits()
    print_table(rows_out, ["threads", "shape", "batch", "method", "side", "bits_per_element", "ms",
                           "speedup_vs_dense", "gb_per_s", "of_copy_bandwidth"])
    musts: dict[str, Any] = {}
    for threads in THREADS:
        for label, need in MUSTS.items():
            row = next(r for r in rows_out if r["threads"] == threads and r["shape"] == "4096x4096"
                       and r["batch"] == 1 and r["method"].startswith(label))
            met = row["speedup_vs_dense"] >= need
            musts[f"{label} @ {threads} threads"] = {"speedup": row["speedup_vs_dense"], "must": need, "met": met}
            print(f"{threads} threads, {label}: {row['speedup_vs_dense']:.2f}x dense (must >= {need}x): "
                  f"{'met' if met else 'MISSED'}")
    path = write_results("sparse_speed", rows_out, {
        "threads": {"counts": THREADS, "blas_per_count": blas_threads},
        "copy_bandwidth_gb_per_s": copy_gbps, "weights": source, "musts_4096_batch1": musts,
        "notes": "kept values float16, x and y float32; kernel operands prepared once (as a layer keeps them); "
                 "each time is the best of rounds x repeats",
    })
    print(f"wrote {path}")


def _rows(group: list[Case], name: str, batch: Any, copy_gbps: float, threads: int) -> list[dict[str, Any]]:
    dense = group[0].seconds
    out = []
    for c in group:
        out.append({"threads": threads, "shape": name, "batch": batch, "method": c.method, "side": c.side,
                    "spec": c.spec, "bits_per_element": round(c.bpe, 3), "seconds": c.seconds, "ms": c.seconds * 1e3,
                    "speedup_vs_dense": dense / c.seconds, "gb_per_s": c.nbytes / c.seconds / GB,
                    "of_copy_bandwidth": c.nbytes / c.seconds / GB / copy_gbps})
    return out


if __name__ == "__main__":
    main()
