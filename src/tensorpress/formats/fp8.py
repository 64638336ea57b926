"""``fp8``: 8-bit floating point (OCP FP8: ``e4m3`` = float8_e4m3fn, ``e5m2``) with a scale per group.

Each group — ``group`` elements along the last axis (a shorter last group when the axis does not divide),
or the whole tensor with ``group=0`` — is divided by ``scale = amax / fmax`` (rounded *up* into
``scale_dtype``, so no value exceeds the format's largest finite value ``fmax``: 448 for e4m3, 57344 for
e5m2), rounded to nearest-even by ``ml_dtypes`` and stored as one byte per element.

Guarantee: ``|x - y| <= |x| * 2**-(m+1) + scale * s / 2`` (``m`` mantissa bits: 3 for e4m3, 2 for e5m2;
``s`` the format's smallest subnormal), plus float32 decode arithmetic and the output dtype's rounding.
Parts: ``codes`` (uint8 FP8 bit patterns, input shape flattened row-major) and ``scales``
(rows, groups), or (1,) with ``group=0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import ml_dtypes
import numpy as np

from ..core.codec import Codec, register, restore_dtype
from ..core.dtypes import contiguous, is_float
from ..core.encoded import Encoded
from ..core.errors import ConfigError, InputError

FORMATS: dict[str, type[np.generic]] = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}
_SCALE_DTYPES: dict[str, type[np.floating[Any]]] = {"float16": np.float16, "float32": np.float32}


@register
@dataclass(frozen=True)
class Float8(Codec):
    format: str = "e4m3"
    group: int = 0
    scale_dtype: str = "float32"

    codec_id: ClassVar[str] = "fp8"
    positional: ClassVar[str | None] = "format"
    accepts_nonfinite: ClassVar[bool] = False
    summary: ClassVar[str] = "8-bit float (OCP e4m3 / e5m2) with a per-tensor or per-group amax scale"
    examples: ClassVar[tuple[str, ...]] = (
        "fp8(e4m3)",
        "fp8(e5m2, group=32)",
        "fp8(e4m3, group=128, scale_dtype=float16)",
    )

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"fp8: format must be e4m3 or e5m2, got {self.format!r}")
        if self.group < 0:
            raise ConfigError(f"fp8: group must be >= 1, or 0 for one scale per tensor; got {self.group}")
        if self.scale_dtype not in _SCALE_DTYPES:
            raise ConfigError(f"fp8: scale_dtype must be float16 or float32, got {self.scale_dtype!r}")

    @property
    def _fp8(self) -> np.dtype[Any]:
        return np.dtype(FORMATS[self.format])

    def _layout(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(rows, n, group length) of the (rows, n) view with the last axis as n."""
        n = shape[-1] if shape else 1
        rows = math.prod(shape[:-1]) if shape else 1
        if self.group == 0:
            return 1, rows * n, max(rows * n, 1)
        return rows, n, max(1, min(self.group, n))

    def _scales(self, rows: np.ndarray, g: int) -> np.ndarray:
        """Stored scale per group, (rows, groups), in the scale dtype: amax / fmax rounded up."""
        if rows.shape[1] == 0:
            return np.zeros((rows.shape[0], 0), _SCALE_DTYPES[self.scale_dtype])
        amax = np.maximum.reduceat(np.abs(rows), np.arange(0, rows.shape[1], g), axis=1)
        sdt = _SCALE_DTYPES[self.scale_dtype]
        exact = amax / float(ml_dtypes.finfo(self._fp8).max)
        with np.errstate(over="ignore"):
            scale = exact.astype(sdt)
        low = scale.astype(np.float64) < exact
        scale = np.where(low, np.nextafter(scale, sdt(np.inf)), scale).astype(sdt)
        if not np.all(np.isfinite(scale)):
            raise InputError(f"fp8: a group's scale overflows {self.scale_dtype} (largest |value| "
                             f"{float(amax.max()):.4g}); use scale_dtype=float32, or data within float32 range")
        return scale

    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        if not (is_float(x.dtype) or x.dtype.kind in "biu"):
            raise InputError(f"fp8 works on float, integer or bool data, got {x.dtype}")
        rows_n, n, g = self._layout(x.shape)
        rows = np.asarray(x, dtype=np.float64).reshape(rows_n, n)
        if not np.all(np.isfinite(rows)):
            raise InputError("fp8 cannot represent NaN or Inf; use a lossless codec or mask them first")
        scale = self._scales(rows, g)
        s = scale.astype(np.float64)[:, np.arange(n) // g]
        fmax = float(ml_dtypes.finfo(self._fp8).max)
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(s > 0, rows / np.where(s > 0, s, 1.0), 0.0)
        codes = np.clip(v, -fmax, fmax).astype(np.float32).astype(self._fp8).view(np.uint8)
        return self._make(x, {"codes": codes.reshape(-1), "scales": scale}, {})

    def decode_array(self, enc: Encoded) -> np.ndarray:
        self._check_owner(enc)
        rows_n, n, g = self._layout(enc.shape)
        ngroups = -(-n // g) if n else 0
        scales = enc.part_array("scales", _SCALE_DTYPES[self.scale_dtype], (rows_n, ngroups))
        codes = enc.part_array("codes", np.uint8, (rows_n * n,)).reshape(rows_n, n)
        values = codes.view(self._fp8).astype(np.float32)
        out = values * scales.astype(np.float32)[:, np.arange(n) // g]
        return contiguous(restore_dtype(out.reshape(enc.shape), enc.dtype))

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """Half a unit in the last place of the scaled value (or half the smallest subnormal spacing),
        times the scale; plus float32 decode arithmetic and the output dtype's rounding."""
        if x.size == 0:
            return 0.0
        rows_n, n, g = self._layout(x.shape)
        mag = np.abs(np.asarray(x, dtype=np.float64)).reshape(rows_n, n)
        s = self._scales(mag, g).astype(np.float64)[:, np.arange(n) // g]
        info = ml_dtypes.finfo(self._fp8)
        tol = mag * 2.0 ** -(info.nmant + 1) + s * float(info.smallest_subnormal) / 2
        # float32 decode: relative rounding, and absolute where the product is subnormal
        tol = (tol + (mag + tol) * 2.0**-22 + 2.0**-149).reshape(x.shape)
        if x.dtype.kind in "biu":
            return tol + 0.5
        if x.dtype.itemsize < 4:
            return tol + (np.abs(np.asarray(x, dtype=np.float64)) + tol) * float(ml_dtypes.finfo(x.dtype).eps)
        return tol
