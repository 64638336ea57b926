"""Weight-level error of the quantization family on real transformer weights, next to GGUF types.

    python benchmarks/weight_error.py [--tensors smollm2,gemma3] [--only "<part of a spec>" ...] [--quiet]

Tensors (fp32 dequantizations of the published GGUF files, see :mod:`tensorpress.nn.models`):

- ``smollm2``: ``model.layers.10.mlp.up_proj.weight`` (1536 × 576). Published as Q4_1 (4-bit, groups of 32,
  fp16 scale and minimum): Q4_1 and ``quant(bits=4, group=32)`` reproduce it exactly, by construction
  (``on_grid``), and every 4-bit figure on it is flattered by that grid.
- ``gemma3``: ``model.layers.0.mlp.down_proj.weight`` (640 × 2048). Published as Q6_K, a finer grid than
  every budget measured here, so it stands in for an unquantized weight.

Rows: ours (``quant`` round-to-nearest as the baseline; ``vq``, ``lowrank``, ``outliers``, ``compensated``,
``gear``) and peers (GGUF Q8_0/Q5_0/Q4_1/Q4_0 and the ternary TQ2_0, quantized by the ``gguf`` package in
the same run; llama.cpp's Q4_K/IQ4_XS/Q3_K/Q2_K/IQ2_S by ``ggml_quantize_chunk`` when the ``peers-llama``
extra is installed, said so when not). Bits per element: ours ``Encoded.nbytes`` × 8 /
elements (header included); GGUF types their block bytes. ``rel_frobenius`` = ‖W − Ŵ‖_F / ‖W‖_F.
``output_error`` = ‖(W − Ŵ)·Xᵀ‖_F / ‖W·Xᵀ‖_F on the layer's real inputs for held-out text (Austen's
*Persuasion*, 2048 tokens); formats given ``calib`` saw inputs of calibration text (the other novels, 2048
tokens) only. Writes benchmarks/results/weight_error.json and .png (``--replot`` redraws the PNG only).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

import tensorpress as tp
from tensorpress.core.metrics import relative_frobenius_error
from tensorpress.nn.ggml_peer import PEER_TYPES as GGML_K_I  # llama.cpp's own quantizers, no importance matrix

try:
    from benchmarks.common import RESULTS, print_table, write_results
except ImportError:  # run as a script from the benchmarks folder
    from common import RESULTS, print_table, write_results  # type: ignore[no-redef]

TENSORS = {
    "smollm2": ("model.layers.10.mlp.up_proj.weight", "Q4_1"),
    "gemma3": ("model.layers.0.mlp.down_proj.weight", "Q6_K"),
}
CACHE = Path(__file__).resolve().parent / "cache"
TOKENS = 2048
CONTEXT = 512
PEERS = ("Q8_0", "Q5_0", "Q4_1", "Q4_0", "TQ2_0")
#: ours may exceed a budget by this much: our blob headers (~0.006 bit/weight here) have no GGUF counterpart
BUDGET_SLACK = 0.01
#: (spec, whether it is given the calibration activations)
OURS: list[tuple[str, bool]] = [
    *((f"quant(bits={b}, group={g})", False) for b in (2, 3, 4) for g in (32, 64, 128)),
    *((f"quant(bits={b}, group=32, symmetric=true)", False) for b in (2, 3, 4)),
    ("vq(dim=8, codebook_bits=7, codebooks=2)", False),
    ("vq(dim=8, codebook_bits=8, codebooks=2)", False),
    ("vq(dim=8, codebook_bits=8, codebooks=2)", True),
    ("vq(dim=8, codebook_bits=9, codebooks=2)", False),
    ("vq(dim=8, codebook_bits=9, codebooks=2)", True),
    ("vq(dim=6, codebook_bits=9, codebooks=2)", False),
    ("vq(dim=8, codebook_bits=8, codebooks=3)", False),
    ("vq(dim=4, codebook_bits=8, codebooks=2)", False),
    ("vq(dim=4, codebook_bits=8, codebooks=2)", True),
    ("lowrank(rank=48)", False),
    ("lowrank(rank=96)", False),
    ("lowrank(rank=96, method=activation_aware)", True),
    ("lowrank(rank=96, method=fisher)", True),
    ("outliers(base=quant(bits=2, group=64), fraction=0.005)", False),
    ("outliers(base=quant(bits=2, group=64), fraction=0.005)", True),
    ("outliers(base=quant(bits=3, group=128), fraction=0.005)", False),
    ("outliers(base=quant(bits=3, group=128), fraction=0.005)", True),
    ("outliers(base=quant(bits=4, group=128), fraction=0.005)", False),
    ("outliers(base=vq(dim=8, codebook_bits=8, codebooks=2), fraction=0.002)", False),
    ("compensated(base=quant(bits=2, group=64), rank=16)", False),
    ("compensated(base=quant(bits=2, group=64), rank=16, method=activation_aware)", True),
    ("compensated(base=quant(bits=3, group=128), rank=16, method=activation_aware)", True),
    ("compensated(base=vq(dim=8, codebook_bits=8, codebooks=2), rank=16, method=activation_aware)", True),
    ("gear(base=quant(bits=2, group=64), rank=8, outliers=0.005)", False),
    ("gear(base=quant(bits=3, group=128), rank=8, outliers=0.005)", False),
    ("gear(base=quant(bits=4, group=128), rank=4, outliers=0.002)", False),
    *((f"quant(bits={b}, group={g}, rounding=gptq)", True) for b, g in ((2, 64), (3, 128), (4, 128))),
    ("compensated(base=quant(bits=2, group=64, rounding=gptq), rank=16, method=activation_aware)", True),
    ("compensated(base=quant(bits=3, group=128, rounding=gptq), rank=16, method=activation_aware)", True),
    # K-quant layouts: group scales and minimums as codes times a step per super-group
    ("quant(bits=4, group=32, scale_bits=6)", False),
    ("quant(bits=4, group=32, scale_bits=6, scale=search)", False),
    ("quant(bits=3, group=32, scale_bits=6, scale=search)", False),
    ("quant(bits=3, group=16, symmetric=true, scale_bits=6, super_group=16, scale=search)", False),
    ("quant(bits=2, group=16, scale_bits=4, super_group=16, scale=search)", False),
    ("quant(bits=4, group=32, scale_bits=6, rounding=gptq, scale=search)", True),
    ("quant(bits=3, group=32, scale_bits=6, rounding=gptq, scale=search)", True),
    ("quant(bits=4, group=32, scale_bits=6, scale=refine)", False),
    ("quant(bits=4, group=32, scale_bits=6, super_group=16, scale=refine)", False),
    ("quant(bits=3, group=32, scale_bits=6, super_group=16, scale=refine)", False),
    ("quant(bits=4, group=32, scale=refine)", False),
]


def layer_inputs(model: Any, tokenizer: Any, module: str, text: str) -> np.ndarray:
    """The real inputs (tokens, in) float32 of ``module`` while the model reads ``TOKENS`` tokens of ``text``."""
    import torch

    from tensorpress.nn.eval import tokenize

    ids = tokenize(tokenizer, text, TOKENS)
    seen: list[np.ndarray] = []
    hook = model.get_submodule(module).register_forward_hook(
        lambda _m, args, _out: seen.append(args[0].detach().reshape(-1, args[0].shape[-1]).float().numpy().copy()))
    try:
        with torch.no_grad():
            for s in range(0, len(ids), CONTEXT):
                model(torch.tensor([ids[s : s + CONTEXT]]))
    finally:
        hook.remove()
    return np.concatenate(seen)


def load(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weight (out, in) float32, calibration inputs, held-out inputs) of the tensor chosen for ``name``.

    Kept in benchmarks/cache/ after the first run (the two forward passes take minutes on a busy machine).
    """
    tensor = TENSORS[name][0]
    cached = CACHE / f"weight_error-{name}-{tensor}-{TOKENS}.npz"
    if cached.is_file():
        with np.load(cached) as f:
            return f["w"], f["calib"], f["heldout"]
    from tensorpress.datasets.llm import text_split
    from tensorpress.nn.models import load_reference

    model, tokenizer = load_reference(name)
    w = model.get_parameter(tensor).detach().numpy().copy()
    calib_text, heldout_text = text_split("austen")
    module = tensor.removesuffix(".weight")
    calib = layer_inputs(model, tokenizer, module, calib_text)
    heldout = layer_inputs(model, tokenizer, module, heldout_text)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cached, w=w, calib=calib, heldout=heldout)
    return w, calib, heldout


