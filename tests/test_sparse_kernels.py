"""Sparse kernels (numba, triton) against the NumPy oracle on real data: decode, matvec, matmul, spmv_dense."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import tensorpress as tp
from conftest import rhs
from tensorpress.formats import _sparse
from tensorpress.formats.bitmap import row_offsets
from tensorpress.kernels import available_backends, get_kernel

pytest.importorskip("numba")

def _matmul_operands(enc: tp.Encoded) -> tuple[str, tuple[Any, ...], int]:
    """(codec id, the kernel's operands before x, the padded input length) of a 2-D encoded weight."""
    prepared = enc.codec.prepare(enc)
    return prepared.codec_id, prepared.operands, prepared.padded


def _close(fast: np.ndarray, ref: np.ndarray, scale: np.ndarray) -> None:
    """Float32 sums in another order: within 1e-5 of the sum of |terms| (``scale``)."""
    assert fast.dtype == np.float32 and fast.shape == ref.shape
    assert np.all(np.abs(fast.astype(np.float64) - ref) <= 1e-5 * scale + 1e-6)


SPECS = [
    "nm(n=2, m=4)", "nm(n=4, m=8)", "nm(n=1, m=4)", "nm(n=3, m=7)", "nm(n=2, m=16)", "nm(n=1, m=1)",
    "bitmap(sparsity=0.7)", "bitmap(sparsity=0.5, tile=8)", "bitmap(threshold=0.5, tile=16)",
    "block(shape=(1, 4), sparsity=0.75)", "block(shape=(4, 1), sparsity=0.5)", "block(shape=(2, 3), sparsity=0.6)",
]
SHAPES = [(512, 512), (37, 203), (9, 48)]  # the whole photo; odd sizes; rows shorter than a SIMD step


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_numba_matvec_matmul_match_reference(
    spec: str, shape: tuple[int, int], dtype: type, weight: np.ndarray, inputs: np.ndarray
) -> None:
    w = weight[: shape[0], : shape[1]].astype(dtype)
    enc = tp.encode(w, spec)
    fmt, ops, padded = _matmul_operands(enc)
    dense = np.abs(tp.decode(enc).astype(np.float64))
    for batch in (None, 1, 5, 16):
        x = rhs(inputs, shape[1], batch)
        xp = _sparse.pad_rows(x, padded)
        op = "matvec" if batch is None else "matmul"
        ref = get_kernel(fmt, op, "reference")(*ops, xp)
        fast = get_kernel(fmt, op, "numba")(*ops, xp)
        rows = dense.shape[0]
        _close(fast[:rows], ref[:rows], dense @ np.abs(x.astype(np.float64)))
        np.testing.assert_array_equal(fast[rows:], 0)  # block padding rows


@pytest.mark.parametrize("spec", ["nm(n=2, m=4)", "nm(n=3, m=7)", "bitmap(sparsity=0.7)", "bitmap(threshold=0.0)",
                                  "block(shape=(1, 4), sparsity=0.75)", "block(shape=(2, 3), sparsity=0.5)",
                                  "topk(k=40)"])
@pytest.mark.parametrize("dtype", ["<f2", "<f4", ">f8", "bfloat16", "<i2", "|b1"])
def test_numba_decode_is_bit_exact(spec: str, dtype: str, weight: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    w = weight[:61, :203]
    x = (w > 0.5) if dtype == "|b1" else (w * 100).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    enc = tp.encode(x, spec)
    monkeypatch.setenv("TENSORPRESS_BACKEND", "reference")
    ref = tp.decode(enc)
    monkeypatch.setenv("TENSORPRESS_BACKEND", "numba")
    fast = tp.decode(enc)
    assert fast.dtype == ref.dtype == x.dtype
    np.testing.assert_array_equal(fast.view(f"u{x.dtype.itemsize}"), ref.view(f"u{x.dtype.itemsize}"))


@pytest.mark.parametrize("wdtype", [np.float32, np.float16])
@pytest.mark.parametrize("spec", ["topk(fraction=0.1)", "topk(k=1)", "topk(fraction=1.0)"])
def test_numba_spmv_dense_matches_reference(spec: str, wdtype: type, weight: np.ndarray) -> None:
    acts = weight[100:116, :300]  # 16 tokens of 300 features
    enc = tp.encode(acts.astype(np.float16), spec)
    vals, idx, _, _ = enc.codec._stored(enc)
    wt = np.ascontiguousarray(weight[:300, :333].astype(wdtype))  # W^T: (in, out) = (300, 333)
    ref = get_kernel("topk", "spmv_dense", "reference")(vals, idx, wt)
    fast = get_kernel("topk", "spmv_dense", "numba")(vals, idx, wt)
    scale = np.abs(tp.decode(enc).astype(np.float64)) @ np.abs(wt.astype(np.float64))
    _close(fast, ref, scale)


def test_matmul_through_the_codec_equals_dense(weight: np.ndarray, inputs: np.ndarray) -> None:
    for spec in ("nm(n=2, m=4)", "bitmap(sparsity=0.7)", "block(shape=(1, 4), sparsity=0.75)",
                 "nm(n=2, m=4, values=quant(bits=8, group=64))"):
        w = weight[:, :300]
        enc = tp.encode(w.astype(np.float16), spec)
        dense = tp.decode(enc).astype(np.float64)
        x = rhs(inputs, 300, 4)
        _close(enc.codec.matmul(enc, x), dense @ x, np.abs(dense) @ np.abs(x))
        _close(enc.codec.matmul(enc, x[:, 0]), dense @ x[:, 0], np.abs(dense) @ np.abs(x[:, 0]))


def test_every_sparse_op_has_numba_and_reference() -> None:
    for fmt in ("nm", "bitmap", "block"):
        for op in ("decode", "matvec", "matmul"):
            assert {"reference", "numba"} <= set(available_backends(fmt, op)), (fmt, op)
    assert {"reference", "numba"} <= set(available_backends("topk", "spmv_dense"))


# --- Triton: compiled on a GPU, in the interpreter without one ------------------------------------------------
@pytest.fixture
def interpret(triton_backend: str) -> Callable[[str, str], Callable[..., Any]]:
    def triton_kernel(fmt: str, op: str) -> Callable[..., Any]:
        return get_kernel(fmt, op, triton_backend)

    return triton_kernel


@pytest.mark.parametrize("spec", ["nm(n=2, m=4)", "nm(n=3, m=7)", "nm(n=1, m=1)", "bitmap(sparsity=0.7)",
                                  "bitmap(threshold=0.5, tile=8)", "block(shape=(1, 4), sparsity=0.75)",
                                  "block(shape=(2, 3), sparsity=0.5)"])
def test_triton_matches_reference(spec: str, interpret: Callable[[str, str], Callable[..., Any]],
                                  weight: np.ndarray, inputs: np.ndarray) -> None:
    w = weight[200:211, 100:197].astype(np.float16)  # 11 × 97: nothing divides evenly
    enc = tp.encode(w, spec)
    fmt, ops, padded = _matmul_operands(enc)
    dense = np.abs(tp.decode(enc).astype(np.float64))
    for batch in (None, 3, 16):  # 16: wide enough for the tensor cores on a GPU (float32 must stay float32)
        x = rhs(inputs, 97, batch)
        xp = _sparse.pad_rows(x, padded)
        op = "matvec" if batch is None else "matmul"
        ref = get_kernel(fmt, op, "reference")(*ops, xp)
        fast = interpret(fmt, op)(*ops, xp)
        _close(fast[:11], ref[:11], dense @ np.abs(x.astype(np.float64)))
    codec = enc.codec
    stored = codec._stored(enc)
    if fmt == "nm":
        args: tuple[Any, ...] = (_sparse.bit_patterns(stored[0]), stored[1], codec.n, codec.m, stored[3])
    elif fmt == "bitmap":
        args = (stored[0], _sparse.bit_patterns(stored[1]), row_offsets(stored[0]), stored[3])
    else:
        args = (_sparse.bit_patterns(stored[0]), stored[1], stored[2], stored[3])
    np.testing.assert_array_equal(interpret(fmt, "decode")(*args), get_kernel(fmt, "decode", "reference")(*args))


def test_triton_topk_matches_reference(interpret: Callable[[str, str], Callable[..., Any]],
                                       weight: np.ndarray) -> None:
    enc = tp.encode(weight[:5, :150], "topk(fraction=0.2)")
    vals, idx, _, n = enc.codec._stored(enc)
    wt = np.ascontiguousarray(weight[:150, 7:200].astype(np.float16))
    ref = get_kernel("topk", "spmv_dense", "reference")(vals, idx, wt)
    _close(interpret("topk", "spmv_dense")(vals, idx, wt), ref,
           np.abs(tp.decode(enc).astype(np.float64)) @ np.abs(wt.astype(np.float64)))
    np.testing.assert_array_equal(interpret("topk", "decode")(vals, idx, n),
                                  get_kernel("topk", "decode", "reference")(vals, idx, n))
