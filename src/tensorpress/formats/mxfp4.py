"""``mxfp4``: OCP Microscaling FP4 — E2M1 elements sharing one E8M0 power-of-two scale per block.

Each block of ``block`` elements along the last axis (32 in the OCP MX specification; a shorter last block
when the axis does not divide) stores one byte ``e`` (scale ``2**(e - 127)``) and 4 bits per element: sign,
2 exponent bits, 1 mantissa bit, i.e. ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}. Bits per element: 4 + 8 / block
(4.25 at 32).

The shared exponent is the smallest one that puts the block's absmax within ±6, so nothing saturates (the
specification's example conversion takes ``floor(log2(amax)) - 2`` instead and clamps the values that
land above 6; decode is the same either way). Elements round to nearest, ties to even, as the
specification asks. Scales are limited to ``2**-127 … 2**125`` so every decoded value fits float32.

Guarantee: ``|x - y| <=`` half the gap between the two E2M1 values around ``|x| / scale``, times the scale,
plus the output dtype's rounding. Parts: ``codes`` (4-bit codes in the LSB-first bit stream of
:mod:`tensorpress.kernels.reference.quant`: two per byte, low nibble first) and ``scales`` (uint8 E8M0,
(rows, blocks)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.codec import Codec, register, restore_dtype
from ..core.dtypes import contiguous, is_float
from ..core.encoded import Encoded
from ..core.errors import ConfigError, InputError
from ..kernels.reference.quant import pack_bits, packed_nbytes, unpack_bits

#: E2M1 magnitudes; the index is the element's low 3 bits (exponent, mantissa)
E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
_MIDPOINTS = (E2M1[1:] + E2M1[:-1]) / 2
MIN_EXPONENT, MAX_EXPONENT = -127, 125
_BIAS = 127


@register
@dataclass(frozen=True)
class MXFP4(Codec):
    block: int = 32

    codec_id: ClassVar[str] = "mxfp4"
    accepts_nonfinite: ClassVar[bool] = False
    summary: ClassVar[str] = "OCP MX FP4: E2M1 elements, one shared power-of-two (E8M0) scale per 32-block"
    examples: ClassVar[tuple[str, ...]] = ("mxfp4(block=32)", "mxfp4(block=16)")

    def validate(self) -> None:
        if not 1 <= self.block <= 1 << 16:
            raise ConfigError(f"mxfp4: block must be in 1..65536 (32 in the OCP MX specification), got {self.block}")

    def _layout(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        n = shape[-1] if shape else 1
        rows = math.prod(shape[:-1]) if shape else 1
        return rows, n, max(1, min(self.block, n))

    def _exponents(self, rows: np.ndarray, g: int) -> np.ndarray:
        """Shared exponent per block (rows, blocks), int64: the smallest with absmax <= 6 * 2**e."""
        if rows.shape[1] == 0:
            return np.zeros((rows.shape[0], 0), np.int64)
        amax = np.maximum.reduceat(np.abs(rows), np.arange(0, rows.shape[1], g), axis=1)
        if amax.size and float(amax.max()) > 6.0 * 2.0**MAX_EXPONENT:
            raise InputError(f"mxfp4: |value| {float(amax.max()):.4g} is beyond the largest scaled element "
                             f"6·2**{MAX_EXPONENT} (decoded values must fit float32); scale the data down first")
        with np.errstate(divide="ignore"):
            e = np.ceil(np.log2(np.where(amax > 0, amax / 6.0, 1.0))).astype(np.int64)
        e = np.where(amax > 6.0 * np.ldexp(1.0, e), e + 1, e)  # log2 rounding at exact powers of two
        e = np.where(amax <= 6.0 * np.ldexp(1.0, e - 1), e - 1, e)
        return np.clip(np.where(amax > 0, e, MIN_EXPONENT), MIN_EXPONENT, MAX_EXPONENT)

    def _scaled(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x as (rows, n) float64, |x| / scale per element, scale per element); shared exponents too."""
        rows_n, n, g = self._layout(x.shape)
        rows = np.asarray(x, dtype=np.float64).reshape(rows_n, n)
        e = self._exponents(rows, g)
        s = np.ldexp(1.0, e[:, np.arange(n) // g])
        return rows, np.abs(rows) / s, s

    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        if not (is_float(x.dtype) or x.dtype.kind in "biu"):
            raise InputError(f"mxfp4 works on float, integer or bool data, got {x.dtype}")
        if not np.all(np.isfinite(np.asarray(x, dtype=np.float64))):
            raise InputError("mxfp4 cannot represent NaN or Inf; use a lossless codec or mask them first")
        g = self._layout(x.shape)[2]
        rows, v, _ = self._scaled(x)
        index = np.searchsorted(_MIDPOINTS, v)  # ties go to the lower value ...
        tie = np.zeros(v.shape, bool)
        inside = index < len(_MIDPOINTS)
        tie[inside] = v[inside] == _MIDPOINTS[index[inside]]
        index = np.where(tie & (index % 2 == 1), index + 1, index)  # ... unless its mantissa bit is odd
        codes = (index | np.where(np.signbit(rows), 8, 0)).astype(np.uint8)
        scales = (self._exponents(rows, g) + _BIAS).astype(np.uint8)
        return self._make(x, {"codes": pack_bits(codes, 4), "scales": scales}, {})

    def decode_array(self, enc: Encoded) -> np.ndarray:
        self._check_owner(enc)
        rows_n, n, g = self._layout(enc.shape)
        nblocks = -(-n // g) if n else 0
        scales = enc.part_array("scales", np.uint8, (rows_n, nblocks)).astype(np.int64) - _BIAS
        packed = enc.part_array("codes", np.uint8, (packed_nbytes(rows_n * n, 4),))
        codes = unpack_bits(packed, 4, rows_n * n).reshape(rows_n, n)
        values = np.where(codes & 8, -1.0, 1.0) * E2M1[codes & 7]
        out = np.ldexp(values, scales[:, np.arange(n) // g]).astype(np.float32)  # exact: E2M1 × 2**e fits
        return contiguous(restore_dtype(out.reshape(enc.shape), enc.dtype))

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """Half the E2M1 gap around each ``|x| / scale``, times the scale, plus the output dtype's rounding."""
        if x.size == 0:
            return 0.0
        _, v, s = self._scaled(x)
        upper = np.clip(np.searchsorted(E2M1, v), 1, len(E2M1) - 1)
        tol = (s * (E2M1[upper] - E2M1[upper - 1]) / 2).reshape(x.shape)
        if x.dtype.kind in "biu":
            return tol + 0.5
        if x.dtype.itemsize < 4:
            import ml_dtypes

            return tol + (np.abs(np.asarray(x, dtype=np.float64)) + tol) * float(ml_dtypes.finfo(x.dtype).eps)
        return tol
