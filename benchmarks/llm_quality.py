"""Perplexity and size of the real LLMs under ``quant`` next to GGUF Q8_0/Q5_0/Q4_0/Q4_1 on the same weights.

    python benchmarks/llm_quality.py [--models smollm2,gemma3] [--texts austen,python_docs]
                                     [--methods reference ours peers "<part of a name>" ...] [--tokens N]
                                     [--quiet]

References: SmolLM2-135M-Instruct and Gemma 3 270M, both published already quantized (SmolLM2: Q4_1 blocks,
Q8_0 embedding; Gemma 3: a Q4_K_M mix of Q4_K/Q5_0/Q6_K/Q8_0, Q8_0 embedding); their fp32 dequantization is
the reference. Every 2-D weight (the block matrices and the embedding; the tied lm_head counted once) is
quantized, decoded and put back into the model; norms and other 1-D tensors stay raw fp32 and are counted
in the size. Bits per weight = bytes of all stored weight tensors × 8 / their element count: ours count
``Encoded.nbytes`` (blob header included); GGUF types count their block bytes (Q8_0 34, Q5_0 22, Q4_1 20,
Q4_0 18 bytes per 32 weights), quantized by the ``gguf`` package in the same run. ``on_grid_pct``: the
share of quantized weights in tensors reproduced exactly — a layout that sits on the grid the file was
published in is lossless there by construction, and rows with >= 50% are left out of the 4-bit judgement
(per budget of Q5_0/Q4_1/Q4_0: our best layout within it vs the best of those within it). Perplexity:
held-out text (Austen's *Persuasion*; the Python tutorial), windows of 512 tokens, the first 4096 (SmolLM2)
/ 2048 (Gemma 3) tokens.

Each finished row is cached in benchmarks/cache/llm_quality.jsonl (keyed by model, text, tokens, context
and method), so an interrupted grid resumes. Writes benchmarks/results/llm_quality.json and .png.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import tensorpress as tp
from tensorpress.core.metrics import relative_frobenius_error
from tensorpress.datasets.llm import text_split
from tensorpress.nn.eval import apply_weights, perplexity
from tensorpress.nn.models import load_reference

try:
    from benchmarks.common import RESULTS, print_table, write_results
except ImportError:  # run as a script from the benchmarks folder
    from common import RESULTS, print_table, write_results  # type: ignore[no-redef]

TOKENS = {"smollm2": 4096, "gemma3": 2048}
CONTEXT = 512
TEXTS = ("austen", "python_docs")
PEERS = ("Q8_0", "Q5_0", "Q4_1", "Q4_0")
#: the 4-bit judgement: these peers set the budgets
JUDGED_PEERS = ("gguf Q5_0", "gguf Q4_1", "gguf Q4_0")
#: a row reproducing this share of the quantized weights exactly sits on the grid the model was published in
#: (SmolLM2: Q4_1 = 4-bit group-32 asymmetric): lossless by construction, so left out of the judgement
ON_GRID_PCT = 50.0
OURS = [f"quant(bits={b}, group={g}, symmetric={s})" for b in (8, 4) for g in (32, 128) for s in ("false", "true")]
OURS += [f"quant(bits=5, group={g}, symmetric={s})" for g, s in ((32, "true"), (64, "false"), (128, "false"))]
OURS += [f"quant(bits=4, group=64, symmetric={s})" for s in ("false", "true")]
OURS += [f"quant(bits=4, group=128, axis=0, symmetric={s})" for s in ("false", "true")]
OURS += [f"quant(bits={b}, group={g}, symmetric={s})" for b in (3, 2) for g in (32, 128) for s in ("false", "true")]
#: ours may exceed a GGUF budget by this much: our blob headers (~0.004 bit/weight) have no GGUF counterpart
BUDGET_SLACK = 0.01
CACHE = Path(__file__).resolve().parent / "cache" / "llm_quality.jsonl"
Quantizer = Callable[[str, np.ndarray], tuple[np.ndarray, int]]  # name, fp32 (out, in) -> (decoded, stored bytes)


def ours(spec: str) -> Quantizer:
    codec = tp.spec(spec)

    def run(name: str, w: np.ndarray) -> tuple[np.ndarray, int]:
        enc = codec.encode(w)
        return enc.decode(), enc.nbytes
    return run


def gguf_type(name: str) -> Quantizer:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    qtype = GGMLQuantizationType[name]
    block, block_bytes = GGML_QUANT_SIZES[qtype]

    def run(name: str, w: np.ndarray) -> tuple[np.ndarray, int]:
        if w.shape[-1] % block:
            raise ValueError(f"{name} needs rows divisible by {block}; got shape {w.shape}")
        step = max(1, (1 << 22) // w.shape[-1])  # rows at a time: the embeddings are 28M-168M weights
        out = np.concatenate([dequantize(quantize(w[i:i + step], qtype), qtype) for i in range(0, len(w), step)])
        return out.reshape(w.shape), w.size // block * block_bytes
    return run


def methods() -> list[tuple[str, str, Quantizer | None]]:
    """``(name, side, quantizer)`` in run order; the reference has no quantizer."""
    rows: list[tuple[str, str, Quantizer | None]] = [("reference (fp32)", "reference", None)]
    rows += [(f"gguf {p}", "peer", gguf_type(p)) for p in PEERS]
    return rows + [(str(tp.spec(s)), "ours", ours(s)) for s in OURS]


def kind(name: str) -> str:
    """``model.layers.3.mlp.up_proj.weight`` -> ``mlp.up_proj``."""
    return re.sub(r"layers\.\d+\.", "", name).removeprefix("model.").removesuffix(".weight")


def quantize_into(model: Any, matrices: dict[str, np.ndarray], sq_norms: dict[str, float], raw_bytes: int,
                  n_weights: int, quantizer: Quantizer) -> dict[str, Any]:
    """Quantize every matrix, put the decoded weights into ``model``; size and weight-error stats."""
    nbytes, on_grid = raw_bytes, 0
    sq_err: dict[str, float] = {}
    errors: dict[str, float] = {}
    decoded: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for name, w in matrices.items():
        decoded[name], size = quantizer(name, w)
        nbytes += size
        errors[name] = relative_frobenius_error(w, decoded[name])
        sq_err[name] = errors[name] ** 2 * sq_norms[name]
        on_grid += w.size if errors[name] == 0.0 else 0
    apply_weights(model, decoded)
    by_kind: dict[str, list[float]] = {}
    for name in matrices:
        acc = by_kind.setdefault(kind(name), [0.0, 0.0])
        acc[0] += sq_err[name]
        acc[1] += sq_norms[name]
    worst = max(errors, key=errors.__getitem__)
    return {
        "bits_per_weight": 8 * nbytes / n_weights,
        "rel_frobenius": math.sqrt(sum(sq_err.values()) / sum(sq_norms.values())),
        "rel_frobenius_by_kind": {k: math.sqrt(e / n) for k, (e, n) in by_kind.items()},
        "worst_tensor": [worst, errors[worst]],
        "on_grid_pct": 100.0 * on_grid / sum(w.size for w in matrices.values()),
        "quantize_s": time.perf_counter() - t0,
    }


def load_cache(path: Path = CACHE) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    return {json.dumps(e["key"], sort_keys=True): e["row"] for e in map(json.loads, path.read_text().splitlines())}


def run_model(name: str, texts: dict[str, str], tokens: int, chosen: list[tuple[str, str, Quantizer | None]],
              cache: dict[str, dict[str, Any]], progress: bool, *, cache_path: Path = CACHE,
              before: Callable[[Any, Any], None] | None = None) -> list[dict[str, Any]]:
    """Perplexity rows of every chosen method on every text, cached rows reused. ``before(model, tokenizer)``
    runs once the reference model is loaded, before any method (calibration)."""
    from tqdm.auto import tqdm

    def key(text: str, method: str) -> str:
        return json.dumps({"model": name, "text": text, "tokens": tokens, "context": CONTEXT, "method": method},
                          sort_keys=True)

    rows = [cache[key(t, m)] for m, _, _ in chosen for t in texts if key(t, m) in cache]
    todo = [(m, side, q) for m, side, q in chosen if any(key(t, m) not in cache for t in texts)]
    if not todo:
        return rows
    model, tokenizer = load_reference(name)
    params = dict(model.named_parameters())  # a tied lm_head appears once, as the embedding
    matrices = {n: p.detach().numpy().copy() for n, p in params.items() if p.ndim == 2}
    raw_bytes = sum(p.numel() * p.element_size() for p in params.values() if p.ndim != 2)
    n_weights = sum(p.numel() for p in params.values())
    sq_norms = {n: float(np.square(w, dtype=np.float64).sum()) for n, w in matrices.items()}
    if before is not None:
        before(model, tokenizer)
    for method, side, quantizer in tqdm(todo, desc=name, unit="method", disable=not progress):
        if quantizer is None:
            apply_weights(model, matrices)
            stats: dict[str, Any] = {"bits_per_weight": 32.0, "rel_frobenius": 0.0, "on_grid_pct": 100.0}
        else:
            stats = quantize_into(model, matrices, sq_norms, raw_bytes, n_weights, quantizer)
        for text_name, text in texts.items():
            if key(text_name, method) in cache:
                continue
            t0 = time.perf_counter()
            ppl = perplexity(model, tokenizer, text, context=CONTEXT, max_tokens=tokens, progress=progress)
            row = {"model": name, "text": text_name, "method": method, "side": side, **stats,
                   "perplexity": ppl, "tokens": tokens, "context": CONTEXT, "eval_s": time.perf_counter() - t0}
            if stats["on_grid_pct"] >= ON_GRID_PCT and quantizer is not None:
                row["note"] = "on the published grid (lossless there by construction): not judged"
            cache[key(text_name, method)] = row
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            with cache_path.open("a") as f:
                f.write(json.dumps({"key": json.loads(key(text_name, method)), "row": row}) + "\n")
            rows.append(row)
    return rows


def judge(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The 8-bit must (g128 within 0.5% of the reference) and, per GGUF budget, our best layout within it
    against the best eligible GGUF type of equal or fewer bits."""
    must, verdicts = [], []
    for model, text in sorted({(r["model"], r["text"]) for r in rows}):
        group = [r for r in rows if (r["model"], r["text"]) == (model, text) and "delta_pct" in r]
        for r in group:
            if r["side"] == "ours" and "bits=8, group=128, axis=-1" in r["method"]:
                must.append({"model": model, "text": text, "method": r["method"], "delta_pct": r["delta_pct"],
                             "pass": r["delta_pct"] <= 0.5})
        peers = [r for r in group if r["method"] in JUDGED_PEERS and r["on_grid_pct"] < ON_GRID_PCT]
        mine = [r for r in group if r["side"] == "ours" and r["on_grid_pct"] < ON_GRID_PCT]
        for budget in sorted({p["bits_per_weight"] for p in peers}):
            peer = min((p for p in peers if p["bits_per_weight"] <= budget), key=lambda p: p["perplexity"])
            within = [r for r in mine if r["bits_per_weight"] <= budget + BUDGET_SLACK]
            if not within:
                continue
            best = min(within, key=lambda r: r["perplexity"])
            verdicts.append({"model": model, "text": text, "budget_bits": budget, "best_peer": peer["method"],
                             "peer_perplexity": peer["perplexity"], "best_ours": best["method"],
                             "ours_bits": best["bits_per_weight"], "ours_perplexity": best["perplexity"],
                             "ours_vs_peer_pct": 100 * (best["perplexity"] / peer["perplexity"] - 1),
                             "pass": best["perplexity"] <= peer["perplexity"]})
    return must, verdicts


