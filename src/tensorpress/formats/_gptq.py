"""GPTQ rounding (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers"): columns of a weight are rounded one at a time and each column's rounding error
is spread over the columns not yet rounded, through the upper Cholesky factor of the inverse Hessian
``H = Xᵀ X`` of the layer's inputs, so the layer's output error ``‖(W − Ŵ) Xᵀ‖`` stays small.

Groups stay in the original column order (the stored layout does not change, decode needs no column index).
With ``act_order`` the columns are visited by decreasing ``diag(H)``; a group's parameters are chosen when
the first of its columns is reached, from the current (error-updated) values of all its columns — the
pending updates of the running block included, so the choice is exact. This is the reference
implementations' "static group" layout, except that parameters are chosen as late as possible instead of
from the unmodified weights.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import InputError

#: columns updated together before the remaining columns get the accumulated error (as in the paper)
BLOCK = 128
_DAMP_RETRIES = 6  # each retry multiplies the damping by 10

#: (values (rows, k) of group ``index``, index) -> (stored scale, stored offset), each (rows,)
GroupFit = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Prepared:
    """The visiting order ``perm`` (n,) and the upper Cholesky factor ``u`` (n × n, float64) of the damped
    inverse Hessian in that order (``H⁻¹ = uᵀ u``)."""

    perm: np.ndarray
    u: np.ndarray


#: factorizations of Hessian objects (layers fed the same input share one: q/k/v, gate/up), while they live
_SHARED: weakref.WeakKeyDictionary[Any, dict[tuple[float, bool], Prepared]] = weakref.WeakKeyDictionary()


def prepare_shared(owner: Any, h: np.ndarray, damp: float, act_order: bool) -> Prepared:
    """:func:`prepare`, computed once per ``owner`` object (a Hessian) and settings."""
    known = _SHARED.setdefault(owner, {})
    if (damp, act_order) not in known:
        known[(damp, act_order)] = prepare(h, damp, act_order)
    return known[(damp, act_order)]


def prepare(h: np.ndarray, damp: float, act_order: bool) -> Prepared:
    """Damp ``h`` (n × n) by ``damp × mean(diag h)`` on the diagonal and factor its inverse.

    Inputs that never fire (zero diagonal) get a unit diagonal: their weights' errors cost nothing. If the
    damped matrix is still not positive definite (too few samples), the damping grows tenfold, up to
    ``_DAMP_RETRIES`` times.
    """
    h = np.array(h, dtype=np.float64)
    n = h.shape[0]
    diag = np.diag(h).copy()
    dead = diag <= 0
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    h[dead, dead] = 1.0
    live = diag[~dead]
    mean = float(live.mean()) if live.size else 1.0
    perm = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(n)
    h = h[np.ix_(perm, perm)]
    eye = np.eye(n)
    flip = np.arange(n)[::-1]
    for attempt in range(_DAMP_RETRIES + 1):
        amount = max(damp, 1e-6 if attempt else 0.0) * 10.0**attempt * mean
        # With J the reversal, chol(J H J) = L gives H = R Rᵀ, R = J L J upper triangular, so
        # H⁻¹ = R⁻ᵀ R⁻¹ and u = R⁻¹: one factorization and one triangular inverse.
        try:
            lower = np.linalg.cholesky((h + amount * eye)[np.ix_(flip, flip)])
        except np.linalg.LinAlgError:
            continue
        u = np.ascontiguousarray(np.linalg.inv(lower)[np.ix_(flip, flip)])
        u = np.triu(u)
        if np.all(np.isfinite(u)) and np.all(np.diag(u) > 0):
            return Prepared(perm, u)
    raise InputError(f"quant(rounding=gptq): the calib Hessian is not positive definite even with damping "
                     f"{amount:.3g}; give more calibration samples or a larger damp")


def gptq_round(
    w: np.ndarray, prep: Prepared, group: int, fit: GroupFit, levels: int, zero_code: int,
    bounds: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round ``w`` (rows × n, float64) column by column with error feedback.

    ``fit`` picks a group's stored (scale, offset); a value ``v``, first clamped to its group's ``bounds``
    (lower, upper; each rows × groups), becomes code ``clip(rint((v − offset) / scale), 0, levels)``
    (``zero_code`` where the scale is 0), so every decoded value stays within half a step of the bounds.
    Returns codes (rows × n, uint8, original column order) and the stored scales and offsets (rows × groups).
    """
    rows, n = w.shape
    perm, u = prep.perm, prep.u
    ngroups = -(-n // group)
    position = np.empty(n, np.int64)
    position[perm] = np.arange(n)
    work = np.array(w[:, perm], dtype=np.float64)
    codes = np.zeros((rows, n), np.uint8)
    scales: list[np.ndarray | None] = [None] * ngroups
    offsets: list[np.ndarray | None] = [None] * ngroups
    s64 = np.zeros((rows, ngroups))
    o64 = np.zeros((rows, ngroups))
    for i1 in range(0, n, BLOCK):
        i2 = min(i1 + BLOCK, n)
        block = work[:, i1:i2]  # a view: updates land in ``work``
        err = np.zeros((rows, i2 - i1))
        for i in range(i2 - i1):
            j = i1 + i
            col = int(perm[j])
            g = col // group
            if scales[g] is None:
                members = np.arange(g * group, min(g * group + group, n))
                values = _current(work, block, err, u, position[members], i1, i)
                scales[g], offsets[g] = fit(values, g)
                s64[:, g] = np.asarray(scales[g], np.float64)
                o64[:, g] = np.asarray(offsets[g], np.float64)
            s, o = s64[:, g], o64[:, g]
            v = block[:, i]
            c = np.clip(v, bounds[0][:, g], bounds[1][:, g])
            with np.errstate(divide="ignore", invalid="ignore"):
                q = np.where(s != 0, np.rint((c - o) / np.where(s != 0, s, 1.0)), zero_code)
            q = np.clip(q, 0, levels)
            codes[:, col] = q.astype(np.uint8)
            e = (v - (q * s + o)) / u[j, j]
            block[:, i:] -= np.outer(e, u[j, j:i2])
            err[:, i] = e
        work[:, i2:] -= err @ u[i1:i2, i2:]
    return codes, np.stack(scales, axis=1), np.stack(offsets, axis=1)  # type: ignore[arg-type]


def _current(work: np.ndarray, block: np.ndarray, err: np.ndarray, u: np.ndarray, positions: np.ndarray,
             i1: int, i: int) -> np.ndarray:
    """Current values of the columns at ``positions`` (none of them rounded yet), the running block's
    pending error feedback applied to those after it."""
    out = np.empty((work.shape[0], positions.size))
    inside = positions < i1 + block.shape[1]
    out[:, inside] = block[:, positions[inside] - i1]
    later = positions[~inside]
    if later.size:
        out[:, ~inside] = work[:, later] - err[:, :i] @ u[i1 : i1 + i, later]
    return out
