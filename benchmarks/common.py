"""Shared benchmark plumbing: machine description, timing, real-data buffers, result files."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import numba

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
    }


def best_time(fn: Callable[[], Any], repeat: int = 7, warmup: int = 1) -> float:
    """Shortest wall time of ``fn`` in seconds over ``repeat`` calls (the least disturbed by other work)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def interleaved_times(fns: dict[str, Callable[[], Any]], rounds: int = 25, seed: int = 0) -> dict[str, list[float]]:
    """Wall times of each ``fn`` over ``rounds`` rounds that call every one in turn, so a burst of other work (or
    a slow page-fault phase) hits them alike. Each round runs them in a fresh random order (seeded): what one
    call leaves behind (freed memory, evicted caches) falls on a different neighbour each round. One warm-up
    call each first."""
    for fn in fns.values():
        fn()
    names = list(fns)
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for i in rng.permutation(len(names)):
            t = time.perf_counter()
            fns[names[i]]()
            times[names[i]].append(time.perf_counter() - t)
    return times


def paired_overhead(times: dict[str, list[float]], base: str | tuple[str, ...]) -> dict[str, float]:
    """Median over rounds of each path's time over ``base``'s time in the same round, minus one: the
    systematic cost of a path next to its base, robust to the drift between rounds that moves both. ``base`` may
    name several paths (the same call measured twice): their mean in each round is the base."""
    ref = _base_times(times, base)
    return {name: float(np.median(np.asarray(ts) / ref)) - 1 for name, ts in times.items()}


def paired_interval(times: dict[str, list[float]], name: str, base: str | tuple[str, ...],
                    level: float = 0.95, draws: int = 2000, groups: Any = None) -> tuple[float, float]:
    """A bootstrap interval (``level``) of :func:`paired_overhead` for ``name``. ``groups`` labels each round
    with the process that measured it: processes are resampled, then rounds within each, so the spread between
    processes (memory layout, what else the machine ran) widens the interval as it should."""
    ratios = np.asarray(times[name]) / _base_times(times, base)
    labels = np.zeros(ratios.size, np.int64) if groups is None else np.asarray(groups)
    members = [np.flatnonzero(labels == g) for g in np.unique(labels)]
    rng = np.random.default_rng(0)
    medians = np.empty(draws)
    for d in range(draws):
        picked = rng.integers(0, len(members), len(members))
        medians[d] = np.median(np.concatenate([ratios[rng.choice(members[p], members[p].size)] for p in picked]))
    lo, hi = np.quantile(medians, [(1 - level) / 2, (1 + level) / 2])
    return float(lo) - 1, float(hi) - 1


def _base_times(times: dict[str, list[float]], base: str | tuple[str, ...]) -> np.ndarray:
    names = (base,) if isinstance(base, str) else base
    return np.mean([np.asarray(times[n]) for n in names], axis=0)


def on_huge_pages(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` in fresh anonymous memory that starts on a 2 MiB boundary and is advised for huge pages.
    Where an array lands otherwise is luck: a 16 MB allocation may come from the heap's recycled 4 KiB pages
    or from a fresh mapping, and reading it costs up to ~10 % more in one case than in the other. A benchmark
    that compares reading from a memory-mapped file (huge pages in the page cache) with reading from memory
    puts both on the same footing with this."""
    import mmap

    size = max(a.nbytes, 1)
    if hasattr(mmap, "MAP_ANONYMOUS"):
        region = mmap.mmap(-1, size + (2 << 20), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    else:  # Windows: an anonymous mapping without flags
        region = mmap.mmap(-1, size + (2 << 20))
    raw = np.frombuffer(region, np.uint8)
    start = -raw.ctypes.data % (2 << 20)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        region.madvise(mmap.MADV_HUGEPAGE, start - start % mmap.PAGESIZE, size + start % mmap.PAGESIZE)
    out = raw[start : start + a.nbytes].view(a.dtype).reshape(a.shape)
    np.copyto(out, a)
    return out


def real_stack(min_bytes: int, width: int = 4096) -> np.ndarray:
    """A float32 (rows, width) matrix of at least ``min_bytes`` made by stacking real arrays.

    Every bundled scikit-image photo (scaled to [0, 1]), the face stack and the finite part of the disparity
    map, flattened and concatenated, repeated with a different phase each pass, so the buffer is far bigger
    than any cache and every row is real data.
    """
    from tensorpress import datasets

    pieces = [datasets.photo(n).astype(np.float32).ravel() / 255 for n in datasets.photo_names()]
    pieces.append(datasets.face_stack().astype(np.float32).ravel())
    disp = datasets.disparity()
    pieces.append(disp[np.isfinite(disp)].astype(np.float32) / 100)
    base = np.concatenate(pieces)
    need = -(-min_bytes // 4)
    reps = []
    total = 0
    k = 0
    while total < need:
        reps.append(np.roll(base, k * 7919))
        total += base.size
        k += 1
    flat = np.concatenate(reps)
    rows = -(-need // width)
    return np.ascontiguousarray(flat[: rows * width].reshape(rows, width))


def copy_bandwidth(min_bytes: int = 256 << 20) -> float:
    """This machine's ``np.copyto`` bandwidth in GB/s over a buffer of real data far bigger than the caches."""
    src = real_stack(min_bytes)
    dst = np.empty_like(src)
    return src.nbytes / best_time(lambda: np.copyto(dst, src), repeat=5) / 1e9


def write_results(name: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {"benchmark": name, "machine": machine(), "rows": rows, **(extra or {})}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
