"""How ``quant`` stores its group parameters: rounded into the scale dtype, or, with ``scale_bits=k``, as
k-bit codes on a per-super-group grid (:class:`ScaleGrid`, the layout of llama.cpp's K-quants).

The groups of a tensor, taken row-major over (rows, groups), form super-groups of ``super_group`` consecutive
groups (the last one shorter when the count does not divide). Each super-group stores one step per kind of
group parameter in the scale dtype; a group stores an integer code per parameter, and the parameter is
``code × step``, computed in float32 (exactly so for float16 steps: a product of an 8-bit and an 11-bit
significand). Codes are packed as ``k``-bit fields of the same LSB-first stream as the weight codes; signed
codes are stored offset by ``2**(k-1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.encoded import Encoded
from ..core.errors import InputError
from ..kernels import get_kernel
from ..kernels.reference.quant import packed_nbytes

#: (scale steps, min steps) of the super-groups, each (supers,) in the scale dtype
Steps = tuple[np.ndarray, np.ndarray]
#: each group's (scale step, min step), float64 (rows, groups)
Grid = tuple[np.ndarray, np.ndarray]


def round_down(v: np.ndarray, dt: type[np.floating[Any]]) -> np.ndarray:
    """``v`` in ``dt``, rounded towards -inf."""
    r = v.astype(dt)
    low = r.astype(v.dtype) > v
    return np.where(low, np.nextafter(r, dt(-np.inf)), r).astype(dt)


def round_away(v: np.ndarray, dt: type[np.floating[Any]]) -> np.ndarray:
    """``v`` in ``dt``, rounded away from zero (so a step never shrinks)."""
    r = v.astype(dt)
    small = np.abs(r.astype(v.dtype)) < np.abs(v)
    return np.where(small, np.nextafter(r, np.where(v < 0, dt(-np.inf), dt(np.inf)).astype(dt)), r).astype(dt)


def signed_step(lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric ``bits``-bit levels: the smallest step covering [lo, hi], negative where the extra level
    (-2**(bits-1)) goes to the positive side, i.e. where that side needs the larger step otherwise."""
    half = 1 << (bits - 1)
    pos, neg = np.maximum(hi, 0), np.maximum(-lo, 0)
    d_neg = np.maximum(neg / (half + 0.5), pos / (half - 0.5))
    d_pos = np.maximum(pos / (half + 0.5), neg / (half - 0.5))
    return np.where(d_pos < d_neg, -d_pos, d_neg)


