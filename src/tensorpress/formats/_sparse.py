"""What the sparse formats share: the 2-D row view, selection scores (magnitude, Wanda), per-row top-k masks,
kept-value storage (raw, or a nested codec) and index dtypes.

Selection (``select=``):

- ``magnitude``: score ``|w|``.
- ``wanda``: score ``|w_ij| · ||X_j||₂`` (Sun et al., 2023) for a 2-D weight ``W`` (out × in) and calibration
  activations ``X`` (samples × in), compared within each output row as the paper does.
- ``sparsegpt``: see :mod:`tensorpress.formats._sparsegpt` (only formats that say so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.codec import Codec, restore_dtype
from ..core.dtypes import contiguous, is_float, to_little_endian
from ..core.encoded import Encoded
from ..core.errors import BlobError, ConfigError, InputError

SELECTIONS = ("magnitude", "wanda", "sparsegpt")


def check_select(codec_id: str, select: str, allowed: tuple[str, ...] = SELECTIONS) -> None:
    if select not in allowed:
        raise ConfigError(f"{codec_id}: select must be one of {', '.join(allowed)}; got {select!r}")


def check_fraction(codec_id: str, name: str, value: float | None, *, closed_low: bool = True) -> None:
    if value is None:
        return
    ok = (0.0 <= value < 1.0) if closed_low else (0.0 < value <= 1.0)
    if not ok or math.isnan(value):
        interval = "[0, 1)" if closed_low else "(0, 1]"
        raise ConfigError(f"{codec_id}: {name} must be a fraction in {interval}, got {value}")


# --- layout ---------------------------------------------------------------------------------------------
def as_rows(x: np.ndarray, axis: int, codec_id: str) -> tuple[np.ndarray, int]:
    """``x`` with ``axis`` moved last, as a 2-D (rows, n) array (a view where possible); and the axis index.

    A 0-d array is one row of one element.
    """
    if x.ndim == 0:
        return x.reshape(1, 1), 0
    if not -x.ndim <= axis < x.ndim:
        raise InputError(f"{codec_id}: axis {axis} is out of range for a {x.ndim}-d array of shape {x.shape}")
    axis %= x.ndim
    moved = np.moveaxis(x, axis, -1)
    return moved.reshape(math.prod(moved.shape[:-1]), moved.shape[-1]), axis


def rows_shape(shape: tuple[int, ...], axis: int, codec_id: str) -> tuple[int, int]:
    """(rows, n) of the 2-D view of an array of ``shape`` (for decoding; a bad axis is a bad blob)."""
    if not shape:
        return 1, 1
    if not -len(shape) <= axis < len(shape):
        raise BlobError(f"{codec_id}: axis {axis} does not fit the stored shape {shape}")
    axis %= len(shape)
    return math.prod(shape[:axis] + shape[axis + 1 :]), shape[axis]


def from_rows(rows: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Inverse of :func:`as_rows`: the (rows, n) array back in ``shape`` (C-contiguous)."""
    if not shape:
        return rows.reshape(())
    axis %= len(shape)
    moved = (*shape[:axis], *shape[axis + 1 :], shape[axis])
    return contiguous(np.moveaxis(rows.reshape(moved), -1, axis))


def require_finite(x: np.ndarray, codec_id: str) -> None:
    """Raise a clear error for NaN or Inf: a pruning decision on them would be meaningless."""
    if is_float(x.dtype) and x.size:
        finite = np.isfinite(x) if x.dtype.kind == "f" else np.isfinite(x.astype(np.float32))
        if not finite.all():
            bad = int(x.size - np.count_nonzero(finite))
            raise InputError(
                f"{codec_id}: the tensor holds {bad} NaN or Inf value(s); sparse formats prune by magnitude "
                "and cannot rank them. Replace or mask them first, or use a lossless codec"
            )


def score_dtype(dtype: np.dtype[Any]) -> type[np.floating[Any]]:
    return np.float64 if dtype.itemsize > 4 or (dtype.kind in "iu" and dtype.itemsize >= 4) else np.float32


