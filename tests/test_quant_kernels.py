"""Products with compressed weights against the NumPy oracle on real data: ``quant`` matvec/matmul (numba,
triton), low-rank and composite sums."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import tensorpress as tp
from conftest import rhs
from tensorpress.core.errors import InputError
from tensorpress.kernels import available_backends, get_kernel
from tensorpress.kernels.composite import SumProduct, product
from tensorpress.kernels.numba.quant_matvec import chunks_layout, planes_layout
from tensorpress.kernels.reference.quant import unpack_bits

pytest.importorskip("numba")

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
        x = rhs(inputs, shape[1], batch)
        op = "matvec" if batch is None else "matmul"
        ref = get_kernel("quant", op, "reference")(*prepared.operands, x)
        fast = get_kernel("quant", op, "numba")(*prepared.operands, x)
        _close(fast, ref, terms @ np.abs(x.astype(np.float64)))


def test_the_vector_paths_cover_the_usual_layouts() -> None:
    """2-, 4- and 8-bit weights of model widths take the 8-lane word path, small groups included; other
    widths the 8-lane chunk path."""
    for bits, n, group in [(4, 4096, 128), (4, 576, 128), (4, 576, 32), (2, 1536, 64), (8, 576, 32), (2, 576, 16)]:
        assert planes_layout(bits, n, group)[0] > 0, (bits, n, group)
    assert planes_layout(3, 4096, 128) == (0, 0)
    assert chunks_layout(3, 4096, 128) == 4 and chunks_layout(5, 576, 32) == 2  # odd widths: 8-code chunks
    assert chunks_layout(3, 203, 128) == -1 and chunks_layout(3, 512, 100) == -1
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
        x = rhs(inputs, 448, 4)
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


# --- Triton: compiled on a GPU, in the interpreter without one ------------------------------------------------
@pytest.mark.parametrize("spec", ["quant(bits=4, group=32)", "quant(bits=3, group=16, symmetric=true)",
                                  "quant(bits=8, group=0)", "quant(bits=2, group=7)", "quant(bits=5, group=64)"])
@pytest.mark.parametrize("cols", [97, 96])  # 97: nothing divides evenly; 96: 2/4/8-bit rows are whole 32-bit words
def test_triton_matches_reference(spec: str, cols: int, weight: np.ndarray, inputs: np.ndarray,
                                  triton_backend: str) -> None:
    enc = tp.encode(weight[200:219, 100:100 + cols], spec)  # 19 rows
    prepared = enc.codec.prepare(enc)
    terms = _terms(prepared.operands)
    for batch in (None, 3, 16):  # 16: wide enough for the tensor cores on a GPU (float32 must stay float32)
        x = rhs(inputs, cols, batch)
        op = "matvec" if batch is None else "matmul"
        ref = get_kernel("quant", op, "reference")(*prepared.operands, x)
        _close(get_kernel("quant", op, "triton")(*prepared.operands, x), ref, terms @ np.abs(x.astype(np.float64)))


# --- low-rank, sparse and composite products ---------------------------------------------------------------
COMPOSITES = [
    "lowrank(rank=24)", "lowrank(energy=0.9, factor_dtype=float32)",
    "compensated(base=quant(bits=3, group=64), rank=8)",
    "outliers(base=quant(bits=3, group=64), fraction=0.02)",
    "gear(base=quant(bits=4, group=32), rank=4, outliers=0.01)",
    "compensated(base=nm(n=2, m=4), rank=8)",
]


@pytest.mark.parametrize("spec", COMPOSITES)
def test_products_of_composites_equal_the_decoded_product(spec: str, weight: np.ndarray, inputs: np.ndarray) -> None:
    """Base + low-rank + sparse, each multiplied on its own data, sum to the decoded weight's product."""
    w = weight[100:300, :448]
    enc = tp.encode(w, spec)
    prod = product(enc)
    assert prod is not None and (prod.rows, prod.cols) == w.shape
    dense = tp.decode(enc).astype(np.float64)
    parts = dict(enc.parts)
    bound_w = np.abs(dense) + sum(np.abs(tp.decode(p).astype(np.float64)) for p in parts.values()
                                  if isinstance(p, tp.Encoded))
    for batch in (None, 1, 7):
        x = rhs(inputs, 448, batch)
        bound = bound_w @ np.abs(x.astype(np.float64))
        for backend in ("reference", "numba"):
            _close(prod(x, backend=backend), dense @ x, bound)
    assert prod.nbytes < w.nbytes


