"""Quality of a (compressed) language model on real text: perplexity, per-layer output error, tables.

Every number here is deterministic: the same model, text and settings give the same float on the same
machine with the same thread count. Runs use batch size 1, a fixed thread count (``threads``, default 2),
``torch.manual_seed(0)``, eval mode (no dropout) and ``torch.use_deterministic_algorithms(True)``; all are
restored afterwards.

Windows: the first ``max_tokens`` tokens of the text (tokenized without special tokens) are cut into
non-overlapping windows of ``context`` tokens. Each window is fed as ``prefix + window``, where ``prefix`` is
what the tokenizer itself puts before a text (Gemma's ``<bos>``; nothing for SmolLM2). Every window token
that has at least one input token before it is scored: all of them with a prefix, all but the first without.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..core.errors import InputError, TensorpressError
from ..report import Column, format_table

#: tokens scored by default. fp32 on 2 CPU cores: SmolLM2 about 300 tokens/s (13 s; ~26 CPU-seconds),
#: Gemma 3 270M about 90 tokens/s (45 s); a row of a benchmark grid takes well under a minute or two
DEFAULT_TOKENS = 4096
DEFAULT_CONTEXT = 512
DEFAULT_THREADS = 2


def tokenize(tokenizer: Any, text: str, max_tokens: int) -> list[int]:
    """The first ``max_tokens`` token ids of ``text`` (no special tokens), tokenizing only a prefix of it.

    A prefix is cut at whitespace and is long enough to hold 64 tokens more than needed, so the tokens kept
    are those the whole text would give.
    """
    if max_tokens < 1:
        raise InputError(f"max_tokens must be at least 1, got {max_tokens}")
    chars = 8 * (max_tokens + 64)
    while True:
        end = len(text) if chars >= len(text) else max(text.rfind(" ", 0, chars), 1)
        ids = list(tokenizer(text[:end], add_special_tokens=False)["input_ids"])
        if end == len(text) or len(ids) >= max_tokens + 64:
            return ids[:max_tokens]
        chars *= 2


def perplexity(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    context: int = DEFAULT_CONTEXT,
    max_tokens: int = DEFAULT_TOKENS,
    stride: int | None = None,
    threads: int = DEFAULT_THREADS,
    progress: bool = True,
) -> float:
    """exp(mean token negative log-likelihood) of ``model`` on the first ``max_tokens`` tokens of ``text``.

    ``stride`` (default ``context``): windows start every ``stride`` tokens; with ``stride < context`` each
    window scores only the tokens no earlier window scored, with the overlap as extra context.
    """
    import torch

    ids = tokenize(tokenizer, text, max_tokens)
    stride = context if stride is None else stride
    if not 1 <= stride <= context:
        raise InputError(f"stride must be in 1..context={context}, got {stride}")
    prefix = _prefix(tokenizer)
    total, count = 0.0, 0
    with deterministic(model, threads):
        windows = _windows(len(ids), context, stride, skip_first=not prefix)
        for begin, end, start in _bar(windows, progress, "perplexity"):
            inputs = torch.tensor([prefix + ids[begin:end]])
            logits = model(input_ids=inputs).logits[0].float()
            # position p predicts input p+1; the window's token i sits at input len(prefix) + i
            first = len(prefix) + start
            nll = torch.nn.functional.cross_entropy(logits[first - 1:-1], inputs[0, first:], reduction="sum")
            total += float(nll)
            count += end - begin - start
    if count == 0:
        raise InputError(f"the text gives {len(ids)} token(s): nothing to score; give a longer text")
    return math.exp(total / count)


def layer_output_errors(
    reference_model: Any,
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    context: int = DEFAULT_CONTEXT,
    max_tokens: int = DEFAULT_CONTEXT,
    threads: int = DEFAULT_THREADS,
    progress: bool = True,
) -> dict[str, float]:
    """``{name: ‖y − y_ref‖_F / ‖y_ref‖_F}`` for the output of every ``nn.Linear`` of ``reference_model``
    (matched by module name in ``model``, whatever that module's type) over the first ``max_tokens`` tokens.

    Each model runs on its own activations, so a layer's error includes what earlier layers passed on.
    """
    import torch

    names = [n for n, m in reference_model.named_modules() if isinstance(m, torch.nn.Linear)]
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise TensorpressError(f"model has no module {missing[0]!r} (and {len(missing) - 1} more) that the "
                               "reference has; compare models of the same architecture")
    ids = tokenize(tokenizer, text, max_tokens)
    prefix = _prefix(tokenizer)
    captured: dict[str, Any] = {}
    sq_err = dict.fromkeys(names, 0.0)
    sq_ref = dict.fromkeys(names, 0.0)
    phase = ["reference"]

    def capture(name: str) -> Any:
        def hook(_m: Any, _i: Any, out: Any) -> None:
            if phase[0] == "reference":
                captured[name] = out.detach().double()
        return hook

    def compare(name: str) -> Any:
        def hook(_m: Any, _i: Any, out: Any) -> None:
            if phase[0] == "model":
                ref = captured.pop(name)
                sq_err[name] += float((out.detach().double() - ref).square().sum())
                sq_ref[name] += float(ref.square().sum())
        return hook

    ref_modules = dict(reference_model.named_modules())
    handles = [ref_modules[n].register_forward_hook(capture(n)) for n in names]
    handles += [modules[n].register_forward_hook(compare(n)) for n in names]
    windows = _windows(len(ids), context, context, skip_first=False)
    try:
        with deterministic(reference_model, threads), deterministic(model, threads):
            for begin, end, _ in _bar(windows, progress, "layer errors"):
                inputs = torch.tensor([prefix + ids[begin:end]])
                phase[0] = "reference"
                reference_model(input_ids=inputs)
                phase[0] = "model"
                model(input_ids=inputs)
                captured.clear()
    finally:
        for handle in handles:
            handle.remove()
    return {n: math.sqrt(sq_err[n] / sq_ref[n]) if sq_ref[n] > 0 else float(sq_err[n] > 0) for n in names}


def apply_weights(model: Any, weights: Mapping[str, np.ndarray]) -> None:
    """Copy arrays into ``model``'s parameters/buffers of the same names (as in ``model.state_dict()``),
    cast to each parameter's dtype. Tied parameters (SmolLM2's ``lm_head.weight`` is the embedding) share
    storage, so writing one writes both.
    """
    import torch

    state = dict(model.named_parameters(remove_duplicate=False))
    state.update(dict(model.named_buffers(remove_duplicate=False)))
    unknown = [n for n in weights if n not in state]
    if unknown:
        raise TensorpressError(f"model has no parameter {unknown[0]!r} ({len(unknown)} unknown names); "
                               f"its names look like {next(iter(state), '')!r}")
    with torch.no_grad():
        for name, array in weights.items():
            target = state[name]
            array = np.asarray(array)
            if tuple(array.shape) != tuple(target.shape):
                raise InputError(f"weight {name!r}: shape {array.shape} does not match the model's "
                                 f"{tuple(target.shape)}")
            if array.dtype.kind == "V":  # ml_dtypes bfloat16/fp8: exact in float32
                array = array.astype(np.float32)
            target.copy_(torch.from_numpy(np.ascontiguousarray(array)).to(target.dtype))


DEFAULT_COLUMNS: tuple[Column, ...] = (
    ("model", "model"), ("method", "method"), ("bits", "bits/weight"),
    ("perplexity", "perplexity"), ("delta_pct", "Δ ppl %"), ("weight_rel_err", "weight rel err"),
)


def format_results(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column] = DEFAULT_COLUMNS) -> str:
    """A text table of evaluation rows; ``delta_pct`` is filled in from a row whose ``method`` is
    ``"reference"`` for the same ``model`` when a row lacks it. Columns no row has are left out."""
    refs = {r.get("model"): r.get("perplexity") for r in rows if r.get("method") == "reference"}
    filled = []
    for row in rows:
        row = dict(row)
        ref = refs.get(row.get("model"))
        if "delta_pct" not in row and ref and isinstance(row.get("perplexity"), float):
            row["delta_pct"] = 100.0 * (row["perplexity"] / ref - 1.0)
        filled.append(row)
    keys = [c if isinstance(c, str) else c[0] for c in columns]
    used = [c for c, k in zip(columns, keys, strict=True) if any(k in r for r in filled)]
    return format_table(filled, used)


@contextlib.contextmanager
def deterministic(model: Any, threads: int = DEFAULT_THREADS) -> Iterator[None]:
    """Eval mode, no autograd, a fixed thread count and seed, deterministic kernels; restored on exit."""
    import torch

    was_training = model.training
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(0)
            yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)
        model.train(was_training)


def _prefix(tokenizer: Any) -> list[int]:
    """The tokens the tokenizer puts before any text (e.g. ``[<bos>]``), or ``[]``."""
    return list(tokenizer("", add_special_tokens=True)["input_ids"])


def _windows(n: int, context: int, stride: int, skip_first: bool) -> list[tuple[int, int, int]]:
    """``(begin, end, start)`` per window over ``n`` tokens: tokens ``begin + start … end - 1`` are scored,
    none twice; ``skip_first``: a window's first token has no context (no prefix) and is never scored."""
    if context < 2:
        raise InputError(f"context must be at least 2 tokens, got {context}")
    out, scored = [], 0
    for begin in range(0, n, stride):
        end = min(begin + context, n)
        start = max(scored - begin, int(skip_first))
        if start < end - begin:
            out.append((begin, end, start))
        scored = end
        if end == n:
            break
    return out


def _bar(items: list[Any], progress: bool, desc: str) -> Any:
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="window", leave=False)
