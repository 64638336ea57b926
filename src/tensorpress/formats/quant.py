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
  quantizers and AWQ's clipping search do; values outside the shrunk range are clipped. ``scale=refine``
  (asymmetric groups; symmetric ones search): the search's result is then refitted twice by weighted least
  squares of ``code · scale + minimum`` against the group for its current codes, as llama.cpp's K-quant
  quantizers do, the refitted range held inside the group's range and covering its most-shrunk range (so
  the guarantee of ``search`` still holds); a refit is kept only where it lowers the group's error.

Guarantee (checked on every element): ``nearest`` + ``minmax``: within half a stored step (``|scale| / 2``)
of the input, plus the rounding of the output dtype. The stored step is the group's ``(max - min) /
(2**bits - 1)`` rounded *up* to the scale dtype (minimum rounded *down*), so the codes always cover the group.
``scale=search`` adds the clipping: at most ``min(max(x - min, max - x), (1 - 0.5) (max - min))``.
``rounding=gptq`` moves codes away from the nearest level on purpose; what still holds is that every
decoded value lies within half a step of the group's original [min, max], so the error is at most
``max(x - min, max - x)`` plus half the min-max step. Codes take exactly ``bits`` bits each.
Parts: ``codes`` (uint8 bit stream, see :mod:`tensorpress.kernels.reference.quant`), ``scales`` and, when
asymmetric, ``mins`` — both (rows, groups) with the quantized axis moved last.

Quantized group scales (``scale_bits=k``, 4..8; llama.cpp's K-quant layout: Q4_K is ``bits=4, group=32,
scale_bits=6, super_group=8``, 4.5 bits per weight): the groups, taken row-major over (rows, groups), form
super-groups of ``super_group`` consecutive groups (crossing rows, so any width costs the same; the last
super-group is shorter when the count does not divide). Each group stores its scale, and when asymmetric its
minimum, as a ``k``-bit code; each super-group stores the steps of those codes in ``scale_dtype``, and a
parameter is ``code × step`` (computed in float32, as decode does). Asymmetric scales are ``>= 0``: unsigned
codes ``0 … 2**k - 1``; minimums take either sign: signed codes ``-2**(k-1) … 2**(k-1) - 1``. Symmetric
scales keep their sign (which side gets the extra level): signed codes, as Q3_K stores them. The steps are
sized from the min-max parameters of the super-group's groups in the original data (the largest scale takes
the top code), before any rounding, so GPTQ and the search work on a fixed grid; the minimum is rounded
*down* and the scale *away from 0* onto it, so the codes still cover each group and the guarantee above
holds with the quantized min-max step. ``scale=search`` measures each candidate's error on that stored
grid. Parts: ``codes``; ``scale_codes`` and, when asymmetric, ``min_codes`` (``k``-bit fields of the same
bit stream as the codes, signed ones stored offset by ``2**(k-1)``); ``scale_steps`` and, when asymmetric,
``min_steps`` ((super-groups,), ``scale_dtype``). ``scale_bits`` and ``super_group`` are written in a spec
or configuration only when set, so those of the formats above stay as they were.
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
from ._group_scales import Grid, ScaleGrid, Steps, round_away, round_down, signed_step

_SCALE_DTYPES: dict[str, type[np.floating[Any]]] = {"float16": np.float16, "float32": np.float32}
_BLOCK_ELEMENTS = 1 << 18  # elements encoded at once
_GPTQ_BLOCK_ELEMENTS = 1 << 21  # GPTQ's per-column loop costs the same per block: fewer, larger blocks
#: ``scale=search``: the shrink factors tried for each group's range
SHRINK = np.linspace(1.0, 0.5, 21)
REFITS = 2  # ``scale=refine``: least-squares refits after the search


