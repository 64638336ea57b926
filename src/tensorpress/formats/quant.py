"""``quant``: group-wise integer quantization with exact bit packing (round to nearest).

For a tensor with groups of ``group`` elements along ``axis`` (the last group shorter when the axis does not
divide; nothing is padded):

- asymmetric (default, Q4_1-like): ``x ≈ code * scale + minimum``, ``code`` in ``0 … 2**bits - 1``, one fp16
  scale and one fp16 minimum per group;
- ``symmetric=true`` (Q4_0/Q8_0-like): ``x ≈ (code - 2**(bits-1)) * scale``, levels ``-2**(bits-1) …
  2**(bits-1) - 1``, one fp16 scale per group (its sign picks which side gets the extra level).

Guarantee: every element is within half a stored step (``|scale| / 2``) of its input, plus the rounding of
the output dtype. The stored step is the group's ``(max - min) / (2**bits - 1)`` rounded *up* to the scale
dtype (minimum rounded *down*), so the codes always cover the group. Codes take exactly ``bits`` bits each.
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
from ..core.errors import BlobError, ConfigError, InputError
from ..kernels import get_kernel
from ..kernels.reference.quant import packed_nbytes

_SCALE_DTYPES: dict[str, type[np.floating[Any]]] = {"float16": np.float16, "float32": np.float32}
_BLOCK_ELEMENTS = 1 << 18  # elements encoded at once


@register
@dataclass(frozen=True)
class GroupQuant(Codec):
    bits: int = 4
    group: int = 128
    axis: int = -1
    symmetric: bool = False
    scale_dtype: str = "float16"

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
    )

    def validate(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ConfigError(f"quant: bits must be in 2..8, got {self.bits}")
        if self.group < 0:
            raise ConfigError(f"quant: group must be >= 1, or 0 for the whole axis; got {self.group}")
        if self.scale_dtype not in _SCALE_DTYPES:
            raise ConfigError(f"quant: scale_dtype must be float16 or float32, got {self.scale_dtype!r}")

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
        n = rows.shape[1]
        g = self._group(n)
        starts = np.arange(0, n, g)
        sdt = _SCALE_DTYPES[self.scale_dtype]
        levels = (1 << self.bits) - 1
        hi = np.maximum.reduceat(rows, starts, axis=1)
        lo = np.minimum.reduceat(rows, starts, axis=1)
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
        step = max(8, _BLOCK_ELEMENTS // n // 8 * 8)
        blocks = [self._encode_rows(np.asarray(rows[r : r + step], dtype=cdt))
                  for r in range(0, len(rows), step)]
        parts: dict[str, Any] = {
            "codes": np.concatenate([b[0] for b in blocks]),
            "scales": np.concatenate([b[1] for b in blocks]),
        }
        if not self.symmetric:
            parts["mins"] = np.concatenate([b[2] for b in blocks])
        return self._make(x, parts, {})

    def _encode_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(packed codes, scales, offsets) of a (rows, n) block in the compute dtype."""
        if not np.all(np.isfinite(rows)):
            raise InputError("quant cannot represent NaN or Inf; use a lossless codec or mask them first")
        scale, offset = self._parameters(rows)
        n = rows.shape[1]
        col = np.arange(n) // self._group(n)
        s = scale.astype(rows.dtype)[:, col]
        o = offset.astype(rows.dtype)[:, col]
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(s != 0, np.rint((rows - o) / np.where(s != 0, s, 1)), 0)
        if self.symmetric:
            q = np.where(s != 0, q, 1 << (self.bits - 1))
        codes = np.clip(q, 0, (1 << self.bits) - 1).astype(np.uint8)
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
        packed = enc.part_array("codes", np.uint8, (packed_nbytes(rows * n, self.bits),))
        scale32 = scales.astype(np.float32)
        if self.symmetric:
            offsets = np.float32(-(1 << (self.bits - 1))) * scale32
        else:
            offsets = enc.part_array("mins", sdt, (rows, ngroups)).astype(np.float32)
        if rows * n == 0:
            flat = np.zeros((rows, n), np.float32)
        else:
            flat = get_kernel("quant", "decode")(packed, scale32, offsets, self.bits, n, g)
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
        """Half the stored step of each element's group, plus the output dtype's rounding."""
        cdt = self._compute_dtype(x.dtype)
        rows, axis = self._rows(np.asarray(x, dtype=cdt))
        if rows.size == 0:
            return 0.0
        scale, _ = self._parameters(rows)
        n = rows.shape[1]
        half_step = 0.5 * np.abs(scale.astype(np.float64))[:, np.arange(n) // self._group(n)]
        moved = self._moved_shape(x.shape)
        tol = half_step.reshape(moved)
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