def test_product_of_a_sum_is_the_sum_of_its_parts(weight: np.ndarray, inputs: np.ndarray) -> None:
    enc = tp.encode(weight[:256, :320], "gear(base=quant(bits=4, group=32), rank=4, outliers=0.01)")
    prod = product(enc)
    assert isinstance(prod, SumProduct)
    assert [type(t).__name__ for t in prod.terms] == ["PreparedMatmul", "LowRankProduct", "CSRProduct"]
    x = rhs(inputs, 320, 3)
    total = sum(t(x) for t in prod.terms)
    np.testing.assert_allclose(prod(x), total, rtol=1e-6, atol=1e-6)
    assert all(np.abs(t(x)).max() > 0 for t in prod.terms)  # every part contributes


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_numba_lowrank_and_csr_match_reference(dtype: type, weight: np.ndarray, inputs: np.ndarray) -> None:
    u = np.ascontiguousarray(weight[:333, :17].astype(dtype))
    v = np.ascontiguousarray(weight[17:34, 50:291].astype(dtype))
    enc = tp.encode(weight[:61, :241].astype(dtype), "csr(sparsity=0.9)")
    indptr, indices, values, _ = enc.codec.csr_parts(enc)
    for batch in (None, 1, 5):
        x = rhs(inputs, 241, batch)
        ax = np.abs(x.astype(np.float64))
        ref = get_kernel("lowrank", "matvec" if batch is None else "matmul", "reference")(u, v, x)
        scale = np.abs(u.astype(np.float64)) @ (np.abs(v.astype(np.float64)) @ ax)
        _close(get_kernel("lowrank", "matvec" if batch is None else "matmul", "numba")(u, v, x), ref, scale)
        op = "matvec" if batch is None else "matmul"
        ref = get_kernel("csr", op, "reference")(indptr, indices, values, x)
        _close(get_kernel("csr", op, "numba")(indptr, indices, values, x), ref,
               np.abs(tp.decode(enc).astype(np.float64)) @ ax)


def test_product_is_none_where_no_kernel_applies(weight: np.ndarray) -> None:
    assert product(tp.encode(weight[:32, :64], "quant(bits=4, group=16, axis=0)")) is None
    assert product(tp.encode(weight[:32, :64], "zstd(level=1)")) is None
    assert product(tp.encode(weight[:128, :16].reshape(4, 32, 16), "lowrank(rank=2)")) is None


def test_triton_lowrank_csr_and_composite_match_reference(weight: np.ndarray, inputs: np.ndarray,
                                                          triton_backend: str) -> None:
    u = np.ascontiguousarray(weight[:37, :5].astype(np.float16))
    v = np.ascontiguousarray(weight[5:10, 50:147].astype(np.float16))
    sparse = tp.encode(weight[300:337, 50:147], "csr(sparsity=0.9)")
    csr = sparse.codec.csr_parts(sparse)[:3]
    gear_enc = tp.encode(weight[300:337, 50:146], "gear(base=quant(bits=4, group=32), rank=4, outliers=0.02)")
    gear = product(gear_enc)
    assert gear is not None
    gear_terms = sum(np.abs(tp.decode(p).astype(np.float64)) for p in gear_enc.parts.values())
    for batch in (None, 3, 16):  # 16: wide enough for the tensor cores on a GPU (float32 must stay float32)
        x = rhs(inputs, 97, batch)
        ax = np.abs(x.astype(np.float64))
        op = "matvec" if batch is None else "matmul"
        scale = np.abs(u.astype(np.float64)) @ (np.abs(v.astype(np.float64)) @ ax)
        _close(get_kernel("lowrank", op, "triton")(u, v, x), get_kernel("lowrank", op, "reference")(u, v, x), scale)
        _close(get_kernel("csr", op, "triton")(*csr, x), get_kernel("csr", op, "reference")(*csr, x),
               np.abs(tp.decode(sparse).astype(np.float64)) @ ax)
        # the composite: quant, low-rank and sparse parts all on Triton
        _close(gear(x[:96], backend="triton"), gear(x[:96], backend="reference"), gear_terms @ ax[:96])


# --- CompressedLinear on the real SmolLM2 ------------------------------------------------------------------
PROMPT = "It is a truth universally acknowledged, that a single man"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The real SmolLM2 converted with the quant policy of the checkpoint tests, and with 2:4 sparsity."""
    from checkpoint_fixtures import converted_smollm2
    from tensorpress.nn import convert_checkpoint

    quant = converted_smollm2()
    nm = convert_checkpoint(quant["gguf"], tmp_path_factory.mktemp("nm") / "smollm2-nm.zip", spec="nm(n=2, m=4)",
                            policy={"model.embed_tokens.weight": "raw", "*norm.weight": "raw"}, progress=False)
    return {"quant": quant["zip"], "nm": nm}


@pytest.mark.llm
@pytest.mark.parametrize("which", ["quant", "nm"])
def test_compressed_model_on_kernels_gives_the_decoded_logits(which: str, checkpoints: dict[str, Any]) -> None:
    """Fused kernels (a short prompt, then one cached generation step) give the decoded model's logits within
    float32 rounding; kernels=False gives them bit for bit."""
    import torch

    from tensorpress.nn import CompressedLinear, load

    decoded, tokenizer = load(checkpoints[which], mode="decoded")
    fused, _ = load(checkpoints[which], mode="compressed")
    layers = [m for m in fused.modules() if isinstance(m, CompressedLinear)]
    assert len(layers) == 30 * 7 and all(m.product is not None for m in layers)
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    assert 1 < ids.shape[1] <= CompressedLinear.kernel_max_tokens  # the prompt itself takes the fused path
    with torch.no_grad():
        steps = []
        for model in (decoded, fused):
            first = model(input_ids=ids, use_cache=True)
            token = first.logits[:, -1:].argmax(-1)
            steps.append((first.logits, model(input_ids=token, cache=first.cache).logits))
        for a, b in zip(*steps, strict=True):
            assert a.shape == b.shape and not torch.equal(a, b)  # another summation order: the kernels ran
            assert torch.max(torch.abs(a - b)) <= 1e-3 * torch.max(torch.abs(a))
            assert torch.equal(a.argmax(-1), b.argmax(-1))
        for m in layers:
            m.kernels = False
        assert torch.equal(fused(input_ids=ids).logits, steps[0][0])
