"""``vq`` lookup-matvec (numba, triton) against the NumPy oracle on real data: one and two codebooks,
residual and additive, row scales on and off, codebook sets per row group, a short last sub-vector, batch
1 and 4; the product that ``kernels.composite`` gives a ``vq`` weight."""

from __future__ import annotations

import numpy as np
import pytest

import tensorpress as tp
from conftest import load_real
from tensorpress.core.errors import InputError
from tensorpress.kernels import available_backends, get_kernel
from tensorpress.kernels.composite import VQProduct, product
from tensorpress.kernels.reference.vq import codes_of, uses_table

pytest.importorskip("numba")

@pytest.fixture(scope="module")
def inputs(faces: np.ndarray) -> np.ndarray:
    """Real right-hand sides: centred faces, flattened (625 each), as columns."""
    flat = faces.reshape(faces.shape[0], -1)[:4].astype(np.float64)
    return np.ascontiguousarray((flat - flat.mean()).T, dtype=np.float32)


@pytest.fixture(scope="module")
def llm_weight() -> np.ndarray:
    """SmolLM2-135M's first MLP up-projection (1536 × 576), dequantized to float32: its first 256 rows."""
    gguf = pytest.importorskip("gguf")
    from tensorpress.datasets import smollm2_gguf

    reader = gguf.GGUFReader(str(load_real(smollm2_gguf)))
    t = next(t for t in reader.tensors if t.name == "blk.0.ffn_up.weight")
    return np.ascontiguousarray(np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)[:256])


def _rhs(inputs: np.ndarray, rows: int, batch: int | None) -> np.ndarray:
    x = np.resize(inputs, (rows, inputs.shape[1]))  # the real faces repeated to any length
    return np.ascontiguousarray(x[:, 0] if batch is None else x[:, :batch])


