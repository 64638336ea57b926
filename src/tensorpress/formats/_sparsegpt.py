"""SparseGPT pruning (Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
One-Shot", ICML 2023), written from the paper's description.

For a weight ``W`` (out × in) and calibration inputs ``X`` (samples × in), the layer's squared output error
``||W X^T − Ŵ X^T||²`` has the Hessian ``H = X^T X`` (damped: ``+ λ I`` with ``λ = damp · mean(diag H)``).
Columns are processed left to right. Removing weight ``w`` of column ``i`` and updating the not yet processed
columns optimally (OBS) costs ``w² / [H⁻¹]ᵢᵢ`` and changes them by ``−(w / [H⁻¹]ᵢᵢ) · H⁻¹[i, i:]``, where
``H⁻¹`` is the inverse Hessian of the columns still left. The upper Cholesky factor ``U`` of ``H⁻¹``
(``H⁻¹ = UᵀU``) holds all of these at once: row ``i`` of ``U`` divided by ``Uᵢᵢ`` is the update direction
and ``Uᵢᵢ²`` the diagonal entry. The mask of a group of columns is chosen, per row, from the current
(already updated) weights by the score ``w² / Uᵢᵢ²`` when the group's first column is reached. Updates inside
a block of columns are applied column by column; the rest of the matrix gets the block's accumulated update
in one matrix product (the paper's lazy batch updates).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..core.errors import InputError

DAMP = 0.01  # the paper's default dampening, as a fraction of the mean diagonal of H
BLOCK = 128  # columns per lazy-update block


def sparsegpt_prune(
    w: np.ndarray,
    h: np.ndarray,
    samples: int,
    keep: Callable[[np.ndarray], np.ndarray],
    group: int,
    *,
    codec_id: str,
    damp: float = DAMP,
) -> tuple[np.ndarray, np.ndarray]:
    """Prune ``w`` (out, in) using the calibration Hessian ``h = Xᵀ X`` (in, in) of ``samples`` input rows.

    ``keep(score)`` gets the scores (out, g) of ``g <= group`` consecutive columns and returns the boolean
    mask (out, g) of the weights to keep. Returns the updated weights (float64; pruned entries exactly 0)
    and the keep mask, both (out, in).
    """
    out, n = w.shape
    hinv_u = _inverse_hessian_factor(h, samples, n, damp, codec_id)
    wt = np.array(w, dtype=np.float64).T.copy()  # (in, out): column i of W is row i here
    mask_t = np.zeros((n, out), dtype=bool)
    block = max(group, BLOCK // group * group)
    for b0 in range(0, n, block):
        b1 = min(b0 + block, n)
        u = hinv_u[b0:b1, b0:b1]
        w1 = wt[b0:b1]  # a view: updated in place
        err = np.zeros_like(w1)
        for i in range(b1 - b0):
            if i % group == 0:
                g1 = min(i + group, b1 - b0)
                d = np.diag(u)[i:g1]
                score = (w1[i:g1] ** 2 / (d * d)[:, None]).T  # (out, g)
                mask_t[b0 + i : b0 + g1] = keep(score).T
            d = u[i, i]
            q = np.where(mask_t[b0 + i], w1[i], 0.0)
            e = (w1[i] - q) / d
            w1[i:] -= np.outer(u[i, i:], e)
            w1[i] = q
            err[i] = e
        if b1 < n:
            wt[b1:] -= hinv_u[b0:b1, b1:].T @ err
    return np.ascontiguousarray(wt.T), np.ascontiguousarray(mask_t.T)


def _inverse_hessian_factor(h: np.ndarray, samples: int, n: int, damp: float, codec_id: str) -> np.ndarray:
    """Upper Cholesky factor ``U`` of the damped inverse Hessian (``H⁻¹ = UᵀU``), float64 (n, n)."""
    h = np.array(h, dtype=np.float64)  # a copy: the caller's Hessian may be shared by several layers
    diag = np.einsum("ii->i", h)  # a writable view of the diagonal
    dead = diag == 0  # inputs that are always zero: their weights cannot matter, keep them decoupled
    diag[dead] = 1.0
    diag += damp * float(np.mean(diag))
    try:
        lower = np.linalg.cholesky(h)
        lower_inv = np.linalg.inv(lower)
        hinv = lower_inv.T @ lower_inv
        return np.linalg.cholesky(hinv).T
    except np.linalg.LinAlgError as exc:
        raise InputError(
            f"{codec_id}(select=sparsegpt): the calibration Hessian X^T X ({n}×{n}, from {samples} samples) "
            f"is not positive definite even with dampening {damp}; give more calibration samples"
        ) from exc
