"""``outliers``: SpQR-style — a base format for the bulk of a tensor, and the weights it fits worst kept in a
sparse part.

Encoding: the base encodes the tensor, and the outliers are picked by what keeping them exactly saves in
squared error — their own error ``(x − base(x))²``, times ``diag(XᵀX)`` of their column when calibration
activations ``X`` (samples × in) are given (SpQR ranks by the Hessian) — either the ``fraction`` of all
elements that save most (default 0.01) or every element with ``|x − base(x)| > threshold``. The base is
then fitted again without them (SpQR leaves outliers out of the group statistics): for a ``quant`` base each
outlier is replaced by its value clipped into the range of the other elements of its quantization group, so
it no longer stretches the group's min/max; for any other base by the previous fit's decoded value.

With a ``quant`` base and ``fraction``, an extreme of a group also scores what the rest of its group would
gain from the smaller step without it (``n · Δ(step²) / 12``), and the picking runs in four rounds with a
refit after each, so the next extremes show. (Round-to-nearest error is largest mid-step, not at a group's
min/max, so error alone never finds the elements that stretch a range.)

The sparse part stores, at the outliers, the residual ``x − base(x)`` of the last fit, in fp16
(``exact=true``: float32, float64 for float64 tensors), as a ``csr`` blob (rows along the last axis; zero
residuals are not stored).

Limitation: a ``quant(rounding=gptq)`` base compensates each column's rounding in the later columns, and
the outlier values written over its result undo part of that — SpQR runs the outlier choice inside GPTQ.
Measured on SmolLM2 (layer 0 q_proj, 3 bits): the output error grows, so prefer a round-to-nearest base here.

Decode = base decode + the sparse residuals (a sum of parts, so ``W·x`` = base matvec + sparse matvec).

Guarantee: away from the outliers, the base's own bound on the tensor it encoded (which equals the input
there); at the outliers, the rounding of the stored residual (fp16: ``2⁻¹¹`` of it) and of the output dtype.
NaN or Inf, and integer input, are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.codec import Codec, register, restore_dtype
from ..core.encoded import Encoded
from ..core.errors import BlobError, ConfigError, InputError
from . import _lowrank
from .csr import CSRSparse
from .quant import GroupQuant

DEFAULT_FRACTION = 0.01
#: picking rounds for a quant base: each refit reveals the next group extremes worth taking out
ROUNDS = 4
_SPARSE = CSRSparse(threshold=0.0)

#: the base when none is given (a quant layout; any spec can be nested)
DEFAULT_BASE = GroupQuant(bits=3, group=128)


@register
@dataclass(frozen=True)
class Outliers(Codec):
    base: Codec = DEFAULT_BASE
    fraction: float | None = None
    threshold: float | None = None
    exact: bool = False

    codec_id: ClassVar[str] = "outliers"
    accepts_integers: ClassVar[bool] = False
    accepts_nonfinite: ClassVar[bool] = False
    summary: ClassVar[str] = "SpQR-style: a base format plus the worst-fitted weights kept in a sparse part"
    examples: ClassVar[tuple[str, ...]] = (
        "outliers(base=quant(bits=3, group=64), fraction=0.01)",
        "outliers(base=quant(bits=2, group=32, symmetric=true), threshold=0.05, exact=true)",
        "outliers(base=quant(bits=4, group=32) | zstd(level=3), fraction=0.02)",
    )

    def validate(self) -> None:
        check_amount("outliers", "fraction", self.fraction, self.threshold)

    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        base_enc, _, _, sparse = self._fit(x, calib)
        return self._make(x, {"base": base_enc, "outliers": sparse}, {})

    def _fit(self, x: np.ndarray, calib: Any) -> tuple[Encoded, np.ndarray, np.ndarray, Encoded]:
        """(base data, its decode as float64, outlier mask, sparse residual data)."""
        _lowrank.require_finite_float(x, "outliers")
        x64 = np.asarray(x, dtype=np.float64)
        weight = importance(calib, x.shape, "outliers")
        base_enc = self.base.encode(x, calib=calib)
        approx = base_enc.decode().astype(np.float64)
        mask = np.zeros(x.shape, dtype=bool)
        rounds = (ROUNDS if isinstance(self.base, GroupQuant) and self.threshold is None else 1) if x.size else 0
        total = None if self.threshold is not None else picked_count(self.fraction, x.size)
        for i in range(rounds):
            if total is None:
                new = np.abs(x64 - approx) > float(self.threshold or 0.0)
            else:
                score = selection_score(x64, approx, mask, self.base, weight)
                new = top(score, -(-total * (i + 1) // rounds) - int(mask.sum()))
            if not new.any():
                break
            mask |= new
            filled = neutral_fill(x64, mask, self.base, approx)
            base_enc = self.base.encode(restore_dtype(filled, x.dtype), calib=calib)
            approx = base_enc.decode().astype(np.float64)
        sparse = store_sparse(np.where(mask, x64 - approx, 0.0), self.exact, x.dtype, "outliers")
        return base_enc, approx, mask, sparse

    def components(self, enc: Encoded) -> dict[str, Encoded]:
        """The nested data whose decodes sum to the tensor: ``base`` and ``outliers`` (a ``csr`` blob)."""
        self._check_owner(enc)
        base = enc.part_encoded("base")
        if base.codec != self.base:
            raise BlobError(f"outliers: the base data was encoded by {base.codec}, the spec says {self.base}")
        return {"base": base, "outliers": check_sparse(enc, "outliers")}

    prepare = components

    def decode_array(self, enc: Encoded) -> np.ndarray:
        return sum_decoded(enc, self.components(enc).values())

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """The base's bound away from the outliers; the residual's rounding at them (selection recomputed)."""
        if x.size == 0:
            return 0.0
        _, approx, mask, _ = self._fit(x, None)
        x64 = np.asarray(x, dtype=np.float64)
        filled = restore_dtype(neutral_fill(x64, mask, self.base, approx), x.dtype) if mask.any() else x
        tol = np.broadcast_to(np.asarray(self.base.tolerance(filled), dtype=np.float64), x.shape).copy()
        resid = np.abs(x64 - approx)
        tol[mask] = residual_tolerance(resid[mask], np.abs(x64[mask]), self.exact, x.dtype)
        return tol


# --- what the composites share -------------------------------------------------------------------------
def check_amount(codec_id: str, name: str, fraction: float | None, threshold: float | None) -> None:
    if fraction is not None and threshold is not None:
        raise ConfigError(f"{codec_id}: give {name}=<share of elements, e.g. 0.01> or threshold=<error>, not both")
    if fraction is not None and not (0.0 <= fraction < 1.0):
        raise ConfigError(f"{codec_id}: {name} must be a share in [0, 1), got {fraction}")
    if threshold is not None and not (threshold >= 0 and math.isfinite(threshold)):
        raise ConfigError(f"{codec_id}: threshold must be a finite number >= 0, got {threshold}")


def importance(calib: Any, shape: tuple[int, ...], codec_id: str) -> np.ndarray | None:
    """diag(XᵀX) per column (the error weight of SpQR's selection), or None without calibration."""
    if calib is None:
        return None
    return np.diag(_lowrank.gram(calib, shape, codec_id, "importance")).copy()


def picked_count(fraction: float | None, size: int) -> int:
    return math.floor((DEFAULT_FRACTION if fraction is None else fraction) * size + 0.5)


def top(score: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the ``count`` largest positive scores."""
    flat = score.reshape(-1)
    mask = np.zeros(flat.size, dtype=bool)
    count = min(count, flat.size)
    if count > 0:
        best = np.argpartition(-flat, count - 1)[:count]
        mask[best] = flat[best] > 0
    return mask.reshape(score.shape)


def pick(err: np.ndarray, fraction: float | None, weight: np.ndarray | None) -> np.ndarray:
    """Boolean mask of the ``fraction`` of all elements with the largest ``err² · weight[column]`` (0 never)."""
    score = np.abs(err).reshape(-1)  # ranks as err² · weight does, without overflow
    if weight is not None and err.ndim:
        score = (score.reshape(-1, weight.size) * np.sqrt(weight)).reshape(-1)
    return top(score.reshape(err.shape), picked_count(fraction, err.size))


def selection_score(x: np.ndarray, approx: np.ndarray, mask: np.ndarray, base: Codec,
                    weight: np.ndarray | None) -> np.ndarray:
    """What keeping each element exactly would save, in squared error (relative to the tensor's peak).

    Its own base error ``(x − base(x))²`` (times its column's importance); for a ``quant`` base, the group
    extremes also count what the rest of their group would gain from the smaller step once they are out of
    the group's range (``n · Δ(step²) / 12``, the mean rounding error of n elements) — the elements SpQR
    finds by refitting. Already picked elements score ``-inf``.
    """
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    unit = peak if peak > 0 else 1.0
    w = np.ones(x.shape[-1] if x.ndim else 1) if weight is None else weight / max(float(weight.mean()), 1e-300)
    score = np.square((x - approx) / unit) * w
    if isinstance(base, GroupQuant) and x.ndim:
        score = score + _range_gain(x / unit, mask, base, w)
    return np.where(mask, -np.inf, score)


def _range_gain(x: np.ndarray, mask: np.ndarray, quant: GroupQuant, w: np.ndarray) -> np.ndarray:
    """For the extreme elements of each ``quant`` group (unmasked ones), the group's saving if left out."""
    axis = quant.axis % x.ndim
    rows = np.moveaxis(np.where(mask, np.nan, x), axis, -1)
    shape = rows.shape
    n = shape[-1]
    g = max(1, n if quant.group == 0 else min(quant.group, n))
    groups = -(-n // g)
    padded = np.full((math.prod(shape[:-1]), groups * g), np.nan)
    padded[:, :n] = rows.reshape(-1, n)
    blocks = padded.reshape(-1, groups, g)
    count = np.sum(~np.isnan(blocks), axis=-1)
    col_w = np.ones(groups * g)
    if axis == x.ndim - 1:
        col_w[:n] = w
    present = ~np.isnan(blocks)
    group_w = np.sum(np.where(present, col_w.reshape(groups, g), 0.0), axis=-1) / np.maximum(count, 1)
    lowest = np.min(np.where(present, blocks, np.inf), axis=-1)
    highest = np.max(np.where(present, blocks, -np.inf), axis=-1)
    gain = np.zeros(blocks.shape)
    if g >= 2:
        if quant.symmetric:
            candidates = [(np.abs(blocks), 1 << (quant.bits - 1), None)]
        else:
            candidates = [(blocks, (1 << quant.bits) - 1, lowest), (-blocks, (1 << quant.bits) - 1, -highest)]
        for vals, levels, far in candidates:
            filled = np.where(np.isnan(vals), -np.inf, vals)
            two = -np.partition(-filled, 1, axis=-1)[..., :2]
            first, second = two[..., 0], two[..., 1]
            span1, span2 = (first, second) if far is None else (first - far, second - far)
            ok = np.isfinite(span2) & (count >= 2)
            value = np.where(ok, (np.square(span1) - np.square(np.where(ok, span2, 0.0))), 0.0)
            value = np.maximum(value, 0.0) * (count - 1) / (12.0 * levels * levels) * group_w
            where = np.argmax(filled, axis=-1)
            np.put_along_axis(gain, where[..., None], np.maximum(
                np.take_along_axis(gain, where[..., None], -1), value[..., None]), -1)
    out = gain.reshape(-1, groups * g)[:, :n].reshape(shape)
    return np.moveaxis(out, -1, axis)


def neutral_fill(x: np.ndarray, mask: np.ndarray, base: Codec, fallback: np.ndarray) -> np.ndarray:
    """``x`` (float64) with the masked elements replaced so they do not shape the base's fit.

    ``quant`` base: clipped into the min/max of the unmasked elements of their group (0 where a whole group
    is masked). Other bases: ``fallback`` there.
    """
    if not isinstance(base, GroupQuant) or x.ndim == 0:
        return np.where(mask, fallback, x)
    axis = base.axis % x.ndim
    rows = np.moveaxis(x, axis, -1)
    m = np.moveaxis(mask, axis, -1)
    n = rows.shape[-1]
    g = max(1, n if base.group == 0 else min(base.group, n))
    starts = np.arange(0, n, g)
    flat, fm = rows.reshape(-1, n), m.reshape(-1, n)
    hi = np.maximum.reduceat(np.where(fm, -np.inf, flat), starts, axis=1)
    lo = np.minimum.reduceat(np.where(fm, np.inf, flat), starts, axis=1)
    col = np.arange(n) // g
    hi, lo = hi[:, col], lo[:, col]
    empty = ~np.isfinite(hi)
    clipped = np.where(empty, 0.0, np.clip(flat, np.where(empty, 0.0, lo), np.where(empty, 0.0, hi)))
    filled = np.where(fm, clipped, flat).reshape(rows.shape)
    return np.moveaxis(filled, -1, axis)


def store_sparse(residual: np.ndarray, exact: bool, dtype: np.dtype[Any], codec_id: str) -> Encoded:
    """The nonzero elements of ``residual`` (float64, the tensor's shape) as a ``csr`` blob: fp16 values, or
    float32 (float64 for a float64 tensor) when ``exact``."""
    store = (np.float64 if dtype.itemsize > 4 else np.float32) if exact else np.float16
    with np.errstate(over="ignore"):
        values = residual.astype(store)
    if not np.all(np.isfinite(values)):
        raise InputError(
            f"{codec_id}: outlier residuals (largest |value| {float(np.max(np.abs(residual))):.4g}) overflow "
            f"{np.dtype(store).name}; use exact=true (float32 storage), or scale the tensor"
        )
    return _SPARSE.encode(values)


def check_sparse(enc: Encoded, owner: str) -> Encoded:
    """The nested ``outliers`` part, checked to be the csr blob :func:`store_sparse` writes."""
    sparse = enc.part_encoded("outliers")
    if sparse.codec != _SPARSE or sparse.shape != enc.shape:
        raise BlobError(f"{owner}: the outliers part is not a csr blob of shape {enc.shape}")
    return sparse


def sum_decoded(enc: Encoded, parts: Any) -> np.ndarray:
    """The sum of the decodes of nested parts, in the tensor's dtype (float64 arithmetic)."""
    total = np.zeros(enc.shape)
    for part in parts:
        total = total + part.decode().astype(np.float64)
    return restore_dtype(total, enc.dtype)


def residual_tolerance(resid: np.ndarray, mag: np.ndarray, exact: bool, dtype: np.dtype[Any]) -> np.ndarray:
    """Bound on ``|x − decode|`` where a residual ``resid`` was stored (fp16, or float32/64 when ``exact``)."""
    import ml_dtypes

    unit = (2.0**-52 if dtype.itemsize > 4 else 2.0**-23) if exact else 2.0**-10
    out_eps = float(ml_dtypes.finfo(dtype).eps)
    return resid * unit + 2.0**-24 + (mag + resid) * out_eps