def family(method: str) -> str:
    """``quant(bits=4, group=64, axis=-1, symmetric=true, ...)`` -> ``g64 sym`` (the layout, bits aside)."""
    cfg = dict(re.findall(r"(\w+)=([\w.-]+)", method))
    axis = "" if cfg["axis"] == "-1" else f" axis={cfg['axis']}"
    return f"g{cfg['group']} {'sym' if cfg['symmetric'] == 'true' else 'asym'}{axis}"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Perplexity vs bits per weight: a row per model and text, the whole range and the 4-5.6 bit zoom;
    ours as one line per layout, GGUF types as red squares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["model"], r["text"]) for r in rows})
    families = sorted({family(r["method"]) for r in rows if r["side"] == "ours"})
    colours = dict(zip(families, [c for k, c in enumerate(plt.get_cmap("tab10").colors) if k != 3], strict=False))
    fig, axes = plt.subplots(len(panels), 2, figsize=(14, 4.8 * len(panels)), squeeze=False)
    for (model, text), pair in zip(panels, axes, strict=True):
        group = [r for r in rows if (r["model"], r["text"]) == (model, text)]
        ref = next((r["perplexity"] for r in group if r["side"] == "reference"), min(r["perplexity"] for r in group))
        for ax, (x_lim, top) in zip(pair, (((1.9, 9.3), 10 * ref), ((3.95, 5.65), 2.6 * ref)), strict=True):
            ax.axhline(ref, color="k", ls="--", lw=1, label=f"fp32 reference {ref:.2f} (32 bits)")
            for fam in families:
                pts = sorted((r["bits_per_weight"], r["perplexity"]) for r in group
                             if r["side"] == "ours" and family(r["method"]) == fam and r["perplexity"] <= top)
                ax.plot([b for b, _ in pts], [p for _, p in pts], "o-", ms=4, lw=1, color=colours[fam],
                        label=f"quant {fam}")
            off = [r["bits_per_weight"] for r in group if r["perplexity"] > top and x_lim[0] <= r["bits_per_weight"]]
            if off:
                ax.scatter(off, [top] * len(off), marker="^", color="grey", label=f"off scale (> {top:.0f})")
            for r in (r for r in group if r["side"] == "peer" and r["perplexity"] <= top):
                ax.scatter([r["bits_per_weight"]], [r["perplexity"]], marker="s", s=40, color="tab:red", zorder=5)
                star = "*" if r["on_grid_pct"] >= ON_GRID_PCT else ""
                ax.annotate(r["method"].removeprefix("gguf ") + star, (r["bits_per_weight"], r["perplexity"]),
                            textcoords="offset points", xytext=(-8, 7), fontsize=8, color="tab:red")
            ax.set(yscale="log", xlim=x_lim, ylim=(0.95 * ref, 1.2 * top), xlabel="bits per weight (all stored)",
                   ylabel="perplexity", title=f"{model}, held-out {text} ({group[0]['tokens']} tokens, context "
                   f"{group[0]['context']})" + (", zoom" if top < 10 * ref else ""))
            ax.grid(alpha=0.3, which="both")
        pair[0].legend(fontsize=7, loc="upper right")
    fig.suptitle("Perplexity vs size: quant layouts (lines) and GGUF types (red squares, * = on the published grid)")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", default="smollm2,gemma3")
    parser.add_argument("--texts", default=",".join(TEXTS))
    parser.add_argument("--methods", nargs="*", default=[], help="reference, ours, peers or parts of names")
    parser.add_argument("--tokens", type=int, default=0, help="token budget for every model (default per model)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    wanted = args.methods
    aliases = {"reference": "reference", "ours": "ours", "peers": "peer"}
    chosen = [m for m in methods() if not wanted or any(aliases.get(w) == m[1] or w in m[0] for w in wanted)]
    texts = {t: text_split(t)[1] for t in args.texts.split(",")}
    cache = load_cache()
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for model in args.models.split(","):
        rows += run_model(model, texts, args.tokens or TOKENS[model], chosen, cache, not args.quiet)
    for r in rows:
        ref = [x for x in rows if x["side"] == "reference" and (x["model"], x["text"], x["tokens"]) ==
               (r["model"], r["text"], r["tokens"])]
        if ref:
            r["delta_pct"] = 100 * (r["perplexity"] / ref[0]["perplexity"] - 1)
    rows.sort(key=lambda r: (r["model"], r["text"], -r["bits_per_weight"], r["perplexity"]))
    must, verdicts = judge(rows)
    columns = ["method", "side", "bits_per_weight", "perplexity", "delta_pct", "rel_frobenius", "on_grid_pct"]
    for model, text in sorted({(r["model"], r["text"]) for r in rows}):
        group = [r for r in rows if (r["model"], r["text"]) == (model, text)]
        print(f"\n== {model}, held-out {text}: {group[0]['tokens']} tokens, context {CONTEXT} ==")
        print_table(group, columns)
    if must:
        print("\n8-bit must (g128 within 0.5% of the reference):")
        print_table(must, ["model", "text", "method", "delta_pct", "pass"])
    if verdicts:
        print(f"\nBest quant within each GGUF budget (+{BUDGET_SLACK} bit) vs the best GGUF type of equal or "
              f"fewer bits (rows with on_grid_pct >= {ON_GRID_PCT:g} left out):")
        print_table(verdicts, ["model", "text", "budget_bits", "best_peer", "peer_perplexity", "best_ours",
                               "ours_bits", "ours_perplexity", "ours_vs_peer_pct", "pass"])
    runtime = time.perf_counter() - start
    seconds = {f"{m}, {t}": {"perplexity_s_per_row": float(np.mean([r["eval_s"] for r in g])),
                             "quantize_s_per_method": float(np.mean([r.get("quantize_s", 0.0) for r in g]))}
               for m, t in sorted({(r["model"], r["text"]) for r in rows})
               for g in [[r for r in rows if (r["model"], r["text"]) == (m, t)]]}
    print(f"\nwall time of this run: {runtime:.0f} s (cached rows are not re-run); mean seconds when measured "
          f"(shared 2-core machine): {json.dumps(seconds)}")
    extra = {
        "settings": {"context": CONTEXT, "tokens": {m: args.tokens or t for m, t in TOKENS.items()},
                     "texts": "held-out split of tensorpress.datasets.llm.text_split(text)",
                     "quantized": "every 2-D weight: block matrices and the embedding (tied lm_head counted once)",
                     "raw": "norms and other 1-D tensors, fp32, counted in the size",
                     "bits_ours": "sum of Encoded.nbytes (blob header included) + raw bytes, x8 / all weights",
                     "bits_gguf": "type block bytes per 32 weights (Q8_0 34, Q5_0 22, Q4_1 20, Q4_0 18) + raw",
                     "reference": "fp32 dequantization of the published GGUF (SmolLM2 Q4_1 + Q8_0 embedding; "
                                  "Gemma 3 Q4_K_M mix: Q4_K/Q5_0/Q6_K/Q8_0 + Q8_0 embedding)",
                     "budget_slack_bits": BUDGET_SLACK, "judged_peers": JUDGED_PEERS,
                     "not_judged": f"rows with on_grid_pct >= {ON_GRID_PCT:g} (on the published grid)"},
        "must_8bit": must, "judgement": verdicts, "runtime_s_this_run": runtime, "seconds": seconds,
    }
    path = write_results("llm_quality", rows, extra)
    plot(rows, RESULTS / "llm_quality.png")
    print(f"wrote {path} and {RESULTS / 'llm_quality.png'}")


if __name__ == "__main__":
    main()