@dataclass(frozen=True)
class ScaleGrid:
    """The quantized group parameters of a ``quant`` format with ``bits``-bit codes: ``scale_bits``-bit codes,
    ``super_group`` groups per super-group, steps in ``dtype``. Asymmetric: scale codes ``0 … 2**k - 1``,
    minimum codes signed; symmetric: signed scale codes, no minimums (min steps 0, not stored)."""

    bits: int
    scale_bits: int
    super_group: int
    symmetric: bool
    dtype: type[np.floating[Any]]

    def steps(self, lo: np.ndarray, hi: np.ndarray) -> Steps:
        """Steps sized so that the min-max parameters of every group of ``lo``/``hi`` (rows, groups) fit the
        codes: the largest scale of a super-group takes the top code."""
        half, s = 1 << (self.scale_bits - 1), self.super_group
        lo64, hi64 = lo.astype(np.float64), hi.astype(np.float64)

        def finite(steps: np.ndarray) -> np.ndarray:
            if not np.all(np.isfinite(steps)):
                peak = float(max(np.max(np.abs(lo64)), np.max(np.abs(hi64))))
                name = np.dtype(self.dtype).name
                raise InputError(f"quant: super-group steps overflow {name} (largest |value| {peak:.4g}); "
                                 "use scale_dtype=float32")
            return steps

        with np.errstate(over="ignore"):
            if self.symmetric:
                d = signed_step(lo64, hi64, self.bits)
                min_steps = np.zeros(-(-d.size // s), self.dtype)
                scale_steps = round_away(np.maximum(_super_max(np.maximum(d, 0), s) / (half - 1),
                                                    _super_max(np.maximum(-d, 0), s) / half), self.dtype)
            else:
                min_steps = finite(round_away(_super_max(np.abs(lo64), s) / half, self.dtype))
                step = self.per_group((min_steps, min_steps), lo.shape)[1]
                minimum = _on_grid(np.clip(_codes_down(lo64, step), -half, half - 1), step)
                d = (hi64 - minimum) / ((1 << self.bits) - 1)
                scale_steps = round_away(_super_max(d, s) / (2 * half - 1), self.dtype)
        return finite(scale_steps), min_steps

    def per_group(self, steps: Steps, shape: tuple[int, ...]) -> Grid:
        """Each group's (scale step, min step), float64 of ``shape`` (rows, groups)."""
        count = int(np.prod(shape))

        def spread(step: np.ndarray) -> np.ndarray:
            return np.repeat(step.astype(np.float64), self.super_group)[:count].reshape(shape)

        return spread(steps[0]), spread(steps[1])

    def parameters(self, lo: np.ndarray, hi: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
        """(scale, offset) on the grid, float64, covering [lo, hi]: the minimum rounded down, the scale
        rounded away from 0, each code clipped to its range (the steps are sized to avoid that)."""
        scale_step, min_step = grid
        half = 1 << (self.scale_bits - 1)
        lo64, hi64 = lo.astype(np.float64), hi.astype(np.float64)
        if self.symmetric:
            d = signed_step(lo64, hi64, self.bits)
            code = np.clip(np.sign(d).astype(np.int64) * _codes_up(np.abs(d), scale_step), -half, half - 1)
            scale = _on_grid(code, scale_step)
            return scale, -(1 << (self.bits - 1)) * scale
        minimum = _on_grid(np.clip(_codes_down(lo64, min_step), -half, half - 1), min_step)
        code = _codes_up((hi64 - minimum) / ((1 << self.bits) - 1), scale_step)
        return _on_grid(np.clip(code, 0, 2 * half - 1), scale_step), minimum

    def parts(self, scale: np.ndarray, offset: np.ndarray, steps: Steps) -> dict[str, np.ndarray]:
        """The stored parts of group parameters (rows, groups) that lie on the grid of ``steps``."""
        grid = self.per_group(steps, scale.shape)
        half = 1 << (self.scale_bits - 1)
        parts = {"scale_codes": self._pack(_codes_of(scale, grid[0]), half if self.symmetric else 0),
                 "scale_steps": steps[0]}
        if not self.symmetric:
            parts["min_codes"] = self._pack(_codes_of(offset, grid[1]), half)
            parts["min_steps"] = steps[1]
        return parts

    def stored(self, enc: Encoded, rows: int, ngroups: int) -> tuple[np.ndarray, np.ndarray]:
        """Each group's (scale, offset) from ``enc``'s parts, as the kernels take them: float32 (rows, groups)."""
        count, half = rows * ngroups, 1 << (self.scale_bits - 1)
        supers = -(-count // self.super_group)

        def values(kind: str, bias: int) -> np.ndarray:
            steps = enc.part_array(f"{kind}_steps", self.dtype, (supers,))
            packed = enc.part_array(f"{kind}_codes", np.uint8, (packed_nbytes(count, self.scale_bits),))
            codes = get_kernel("quant", "unpack", "reference")(packed, self.scale_bits, count)
            step = np.repeat(steps.astype(np.float32), self.super_group)[:count]
            return ((codes.astype(np.float32) - np.float32(bias)) * step).reshape(rows, ngroups)

        if self.symmetric:
            scale = values("scale", half)
            return scale, np.float32(-(1 << (self.bits - 1))) * scale
        return values("scale", 0), values("min", half)

    def _pack(self, codes: np.ndarray, bias: int) -> np.ndarray:
        return get_kernel("quant", "pack", "reference")((codes.reshape(-1) + bias).astype(np.uint8), self.scale_bits)


def _super_max(values: np.ndarray, super_group: int) -> np.ndarray:
    """Largest of ``values`` (rows, groups), >= 0, in each super-group of the row-major order: (supers,)."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    supers = -(-flat.size // super_group)
    padded = np.zeros(supers * super_group)
    padded[: flat.size] = flat
    return padded.reshape(supers, super_group).max(axis=1, initial=0.0)


def _on_grid(codes: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``codes × step`` as decode computes it (float32), returned as float64."""
    return (np.asarray(codes, dtype=np.float32) * np.asarray(step, dtype=np.float32)).astype(np.float64)


def _codes_up(v: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Smallest integers ``c`` with ``_on_grid(c, step) >= v`` (``v >= 0``); 0 where the step is 0. int64."""
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(step > 0, np.ceil(v / np.where(step > 0, step, 1.0)), 0.0)
    c = np.where((step > 0) & (_on_grid(c, step) < v), c + 1, c)  # the division's and the product's rounding
    return c.astype(np.int64)


def _codes_down(v: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Largest integers ``c`` with ``_on_grid(c, step) <= v``; 0 where the step is 0. int64."""
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(step > 0, np.floor(v / np.where(step > 0, step, 1.0)), 0.0)
    c = np.where((step > 0) & (_on_grid(c, step) > v), c - 1, c)
    return c.astype(np.int64)


def _codes_of(values: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The integer codes of parameters that lie on the grid (the inverse of :func:`_on_grid`), int64."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(step > 0, np.rint(values / np.where(step > 0, step, 1.0)), 0.0).astype(np.int64)