def _least_squares_range(rows: np.ndarray, codes: np.ndarray, weights: np.ndarray | None, starts: np.ndarray,
                         levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the (minimum, minimum + levels · scale) of the weighted least-squares fit of
    ``codes · scale + minimum`` to ``rows`` (both (r, n)); NaN where a group's codes are all equal."""
    w = np.ones(rows.shape[1]) if weights is None else weights
    x = rows.astype(np.float64)

    def total(v: np.ndarray) -> np.ndarray:
        return np.add.reduceat(v * w, starts, axis=1)

    a, b, c = total(codes * codes), total(codes), total(np.ones_like(x))
    d, e = total(codes * x), total(x)
    det = a * c - b * b
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = det > 1e-12 * np.maximum(a * c, 1e-300)
        scale = np.where(ok, (c * d - b * e) / np.where(ok, det, 1), np.nan)
        minimum = np.where(ok, (a * e - b * d) / np.where(ok, det, 1), np.nan)
    return minimum, minimum + levels * scale


MAX_SUPER_GROUP = 256  # encoding blocks hold whole super-groups: up to 8 × super_group rows at once


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
    scale_bits: int = 0
    super_group: int = 8

    codec_id: ClassVar[str] = "quant"
    accepts_nonfinite: ClassVar[bool] = False
    omitted_at_default: ClassVar[tuple[str, ...]] = ("scale_bits", "super_group")
    summary: ClassVar[str] = ("group-wise integer quantization, 2-8 bits, fp16 scales (GGUF Q4_0/Q4_1/Q8_0 layouts) "
                              "or k-bit coded scales (K-quant-style super-groups)")
    examples: ClassVar[tuple[str, ...]] = (
        "quant(bits=4, group=128)",
        "quant(bits=8, group=32, symmetric=true)",
        "quant(bits=3, group=64)",
        "quant(bits=2, group=16, axis=0)",
        "quant(bits=5, group=0, symmetric=true)",
        "quant(bits=6, group=128, scale_dtype=float32)",
        "quant(bits=4, group=32, scale=search)",
        "quant(bits=3, group=128, symmetric=true, scale=search)",
        "quant(bits=4, group=32, scale=search, scale_bits=6)",
        "quant(bits=4, group=32, scale=refine, scale_bits=6, super_group=16)",
        "quant(bits=3, group=16, symmetric=true, scale_bits=6, super_group=16)",
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
        if self.scale not in ("minmax", "search", "refine"):
            raise ConfigError(f"quant: scale must be minmax, search or refine, got {self.scale!r}")
        if not 0.0 <= self.damp < float("inf"):
            raise ConfigError(f"quant: damp must be a finite number >= 0 (0.01 is usual), got {self.damp}")
        if self.act_order and self.rounding != "gptq":
            raise ConfigError("quant: act_order=true orders GPTQ's columns; it needs rounding=gptq")
        if self.scale_bits != 0 and not 4 <= self.scale_bits <= 8:
            raise ConfigError(f"quant: scale_bits must be 0 (scales in scale_dtype) or 4..8 (quantized group "
                              f"scales, 6 as in llama.cpp's K-quants), got {self.scale_bits}")
        if not 1 <= self.super_group <= MAX_SUPER_GROUP:
            raise ConfigError(f"quant: super_group must be in 1..{MAX_SUPER_GROUP} groups, got {self.super_group}")
        if self.scale_bits == 0 and self.super_group != 8:
            raise ConfigError(f"quant: super_group={self.super_group} groups the quantized scales; it needs "
                              "scale_bits=4..8 (or leave super_group at 8)")

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

    def _range_parameters(self, lo: np.ndarray, hi: np.ndarray, rows: np.ndarray,
                          grid: Grid | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stored (scale, offset) whose levels cover [lo, hi] (same shapes, compute dtype); on the
        ``grid`` of each group's (scale step, min step) when the scales are quantized (float64 values)."""
        quantized = self._quantized_scales()
        if grid is not None and quantized is not None:
            return quantized.parameters(lo, hi, grid)
        sdt = _SCALE_DTYPES[self.scale_dtype]
        levels = (1 << self.bits) - 1
        lo64, hi64 = lo.astype(np.float64), hi.astype(np.float64)  # float32 steps of tiny groups underflow
        with np.errstate(over="ignore"):
            if self.symmetric:
                scale = round_away(signed_step(lo64, hi64, self.bits), sdt)
                offset = -(1 << (self.bits - 1)) * scale.astype(np.float64)
            else:
                minimum = round_down(lo64, sdt)
                scale = round_away((hi64 - minimum.astype(np.float64)) / levels, sdt)
                offset = minimum
        if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(offset))):
            raise InputError(
                f"quant: group scales or minimums overflow {self.scale_dtype} "
                f"(largest |value| {float(np.max(np.abs(rows))):.4g}); use scale_dtype=float32"
            )
        return scale, np.asarray(offset)

    def _quantized_scales(self) -> ScaleGrid | None:
        """The grid of the quantized group scales (``scale_bits`` > 0), else None."""
        if not self.scale_bits:
            return None
        return ScaleGrid(self.bits, self.scale_bits, self.super_group, self.symmetric, _SCALE_DTYPES[self.scale_dtype])

    def _stored_parameters(self, enc: Encoded, rows: int, ngroups: int) -> tuple[np.ndarray, np.ndarray]:
        """Each group's (scale, offset) as the kernels take them: float32 (rows, groups)."""
        grid = self._quantized_scales()
        if grid is not None:
            return grid.stored(enc, rows, ngroups)
        sdt, shape, zero = _SCALE_DTYPES[self.scale_dtype], (rows, ngroups), 1 << (self.bits - 1)
        scales, scales_crc = enc.part_array_unchecked("scales", sdt, shape)
        mins, mins_crc = (None, None) if self.symmetric else enc.part_array_unchecked("mins", sdt, shape)
        checked = _kernel_or_none("parameters_crc") if scales_crc is not None or mins_crc is not None else None
        if checked is not None:  # the blob's checks of the parameters, done while converting them
            scale32, offsets, got_scales, got_mins = checked(scales, mins, zero)
            enc.confirm_part("scales", got_scales)
            if mins is not None:
                enc.confirm_part("mins", got_mins)
            return scale32, offsets
        if scales_crc is not None or mins_crc is not None:  # checked as plain parts
            scales = enc.part_array("scales", sdt, shape)
            mins = None if mins is None else enc.part_array("mins", sdt, shape)
        scale32, offsets = get_kernel("quant", "parameters")(scales, mins, zero)
        return scale32, offsets

    def _fit(self, rows: np.ndarray, weights: np.ndarray | None,
             bounds: tuple[np.ndarray, np.ndarray] | None = None,
             grid: Grid | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stored (scale, offset) per group of ``rows`` (r, n): min-max, or the best shrink (``scale=search``,
        squared error weighted per column by ``weights`` (n,) when given). ``bounds``: (lo, hi) per group
        that the range may not leave (GPTQ: the group's original range). ``grid``: each group's (scale step,
        min step) when the scales are quantized; the search then weighs the stored grid's error."""
        lo, hi = self._ranges(rows)
        if bounds is not None:
            lo, hi = np.maximum(lo, bounds[0]), np.minimum(hi, bounds[1])
            hi = np.maximum(hi, lo)
        if self.scale == "minmax":
            return self._range_parameters(lo, hi, rows, grid)
        n = rows.shape[1]
        g = self._group(n)
        starts = np.arange(0, n, g)
        col = np.arange(n) // g
        anchor = np.clip(0.0, lo, hi)
        best_scale, best_offset = self._range_parameters(lo, hi, rows, grid)
        best_err = np.full(lo.shape, np.inf)

        def consider(new_lo: np.ndarray, new_hi: np.ndarray) -> None:
            """Keep the parameters covering [new_lo, new_hi] in the groups where they lower the error."""
            nonlocal best_scale, best_offset, best_err
            scale, offset = self._range_parameters(new_lo, new_hi, rows, grid)
            s, o = scale.astype(np.float64)[:, col], offset.astype(np.float64)[:, col]
            sq = np.square(self._codes(rows, s, o) * s + o - rows)
            err = np.add.reduceat(sq if weights is None else sq * weights, starts, axis=1)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_scale, best_offset = np.where(better, scale, best_scale), np.where(better, offset, best_offset)

        for f in SHRINK:
            consider(anchor + (lo - anchor) * f, anchor + (hi - anchor) * f)
        if self.scale == "refine" and not self.symmetric:
            shrunk = (anchor + (lo - anchor) * SHRINK[-1], anchor + (hi - anchor) * SHRINK[-1])
            for _ in range(REFITS):
                s, o = best_scale.astype(np.float64), best_offset.astype(np.float64)
                codes = self._codes(rows, s[:, col], o[:, col])
                new_lo, new_hi = _least_squares_range(rows, codes, weights, starts, (1 << self.bits) - 1)
                consider(np.clip(np.where(np.isnan(new_lo), lo, new_lo), lo, shrunk[0]),
                         np.clip(np.where(np.isnan(new_hi), hi, new_hi), shrunk[1], hi))
        if grid is not None:  # values on the grid (float64), no longer scale-dtype numbers
            return best_scale, best_offset
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
        n = rows.shape[1]
        ngroups = -(-n // self._group(n)) if n else 0
        if rows.size == 0:
            sdt = _SCALE_DTYPES[self.scale_dtype]
            empty = np.zeros((rows.shape[0], ngroups), sdt)
            none: dict[str, Any] = {"codes": np.zeros(0, np.uint8)}
            quantized = self._quantized_scales()
            if quantized is not None:
                none.update(quantized.parts(empty, empty, (np.zeros(0, sdt), np.zeros(0, sdt))))
                return self._make(x, none, {})
            none["scales"] = empty
            return self._make(x, none if self.symmetric else {**none, "mins": empty.copy()}, {})
        # Rows are independent: encoding them in blocks keeps the temporaries to a few MiB whatever the
        # tensor's size. A multiple of 8 rows ends each block's codes on a byte boundary, so the packed
        # blocks join into the same bit stream as one pass would give; with quantized scales, blocks also
        # hold whole super-groups.
        context = self._calibration(calib, n)
        unit = math.lcm(8, self.super_group // math.gcd(self.super_group, ngroups)) if self.scale_bits else 8
        step = max(unit, (_GPTQ_BLOCK_ELEMENTS if self.rounding == "gptq" else _BLOCK_ELEMENTS) // n // unit * unit)
        blocks = [self._encode_rows(np.asarray(rows[r : r + step], dtype=cdt), context)
                  for r in range(0, len(rows), step)]
        parts: dict[str, Any] = {"codes": np.concatenate([b[0] for b in blocks])}
        scales, offsets = np.concatenate([b[1] for b in blocks]), np.concatenate([b[2] for b in blocks])
        quantized = self._quantized_scales()
        if quantized is not None:
            steps = [b[3] for b in blocks if b[3] is not None]
            parts.update(quantized.parts(scales, offsets, (np.concatenate([t[0] for t in steps]),
                                                           np.concatenate([t[1] for t in steps]))))
        else:
            parts["scales"] = scales
            if not self.symmetric:
                parts["mins"] = offsets
        return self._make(x, parts, {})

    def _calibration(self, calib: Any, n: int) -> tuple[np.ndarray | None, _gptq.Prepared | None]:
        """(column weights for ``scale=search``, GPTQ's factored Hessian) from ``calib``."""
        if self.rounding == "gptq":
            h = hessian(calib, n, "quant(rounding=gptq)")
            weights = np.diag(h).copy() if self.scale != "minmax" else None
            if isinstance(calib, Hessian):
                return weights, _gptq.prepare_shared(calib, h, self.damp, self.act_order)
            return weights, _gptq.prepare(h, self.damp, self.act_order)
        if self.scale != "minmax" and calib is not None:
            return column_weights(calib, n, f"quant(scale={self.scale})"), None
        return None, None

    def _encode_rows(self, rows: np.ndarray, context: tuple[np.ndarray | None, _gptq.Prepared | None]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Steps | None]:
        """(packed codes, scales, offsets, super-group steps or None) of a (rows, n) block in the compute
        dtype. The super-group steps come from the block's min-max ranges, before any rounding."""
        if not np.all(np.isfinite(rows)):
            raise InputError("quant cannot represent NaN or Inf; use a lossless codec or mask them first")
        weights, prepared = context
        n = rows.shape[1]
        g = self._group(n)
        lo, hi = self._ranges(rows)
        quantized = self._quantized_scales()
        steps = None if quantized is None else quantized.steps(lo, hi)
        grid = None if quantized is None or steps is None else quantized.per_group(steps, lo.shape)
        if prepared is None:
            scale, offset = self._fit(rows, weights, grid=grid)
            col = np.arange(n) // g
            codes = self._codes(rows, scale.astype(rows.dtype)[:, col], offset.astype(rows.dtype)[:, col])
            codes = codes.astype(np.uint8)
        else:

            def fit(values: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
                members = slice(index * g, index * g + values.shape[1])
                w = None if weights is None else weights[members]
                column = slice(index, index + 1)
                bounds = (lo[:, column], hi[:, column])
                own = None if grid is None else (grid[0][:, column], grid[1][:, column])
                s, o = self._fit(values, w, bounds, own)  # one group: values holds at most ``g`` columns
                return s[:, 0], o[:, 0]

            zero = (1 << (self.bits - 1)) if self.symmetric else 0
            codes, scale, offset = _gptq.gptq_round(rows.astype(np.float64), prepared, g, fit,
                                                    (1 << self.bits) - 1, zero, (lo, hi))
        return get_kernel("quant", "pack", "reference")(codes, self.bits), scale, offset, steps

    def decode_array(self, enc: Encoded) -> np.ndarray:
        self._check_owner(enc)
        shape, dtype = enc.shape, enc.dtype
        moved = self._moved_shape(shape)
        n = moved[-1] if moved else 1
        rows = math.prod(moved[:-1]) if moved else 1
        g = self._group(n)
        ngroups = -(-n // g) if n else 0
        flat = self._decode_flat(enc, rows, n, g, ngroups)
        out = flat.reshape(moved)
        if shape and self.axis % len(shape) != len(shape) - 1:  # groups along another axis than the last
            out = np.moveaxis(out, -1, self.axis % len(shape))
        return contiguous(restore_dtype(out.reshape(shape), dtype))

    def _decode_flat(self, enc: Encoded, rows: int, n: int, g: int, ngroups: int) -> np.ndarray:
        """The (rows, n) float32 decode. Plain group scales are converted inside the decode kernel; the blob's
        deferred checks of the codes, scales and minimums are done by the kernel while it reads them."""
        packed, codes_crc = enc.part_array_unchecked("codes", np.uint8, (packed_nbytes(rows * n, self.bits),))
        if not rows * n or self._quantized_scales() is not None:  # parameters converted (and checked) first
            scale32, offsets = self._stored_parameters(enc, rows, ngroups)
            if not rows * n:
                if codes_crc is not None:
                    enc.part_array("codes", np.uint8)  # checks the part
                return np.zeros((rows, n), np.float32)
            checked_codes = _kernel_or_none("decode_stored_crc") if codes_crc is not None else None
            if checked_codes is not None:  # the offsets stand in for minimums; only the codes' CRC is used
                flat, crc, _, _ = checked_codes(packed, scale32, offsets, 0, self.bits, n, g)
                enc.confirm_part("codes", crc)
                return flat
            if codes_crc is not None:
                enc.part_array("codes", np.uint8)
            return get_kernel("quant", "decode")(packed, scale32, offsets, self.bits, n, g)
        sdt, shape, zero = _SCALE_DTYPES[self.scale_dtype], (rows, ngroups), 1 << (self.bits - 1)
        scales, scales_crc = enc.part_array_unchecked("scales", sdt, shape)
        mins, mins_crc = (None, None) if self.symmetric else enc.part_array_unchecked("mins", sdt, shape)
        expected = {"codes": codes_crc, "scales": scales_crc, "mins": mins_crc}
        pending = [name for name, crc in expected.items() if crc is not None]
        checked = _kernel_or_none("decode_stored_crc") if pending else None
        if checked is not None:  # the blob's checks, done while the kernel has the bytes in cache
            flat, *crcs = checked(packed, scales, mins, zero, self.bits, n, g)
            got = dict(zip(expected, crcs, strict=True))
            for name in pending:
                enc.confirm_part(name, got[name])
            return flat
        for name in pending:  # checked as plain parts
            enc.part_array(name, np.uint8 if name == "codes" else sdt)
        return get_kernel("quant", "decode_stored")(packed, scales, mins, zero, self.bits, n, g)

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
        quantized = self._quantized_scales()
        grid = None if quantized is None else quantized.per_group(quantized.steps(lo, hi), lo.shape)
        scale, offset = self._range_parameters(lo, hi, rows, grid)
        n = rows.shape[1]
        col = np.arange(n) // self._group(n)
        bound = 0.5 * np.abs(scale.astype(np.float64))[:, col]
        # the kernel's fp32 ``code × scale + offset`` rounds in proportion to its terms, which can exceed the
        # result: |offset| (at most the min-max one, or the group's largest |value|) and |code × scale|
        terms = (np.maximum(np.abs(lo), np.abs(hi)).astype(np.float64) + np.abs(offset.astype(np.float64)))[:, col]
        if self.rounding == "gptq" or self.scale != "minmax":
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
        terms = terms.reshape(moved)
        if x.ndim:
            terms = np.moveaxis(terms, -1, axis)
        mag = np.abs(np.asarray(x, dtype=np.float64)) + tol
        # fp32 arithmetic in the kernel, then rounding into the output dtype
        tol = tol + (2 * mag + terms.reshape(x.shape)) * 2.0**-22
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
        scales, offsets = self._stored_parameters(enc, rows, ngroups)
        packed = enc.part_array("codes", np.uint8, (packed_nbytes(rows * n, self.bits),))
        if packed.ctypes.data % 4:  # the kernels read the codes as 32-bit words
            packed = packed.copy()
        return PreparedMatmul("quant", (packed, scales, offsets, self.bits, n, g), rows, n, n)


def _unit_roundoff(dtype: np.dtype[Any]) -> float:
    import ml_dtypes

    return float(ml_dtypes.finfo(dtype).eps)


def _kernel_or_none(op: str) -> Any:
    """The ``quant`` kernel for ``op`` (a checked variant that also returns CRC-32Cs), or None where the chosen
    backend has none."""
    try:
        return get_kernel("quant", op)
    except UnknownCodecError:
        return None
