"""``bitround(keep=k)`` / ``bitround(info=f)``: round float mantissas to fewer bits (a transform).

Rounding to nearest (ties to even) keeps ``k`` explicit mantissa bits and zeroes the rest, so a following
byte compressor (``bitround(keep=7) | zstd``) finds long runs of zero bits. The relative error of every
normal value is at most ``2**-(k+1)``; for subnormals it is that fraction of the smallest normal value, and a
value whose rounding would overflow to infinity is truncated instead (relative error below ``2**-k``).
NaN and ±Inf pass unchanged.

``info=f`` picks ``k`` from the data: the fewest mantissa bits that hold the share ``f`` of the array's real
bitwise information — the mutual information between the same bit of neighbouring elements along the last
axis, with information indistinguishable from noise (99% binomial confidence) set to zero. This is the idea
of Klöwer et al., "Compressing atmospheric data into its real information content" (Nature Computational
Science, 2021).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import ml_dtypes
import numpy as np

from ..core.codec import Codec, float_input, register
from ..core.errors import BlobError, ConfigError

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64, 1: np.uint8}
_Z99 = 2.5758293035489004  # two-sided 99% normal quantile
_MAX_PAIRS = 1 << 22


def _finfo(dtype: np.dtype[Any]) -> Any:
    return ml_dtypes.finfo(dtype)


def _layout(dtype: np.dtype[Any]) -> tuple[int, int]:
    """(mantissa bits, exponent bits) of a float dtype."""
    info = _finfo(dtype)
    return int(info.nmant), int(info.nexp)


@register
@dataclass(frozen=True)
class BitRound(Codec):
    keep: int | None = None
    info: float | None = None

    codec_id: ClassVar[str] = "bitround"
    role: ClassVar[str] = "transform"
    accepts_integers: ClassVar[bool] = False
    summary: ClassVar[str] = "round float mantissas to k bits, or to the bits holding a share of real information"
    examples: ClassVar[tuple[str, ...]] = (
        "bitround(keep=7) | zstd",
        "bitround(info=0.99) | zstd",
        "bitround(keep=3)",
        "bitround(keep=0) | blosc",
    )

    def validate(self) -> None:
        if (self.keep is None) == (self.info is None):
            raise ConfigError("bitround: give exactly one of keep=<mantissa bits> or info=<share, e.g. 0.99>")
        if self.keep is not None and not 0 <= self.keep <= 52:
            raise ConfigError(f"bitround: keep must be in 0..52 mantissa bits, got {self.keep}")
        if self.info is not None and not 0.0 < self.info <= 1.0:
            raise ConfigError(f"bitround: info must be a share in (0, 1], got {self.info}")

    def keep_bits(self, x: np.ndarray) -> int:
        """Mantissa bits kept for ``x`` (``keep``, or the information-based choice)."""
        mant, _ = _layout(x.dtype)
        if self.keep is not None:
            return min(self.keep, mant)
        return keep_bits_for_information(x, float(self.info or 1.0))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        float_input(x, self.codec_id)
        keep = self.keep_bits(x)
        return round_mantissa(x, keep), {"keep": keep}

    def backward(self, y: np.ndarray, meta: Mapping[str, Any], dtype: np.dtype[Any]) -> np.ndarray:
        keep = meta.get("keep")
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
            raise BlobError(f"bitround: bad 'keep' in header: {keep!r}")
        return y

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        float_input(x, self.codec_id)
        keep = self.keep_bits(x)
        mant, _ = _layout(x.dtype)
        if keep >= mant:
            return 0.0
        a = np.abs(x.astype(np.float64))
        tiny = float(_finfo(x.dtype).smallest_normal)
        tol = np.maximum(a, tiny) * 2.0 ** -(keep + 1)
        # values truncated because rounding up would overflow
        big = a > float(_finfo(x.dtype).max) * (1 - 2.0 ** -(keep + 1))
        return np.where(big, a * 2.0**-keep, tol)


def round_mantissa(x: np.ndarray, keep: int) -> np.ndarray:
    """Round ``x`` to ``keep`` mantissa bits, to nearest with ties to even; NaN/Inf unchanged."""
    mant, nexp = _layout(x.dtype)
    if keep >= mant:
        return x
    dtype = x.dtype.newbyteorder("=") if x.dtype.byteorder not in "=|" else x.dtype
    arr = np.ascontiguousarray(x, dtype=dtype)
    ut = _UINT[arr.dtype.itemsize]
    u = arr.view(ut)
    drop = mant - keep
    one = ut(1)
    mask = ut(~((1 << drop) - 1) & ((1 << (8 * arr.dtype.itemsize)) - 1))
    half_minus_one = ut((1 << (drop - 1)) - 1)
    lsb = (u >> ut(drop)) & one
    rounded = (u + half_minus_one + lsb) & mask
    exp_mask = ut(((1 << nexp) - 1) << mant)
    special = (u & exp_mask) == exp_mask  # NaN or Inf: keep as is
    overflow = ~special & ((rounded & exp_mask) == exp_mask)
    out = np.where(special, u, np.where(overflow, u & mask, rounded)).astype(ut)
    return out.view(dtype).reshape(x.shape)


def keep_bits_for_information(x: np.ndarray, share: float) -> int:
    """Fewest mantissa bits holding ``share`` of the real bitwise information of ``x``."""
    mant, nexp = _layout(x.dtype)
    info = bitwise_information(x)
    total = float(info.sum())
    if total <= 0.0:
        return 0
    # bits are ordered from the most significant (sign) to the least significant mantissa bit
    cdf = np.cumsum(info) / total
    last = int(np.searchsorted(cdf, share - 1e-12))  # index of the last bit needed
    return int(min(max(last - nexp, 0), mant))


def bitwise_information(x: np.ndarray) -> np.ndarray:
    """Mutual information (bits) between each bit of neighbouring elements along the last axis.

    Returns one value per bit, from the sign bit to the least significant mantissa bit; values not
    significant at 99% confidence are zero. Non-finite values are left out.
    """
    dtype = x.dtype.newbyteorder("=") if x.dtype.byteorder not in "=|" else x.dtype
    arr = np.ascontiguousarray(x, dtype=dtype)
    nbits = 8 * arr.dtype.itemsize
    if arr.ndim == 0 or arr.shape[-1] < 2:
        return np.zeros(nbits)
    rows = arr.reshape(-1, arr.shape[-1])
    a, b = rows[:, :-1].reshape(-1), rows[:, 1:].reshape(-1)
    finite = np.isfinite(a.astype(np.float64)) & np.isfinite(b.astype(np.float64))
    a, b = a[finite], b[finite]
    if a.size > _MAX_PAIRS:  # an even, deterministic subsample
        step = -(-a.size // _MAX_PAIRS)
        a, b = a[::step], b[::step]
    n = a.size
    if n == 0:
        return np.zeros(nbits)
    ut = _UINT[arr.dtype.itemsize]
    ua, ub = a.view(ut), b.view(ut)
    threshold = 1.0 - _binary_entropy(0.5 + 0.5 * _Z99 / math.sqrt(n))
    out = np.zeros(nbits)
    for k in range(nbits):
        shift = ut(nbits - 1 - k)
        ba = ((ua >> shift) & ut(1)).astype(bool)
        bb = ((ub >> shift) & ut(1)).astype(bool)
        n11 = np.count_nonzero(ba & bb)
        na, nb = np.count_nonzero(ba), np.count_nonzero(bb)
        joint = np.array([[n - na - nb + n11, nb - n11], [na - n11, n11]], dtype=np.float64) / n
        pa = joint.sum(axis=1, keepdims=True)
        pb = joint.sum(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(joint > 0, joint * np.log2(joint / (pa * pb)), 0.0)
        mi = float(terms.sum())
        out[k] = mi if mi > threshold else 0.0
    return out


def _binary_entropy(p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