def gguf_peer(kind: str, w: np.ndarray) -> tuple[np.ndarray, int]:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    qtype = GGMLQuantizationType[kind]
    block, block_bytes = GGML_QUANT_SIZES[qtype]
    return dequantize(quantize(w, qtype), qtype).reshape(w.shape), w.size // block * block_bytes


def output_error(w: np.ndarray, y: np.ndarray, gram: np.ndarray) -> float:
    d = w.astype(np.float64) - y.astype(np.float64)
    w64 = w.astype(np.float64)
    return math.sqrt(float(np.sum((d @ gram) * d)) / float(np.sum((w64 @ gram) * w64)))


def run_tensor(name: str, specs: list[tuple[str, bool]], peers: tuple[str, ...],
               progress: bool) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    w, calib, heldout = load(name)
    tensor, published = TENSORS[name]
    gram = heldout.astype(np.float64).T @ heldout.astype(np.float64)
    base = {"model": name, "tensor": tensor, "shape": list(w.shape), "published": published}
    rows = []
    for kind in peers:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        block = GGML_QUANT_SIZES[GGMLQuantizationType[kind]][0]
        llama = kind in GGML_K_I
        if (w.size if llama else w.shape[-1]) % block:
            continue  # rows must hold whole blocks (TQ2_0: 256)
        t0 = time.perf_counter()
        if llama:
            from tensorpress.nn import ggml_peer

            y, nbytes = ggml_peer.quantize(w, kind)
        else:
            y, nbytes = gguf_peer(kind, w)
        rows.append({**base, "spec": f"{'llama.cpp' if llama else 'gguf'} {kind}", "side": "peer", "calib": False,
                     "bits_per_element": 8 * nbytes / w.size, "rel_frobenius": relative_frobenius_error(w, y),
                     "output_error": output_error(w, y, gram), "encode_s": time.perf_counter() - t0})
    for spec, use_calib in tqdm(specs, desc=name, unit="spec", disable=not progress):
        t0 = time.perf_counter()
        enc = tp.encode(w, spec, calib=calib if use_calib else None)
        seconds = time.perf_counter() - t0
        y = tp.Encoded.from_bytes(enc.to_bytes()).decode()
        rows.append({**base, "spec": spec, "canonical": str(tp.spec(spec)), "side": "ours", "calib": use_calib,
                     "bits_per_element": enc.bits_per_element, "rel_frobenius": relative_frobenius_error(w, y),
                     "output_error": output_error(w, y, gram), "encode_s": seconds})
    for r in rows:
        r["on_grid"] = r["rel_frobenius"] == 0.0
    return rows


