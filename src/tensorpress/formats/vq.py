"""``vq``: vector quantization — sub-vectors of ``dim`` consecutive elements along the last axis replaced by
the index of their nearest codeword (k-means), AQLM-style with one or more codebooks.

The tensor is seen as rows along its last axis (a torch ``[out, in]`` weight: sub-vectors of input columns);
a row whose length ``dim`` does not divide ends in a shorter sub-vector (padded internally, never in the
output). With ``scales=true`` each row is first divided by its RMS (one fp16 scale per row, as AQLM's
per-output-channel scales), so one codebook serves rows of different magnitude.

- ``codebooks=1``: plain k-means, ``2**codebook_bits`` codewords.
- ``codebooks=C`` (up to 4), ``residual=true``: codebook c quantizes what codebooks 0 … c−1 left (RVQ).
- ``codebooks=C``, ``residual=false`` (additive, AQLM): started as residual, then ``passes`` rounds of
  alternating refinement, each codebook refitted (codes and codewords) against what the others leave; with
  two codebooks, then ``passes`` rounds of a beam search over code pairs (the 8 nearest first-codebook
  words, each with its best second word) followed by new codeword means. On a 640×2048 Gemma 3 weight at
  2.06 bits the beam search lowers the relative error from 0.323 to 0.304.

A sub-vector decodes to the sum of its codewords (times the row scale). ``group=g`` gives every ``g``
consecutive rows their own codebooks (0: one set for the whole tensor). k-means is weighted: the error of a
sub-vector element counts ``scale²`` (its row's), times ``diag(XᵀX)`` of its column when calibration
activations ``X`` (samples × in) are given (importance weighting, as AQLM/GPTVQ use the Hessian diagonal).
k-means++ starts from a fixed seed, so encoding is deterministic.

Storage: ``codebooks`` (groups, C, 2**bits, dim) in ``codebook_dtype``; ``codes`` packed at exactly
``codebook_bits`` bits each, LSB-first, ordered (row, sub-vector, codebook); ``scales`` (rows,) fp16. Bits
per weight ≈ C·codebook_bits/dim + codebooks/size + 16/row length (dim=8, 8 bits, 2 codebooks: ≈ 2.1 on a
1536×576 weight; dim=8, 7 bits, 2 codebooks: ≈ 1.8).

A tensor of at least 4096 elements with fewer sub-vectors per group than codewords is refused (the
codebook could not be filled; lower ``codebook_bits``). Smaller tensors (norms, biases) are taken: their
sub-vectors become the codewords themselves.

Guarantee: none per element (k-means minimizes the mean error); ``tolerance`` is ``inf``. NaN or Inf, and
integer input, are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.codec import Codec, register, restore_dtype
from ..core.encoded import Encoded
from ..core.errors import BlobError, ConfigError, InputError
from . import _kmeans, _lowrank

_DTYPES: dict[str, type[np.floating[Any]]] = {"float16": np.float16, "float32": np.float32}
#: tensors this large must fill their codebooks; smaller ones store their sub-vectors as codewords
MIN_REFUSED = 4096
#: candidates of the first codebook tried per sub-vector when two additive codebooks are assigned jointly
BEAM = 8


@register
@dataclass(frozen=True)
class VectorQuant(Codec):
    dim: int = 8
    codebook_bits: int = 8
    codebooks: int = 1
    residual: bool = False
    group: int = 0
    scales: bool = True
    iters: int = 10
    passes: int = 2
    codebook_dtype: str = "float16"

    codec_id: ClassVar[str] = "vq"
    accepts_integers: ClassVar[bool] = False
    accepts_nonfinite: ClassVar[bool] = False
    summary: ClassVar[str] = "vector quantization: k-means codebooks of sub-vectors, residual or additive (AQLM)"
    examples: ClassVar[tuple[str, ...]] = (
        "vq(dim=8, codebook_bits=6)",
        "vq(dim=4, codebook_bits=5, codebooks=2, residual=true, iters=4)",
        "vq(dim=2, codebook_bits=3, codebooks=2, group=1024, scales=false, iters=3, passes=1, codebook_dtype=float32)",
    )

    def validate(self) -> None:
        if not 1 <= self.dim <= 256:
            raise ConfigError(f"vq: dim must be in 1..256, got {self.dim}")
        if not 1 <= self.codebook_bits <= 16:
            raise ConfigError(f"vq: codebook_bits must be in 1..16, got {self.codebook_bits}")
        if not 1 <= self.codebooks <= 4:
            raise ConfigError(f"vq: codebooks must be in 1..4, got {self.codebooks}")
        if self.group < 0:
            raise ConfigError(f"vq: group must be >= 1 rows per codebook set, or 0 for one set; got {self.group}")
        if self.iters < 0 or self.passes < 0:
            raise ConfigError(f"vq: iters and passes must be >= 0, got iters={self.iters}, passes={self.passes}")
        if self.codebook_dtype not in _DTYPES:
            raise ConfigError(f"vq: codebook_dtype must be float16 or float32, got {self.codebook_dtype!r}")

    # --- layout ---------------------------------------------------------------------------------------
    def _layout(self, shape: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        """(rows, cols, sub-vectors per row, rows per group, groups)."""
        rows, cols = _lowrank.matrix_shape(shape)
        nvec = -(-cols // self.dim)
        per = rows if self.group == 0 else min(self.group, rows)
        groups = -(-rows // per) if per else 0
        return rows, cols, nvec, per, groups

    def _store(self, a: np.ndarray, dtype: type[np.floating[Any]], what: str) -> np.ndarray:
        with np.errstate(over="ignore"):
            out = a.astype(dtype)
        if not np.all(np.isfinite(out)):
            raise InputError(
                f"vq: {what} (largest |value| {float(np.max(np.abs(a))):.4g}) overflow {np.dtype(dtype).name}; "
                "use codebook_dtype=float32 (scales are float16: scale the tensor), or another format"
            )
        return out

    # --- codec ----------------------------------------------------------------------------------------
    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        _lowrank.require_finite_float(x, "vq")
        rows, cols, nvec, per, groups = self._layout(tuple(x.shape))
        k, c, d = 1 << self.codebook_bits, self.codebooks, self.dim
        m = _lowrank.as_matrix(x)
        parts: dict[str, Any] = {}
        scale = np.ones(rows)
        if self.scales:
            stored = self._store(_row_rms(m), np.float16, "row scales")
            parts["scales"] = stored
            scale = stored.astype(np.float64)
        unit = np.where(scale > 0, scale, 1.0)
        padded = np.zeros((rows, nvec * d))
        padded[:, :cols] = m / unit[:, None]
        if padded.size and float(np.max(np.abs(padded))) > 1e37:
            raise InputError(
                f"vq: k-means runs in float32, and the values (largest |value| {float(np.max(np.abs(m))):.4g}) "
                "do not fit it; use scales=true, or scale the tensor"
            )
        col_weight = np.zeros(nvec * d)
        col_weight[:cols] = self._importance(calib, tuple(x.shape), cols)
        row_weight = np.square(scale) if self.scales else np.ones(rows)
        row_weight = row_weight / (row_weight.mean() if rows and row_weight.mean() > 0 else 1.0)
        book = np.zeros((groups, c, k, d), np.float32)
        codes = np.zeros((rows, nvec, c), np.int64)
        rng = np.random.default_rng(_kmeans.SEED)
        for g in range(groups):
            sl = slice(g * per, min(rows, (g + 1) * per))
            nrows = sl.stop - sl.start
            if x.size >= MIN_REFUSED and nrows * nvec < k:
                raise InputError(
                    f"vq: codebook_bits={self.codebook_bits} asks for {k} codewords, but a group of {nrows} rows "
                    f"has only {nrows * nvec} sub-vectors of {d}; lower codebook_bits (at most "
                    f"{max(1, int(np.log2(max(1, nrows * nvec))))}) or use larger groups"
                )
            vecs = padded[sl].reshape(-1, d).astype(np.float32)
            wts = (row_weight[sl, None, None] * col_weight.reshape(nvec, d)[None]).reshape(-1, d).astype(np.float32)
            book[g], group_codes = self._fit(vecs, wts, k, rng)
            codes[sl] = group_codes.reshape(nrows, nvec, c)
        parts["codebooks"] = self._store(book, _DTYPES[self.codebook_dtype], "codewords")
        parts["codes"] = _kmeans.pack_codes(codes, self.codebook_bits)
        return self._make(x, parts, {})

    def _importance(self, calib: Any, shape: tuple[int, ...], cols: int) -> np.ndarray:
        """Weight of each column's error: diag(XᵀX) normalized to mean 1 (all ones without calibration)."""
        if calib is None or cols == 0:
            return np.ones(cols)
        h = np.diag(_lowrank.gram(calib, shape, "vq", "importance")).copy()
        mean = float(h.mean())
        return h / mean + 1e-3 if mean > 0 else np.ones(cols)  # a dead column still counts a little

    def _fit(self, x: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Codebooks (C, k, d) rounded to the stored dtype, and codes (n, C), for vectors ``x`` (n, d)."""
        c = self.codebooks
        books = np.zeros((c, k, x.shape[1]), np.float32)
        codes = np.zeros((len(x), c), np.int64)
        left = x.copy()
        for i in range(c):  # residual start: each codebook on what the previous ones left
            books[i], codes[:, i] = _kmeans.kmeans(left, w, k, self.iters, rng)
            left -= books[i][codes[:, i]]
        if c > 1 and not self.residual:  # additive: alternating refinement against the others' sum
            for _ in range(self.passes):
                for i in range(c):
                    target = left + books[i][codes[:, i]]
                    books[i], codes[:, i] = _kmeans.kmeans(target, w, k, max(1, self.iters // 3), rng, books[i])
                    left = target - books[i][codes[:, i]]
            if c == 2:  # beam search over pairs, then each codebook's means for the new codes
                for _ in range(self.passes):
                    codes = _kmeans.assign_pairs(x, w, books[0], books[1], BEAM)
                    books[0] = _kmeans.update(x - books[1][codes[:, 1]], w, codes[:, 0], books[0])
                    books[1] = _kmeans.update(x - books[0][codes[:, 0]], w, codes[:, 1], books[1])
        # codes chosen against the codewords as stored (rounded), each given the others
        books = books.astype(_DTYPES[self.codebook_dtype]).astype(np.float32)
        left = x - sum(books[i][codes[:, i]] for i in range(c))
        for i in range(c):
            target = left + books[i][codes[:, i]]
            codes[:, i] = _kmeans.assign(target, w, books[i])
            left = target - books[i][codes[:, i]]
        return books, codes

    def parts_of(self, enc: Encoded) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(codebooks (groups, C, 2**bits, dim), codes int64 (rows, sub-vectors, C), scales (rows,) | None)``
        — what a lookup-matvec reads; row r uses codebook set ``r // rows_per_group``."""
        self._check_owner(enc)
        rows, _, nvec, _, groups = self._layout(enc.shape)
        k, c = 1 << self.codebook_bits, self.codebooks
        book = enc.part_array("codebooks", _DTYPES[self.codebook_dtype], (groups, c, k, self.dim))
        count = rows * nvec * c
        packed = enc.part_array("codes", np.uint8, (_kmeans.packed_nbytes(count, self.codebook_bits),))
        codes = _kmeans.unpack_codes(packed, self.codebook_bits, count).reshape(rows, nvec, c)
        scales = enc.part_array("scales", np.float16, (rows,)) if self.scales else None
        if "scales" in enc.parts and not self.scales:
            raise BlobError("vq: the data holds row scales the spec does not declare")
        return book, codes, scales

    prepare = parts_of

    def decode_array(self, enc: Encoded) -> np.ndarray:
        book, codes, scales = self.parts_of(enc)
        rows, cols, nvec, per, _ = self._layout(enc.shape)
        cdt = np.float64 if enc.dtype.itemsize > 4 else np.float32
        out = np.zeros((rows, nvec, self.dim), cdt)
        g = (np.arange(rows) // per)[:, None] if per else np.zeros((rows, 1), np.int64)
        for i in range(self.codebooks):
            out += book[g, i, codes[:, :, i]]
        flat = out.reshape(rows, nvec * self.dim)[:, :cols]
        if scales is not None:
            flat = flat * scales.astype(cdt)[:, None]
        return restore_dtype(flat.reshape(enc.shape), enc.dtype)

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """No per-element bound (see the module docstring)."""
        return np.inf


def _row_rms(m: np.ndarray) -> np.ndarray:
    """Root mean square of each row of a (rows, cols) matrix, without overflow for huge values."""
    if m.shape[1] == 0:
        return np.zeros(m.shape[0])
    peak = np.max(np.abs(m), axis=1)
    unit = np.where(peak > 0, peak, 1.0)
    return peak * np.sqrt(np.mean(np.square(m / unit[:, None]), axis=1))
