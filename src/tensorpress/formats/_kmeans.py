"""Weighted k-means for vector quantization, and bit packing of codes up to 16 bits wide.

Distances are weighted per element: ``d(x, c) = Σ_k w_k (x_k − c_k)²`` with a weight row ``w`` per vector,
so the same routine serves importance weighting (``diag(XᵀX)`` of a sub-vector's columns) and per-row scales.
Initialization is k-means++ (seeded, deterministic) on a sample; then Lloyd iterations, the assignment step
in a Numba loop parallel over vectors (a 1536×576 weight in dim-8 sub-vectors against 256 codewords: about
0.1 s per iteration on two cores; NumPy's skinny matrix products took ten times longer).
"""

from __future__ import annotations

import numba
import numpy as np

SEED = 0
INIT_SAMPLE = 16384  # vectors k-means++ picks its centers from


def assign(x: np.ndarray, w: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest center (weighted distance) of every vector: int64 (n,).

    ``x``, ``w``: (n, d) float32; ``centers``: (k, d) float32. Ties go to the lower index.
    """
    out = np.empty(len(x), dtype=np.int64)
    if len(x):
        _assign(np.ascontiguousarray(x, np.float32), np.ascontiguousarray(w, np.float32),
                np.ascontiguousarray(centers, np.float32), out)
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def _assign(x, w, centers, out):  # numba infers the types
    n, d = x.shape
    k = centers.shape[0]
    ct = np.ascontiguousarray(centers.T)  # (d, k): the inner loop runs over centers, in SIMD lanes
    for s in numba.prange((n + 255) // 256):
        acc = np.empty(k, np.float32)
        for i in range(s * 256, min(n, s * 256 + 256)):
            acc[:] = 0
            for t in range(d):
                xt = x[i, t]
                wt = w[i, t]
                for j in range(k):
                    diff = xt - ct[t, j]
                    acc[j] += wt * diff * diff
            out[i] = np.argmin(acc)


def update(x: np.ndarray, w: np.ndarray, codes: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Weighted means of the vectors assigned to each center; an empty center keeps its place."""
    k, d = centers.shape
    num = np.zeros((k, d))
    den = np.zeros((k, d))
    for j in range(d):
        num[:, j] = np.bincount(codes, weights=w[:, j] * x[:, j], minlength=k)
        den[:, j] = np.bincount(codes, weights=w[:, j], minlength=k)
    filled = den > 0
    out = centers.astype(np.float64).copy()
    out[filled] = num[filled] / den[filled]
    return out.astype(np.float32)


def init_plusplus(x: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ centers (k, d) float32 from a sample of the vectors; fewer distinct vectors than ``k``
    leave the remaining centers at zero."""
    n, d = x.shape
    centers = np.zeros((k, d), np.float32)
    if n == 0:
        return centers
    if n > INIT_SAMPLE:
        pick = rng.choice(n, INIT_SAMPLE, replace=False)
        x, w = x[pick], w[pick]
        n = INIT_SAMPLE
    first = int(rng.integers(n))
    centers[0] = x[first]
    best = np.sum(w * np.square(x - centers[0]), axis=1, dtype=np.float64)
    for i in range(1, k):
        total = best.sum()
        if not total > 0:  # every vector sits on a center already
            break
        idx = int(np.searchsorted(np.cumsum(best), rng.random() * total))
        centers[i] = x[min(idx, n - 1)]
        best = np.minimum(best, np.sum(w * np.square(x - centers[i]), axis=1, dtype=np.float64))
    return centers


def kmeans(x: np.ndarray, w: np.ndarray, k: int, iters: int, rng: np.random.Generator,
           centers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(centers (k, d) float32, codes (n,) int64)`` after ``iters`` Lloyd iterations.

    ``centers`` given: start there (refinement) instead of k-means++.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    w = np.ascontiguousarray(w, dtype=np.float32)
    c = init_plusplus(x, w, k, rng) if centers is None else centers.astype(np.float32)
    codes = assign(x, w, c)
    for _ in range(iters):
        c = update(x, w, codes, c)
        new = assign(x, w, c)
        if np.array_equal(new, codes):
            break
        codes = new
    return c, codes


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes (< 2**bits, bits <= 16) as one LSB-first bit stream (code k at bits k·bits …), uint8.

    The same stream as ``quant``'s codes (see :mod:`tensorpress.kernels.reference.quant`), wider codes allowed.
    """
    flat = np.ascontiguousarray(codes, dtype=np.uint16).reshape(-1)
    if bits == 8:
        return flat.astype(np.uint8)
    planes = ((flat[:, None] >> np.arange(bits, dtype=np.uint16)) & 1).astype(np.uint8)
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``count`` codes as int64."""
    if bits == 8:
        return packed[:count].astype(np.int64)
    stream = np.unpackbits(packed, bitorder="little", count=count * bits)
    weights = 1 << np.arange(bits, dtype=np.int64)
    return stream.reshape(count, bits).astype(np.int64) @ weights


def packed_nbytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def assign_pairs(x: np.ndarray, w: np.ndarray, first: np.ndarray, second: np.ndarray, beam: int) -> np.ndarray:
    """Codes (n, 2) int64 minimizing the weighted distance of ``x`` to ``first[a] + second[b]``, searching
    ``b`` exhaustively for each of the ``beam`` codewords ``a`` nearest to ``x`` alone (a beam search over
    the first codebook, as AQLM does, instead of fixing ``a`` greedily)."""
    out = np.zeros((len(x), 2), dtype=np.int64)
    if len(x):
        _assign_pairs(np.ascontiguousarray(x, np.float32), np.ascontiguousarray(w, np.float32),
                      np.ascontiguousarray(first, np.float32), np.ascontiguousarray(second, np.float32),
                      min(beam, len(first)), out)
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def _assign_pairs(x, w, first, second, beam, out):  # numba infers the types
    n, d = x.shape
    k = first.shape[0]
    t0 = np.ascontiguousarray(first.T)
    t1 = np.ascontiguousarray(second.T)
    for s in numba.prange((n + 255) // 256):
        acc = np.empty(k, np.float32)
        acc2 = np.empty(second.shape[0], np.float32)
        left = np.empty(d, np.float32)
        for i in range(s * 256, min(n, s * 256 + 256)):
            acc[:] = 0
            for t in range(d):
                for j in range(k):
                    diff = x[i, t] - t0[t, j]
                    acc[j] += w[i, t] * diff * diff
            order = np.argsort(acc)[:beam]
            best = np.inf
            for a in order:
                for t in range(d):
                    left[t] = x[i, t] - first[a, t]
                acc2[:] = 0
                for t in range(d):
                    for j in range(second.shape[0]):
                        diff = left[t] - t1[t, j]
                        acc2[j] += w[i, t] * diff * diff
                b = np.argmin(acc2)
                if acc2[b] < best:
                    best = acc2[b]
                    out[i, 0] = a
                    out[i, 1] = b
