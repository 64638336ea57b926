"""``nf4``: 4-bit NormalFloat (Dettmers et al., 2023, "QLoRA"), absmax-scaled per group.

The 16 levels are quantiles of the standard normal distribution, built as in the paper so that 0 is a level
and both ends are ±1: 8 non-negative quantiles at probabilities evenly spaced from ``δ`` down to 1/2 and 7
negative ones from ``δ`` down to 1/2 (excluded), with ``δ = ½ (1 − 1/30 + 1 − 1/32)``, the midpoint of the
two choices that put the outermost quantile half a bin from the tail; all divided by the largest. Each group
of ``group`` elements along the last axis (a shorter last group when the axis does not divide) is divided by
its absmax (stored rounded *up* into ``scale_dtype``) and each element takes the nearest level.

Guarantee: ``|x - y| <=`` half the gap between the two levels around ``x / scale``, times the scale; plus
float32 decode arithmetic and the output dtype's rounding. Parts: ``codes`` (4-bit level indices in the
LSB-first bit stream of :mod:`tensorpress.kernels.reference.quant`, row-major) and ``scales`` (rows, groups).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from ..core.codec import Codec, register, restore_dtype
from ..core.dtypes import contiguous, is_float
from ..core.encoded import Encoded
from ..core.errors import ConfigError, InputError
from ..kernels.reference.quant import pack_bits, packed_nbytes, unpack_bits

_SCALE_DTYPES: dict[str, type[np.floating[Any]]] = {"float16": np.float16, "float32": np.float32}


@functools.cache
def nf4_levels() -> np.ndarray:
    """The 16 NormalFloat-4 levels, ascending, float64, from -1 to 1 with an exact 0."""
    normal = NormalDist()
    delta = 0.5 * ((1 - 1 / 30) + (1 - 1 / 32))
    positive = [normal.inv_cdf(p) for p in np.linspace(delta, 0.5, 9)[:-1]]
    negative = [-normal.inv_cdf(p) for p in np.linspace(delta, 0.5, 8)[:-1]]
    levels = np.sort(np.array([*positive, 0.0, *negative]))
    levels /= np.abs(levels).max()
    levels.setflags(write=False)
    return levels


@register
@dataclass(frozen=True)
class NormalFloat4(Codec):
    group: int = 64
    scale_dtype: str = "float16"

    codec_id: ClassVar[str] = "nf4"
    accepts_nonfinite: ClassVar[bool] = False
    summary: ClassVar[str] = "4-bit NormalFloat (QLoRA) levels, absmax scale per group"
    examples: ClassVar[tuple[str, ...]] = ("nf4(group=64)", "nf4(group=32, scale_dtype=float32)")

    def validate(self) -> None:
        if self.group < 0:
            raise ConfigError(f"nf4: group must be >= 1, or 0 for the whole last axis; got {self.group}")
        if self.scale_dtype not in _SCALE_DTYPES:
            raise ConfigError(f"nf4: scale_dtype must be float16 or float32, got {self.scale_dtype!r}")

    def _layout(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        n = shape[-1] if shape else 1
        rows = math.prod(shape[:-1]) if shape else 1
        return rows, n, max(1, n if self.group == 0 else min(self.group, n))

    def _scales(self, rows: np.ndarray, g: int) -> np.ndarray:
        """absmax per group (rows, groups) in the scale dtype, rounded up."""
        sdt = _SCALE_DTYPES[self.scale_dtype]
        if rows.shape[1] == 0:
            return np.zeros((rows.shape[0], 0), sdt)
        amax = np.maximum.reduceat(np.abs(rows), np.arange(0, rows.shape[1], g), axis=1)
        with np.errstate(over="ignore"):
            scale = amax.astype(sdt)
        scale = np.where(scale.astype(np.float64) < amax, np.nextafter(scale, sdt(np.inf)), scale).astype(sdt)
        if not np.all(np.isfinite(scale)):
            raise InputError(f"nf4: a group's absmax overflows {self.scale_dtype} (largest |value| "
                             f"{float(amax.max()):.4g}); use scale_dtype=float32, or data within float32 range")
        return scale

    def _normalized(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x / scale per element (rows, n), scale per element), float64."""
        rows_n, n, g = self._layout(x.shape)
        rows = np.asarray(x, dtype=np.float64).reshape(rows_n, n)
        s = self._scales(rows, g).astype(np.float64)[:, np.arange(n) // g]
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(s > 0, rows / np.where(s > 0, s, 1.0), 0.0)
        return np.clip(v, -1.0, 1.0), s

    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        if not (is_float(x.dtype) or x.dtype.kind in "biu"):
            raise InputError(f"nf4 works on float, integer or bool data, got {x.dtype}")
        if not np.all(np.isfinite(np.asarray(x, dtype=np.float64))):
            raise InputError("nf4 cannot represent NaN or Inf; use a lossless codec or mask them first")
        rows_n, n, g = self._layout(x.shape)
        scale = self._scales(np.asarray(x, dtype=np.float64).reshape(rows_n, n), g)
        v, _ = self._normalized(x)
        levels = nf4_levels()
        codes = np.searchsorted((levels[1:] + levels[:-1]) / 2, v).astype(np.uint8)
        return self._make(x, {"codes": pack_bits(codes, 4), "scales": scale}, {})

    def decode_array(self, enc: Encoded) -> np.ndarray:
        self._check_owner(enc)
        rows_n, n, g = self._layout(enc.shape)
        ngroups = -(-n // g) if n else 0
        scales = enc.part_array("scales", _SCALE_DTYPES[self.scale_dtype], (rows_n, ngroups)).astype(np.float32)
        packed = enc.part_array("codes", np.uint8, (packed_nbytes(rows_n * n, 4),))
        codes = unpack_bits(packed, 4, rows_n * n).reshape(rows_n, n)
        out = nf4_levels().astype(np.float32)[codes] * scales[:, np.arange(n) // g]
        return contiguous(restore_dtype(out.reshape(enc.shape), enc.dtype))

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """Half the gap between the levels around each element, times its group's scale, plus arithmetic."""
        if x.size == 0:
            return 0.0
        v, s = self._normalized(x)
        levels = nf4_levels()
        upper = np.clip(np.searchsorted(levels, v), 1, len(levels) - 1)
        tol = s * (levels[upper] - levels[upper - 1]) / 2
        mag = np.abs(np.asarray(x, dtype=np.float64)).reshape(tol.shape)
        # the level in float32, float32 decode arithmetic (subnormal products included)
        tol = (tol + (mag + tol) * 2.0**-21 + 2.0**-149).reshape(x.shape)
        if x.dtype.kind in "biu":
            return tol + 0.5
        if x.dtype.itemsize < 4:
            import ml_dtypes

            return tol + (np.abs(np.asarray(x, dtype=np.float64)) + tol) * float(ml_dtypes.finfo(x.dtype).eps)
        return tol
