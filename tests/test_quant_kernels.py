"""Products with compressed weights against the NumPy oracle on real data: ``quant`` matvec/matmul (numba,
triton), low-rank and composite sums."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

import tensorpress as tp
from tensorpress.core.errors import InputError
from tensorpress.kernels import available_backends, get_kernel
from tensorpress.kernels.numba.quant_matvec import planes_layout
from tensorpress.kernels.reference.quant import unpack_bits

pytest.importorskip("numba")

HAS_TRITON = importlib.util.find_spec("triton") is not None and importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def weight(camera: np.ndarray) -> np.ndarray:
    """A real 512×512 matrix, zero mean and unit variance."""
    a = camera.astype(np.float64)
    return ((a - a.mean()) / a.std()).astype(np.float32)


@pytest.fixture(scope="module")
def inputs(faces: np.ndarray) -> np.ndarray:
    """Real right-hand sides: 16 centred faces, flattened (625 each), as columns."""
    flat = faces.reshape(faces.shape[0], -1)[:16].astype(np.float64)
    return np.ascontiguousarray((flat - flat.mean()).T, dtype=np.float32)


def _rhs(inputs: np.ndarray, rows: int, batch: int | None) -> np.ndarray:
    x = np.resize(inputs, (rows, inputs.shape[1]))  # repeats the real faces to any length
    return np.ascontiguousarray(x[:, 0] if batch is None else x[:, :batch])


def _terms(ops: tuple[Any, ...]) -> np.ndarray:
    """|code · scale| + |offset| per weight (float64): what the fp32 sums of the kernels are made of."""
    packed, scales, offsets, bits, n, group = ops
    rows = scales.shape[0]
    codes = unpack_bits(packed, bits, rows * n).reshape(rows, n).astype(np.float64)
    col = np.arange(n) // group
    return np.abs(codes * scales[:, col]) + np.abs(offsets[:, col].astype(np.float64))


def _close(fast: np.ndarray, ref: np.ndarray, scale: np.ndarray) -> None:
    """Float32 sums in another order: within 1e-5 of the sum of |terms| (``scale``)."""
    assert fast.dtype == np.float32 and fast.shape == ref.shape
    assert np.all(np.abs(fast.astype(np.float64) - ref) <= 1e-5 * scale + 1e-6)


SPECS = [
    "quant(bits=4, group=128)", "quant(bits=4, group=32, symmetric=true)", "quant(bits=4, group=64)",
    "quant(bits=2, group=64)", "quant(bits=2, group=16, symmetric=true)", "quant(bits=8, group=32, symmetric=true)",
    "quant(bits=8, group=128)", "quant(bits=3, group=128)", "quant(bits=5, group=32, symmetric=true)",
    "quant(bits=6, group=64)", "quant(bits=7, group=128)", "quant(bits=4, group=100)", "quant(bits=4, group=0)",
    "quant(bits=4, group=128, scale_dtype=float32)",
]
SHAPES = [(512, 512), (37, 203), (9, 48), (24, 576)]  # the photo; odd sizes; short rows; a model's width


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("shape", SHAPES)
def test_numba_matvec_matmul_match_reference(spec: str, shape: tuple[int, int], weight: np.ndarray,
                                             inputs: np.ndarray) -> None:
    enc = tp.encode(np.resize(weight, shape), spec)  # the photo's rows, repeated or cut to the shape
    prepared = enc.codec.prepare(enc)
    terms = _terms(prepared.operands)
    for batch in (None, 1, 5, 16):
        x = _rhs(inputs, shape[1], batch)
        op = "matvec" if batch is None else "matmul"
        ref = get_kernel("quant", op, "reference")(*prepared.operands, x)
        fast = get_kernel("quant", op, "numba")(*prepared.operands, x)
        _close(fast, ref, terms @ np.abs(x.astype(np.float64)))


def test_the_word_path_covers_the_usual_layouts() -> None:
    """2-, 4- and 8-bit weights of model widths take the 8-lane word path, small groups included."""
    for bits, n, group in [(4, 4096, 128), (4, 576, 128), (4, 576, 32), (2, 1536, 64), (8, 576, 32), (2, 576, 16)]:
        assert planes_layout(bits, n, group)[0] > 0, (bits, n, group)
    assert planes_layout(3, 4096, 128) == (0, 0)
    assert planes_layout(4, 4096, 100) == (0, 0)  # groups split words
    assert planes_layout(4, 203, 128) == (0, 0)  # rows end inside a word


def test_prepared_product_equals_the_decoded_product(weight: np.ndarray, inputs: np.ndarray) -> None:
    w = weight[:300, :448]
    for spec in ("quant(bits=4, group=128)", "quant(bits=3, group=64, symmetric=true)"):
        enc = tp.encode(w, spec)
        dense = tp.decode(enc).astype(np.float64)
        prepared = enc.codec.prepare(enc)
        assert (prepared.rows, prepared.cols) == w.shape
        assert prepared.nbytes < w.nbytes / 4  # codes + fp32 scales and offsets: far below fp32
        x = _rhs(inputs, 448, 4)
        bound = np.abs(dense) @ np.abs(x) + _terms(prepared.operands) @ np.abs(x)
        _close(prepared(x), dense @ x, bound)
        _close(prepared(x[:, 0]), dense @ x[:, 0], bound[:, 0])
        assert np.max(np.abs(prepared(x) - w.astype(np.float64) @ x)) > 0  # quantized, not the original


def test_prepare_refuses_what_it_cannot_multiply(weight: np.ndarray) -> None:
    with pytest.raises(InputError, match="2-D weight"):
        enc = tp.encode(weight[:64, :64].reshape(4, 16, 64), "quant(bits=4, group=32)")
        enc.codec.prepare(enc)
    with pytest.raises(InputError, match="axis=0"):
        enc = tp.encode(weight[:64, :64], "quant(bits=4, group=32, axis=0)")
        enc.codec.prepare(enc)
    enc = tp.encode(weight[:64, :64], "quant(bits=4, group=32)")
    with pytest.raises(InputError, match=r"\(64,\)"):
        enc.codec.prepare(enc)(np.ones(63, np.float32))


def test_quant_ops_have_numba_and_reference() -> None:
    for op in ("matvec", "matmul"):
        assert {"reference", "numba"} <= set(available_backends("quant", op))


# --- Triton, in the interpreter on the CPU ---------------------------------------------------------------
@pytest.mark.parametrize("spec", ["quant(bits=4, group=32)", "quant(bits=3, group=16, symmetric=true)",
                                  "quant(bits=8, group=0)", "quant(bits=2, group=7)", "quant(bits=5, group=64)"])
def test_triton_matches_reference(spec: str, weight: np.ndarray, inputs: np.ndarray,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    enc = tp.encode(weight[200:219, 100:197], spec)  # 19 × 97: nothing divides evenly
    prepared = enc.codec.prepare(enc)
    terms = _terms(prepared.operands)
    for batch in (None, 3):
        x = _rhs(inputs, 97, batch)
        op = "matvec" if batch is None else "matmul"
        ref = get_kernel("quant", op, "reference")(*prepared.operands, x)
        _close(get_kernel("quant", op, "triton")(*prepared.operands, x), ref, terms @ np.abs(x.astype(np.float64)))
