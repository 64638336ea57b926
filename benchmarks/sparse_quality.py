"""Perplexity of the real LLMs pruned to 50% unstructured, 2:4 and 4:8 by magnitude, Wanda and SparseGPT.

    python benchmarks/sparse_quality.py [--models smollm2] [--text austen] [--tokens 2048] [--quiet]
                                        [--methods "<part of a name>" ...]

Every linear weight of the transformer blocks is pruned (the papers' setting: embeddings, the tied lm_head
and norms stay dense); weights are cast to fp16 first, so the kept values are fp16 unless a row quantizes them
(``values=quant(bits=8|4, group=128)``). Wanda and SparseGPT are calibrated one-shot on the calibration split
of the text (``tensorpress.nn.calibrate.hessians``: ``Xᵀ X`` of every layer's real inputs on the dense model,
CALIB_TOKENS tokens), never on the held-out text the perplexity is measured on. Bits per weight count every
stored weight tensor (``Encoded.nbytes`` of the pruned ones, fp16 for the dense ones). Perplexity: held-out text
(Austen's *Persuasion*), windows of 512 tokens.

The issue's reference points (Llama-2-7B, dense 5.12): SparseGPT 2:4 10.17, Wanda 2:4 11.02 — the ordering
to reproduce is sparsegpt <= wanda < magnitude at every pattern. Each finished row is cached in
benchmarks/cache/sparse_quality.jsonl, so an interrupted grid resumes. Writes results/sparse_quality.json.
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
from tensorpress.datasets.llm import text_split
from tensorpress.nn.calibrate import calibration_text, hessians
from tensorpress.nn.eval import apply_weights, perplexity
from tensorpress.nn.models import load_reference

try:
    from benchmarks.common import print_table, write_results
except ImportError:  # run as a script from the benchmarks folder
    from common import print_table, write_results  # type: ignore[no-redef]

CONTEXT = 512
CALIB_TOKENS = 4096
PATTERNS = {"50%": "bitmap(sparsity=0.5, select={select}{values})",
            "2:4": "nm(n=2, m=4, select={select}{values})",
            "4:8": "nm(n=4, m=8, select={select}{values})"}
SELECTIONS = ("magnitude", "wanda", "sparsegpt")
VALUES = {"fp16": "", "8-bit": ", values=quant(bits=8, group=128)", "4-bit": ", values=quant(bits=4, group=128)"}
CACHE = Path(__file__).resolve().parent / "cache" / "sparse_quality.jsonl"


def methods() -> list[tuple[str, str, str, str | None]]:
    """(pattern, selection, values, spec): the dense reference, every pattern × selection with fp16 values,
    then 2:4 SparseGPT with values quantized to 8 and 4 bits (SparseGPT is the slow one: one run each)."""
    rows: list[tuple[str, str, str, str | None]] = [("dense", "-", "fp16", None)]
    for pattern, template in PATTERNS.items():
        for select in SELECTIONS:
            rows.append((pattern, select, "fp16", template.format(select=select, values="")))
    for values, suffix in VALUES.items():
        if values != "fp16":
            rows.append(("2:4", "sparsegpt", values, PATTERNS["2:4"].format(select="sparsegpt", values=suffix)))
    return rows


def pruned(name: str) -> bool:
    return ".layers." in name and name.endswith("_proj.weight")


def run(model_name: str, text: str, tokens: int, wanted: list[str], progress: bool) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    def key(spec: str | None) -> str:
        return json.dumps({"model": model_name, "text": text, "tokens": tokens, "context": CONTEXT,
                           "calib_tokens": CALIB_TOKENS, "spec": spec}, sort_keys=True)

    cache = ({json.dumps(e["key"], sort_keys=True): e["row"] for e in map(json.loads, CACHE.read_text().splitlines())}
             if CACHE.is_file() else {})
    chosen = [m for m in methods() if not wanted or any(w in (m[3] or "dense") for w in wanted)]
    rows = [cache[key(m[3])] for m in chosen if key(m[3]) in cache]
    todo = [m for m in chosen if key(m[3]) not in cache]
    if not todo:
        return rows
    model, tokenizer = load_reference(model_name)
    params = dict(model.named_parameters())
    weights = {n: p.detach().numpy().astype(np.float16) for n, p in params.items() if p.ndim == 2}
    dense_bytes = sum(w.nbytes for n, w in weights.items() if not pruned(n))
    dense_bytes += sum(p.numel() * 2 for p in params.values() if p.ndim != 2)
    n_weights = sum(p.numel() for p in params.values())
    held_out = text_split(text)[1]
    calib: dict[str, Any] = {}
    if any(m[1] in ("wanda", "sparsegpt") for m in todo):
        t0 = time.perf_counter()
        calib = hessians(model, tokenizer, calibration_text(text), max_tokens=CALIB_TOKENS, select=pruned,
                         progress=progress)
        print(f"calibration: {len(calib)} layers, {CALIB_TOKENS} tokens, {time.perf_counter() - t0:.0f} s")
    for pattern, select, values, spec in tqdm(todo, desc=model_name, unit="method", disable=not progress):
        t0 = time.perf_counter()
        decoded = {n: w.astype(np.float32) for n, w in weights.items()}
        nbytes, sq_err, sq_norm = dense_bytes, 0.0, 0.0
        if spec is not None:
            for n, w in weights.items():
                if not pruned(n):
                    continue
                enc = tp.encode(w, spec, calib=calib.get(n) if select != "magnitude" else None)
                decoded[n] = tp.decode(enc).astype(np.float32)
                nbytes += enc.nbytes
                ref = w.astype(np.float32)
                sq_err += relative_frobenius_error(ref, decoded[n]) ** 2 * float(np.square(ref, dtype=np.float64).sum())
                sq_norm += float(np.square(ref, dtype=np.float64).sum())
        else:
            nbytes += sum(w.nbytes for n, w in weights.items() if pruned(n))
        prune_s = time.perf_counter() - t0
        apply_weights(model, decoded)
        t0 = time.perf_counter()
        ppl = perplexity(model, tokenizer, held_out, context=CONTEXT, max_tokens=tokens, progress=progress)
        row = {"model": model_name, "text": text, "pattern": pattern, "select": select, "values": values,
               "method": spec or "dense fp16", "side": "ours", "bits_per_weight": 8 * nbytes / n_weights,
               "rel_frobenius_pruned": math.sqrt(sq_err / sq_norm) if sq_norm else 0.0, "perplexity": ppl,
               "tokens": tokens, "context": CONTEXT, "prune_s": prune_s, "eval_s": time.perf_counter() - t0}
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        with CACHE.open("a") as f:
            f.write(json.dumps({"key": json.loads(key(spec)), "row": row}) + "\n")
        rows.append(row)
    return rows


def ordering(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model, pattern and values: is sparsegpt <= wanda < magnitude in perplexity?"""
    out = []
    for model, pattern in sorted({(r["model"], r["pattern"]) for r in rows if r["pattern"] != "dense"}):
        ppl = {r["select"]: r["perplexity"] for r in rows
               if (r["model"], r["pattern"], r["values"]) == (model, pattern, "fp16")}
        if set(ppl) >= set(SELECTIONS):
            out.append({"model": model, "pattern": pattern, **{s: ppl[s] for s in SELECTIONS},
                        "pass": ppl["sparsegpt"] <= ppl["wanda"] < ppl["magnitude"]})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", default="smollm2")
    parser.add_argument("--text", default="austen")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--methods", nargs="*", default=[], help="parts of specs ('dense' for the reference)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = [r for m in args.models.split(",") for r in run(m, args.text, args.tokens, args.methods, not args.quiet)]
    for r in rows:
        dense = [d for d in rows if d["pattern"] == "dense" and d["model"] == r["model"]]
        if dense:
            r["delta_pct"] = 100 * (r["perplexity"] / dense[0]["perplexity"] - 1)
    rows.sort(key=lambda r: (r["model"], r["pattern"], r["values"], r["perplexity"]))
    print_table(rows, ["model", "pattern", "select", "values", "bits_per_weight", "perplexity", "delta_pct",
                       "rel_frobenius_pruned"])
    order = ordering(rows)
    print("\nordering sparsegpt <= wanda < magnitude (fp16 values):")
    print_table(order, ["model", "pattern", *SELECTIONS, "pass"])
    extra = {"settings": {"context": CONTEXT, "tokens": args.tokens, "calib_tokens": CALIB_TOKENS,
                          "text": f"held-out split of text_split({args.text!r}); calibration on its other split",
                          "pruned": "every *_proj.weight of the transformer blocks, cast to fp16 first",
                          "dense": "embeddings (tied lm_head counted once) and norms, fp16, counted in the size",
                          "calibration": "one-shot Hessians X^T X on the dense model (not sequential)"},
             "ordering": order, "runtime_s_this_run": time.perf_counter() - start}
    print(f"wrote {write_results('sparse_quality', rows, extra)}")


if __name__ == "__main__":
    main()
