"""``csr``: unstructured sparsity in compressed sparse row form, the classic layout (and the one scipy uses).

The tensor is seen as rows along its last axis; storage is ``indptr`` (rows + 1; uint32, or uint64 past
2³² stored values), the column of every stored value (the smallest unsigned type for the row length) and
the values, raw in the input dtype or compressed by a nested codec. Which elements are stored is chosen as
for ``bitmap`` (``sparsity`` per row with ``select=magnitude|wanda|sparsegpt``, or ``threshold``); exact
zeros are never stored. It is here for comparison: a column index per value costs more than ``bitmap``'s
bit per element below about 90% sparsity, and CSR kernels are gather-bound. NaN or Inf are an error.

Guarantee: stored elements are exact (raw values) or within the values codec's bound; the others are 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.codec import Codec, register, restore_dtype
from ..core.encoded import Encoded
from ..core.errors import BlobError
from . import _sparse


@register
@dataclass(frozen=True)
class CSRSparse(Codec):
    sparsity: float | None = None
    threshold: float | None = None
    select: str = "magnitude"
    values: Codec | None = None

    codec_id: ClassVar[str] = "csr"
    accepts_nonfinite: ClassVar[bool] = False
    summary: ClassVar[str] = "unstructured sparsity in CSR form (indptr, column indices, values), for comparison"
    examples: ClassVar[tuple[str, ...]] = (
        "csr(sparsity=0.9)",
        "csr(threshold=0.0)",
        "csr(sparsity=0.5, values=quant(bits=8, group=64))",
    )

    def validate(self) -> None:
        _sparse.check_select("csr", self.select)
        _sparse.check_amount("csr", self.sparsity, self.threshold, self.select)

    @property
    def accepts_integers(self) -> bool:  # type: ignore[override]
        return self.values is None or self.values.accepts_integers

    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        _sparse.require_finite(x, "csr")
        rows, mask = _sparse.unstructured_select(x, self.sparsity, self.threshold, self.select, calib, "csr")
        nrows, cols = rows.shape
        counts = mask.sum(axis=1, dtype=np.int64)
        indptr = np.zeros(nrows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        _, col_index = np.nonzero(mask)
        parts = {
            "indptr": indptr.astype(_indptr_dtype(int(indptr[-1]))),
            "indices": col_index.astype(_sparse.index_dtype(max(1, cols))),
            "values": _sparse.store_values(self.values, rows[mask]),
        }
        return self._make(x, parts, {})

    def csr_parts(self, enc: Encoded) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """(indptr int64 (rows+1,), indices (nnz,), values (nnz,) in the original dtype, (rows, cols)) —
        what ``scipy.sparse.csr_array((values, indices, indptr), shape)`` takes."""
        self._check_owner(enc)
        nrows, cols = _sparse.rows_shape(enc.shape, -1, "csr")
        raw = enc.parts.get("indptr")
        wide = isinstance(raw, np.ndarray) and raw.dtype == np.uint64
        indptr = enc.part_array("indptr", np.uint64 if wide else np.uint32, (nrows + 1,)).astype(np.int64)
        nnz = int(indptr[-1])
        steps = np.diff(indptr)
        if indptr[0] != 0 or np.any(steps < 0) or np.any(steps > cols):
            raise BlobError("csr: indptr is not a valid row pointer array: the data is corrupted")
        indices = enc.part_array("indices", _sparse.index_dtype(max(1, cols)), (nnz,))
        if nnz and int(indices.max()) >= cols:
            raise BlobError(f"csr: a stored column is not below {cols}: the data is corrupted")
        values = _sparse.load_values(enc, self.values, (nnz,), "csr")
        return indptr, indices, values, (nrows, cols)

    def decode_array(self, enc: Encoded) -> np.ndarray:
        indptr, indices, values, (nrows, cols) = self.csr_parts(enc)
        out = np.zeros((nrows, cols), dtype=values.dtype)
        row_index = np.repeat(np.arange(nrows), np.diff(indptr))
        out[row_index, indices] = values
        return restore_dtype(_sparse.from_rows(out, enc.shape, -1), enc.dtype)

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """``|x|`` where pruned; the values codec's bound where kept (mask recomputed; magnitude only)."""
        if self.select == "sparsegpt" or (self.select == "wanda" and self.values is not None):
            return np.inf
        if self.select == "wanda" or x.size == 0:
            return np.abs(np.asarray(x, dtype=np.float64))
        rows, mask = _sparse.unstructured_select(x, self.sparsity, self.threshold, self.select, None, "csr")
        return _sparse.unstructured_tolerance(self.values, x, rows, mask)


def _indptr_dtype(nnz: int) -> np.dtype[Any]:
    return np.dtype(np.uint32) if nnz < 2**32 else np.dtype(np.uint64)