# --- selection scores ------------------------------------------------------------------------------------
def calibration(calib: Any, weight_shape: tuple[int, ...], codec_id: str, select: str) -> tuple[np.ndarray, int]:
    """The calibration Hessian ``Xᵀ X`` (in × in, float64) and its sample count for a 2-D weight (out, in), from
    activations X (samples, in) or a :class:`~tensorpress.formats._calib.Hessian`; clear errors otherwise."""
    from ._calib import second_moment

    if len(weight_shape) != 2:
        raise InputError(
            f"{codec_id}(select={select}) works on a 2-D weight (out, in), got shape {weight_shape}"
        )
    return second_moment(calib, weight_shape[1], f"{codec_id}(select={select})",
                         alternative="or use select=magnitude", need_samples=True, weight_shape=weight_shape)


def scores(x: np.ndarray, select: str, calib: Any, codec_id: str) -> np.ndarray:
    """Importance of every element of ``x`` (same shape, float): larger is kept first."""
    mag = np.abs(np.asarray(x, dtype=score_dtype(x.dtype)))
    if select == "magnitude":
        return mag
    h, _ = calibration(calib, tuple(x.shape), codec_id, select)
    norms = np.sqrt(np.diag(h))
    return mag * norms.astype(mag.dtype)[None, :]


def kept_count(n: int, sparsity: float) -> int:
    """Elements kept out of ``n`` at ``sparsity`` (the pruned count is rounded half up)."""
    return n - min(n, math.floor(sparsity * n + 0.5))


def top_mask(score: np.ndarray, keep: int) -> np.ndarray:
    """Boolean mask of the ``keep`` largest scores of each row of a 2-D array (ties: the earlier element)."""
    rows, n = score.shape
    mask = np.zeros((rows, n), dtype=bool)
    if keep >= n:
        mask[:] = True
    elif keep > 0:
        order = np.argsort(-score, axis=1, kind="stable")[:, :keep]
        np.put_along_axis(mask, order, True, axis=1)
    return mask


# --- kept values ------------------------------------------------------------------------------------------
def store_values(codec: Codec | None, values: np.ndarray) -> np.ndarray | Encoded:
    """The kept values as stored: a little-endian array of the input dtype, or the nested codec's data."""
    if codec is None:
        return to_little_endian(values)
    return codec.encode(contiguous(values))


def load_values(enc: Encoded, codec: Codec | None, shape: tuple[int, ...], owner: str) -> np.ndarray:
    """Part ``values`` as an array of the original dtype (little-endian) and ``shape``."""
    want = enc.dtype.newbyteorder("<") if enc.dtype.byteorder == ">" else enc.dtype
    if codec is None:
        return enc.part_array("values", want, shape)
    nested = enc.part_encoded("values")
    if nested.codec != codec:
        raise BlobError(f"{owner}: the stored values were encoded by {nested.codec}, the spec says {codec}")
    vals = nested.decode()
    if vals.shape != tuple(shape):
        raise BlobError(f"{owner}: stored values have shape {vals.shape}, expected {tuple(shape)}")
    return restore_dtype(vals, want)


def values_tolerance(codec: Codec | None, values: np.ndarray) -> np.ndarray:
    """Per kept value, the largest error the values codec allows (0 when they are stored raw)."""
    if codec is None or values.size == 0:
        return np.zeros(values.shape)
    return np.broadcast_to(np.asarray(codec.tolerance(values), dtype=np.float64), values.shape)


def as_float32_operand(values: np.ndarray) -> np.ndarray:
    """Kept values as a kernel operand: float16 and float32 stay (C-contiguous), anything else → float32."""
    if values.dtype in (np.dtype(np.float16), np.dtype(np.float32)):
        return np.ascontiguousarray(values)
    return np.ascontiguousarray(values, dtype=np.float32)


