"""``nm``: N:M structured sparsity — at most ``n`` non-zeros in every ``m`` consecutive elements along ``axis``.

``nm(n=2, m=4)`` is the 2:4 pattern of sparse tensor cores. Storage (see
:mod:`tensorpress.kernels.reference.nm` for the exact layout): the kept values — raw in the input dtype, or
compressed by a nested codec (``values=quant(bits=8)``) — and ``ceil(log2 m)`` bits of position per kept
value. 2:4 with float16 values takes 16 + 2 bits per kept value, 9 bits per element (encode
``w.astype(np.float16)`` to store a float32 weight's kept values in float16).

Selection (``select``): ``magnitude`` keeps the ``n`` largest ``|w|`` of each group; ``wanda`` the largest
``|w_ij| · ||X_j||₂`` (2-D weight (out, in), ``calib`` = activations X (samples, in)); ``sparsegpt`` chooses
the masks with the inverse Hessian of X and updates the kept weights to compensate (sparse groups must run
along the input axis: ``axis=-1``). See :mod:`tensorpress.formats._sparsegpt`.

When ``m`` does not divide the axis, the last group is shorter: it keeps its ``min(n, length)`` best
elements (the axis is padded with zeros that are never preferred to a real element); decoding crops back
to the input's shape. NaN or Inf in the input are an error: they cannot be ranked.

Guarantee: kept elements are exact (raw values) or within the values codec's bound; pruned elements are 0,
so their error is their own magnitude. With ``select=sparsegpt`` the kept weights are changed on purpose
(the bound is on the layer's output, not on the weights): the per-element tolerance is unbounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.codec import Codec, register, restore_dtype
from ..core.encoded import Encoded
from ..core.errors import BlobError, ConfigError, InputError
from ..kernels import get_kernel
from ..kernels.reference.nm import index_bits, pack_indices, unpack_indices
from . import _sparse
from ._sparsegpt import sparsegpt_prune

MAX_M = 256


@register
@dataclass(frozen=True)
class NMSparse(Codec):
    n: int = 2
    m: int = 4
    axis: int = -1
    select: str = "magnitude"
    values: Codec | None = None

    codec_id: ClassVar[str] = "nm"
    accepts_nonfinite: ClassVar[bool] = False
    summary: ClassVar[str] = "N:M structured sparsity (2:4 sparse tensor core layout), magnitude/Wanda/SparseGPT"
    examples: ClassVar[tuple[str, ...]] = (
        "nm(n=2, m=4)",
        "nm(n=4, m=8)",
        "nm(n=1, m=4, axis=0)",
        "nm(n=3, m=7)",
        "nm(n=2, m=4, values=quant(bits=8, group=64))",
        "nm(n=1, m=1)",
    )

    def validate(self) -> None:
        if not 1 <= self.m <= MAX_M:
            raise ConfigError(f"nm: m must be in 1..{MAX_M}, got {self.m}")
        if not 1 <= self.n <= self.m:
            raise ConfigError(f"nm: n must be in 1..m (keep n of every m), got n={self.n}, m={self.m}")
        _sparse.check_select("nm", self.select)

    @property
    def accepts_integers(self) -> bool:  # type: ignore[override]
        return self.values is None or self.values.accepts_integers

    # --- layout ---------------------------------------------------------------------------------------
    def _groups(self, cols: int) -> int:
        return -(-cols // self.m)

    def _select(self, x: np.ndarray, calib: Any) -> tuple[np.ndarray, np.ndarray]:
        """(rows view of x, or of the SparseGPT-updated weights; kept positions (rows, G, n) int64)."""
        rows, axis = _sparse.as_rows(x, self.axis, "nm")
        nrows, cols = rows.shape
        g = self._groups(cols)
        padded = g * self.m
        if self.select == "sparsegpt":
            rows, keep_mask = self._sparsegpt(x, calib, axis)
            return rows, _positions_from_mask(keep_mask, self.n, self.m, g)
        score = _sparse.scores(x, self.select, calib, "nm")
        srows, _ = _sparse.as_rows(score, self.axis, "nm")
        full = np.full((nrows, padded), -1.0, dtype=srows.dtype)  # padding ranks below every real element
        full[:, :cols] = srows
        order = np.argsort(-full.reshape(nrows, g, self.m), axis=2, kind="stable")[:, :, : self.n]
        return rows, np.sort(order, axis=2)

    def _sparsegpt(self, x: np.ndarray, calib: Any, axis: int) -> tuple[np.ndarray, np.ndarray]:
        h, samples = _sparse.calibration(calib, tuple(x.shape), "nm", "sparsegpt")
        if axis != x.ndim - 1:
            raise InputError(
                f"nm(select=sparsegpt) prunes groups along the input axis of a (out, in) weight: use axis=-1, "
                f"got axis={self.axis}"
            )
        out, cols = x.shape
        padded = self._groups(cols) * self.m
        w = np.zeros((out, padded))
        w[:, :cols] = x
        hp = np.zeros((padded, padded))  # padding columns take no input: their weights stay decoupled
        hp[:cols, :cols] = h
        updated, mask = sparsegpt_prune(w, hp, samples, lambda s: _sparse.top_mask(s, self.n), self.m,
                                        codec_id="nm")
        return updated[:, :cols].astype(x.dtype), mask

    # --- codec ----------------------------------------------------------------------------------------
    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        _sparse.require_finite(x, "nm")
        rows, pos = self._select(x, calib)
        vals = _gather(rows, pos, self.m)
        return self._make(
            x,
            {"values": _sparse.store_values(self.values, vals), "indices": pack_indices(pos, self.m)},
            {},
        )

    def _stored(self, enc: Encoded) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(kept values (rows, G·n) in the original dtype, packed indices, rows, cols)."""
        self._check_owner(enc)
        nrows, cols = _sparse.rows_shape(enc.shape, self.axis, "nm")
        count = nrows * self._groups(cols) * self.n
        nbytes = (count * index_bits(self.m) + 7) // 8
        packed = enc.part_array("indices", np.uint8, (nbytes,))
        vals = _sparse.load_values(enc, self.values, (nrows, self._groups(cols) * self.n), "nm")
        can_overflow = count and index_bits(self.m) and (1 << index_bits(self.m)) != self.m
        if can_overflow and int(unpack_indices(packed, self.m, count).max()) >= self.m:
            raise BlobError(f"nm: a stored index is not below m={self.m}: the data is corrupted")
        return vals, packed, nrows, cols

    def decode_array(self, enc: Encoded) -> np.ndarray:
        vals, packed, _, cols = self._stored(enc)
        dense = get_kernel("nm", "decode")(_sparse.bit_patterns(vals), packed, self.n, self.m, cols)
        dense = dense.view(vals.dtype)
        return restore_dtype(_sparse.from_rows(dense, enc.shape, self.axis), enc.dtype)

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """``|x|`` where pruned; the values codec's bound where kept (mask recomputed; magnitude only)."""
        if self.select == "sparsegpt" or (self.select == "wanda" and self.values is not None):
            return np.inf
        if self.select == "wanda" or x.size == 0:
            return np.abs(np.asarray(x, dtype=np.float64))  # the mask depends on the calibration data
        rows, pos = self._select(x, None)
        kept_tol = _sparse.values_tolerance(self.values, _gather(rows, pos, self.m))
        nrows, cols = rows.shape
        tol = np.abs(rows.astype(np.float64))
        g = self._groups(cols)
        full = np.zeros((nrows, g * self.m))
        full[:, :cols] = tol
        flat_pos = (pos + (np.arange(g) * self.m)[None, :, None]).reshape(nrows, g * self.n)
        np.put_along_axis(full, flat_pos, kept_tol.reshape(nrows, g * self.n), axis=1)
        return _sparse.from_rows(np.ascontiguousarray(full[:, :cols]), x.shape, self.axis)

    # --- compute on the compressed data ----------------------------------------------------------------
    def prepare(self, enc: Encoded) -> _sparse.PreparedMatmul:
        """The kernel operands of a 2-D weight (out, in) sparse along its input axis (``axis=-1``)."""
        if len(enc.shape) != 2 or self.axis % 2 != 1:
            raise InputError(
                f"nm: matmul needs a 2-D weight (out, in) sparse along axis -1; got shape {enc.shape}, "
                f"axis={self.axis}"
            )
        vals, packed, rows, cols = self._stored(enc)
        operands = (_sparse.as_float32_operand(vals), packed, self.n, self.m, cols)
        return _sparse.PreparedMatmul("nm", operands, rows, cols, self._groups(cols) * self.m)

    def matmul(self, enc: Encoded, x: Any, *, backend: str | None = None) -> np.ndarray:
        """``W · x`` without densifying W: ``x`` (in,) → float32 (out,); ``x`` (in, batch) → (out, batch)."""
        return self.prepare(enc)(x, backend=backend)


def _gather(rows: np.ndarray, pos: np.ndarray, m: int) -> np.ndarray:
    """The kept values (rows, G·n) in the input dtype; padding slots are 0."""
    nrows, cols = rows.shape
    g = pos.shape[1]
    full = np.zeros((nrows, g * m), dtype=rows.dtype)
    full[:, :cols] = rows
    return np.take_along_axis(full.reshape(nrows, g, m), pos, axis=2).reshape(nrows, pos.shape[1] * pos.shape[2])


def _positions_from_mask(mask: np.ndarray, n: int, m: int, groups: int) -> np.ndarray:
    """Kept positions (rows, G, n), ascending, from a keep mask with ``n`` kept per group of ``m``."""
    order = np.argsort(~mask.reshape(mask.shape[0], groups, m), axis=2, kind="stable")[:, :, :n]
    return np.sort(order, axis=2)
