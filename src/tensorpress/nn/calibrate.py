"""Calibration statistics of a model's ``nn.Linear`` layers: their real inputs on calibration text.

Two forms, both keyed by weight name (``model.layers.3.mlp.down_proj.weight``, as in ``state_dict()``) and
both accepted by formats as ``calib`` for that weight:

- :func:`activations`: ``X`` (rows × in, float32), the layer's inputs at ``rows`` token positions spread
  evenly over all tokens fed (the Contracts form of ``calib``);
- :func:`hessians`: ``H = Xᵀ X`` (in × in, float64) over *every* token fed, as a
  :class:`~tensorpress.formats._calib.Hessian`; layers fed the same tensor (q/k/v, gate/up) share one.

Tokens are fed as in :mod:`tensorpress.nn.eval`: the first ``max_tokens`` tokens of the text, windows of
``context`` tokens, each after the tokenizer's own prefix, batch 1, deterministic. Memory stays bounded:
activations keep only the chosen rows; Hessians keep one in × in float64 accumulator per distinct input
(SmolLM2: about 0.8 GB). Use the *calibration* split of a text (:func:`calibration_text`), never the text a
model is then evaluated on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..core.errors import InputError, TensorpressError
from ..formats._calib import Hessian
from .eval import DEFAULT_CONTEXT, DEFAULT_THREADS, _prefix, deterministic, tokenize

DEFAULT_ROWS = 256
DEFAULT_HESSIAN_TOKENS = 8192


def calibration_text(name: str = "austen") -> str:
    """The calibration split of a text of :func:`tensorpress.datasets.text_split` (``austen``: the first
    five novels; ``python_docs``: all but the tutorial) — disjoint from the held-out evaluation text."""
    from ..datasets import text_split

    return text_split(name)[0]


def linear_weights(model: Any, select: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """``{weight name: module}`` for every ``nn.Linear`` of ``model`` (that ``select(name)`` accepts)."""
    import torch

    found = {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    chosen = {n: m for n, m in found.items() if select is None or select(n)}
    if not chosen:
        raise TensorpressError(f"no nn.Linear weight selected (the model has {len(found)}); check select")
    return chosen


def activations(
    model: Any, tokenizer: Any, text: str, *, rows: int = DEFAULT_ROWS, max_tokens: int = 2048,
    context: int = DEFAULT_CONTEXT, select: Callable[[str], bool] | None = None,
    threads: int = DEFAULT_THREADS, progress: bool = True,
) -> dict[str, np.ndarray]:
    """``{weight name: X}``, X (rows × in, float32): each layer's inputs at the same ``rows`` token positions,
    evenly spaced over all tokens fed (fewer rows if fewer tokens are fed)."""
    import torch

    if rows < 1:
        raise InputError(f"rows must be at least 1, got {rows}")
    windows = _inputs(tokenizer, text, max_tokens, context)
    total = sum(len(w) for w in windows)
    picks = np.unique(np.linspace(0, total - 1, min(rows, total)).round().astype(np.int64))
    parts: dict[str, list[np.ndarray]] = {}
    offset = [0]

    def record(name: str, x: Any, first: str | None) -> None:
        local = picks[(picks >= offset[0]) & (picks < offset[0] + x.shape[0])] - offset[0]
        if first is None:
            parts.setdefault(name, []).append(x[torch.from_numpy(local)].float().numpy().copy())

    owners = _run(model, windows, linear_weights(model, select), record, offset, threads, progress, "activations")
    stacked = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    return {name: stacked[owner] for name, owner in owners.items()}


def hessians(
    model: Any, tokenizer: Any, text: str, *, max_tokens: int = DEFAULT_HESSIAN_TOKENS,
    context: int = DEFAULT_CONTEXT, select: Callable[[str], bool] | None = None,
    threads: int = DEFAULT_THREADS, progress: bool = True,
) -> dict[str, Hessian]:
    """``{weight name: Hessian}``: ``Xᵀ X`` (in × in, float64) of each layer's inputs over every token fed."""
    import torch

    sums: dict[str, Any] = {}
    counts: dict[str, int] = {}

    def record(name: str, x: Any, first: str | None) -> None:
        if first is not None:
            return
        product = (x.T @ x).double()  # float32 products of one window, accumulated in float64
        if name in sums:
            sums[name] += product
        else:
            sums[name] = product.clone()
        counts[name] = counts.get(name, 0) + x.shape[0]

    windows = _inputs(tokenizer, text, max_tokens, context)
    with torch.inference_mode():
        owners = _run(model, windows, linear_weights(model, select), record, [0], threads, progress, "hessians")
    shared = {name: Hessian(sums[name].numpy(), counts[name]) for name in sums}
    return {name: shared[owner] for name, owner in owners.items()}


def _inputs(tokenizer: Any, text: str, max_tokens: int, context: int) -> list[list[int]]:
    """Token ids of each window as fed: the tokenizer's prefix, then ``context`` tokens of the text."""
    if context < 1:
        raise InputError(f"context must be at least 1 token, got {context}")
    ids = tokenize(tokenizer, text, max_tokens)
    if not ids:
        raise InputError("the calibration text gives no tokens; give a longer text")
    prefix = _prefix(tokenizer)
    return [prefix + ids[i : i + context] for i in range(0, len(ids), context)]


def _run(model: Any, windows: Iterable[list[int]], modules: dict[str, Any],
         record: Callable[[str, Any, str | None], None], offset: list[int], threads: int, progress: bool,
         desc: str) -> dict[str, str]:
    """Feed every window; call ``record(name, x, first)`` for each selected layer's input ``x`` (tokens × in)
    where ``first`` names the layer that was fed the same tensor just before (else None). Returns
    ``{name: owner}``, the owner being the first layer of each run of layers sharing an input."""
    import torch

    owners: dict[str, str] = {}
    last: list[Any] = [None, ""]  # the last input tensor (kept alive, so its id is not reused) and its owner

    def hook(name: str) -> Callable[..., None]:
        def capture(_module: Any, inputs: tuple[Any, ...]) -> None:
            x = inputs[0]
            shared = x is last[0]
            owner = last[1] if shared else name
            if owners.setdefault(name, owner) != owner:
                raise TensorpressError(f"{name} shares its input with different layers from window to window")
            last[0], last[1] = x, owner
            record(name, x.detach().reshape(-1, x.shape[-1]), owner if shared else None)
        return capture

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    items = list(windows)
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc=desc, unit="window", leave=False)
    try:
        with deterministic(model, threads):
            for ids in items:
                last[0] = None
                model(input_ids=torch.tensor([ids]))
                offset[0] += len(ids)
    finally:
        for h in handles:
            h.remove()
        last[0] = None
    return owners