def index_dtype(n: int) -> np.dtype[Any]:
    """Smallest unsigned dtype that holds 0 … n-1."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if n <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def bit_patterns(values: np.ndarray) -> np.ndarray:
    """``values`` viewed as unsigned integers of the same width: kernels move bits, so decoding is exact."""
    return values.view(f"u{values.dtype.itemsize}")


# --- operands of the compute kernels ---------------------------------------------------------------------
def check_operand(x: Any, cols: int, codec_id: str) -> np.ndarray:
    """The right-hand side of ``W · x`` as C-contiguous float32: (cols,) or (cols, batch)."""
    arr = np.asarray(x)
    if arr.ndim not in (1, 2) or arr.shape[0] != cols:
        raise InputError(
            f"{codec_id}: W · x needs x of shape ({cols},) or ({cols}, batch) for a weight with {cols} input "
            f"columns; got {arr.shape}"
        )
    if not (is_float(arr.dtype) or arr.dtype.kind in "iub"):
        raise InputError(f"{codec_id}: x must hold numbers, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def pad_rows(x: np.ndarray, length: int) -> np.ndarray:
    """``x`` with zero rows appended along axis 0 up to ``length`` (no copy when it already fits)."""
    if x.shape[0] >= length:
        return x
    out = np.zeros((length, *x.shape[1:]), dtype=x.dtype)
    out[: x.shape[0]] = x
    return out


# --- unstructured selection (bitmap, csr) ----------------------------------------------------------------
def check_amount(codec_id: str, sparsity: float | None, threshold: float | None, select: str) -> None:
    """Exactly one of ``sparsity`` / ``threshold``; a threshold is on magnitude only."""
    if (sparsity is None) == (threshold is None):
        raise ConfigError(
            f"{codec_id}: give exactly one of sparsity=<fraction pruned per row, e.g. 0.7> or "
            "threshold=<prune |x| <= t>"
        )
    check_fraction(codec_id, "sparsity", sparsity)
    if threshold is not None and not (threshold >= 0 and math.isfinite(threshold)):
        raise ConfigError(f"{codec_id}: threshold must be a finite number >= 0, got {threshold}")
    if threshold is not None and select != "magnitude":
        raise ConfigError(f"{codec_id}: threshold prunes by magnitude; use sparsity=… with select={select}")


def unstructured_select(
    x: np.ndarray, sparsity: float | None, threshold: float | None, select: str, calib: Any, codec_id: str
) -> tuple[np.ndarray, np.ndarray]:
    """(rows (R, N) of ``x`` — or of the SparseGPT-updated weights —, keep mask (R, N)) along the last axis.

    ``sparsity``: each row keeps its ``kept_count(N, sparsity)`` best elements; ``threshold``: elements with
    ``|x| > threshold`` are kept. Exact zeros are never stored.
    """
    rows, _ = as_rows(x, -1, codec_id)
    if threshold is not None:
        mag = np.abs(np.asarray(rows, dtype=score_dtype(x.dtype)))
        return rows, (mag > threshold) & (rows != 0)
    sparsity = float(sparsity or 0.0)
    if select == "sparsegpt":
        from ._sparsegpt import BLOCK, sparsegpt_prune

        h, samples = calibration(calib, tuple(x.shape), codec_id, select)
        updated, mask = sparsegpt_prune(
            np.asarray(x, dtype=np.float64), h, samples, lambda s: top_mask(s, kept_count(s.shape[1], sparsity)),
            BLOCK, codec_id=codec_id,
        )
        rows = updated.astype(x.dtype)
        return rows, mask & (rows != 0)
    score, _ = as_rows(scores(x, select, calib, codec_id), -1, codec_id)
    return rows, top_mask(score, kept_count(rows.shape[1], sparsity)) & (rows != 0)


def unstructured_tolerance(
    codec: Codec | None, x: np.ndarray, rows: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """``|x|`` where pruned, the values codec's bound where kept, in ``x``'s shape."""
    tol = np.abs(rows.astype(np.float64))
    tol[mask] = values_tolerance(codec, rows[mask])
    return from_rows(tol, x.shape, -1)


@dataclass(frozen=True)
class PreparedMatmul:
    """``W · x`` on a sparse 2-D weight, with the kernel operands extracted once (what a layer keeps).

    ``operands`` are the arguments of the ``codec_id`` kernels ``matvec``/``matmul`` before ``x``; ``x`` is
    zero-padded to ``padded`` entries; results are cropped to ``rows``.
    """

    codec_id: str
    operands: tuple[Any, ...]
    rows: int
    cols: int
    padded: int

    def __call__(self, x: Any, *, backend: str | None = None) -> np.ndarray:
        """``x`` (cols,) → float32 (rows,); ``x`` (cols, batch) → float32 (rows, batch)."""
        from ..kernels import get_kernel

        xx = check_operand(x, self.cols, self.codec_id)
        op = "matvec" if xx.ndim == 1 else "matmul"
        y = get_kernel(self.codec_id, op, backend)(*self.operands, pad_rows(xx, self.padded))
        return y[: self.rows]

    @property
    def nbytes(self) -> int:
        """Bytes of the operands a product reads (besides x and y)."""
        return sum(a.nbytes for a in self.operands if isinstance(a, np.ndarray))