def budgets(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Per tensor and budget (2.1, 2.6, 3.5, 4.5 bits): the best of ours and of the peers within it by ``metric``
    (rows on the published grid left out; ours get ``BUDGET_SLACK`` for the blob header)."""
    out = []
    for name in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == name and not r["on_grid"]]
        for budget in (2.1, 2.6, 3.5, 4.5):
            best: dict[str, Any] = {"model": name, "metric": metric, "budget": budget}
            for side in ("ours", "peer"):
                slack = BUDGET_SLACK if side == "ours" else 0.0
                within = [r for r in mine if r["side"] == side and r["bits_per_element"] <= budget + slack]
                if within:
                    top = min(within, key=lambda r: r[metric])
                    best[side] = {k: top[k] for k in ("spec", "bits_per_element", "rel_frobenius", "output_error")}
            out.append(best)
    return out


def family(row: dict[str, Any]) -> str:
    """What a row's marker shows: the GGUF peers, or our outermost format (quant split by rounding)."""
    if row["side"] == "peer":
        return "gguf"
    name = row["spec"].split("(")[0]
    if name == "quant" and "scale_bits" in row["spec"]:
        return "quant k-layout"
    return "quant gptq" if name == "quant" and "rounding=gptq" in row["spec"] else name


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Relative Frobenius error and held-out output error against bits per weight, one column per tensor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(2, len(names), figsize=(6.5 * len(names), 9), squeeze=False)
    markers = dict(zip(["gguf", "quant", "quant gptq", "quant k-layout", "vq", "lowrank", "outliers", "compensated",
                        "gear"], "sox*^vDPX", strict=True))
    for col, name in enumerate(names):
        mine = [r for r in rows if r["model"] == name and not r["on_grid"] and r["bits_per_element"] <= 6]
        for row_i, metric in enumerate(("rel_frobenius", "output_error")):
            ax = axes[row_i][col]
            for fam, marker in markers.items():
                pts = [r for r in mine if family(r) == fam]
                if pts:
                    color = "black" if fam == "gguf" else f"C{list(markers).index(fam)}"
                    ax.scatter([r["bits_per_element"] for r in pts], [r[metric] for r in pts], marker=marker,
                               label=fam, s=40, color=color, alpha=0.8)
            ax.set_yscale("log")
            ax.set_xlabel("bits per weight (all stored bytes)")
            ax.set_ylabel(metric.replace("_", " "))
            ax.set_title(f"{name}: {mine[0]['tensor'] if mine else ''}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tensors", default=",".join(TENSORS), help="comma-separated: " + ", ".join(TENSORS))
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only the specs and peers containing one of these; their rows replace the old ones "
                             "in the results, the other rows are kept")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from the results JSON")
    args = parser.parse_args(argv)
    if args.replot:
        plot(json.loads((RESULTS / "weight_error.json").read_text())["rows"], RESULTS / "weight_error.png")
        return
    from tensorpress.nn import ggml_peer

    peers = PEERS + (GGML_K_I if ggml_peer.available() else ())
    if not ggml_peer.available():
        print("llama.cpp's K- and I-quants not run: install the peers-llama extra (llama-cpp-python)")

    def chosen(label: str) -> bool:
        return not args.only or any(o in label for o in args.only)

    specs = [(s, c) for s, c in OURS if chosen(s)]
    rows: list[dict[str, Any]] = []
    for name in args.tensors.split(","):
        rows += run_tensor(name, specs, tuple(p for p in peers if chosen(p)), not args.quiet)
        print_table([r for r in rows if r["model"] == name],
                    ["spec", "side", "calib", "bits_per_element", "rel_frobenius", "output_error", "encode_s"])
    path = RESULTS / "weight_error.json"
    if args.only and path.is_file():  # the rows run now replace their old selves; the others are kept
        fresh = {(r["model"], r["spec"], r["calib"]) for r in rows}
        kept = [r for r in json.loads(path.read_text())["rows"] if (r["model"], r["spec"], r["calib"]) not in fresh]
        rows = kept + rows
    best = budgets(rows, "rel_frobenius") + budgets(rows, "output_error")
    for b in best:
        ours, peer, m = b.get("ours", {}), b.get("peer", {}), b["metric"]
        print(f"{b['model']} {m} <= {b['budget']} bits: ours {ours.get('spec')} {ours.get(m, math.nan):.4f}"
              f" | peer {peer.get('spec')} {peer.get(m, math.nan):.4f}")
    path = write_results("weight_error", rows, {"budgets": best, "tokens": TOKENS, "context": CONTEXT})
    plot(rows, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png').name}")


if __name__ == "__main__":
    main()
