"""``quant``: group-wise integer quantization with exact bit packing.

For a tensor with groups of ``group`` elements along ``axis`` (the last group shorter when the axis does not
divide; nothing is padded):

- asymmetric (default, Q4_1-like): ``x ≈ code * scale + minimum``, ``code`` in ``0 … 2**bits - 1``, one fp16
  scale and one fp16 minimum per group;
- ``symmetric=true`` (Q4_0/Q8_0-like): ``x ≈ (code - 2**(bits-1)) * scale``, levels ``-2**(bits-1) …
  2**(bits-1) - 1``, one fp16 scale per group (its sign picks which side gets the extra level).

How codes and group ranges are chosen (the stored layout and decode are the same for all of them):

- ``rounding=nearest`` (default): each element rounds to the nearest level of its group.
- ``rounding=gptq``: GPTQ (Frantar et al., 2022; :mod:`tensorpress.formats._gptq`) — columns of the quantized
  axis are rounded in turn, each one's error fed back into the columns not yet rounded through the inverse
  Hessian ``H = Xᵀ X`` of ``calib`` (required: activations X, samples × n, or a
  :class:`~tensorpress.formats._calib.Hessian`), dampened by ``damp × mean(diag H)``. A group's range is
  chosen when its first column is reached, from its current (error-updated) values clamped to the group's
  original range. ``act_order=true`` visits columns by decreasing ``diag(H)``; groups stay in the original
  order, so nothing extra is stored. GPTQ fits the calibration tokens: with few tokens per input feature
  (SmolLM2, 1-3 thousand tokens for 576-1536 inputs) it lowers the error on them far more than on other
  text, and ``damp=0.1`` generalizes better than the usual 0.01; give it tens of thousands of tokens.
- ``scale=minmax`` (default): a group's range is its [min, max]. ``scale=search``: the range is shrunk
  towards the group's value nearest 0 by the factor in ``1.0, 0.975 … 0.5`` that gives the least squared
  error over the group (each column weighted by ``diag(Xᵀ X)`` when ``calib`` is given), as llama.cpp's
  quantizers and AWQ's clipping search do; values outside the shrunk range are clipped.

Guarantee (checked on every element): ``nearest`` + ``minmax``: within half a stored step (``|scale| / 2``)
of the input, plus the rounding of the output dtype. The stored step is the group's ``(max - min) /
(2**bits - 1)`` rounded *up* to the scale dtype (minimum rounded *down*), so the codes always cover the group.
``scale=search`` adds the clipping: at most ``min(max(x - min, max - x), (1 - 0.5) (max - min))``.
``rounding=gptq`` moves codes away from the nearest level on purpose; what still holds is that every
decoded value lies within half a step of the group's original [min, max], so the error is at most
``max(x - min, max - x)`` plus half the min-max step. Codes take exactly ``bits`` bits each.
Parts: ``codes`` (uint8 bit stream, see :mod:`tensorpress.kernels.reference.quant`), ``scales`` and, when
asymmetric, ``mins`` — both (rows, groups) with the quantized axis moved last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.codec import Codec, register, restore_dtype
from ..core.dtypes import contiguous, is_float
from ..core.encoded import Encoded
from ..core.errors import BlobError, ConfigError, InputError, UnknownCodecError
from ..kernels import get_kernel
from ..kernels.reference.quant import packed_nbytes
from . import _gptq
from ._calib import Hessian, column_weights, hessian

_SCALE_DTYPES: dict[str, type[np.floating[Any]]] = {"float16": np.float16, "float32": np.float32}
_BLOCK_ELEMENTS = 1 << 18  # elements encoded at once
_GPTQ_BLOCK_ELEMENTS = 1 << 21  # GPTQ's per-column loop costs the same per block: fewer, larger blocks
#: ``scale=search``: the shrink factors tried for each group's range
SHRINK = np.linspace(1.0, 0.5, 21)


@register
@dataclass(frozen=True)
class GroupQuant(Codec):
    bits: int = 4
    group: int = 128
    axis: int = -1
    symmetric: bool = False
    scale_dtype: str = "float16"
    rounding: str = "nearest"
    act_order: bool = False
    damp: float = 0.01
    scale: str = "minmax"

    codec_id: ClassVar[str] = "quant"
    accepts_nonfinite: ClassVar[bool] = False
    summary: ClassVar[str] = "group-wise integer quantization, 2-8 bits, fp16 scales (GGUF Q4_0/Q4_1/Q8_0 layouts)"
    examples: ClassVar[tuple[str, ...]] = (
        "quant(bits=4, group=128)",
        "quant(bits=8, group=32, symmetric=true)",
        "quant(bits=3, group=64)",
        "quant(bits=2, group=16, axis=0)",
        "quant(bits=5, group=0, symmetric=true)",
        "quant(bits=6, group=128, scale_dtype=float32)",
        "quant(bits=4, group=32, scale=search)",
        "quant(bits=3, group=128, symmetric=true, scale=search)",
    )

    def validate(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ConfigError(f"quant: bits must be in 2..8, got {self.bits}")
        if self.group < 0:
            raise ConfigError(f"quant: group must be >= 1, or 0 for the whole axis; got {self.group}")
        if self.scale_dtype not in _SCALE_DTYPES:
            raise ConfigError(f"quant: scale_dtype must be float16 or float32, got {self.scale_dtype!r}")
        if self.rounding not in ("nearest", "gptq"):
            raise ConfigError(f"quant: rounding must be nearest or gptq, got {self.rounding!r}")
        if self.scale not in ("minmax", "search"):
            raise ConfigError(f"quant: scale must be minmax or search, got {self.scale!r}")
        if not 0.0 <= self.damp < float("inf"):
            raise ConfigError(f"quant: damp must be a finite number >= 0 (0.01 is usual), got {self.damp}")
        if self.act_order and self.rounding != "gptq":
            raise ConfigError("quant: act_order=true orders GPTQ's columns; it needs rounding=gptq")

    # --- layout ---------------------------------------------------------------------------------------
    def _rows(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """``x`` with the quantized axis last, as (rows, n), in the compute dtype; and the axis index."""
        if x.ndim == 0:
            return x.reshape(1, 1), 0
        axis = self.axis
        if not -x.ndim <= axis < x.ndim:
            raise InputError(f"quant: axis {axis} is out of range for a {x.ndim}-d array of shape {x.shape}")
        axis %= x.ndim
        moved = np.moveaxis(x, axis, -1)
        return moved.reshape(math.prod(moved.shape[:-1]), moved.shape[-1]), axis

    def _group(self, n: int) -> int:
        return max(1, n if self.group == 0 else min(self.group, n)) if n else max(self.group, 1)

    def _compute_dtype(self, dtype: np.dtype[Any]) -> type[np.floating[Any]]:
        return np.float64 if dtype.itemsize > 4 or (dtype.kind in "iu" and dtype.itemsize >= 4) else np.float32

    def _parameters(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stored (scale, offset) per group, (rows, groups), in the scale dtype; offset = min or -2**(b-1)·scale."""
        lo, hi = self._ranges(rows)
        return self._range_parameters(lo, hi, rows)

    def _ranges(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each group's (min, max), (rows, groups)."""
        starts = np.arange(0, rows.shape[1], self._group(rows.shape[1]))
        return np.minimum.reduceat(rows, starts, axis=1), np.maximum.reduceat(rows, starts, axis=1)

    def _range_parameters(self, lo: np.ndarray, hi: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stored (scale, offset) whose levels cover [lo, hi] (same shapes, compute dtype)."""
        sdt = _SCALE_DTYPES[self.scale_dtype]
        levels = (1 << self.bits) - 1
        with np.errstate(over="ignore"):
            if self.symmetric:
                half = 1 << (self.bits - 1)
                pos, neg = np.maximum(hi, 0), np.maximum(-lo, 0)
                # the side that gets the extra level (-half) is the one needing the larger step otherwise
                d_neg = np.maximum(neg / (half + 0.5), pos / (half - 0.5))
                d_pos = np.maximum(pos / (half + 0.5), neg / (half - 0.5))
                flip = d_pos < d_neg
                scale = _round_away(np.where(flip, -d_pos, d_neg), sdt)
                offset = -half * scale.astype(np.float64)
            else:
                minimum = _round_down(lo, sdt)
                scale = _round_away((hi - minimum.astype(hi.dtype)) / levels, sdt)
                offset = minimum
        if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(offset))):
            raise InputError(
                f"quant: group scales or minimums overflow {self.scale_dtype} "
                f"(largest |value| {float(np.max(np.abs(rows))):.4g}); use scale_dtype=float32"
            )
        return scale, np.asarray(offset)

    def _fit(self, rows: np.ndarray, weights: np.ndarray | None,
             bounds: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stored (scale, offset) per group of ``rows`` (r, n): min-max, or the best shrink (``scale=search``,
        squared error weighted per column by ``weights`` (n,) when given). ``bounds``: (lo, hi) per group
        that the range may not leave (GPTQ: the group's original range)."""
        lo, hi = self._ranges(rows)
        if bounds is not None:
            lo, hi = np.maximum(lo, bounds[0]), np.minimum(hi, bounds[1])
            hi = np.maximum(hi, lo)
        if self.scale == "minmax":
            return self._range_parameters(lo, hi, rows)
        n = rows.shape[1]
        g = self._group(n)
        starts = np.arange(0, n, g)
        col = np.arange(n) // g
        anchor = np.clip(0.0, lo, hi)
        best_scale, best_offset = self._range_parameters(lo, hi, rows)
        best_err = np.full(lo.shape, np.inf)
        for f in SHRINK:
            scale, offset = self._range_parameters(anchor + (lo - anchor) * f, anchor + (hi - anchor) * f, rows)
            s, o = scale.astype(np.float64)[:, col], offset.astype(np.float64)[:, col]
            sq = np.square(self._codes(rows, s, o) * s + o - rows)
            err = np.add.reduceat(sq if weights is None else sq * weights, starts, axis=1)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_scale, best_offset = np.where(better, scale, best_scale), np.where(better, offset, best_offset)
        return best_scale.astype(_SCALE_DTYPES[self.scale_dtype]), best_offset

    def _codes(self, rows: np.ndarray, s: np.ndarray, o: np.ndarray) -> np.ndarray:
        """Nearest codes (float, 0 … 2**bits - 1) of ``rows`` for per-element scale ``s`` and offset ``o``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(s != 0, np.rint((rows - o) / np.where(s != 0, s, 1)), 0)
        if self.symmetric:
            q = np.where(s != 0, q, 1 << (self.bits - 1))
        return np.clip(q, 0, (1 << self.bits) - 1)

    # --- codec ----------------------------------------------------------------------------------------
    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        if not (is_float(x.dtype) or x.dtype.kind in "biu"):
            raise InputError(f"quant works on float, integer or bool data, got {x.dtype}")
        cdt = self._compute_dtype(x.dtype)
        rows, _ = self._rows(x)
        if rows.size == 0:
            g = self._group(rows.shape[1])
            empty = np.zeros((rows.shape[0], -(-rows.shape[1] // g)), _SCALE_DTYPES[self.scale_dtype])
            none: dict[str, Any] = {"codes": np.zeros(0, np.uint8), "scales": empty}
            return self._make(x, none if self.symmetric else {**none, "mins": empty.copy()}, {})
        # Rows are independent: encoding them in blocks keeps the temporaries to a few MiB whatever the
        # tensor's size. A multiple of 8 rows ends each block's codes on a byte boundary, so the packed
        # blocks join into the same bit stream as one pass would give.
        n = rows.shape[1]
        context = self._calibration(calib, n)
        step = max(8, (_GPTQ_BLOCK_ELEMENTS if self.rounding == "gptq" else _BLOCK_ELEMENTS) // n // 8 * 8)
        blocks = [self._encode_rows(np.asarray(rows[r : r + step], dtype=cdt), context)
                  for r in range(0, len(rows), step)]
        parts: dict[str, Any] = {
            "codes": np.concatenate([b[0] for b in blocks]),
            "scales": np.concatenate([b[1] for b in blocks]),
        }
        if not self.symmetric:
            parts["mins"] = np.concatenate([b[2] for b in blocks])
        return self._make(x, parts, {})

    def _calibration(self, calib: Any, n: int) -> tuple[np.ndarray | None, _gptq.Prepared | None]:
        """(column weights for ``scale=search``, GPTQ's factored Hessian) from ``calib``."""
        if self.rounding == "gptq":
            h = hessian(calib, n, "quant(rounding=gptq)")
            weights = np.diag(h).copy() if self.scale == "search" else None
            if isinstance(calib, Hessian):
                return weights, _gptq.prepare_shared(calib, h, self.damp, self.act_order)
            return weights, _gptq.prepare(h, self.damp, self.act_order)
        if self.scale == "search" and calib is not None:
            return column_weights(calib, n, "quant(scale=search)"), None
        return None, None

    def _encode_rows(self, rows: np.ndarray, context: tuple[np.ndarray | None, _gptq.Prepared | None]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(packed codes, scales, offsets) of a (rows, n) block in the compute dtype."""
        if not np.all(np.isfinite(rows)):
            raise InputError("quant cannot represent NaN or Inf; use a lossless codec or mask them first")
        weights, prepared = context
        n = rows.shape[1]
        g = self._group(n)
        if prepared is None:
            scale, offset = self._fit(rows, weights)
            col = np.arange(n) // g
            codes = self._codes(rows, scale.astype(rows.dtype)[:, col], offset.astype(rows.dtype)[:, col])
            codes = codes.astype(np.uint8)
        else:
            lo, hi = self._ranges(rows)

            def fit(values: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
                members = slice(index * g, index * g + values.shape[1])
                w = None if weights is None else weights[members]
                bounds = (lo[:, index : index + 1], hi[:, index : index + 1])
                s, o = self._fit(values, w, bounds)  # one group: values holds at most ``g`` columns
                return s[:, 0], o[:, 0]

            zero = (1 << (self.bits - 1)) if self.symmetric else 0
            codes, scale, offset = _gptq.gptq_round(rows.astype(np.float64), prepared, g, fit,
                                                    (1 << self.bits) - 1, zero, (lo, hi))
        return get_kernel("quant", "pack", "reference")(codes, self.bits), scale, offset

    def decode_array(self, enc: Encoded) -> np.ndarray:
        self._check_owner(enc)
        shape, dtype = enc.shape, enc.dtype
        moved = self._moved_shape(shape)
        n = moved[-1] if moved else 1
        rows = math.prod(moved[:-1]) if moved else 1
        g = self._group(n)
        ngroups = -(-n // g) if n else 0
        sdt = _SCALE_DTYPES[self.scale_dtype]
        scales = enc.part_array("scales", sdt, (rows, ngroups))
        packed, expected_crc = enc.part_array_unchecked("codes", np.uint8, (packed_nbytes(rows * n, self.bits),))
        scale32 = scales.astype(np.float32)
        if self.symmetric:
            offsets = np.float32(-(1 << (self.bits - 1))) * scale32
        else:
            offsets = enc.part_array("mins", sdt, (rows, ngroups)).astype(np.float32)
        checked = _checked_decoder() if expected_crc is not None and rows * n else None
        if checked is not None:  # the blob's check of the codes, done while the kernel has them in cache
            flat, crc = checked(packed, scale32, offsets, self.bits, n, g)
            enc.confirm_part("codes", crc)
        else:
            if expected_crc is not None:
                enc.part_array("codes", np.uint8)  # checks the part
            flat = (np.zeros((rows, n), np.float32) if rows * n == 0
                    else get_kernel("quant", "decode")(packed, scale32, offsets, self.bits, n, g))
        out = flat.reshape(moved)
        if shape:
            out = np.moveaxis(out, -1, self.axis % len(shape))
        return contiguous(restore_dtype(out.reshape(shape), dtype))

    def _moved_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if not shape:
            return (1, 1)
        if not -len(shape) <= self.axis < len(shape):
            raise BlobError(f"quant: axis {self.axis} does not fit the stored shape {shape}")
        axis = self.axis % len(shape)
        rest = shape[:axis] + shape[axis + 1 :]
        return (*rest, shape[axis])

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """Half the min-max step of each element's group, plus what ``scale=search`` may clip or
        ``rounding=gptq`` may move (see the module docstring), plus the output dtype's rounding."""
        cdt = self._compute_dtype(x.dtype)
        rows, axis = self._rows(np.asarray(x, dtype=cdt))
        if rows.size == 0:
            return 0.0
        lo, hi = self._ranges(rows)
        scale, _ = self._range_parameters(lo, hi, rows)
        n = rows.shape[1]
        col = np.arange(n) // self._group(n)
        bound = 0.5 * np.abs(scale.astype(np.float64))[:, col]
        if self.rounding == "gptq" or self.scale == "search":
            lo64, hi64, x64 = lo.astype(np.float64)[:, col], hi.astype(np.float64)[:, col], rows.astype(np.float64)
            moved_away = np.maximum(x64 - lo64, hi64 - x64)
            if self.rounding != "gptq":
                moved_away = np.minimum(moved_away, (1.0 - SHRINK[-1]) * (hi64 - lo64))
            bound = bound + moved_away
        moved = self._moved_shape(x.shape)
        tol = bound.reshape(moved)
        if x.ndim:
            tol = np.moveaxis(tol, -1, axis)
        tol = tol.reshape(x.shape)
        mag = np.abs(np.asarray(x, dtype=np.float64)) + tol
        # fp32 arithmetic in the kernel, then rounding into the output dtype
        tol = tol + mag * 2.0**-22
        if x.dtype.kind in "biu":
            return tol + 0.5
        if x.dtype.itemsize < 4:
            return tol + mag * _unit_roundoff(x.dtype)
        return tol

    # --- compute on the compressed data ----------------------------------------------------------------
    def prepare(self, enc: Encoded) -> Any:
        """``W · x`` on a 2-D weight (out, in) quantized along ``in`` (axis -1), straight from the packed codes:
        a :class:`~tensorpress.formats._sparse.PreparedMatmul` with the ``quant`` ``matvec``/``matmul`` kernel
        operands (:mod:`tensorpress.kernels.reference.quant_matvec`) extracted once."""
        from ._sparse import PreparedMatmul

        self._check_owner(enc)
        if len(enc.shape) != 2 or self.axis % 2 != 1:
            raise InputError(f"quant: matmul needs a 2-D weight (out, in) quantized along axis -1; got shape "
                             f"{enc.shape}, axis={self.axis}")
        rows, n = enc.shape
        g = self._group(n)
        ngroups = -(-n // g) if n else 0
        sdt = _SCALE_DTYPES[self.scale_dtype]
        scales = enc.part_array("scales", sdt, (rows, ngroups)).astype(np.float32)
        offsets = (np.float32(-(1 << (self.bits - 1))) * scales if self.symmetric
                   else enc.part_array("mins", sdt, (rows, ngroups)).astype(np.float32))
        packed = enc.part_array("codes", np.uint8, (packed_nbytes(rows * n, self.bits),))
        if packed.ctypes.data % 4:  # the kernels read the codes as 32-bit words
            packed = packed.copy()
        return PreparedMatmul("quant", (packed, scales, offsets, self.bits, n, g), rows, n, n)


def _unit_roundoff(dtype: np.dtype[Any]) -> float:
    import ml_dtypes

    return float(ml_dtypes.finfo(dtype).eps)


def _round_down(v: np.ndarray, dt: type[np.floating[Any]]) -> np.ndarray:
    """``v`` in ``dt``, rounded towards -inf."""
    r = v.astype(dt)
    low = r.astype(v.dtype) > v
    return np.where(low, np.nextafter(r, dt(-np.inf)), r).astype(dt)


def _round_away(v: np.ndarray, dt: type[np.floating[Any]]) -> np.ndarray:
    """``v`` in ``dt``, rounded away from zero (so a step never shrinks)."""
    r = v.astype(dt)
    small = np.abs(r.astype(v.dtype)) < np.abs(v)
    return np.where(small, np.nextafter(r, np.where(v < 0, dt(-np.inf), dt(np.inf)).astype(dt)), r).astype(dt)


def _checked_decoder() -> Any:
    """The decode kernel that also returns the CRC-32C of the codes, where the chosen backend has one."""
    try:
        return get_kernel("quant", "decode_crc")
    except UnknownCodecError:
        return None