def _terms(p: VQProduct) -> np.ndarray:
    """|scale| · Σ_c |codeword_c| per weight (float64): what the float32 sums of the kernels are made of."""
    _, c, _, dim = p.book.shape
    nvec = -(-p.cols // dim)
    codes = codes_of(p.packed, p.bits, p.rows, nvec, c)
    g = (np.arange(p.rows) // p.per)[:, None]
    out = sum(np.abs(p.book.astype(np.float64)[g, i, codes[:, :, i]]) for i in range(c))
    return out.reshape(p.rows, -1)[:, :p.cols] * np.abs(p.scales.astype(np.float64))[:, None]


def _close(fast: np.ndarray, ref: np.ndarray, scale: np.ndarray) -> None:
    """Float32 sums in another order: within 1e-5 of the sum of |terms|, and not all zero."""
    assert fast.dtype == np.float32 and fast.shape == ref.shape
    assert np.all(np.abs(fast.astype(np.float64) - ref) <= 1e-5 * scale + 1e-6)
    assert np.max(np.abs(ref)) > 0


# (spec, shape): 203 columns leave a short last sub-vector for dims 3, 4, 6, 8
CASES = [
    ("vq(dim=8, codebook_bits=6, iters=3)", (256, 203)),
    ("vq(dim=4, codebook_bits=5, codebooks=2, residual=true, iters=3)", (96, 203)),
    ("vq(dim=6, codebook_bits=7, codebooks=2, iters=2, passes=1, scales=false)", (128, 203)),
    ("vq(dim=3, codebook_bits=4, codebooks=2, group=16, iters=2, passes=1)", (100, 203)),  # sets of few rows
    ("vq(dim=4, codebook_bits=4, group=40, scales=false, iters=3, codebook_dtype=float32)", (100, 200)),
    ("vq(dim=8, codebook_bits=9, codebooks=2, residual=true, iters=2)", (160, 256)),  # codes across bytes
]


@pytest.mark.parametrize(("spec", "shape"), CASES)
def test_numba_matches_reference_on_the_photo(spec: str, shape: tuple[int, int], weight: np.ndarray,
                                              inputs: np.ndarray) -> None:
    enc = tp.encode(weight[:shape[0], :shape[1]], spec)
    p = product(enc)
    assert isinstance(p, VQProduct) and (p.rows, p.cols) == shape
    terms = _terms(p)
    dense = tp.decode(enc).astype(np.float64)
    for batch in (None, 1, 4):
        x = _rhs(inputs, shape[1], batch)
        op = "matvec" if batch is None else "matmul"
        ref = get_kernel("vq", op, "reference")(p.book, p.packed, p.scales, p.bits, p.per, p.cols, x)
        bound = terms @ np.abs(x.astype(np.float64))
        _close(ref, dense @ x, bound)  # the oracle is the decoded weight's product
        _close(get_kernel("vq", op, "numba")(p.book, p.packed, p.scales, p.bits, p.per, p.cols, x), ref, bound)
        _close(p(x), ref, bound)  # the default backend


def test_both_numba_paths_are_taken() -> None:
    """Codebook sets of many rows go through the table, sets of few rows decode their codewords directly."""
    assert uses_table(256, 64, 8) and uses_table(1536, 256, 8) and uses_table(40, 16, 4)
    assert not uses_table(16, 16, 3) and not uses_table(4096, 256, 1)


@pytest.mark.llm
@pytest.mark.parametrize("spec", ["vq(dim=8, codebook_bits=6, codebooks=2, iters=2, passes=1)",
                                  "vq(dim=8, codebook_bits=6, codebooks=2, residual=true, scales=false, iters=2)",
                                  "vq(dim=5, codebook_bits=5, group=64, iters=3)"])
def test_numba_matches_reference_on_smollm2(spec: str, llm_weight: np.ndarray, inputs: np.ndarray) -> None:
    """A real transformer weight (256 × 576; dim 5 leaves a sub-vector of 1 at each row's end)."""
    enc = tp.encode(llm_weight, spec)
    p = product(enc)
    assert p is not None and p.nbytes < llm_weight.nbytes / 6  # codes and codebooks, far below fp32
    terms = _terms(p)
    for batch in (None, 4):
        x = _rhs(inputs, 576, batch)
        ref = tp.decode(enc).astype(np.float64) @ x
        _close(p(x, backend="numba"), ref, terms @ np.abs(x.astype(np.float64)))
        assert np.max(np.abs(p(x) - llm_weight.astype(np.float64) @ x)) > 0  # quantized, not the original


def test_product_refuses_a_wrong_operand(weight: np.ndarray) -> None:
    p = product(tp.encode(weight[:64, :64], "vq(dim=4, codebook_bits=4, iters=2)"))
    assert p is not None
    with pytest.raises(InputError, match=r"\(64,\)"):
        p(np.ones(63, np.float32))
    assert product(tp.encode(weight[:64, :64].reshape(4, 16, 64), "vq(dim=4, codebook_bits=4, iters=2)")) is None


def test_vq_ops_have_numba_and_reference() -> None:
    for op in ("matvec", "matmul"):
        assert {"reference", "numba"} <= set(available_backends("vq", op))


# --- Triton: compiled on a GPU, in the interpreter without one ------------------------------------------------
@pytest.mark.parametrize(("spec", "shape"), [CASES[1], CASES[3], CASES[5]])  # table; direct; 9-bit codes
def test_triton_matches_reference(spec: str, shape: tuple[int, int], weight: np.ndarray, inputs: np.ndarray,
                                  triton_backend: str) -> None:
    enc = tp.encode(weight[:48, :shape[1]], spec)  # 48 rows: the interpreter is slow
    p = product(enc)
    assert isinstance(p, VQProduct)
    terms = _terms(p)
    for batch in (None, 3, 16):  # 16: wide enough for the tensor cores on a GPU (float32 must stay float32)
        x = _rhs(inputs, shape[1], batch)
        op = "matvec" if batch is None else "matmul"
        ref = get_kernel("vq", op, "reference")(p.book, p.packed, p.scales, p.bits, p.per, p.cols, x)
        fast = get_kernel("vq", op, "triton")(p.book, p.packed, p.scales, p.bits, p.per, p.cols, x)
        _close(fast, ref, terms @ np.abs(x.astype(np.float64)))
