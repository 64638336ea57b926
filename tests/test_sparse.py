"""Sparse formats (nm, bitmap, block, slice, csr, topk) on real data: patterns, sizes, selection, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import tensorpress as tp
from conftest import load_real
from tensorpress.core.errors import BlobError, ConfigError, InputError


def _standardized(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return ((a - a.mean()) / a.std()).astype(np.float32)


@pytest.fixture(scope="module")
def weight(camera: np.ndarray) -> np.ndarray:
    """A real 512×512 matrix with a weight-like distribution (zero mean, unit variance)."""
    return _standardized(camera)


@pytest.fixture(scope="module")
def faces_wx(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A real layer problem: W (128 × 625) = 128 faces, X (samples × 625) = the 72 other faces, centred."""
    flat = faces.reshape(faces.shape[0], -1).astype(np.float64)
    flat -= flat.mean(axis=0)
    return flat[:128].astype(np.float32), flat[128:]


@pytest.fixture(scope="module")
def llm_weight() -> np.ndarray:
    """A real LLM weight: SmolLM2-135M's first MLP up-projection (1536 × 576), dequantized to float32."""
    gguf = pytest.importorskip("gguf")
    from tensorpress.datasets import smollm2_gguf

    path = load_real(smollm2_gguf)
    reader = gguf.GGUFReader(str(path))
    t = next(t for t in reader.tensors if t.name == "blk.0.ffn_up.weight")
    return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)


def _payload_bits(enc: tp.Encoded) -> float:
    """Bits per element of the parts alone (the blob header excluded)."""
    total = 0
    for part in enc.parts.values():
        total += part.nbytes if isinstance(part, np.ndarray) else len(part.to_bytes())
    return 8.0 * total / enc.size


# --- N:M ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "m", "axis"), [(2, 4, -1), (4, 8, -1), (1, 4, 0), (3, 7, -1), (2, 16, 0)])
def test_nm_pattern_and_magnitude_choice(weight: np.ndarray, n: int, m: int, axis: int) -> None:
    x = weight[:, :509]  # 509 columns: m does not divide, the last group is short
    enc = tp.encode(x, f"nm(n={n}, m={m}, axis={axis})")
    y = tp.decode(enc)
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept])  # kept values are exact
    rows = np.moveaxis(x, axis, -1)
    kept_rows = np.moveaxis(kept, axis, -1)
    length = rows.shape[-1]
    for g0 in range(0, length, m):
        group = np.abs(rows[:, g0 : g0 + m])
        k = kept_rows[:, g0 : g0 + m]
        assert np.all(k.sum(axis=1) == min(n, group.shape[1]))
        lowest_kept = np.where(k, group, np.inf).min(axis=1)
        highest_pruned = np.where(k, -np.inf, group).max(axis=1)
        assert np.all(lowest_kept >= highest_pruned)


def test_nm_24_fp16_size_on_real_data(weight: np.ndarray) -> None:
    enc = tp.encode(weight.astype(np.float16), "nm(n=2, m=4)")
    assert _payload_bits(enc) == 9.0  # 2 × (16 + 2) bits per 4 elements
    assert enc.nbytes - enc.size * 9 // 8 < 512  # the header
    assert enc.bits_per_element <= 9.0 + 512 * 8 / enc.size
    assert tp.encode(weight.astype(np.float16), "nm(n=4, m=8)").bits_per_element <= 9.5 + 512 * 8 / enc.size


@pytest.mark.llm
def test_sizes_on_llm_weight(llm_weight: np.ndarray) -> None:
    w16 = llm_weight.astype(np.float16)
    nm = tp.encode(w16, "nm(n=2, m=4)")
    assert nm.bits_per_element <= 9.0 + 0.01
    bm = tp.encode(w16, "bitmap(sparsity=0.7)")
    assert bm.bits_per_element <= 0.3 * 16 + 1.1
    blk = tp.encode(w16, "block(shape=(1, 4), sparsity=0.75)")
    assert blk.bits_per_element <= 0.25 * 16 + 8 / 16 + 0.01  # fp16 values + one byte per kept 1×4 block
    assert np.all((tp.decode(bm) != 0).sum(axis=1) <= 576 - round(0.7 * 576))
    assert np.all((tp.decode(nm).reshape(-1, 4) != 0).sum(axis=1) <= 2)


def test_nm_values_quantized(weight: np.ndarray) -> None:
    enc = tp.encode(weight, "nm(n=2, m=4, values=quant(bits=8, group=64))")
    plain = tp.encode(weight, "nm(n=2, m=4)")
    y, exact = tp.decode(enc), tp.decode(plain)
    assert not np.any((y != 0) & (exact == 0))  # the same pattern; values quantized
    assert enc.nbytes < plain.nbytes / 3  # 8-bit values and fp16 scales instead of fp32 values
    assert np.all(np.abs(y - weight) <= enc.codec.tolerance(weight))
    assert 0 < np.max(np.abs(y - exact)) < 0.02


def test_nm_short_last_group_is_padded() -> None:
    x = np.arange(1, 11, dtype=np.float32).reshape(1, 10)  # groups: 1-4, 5-8, 9-10
    y = tp.decode(tp.encode(x, "nm(n=2, m=4)"))
    np.testing.assert_array_equal(y, [[0, 0, 3, 4, 0, 0, 7, 8, 9, 10]])
    y1 = tp.decode(tp.encode(x, "nm(n=1, m=4)"))
    np.testing.assert_array_equal(y1, [[0, 0, 0, 4, 0, 0, 0, 8, 0, 10]])


# --- calibration-aware selection -------------------------------------------------------------------------
def _output_error(w: np.ndarray, w_hat: np.ndarray, x: np.ndarray) -> float:
    return float(np.linalg.norm((w.astype(np.float64) - w_hat) @ x.T))


@pytest.mark.parametrize("pattern", ["nm(n=2, m=4", "nm(n=4, m=8", "bitmap(sparsity=0.5", "csr(sparsity=0.5"])
def test_selection_ordering_on_real_layer(faces_wx: tuple[np.ndarray, np.ndarray], pattern: str) -> None:
    """On the layer's own inputs: sparsegpt < wanda < magnitude in output error, as in the papers."""
    w, x = faces_wx
    err = {s: _output_error(w, tp.decode(tp.encode(w, f"{pattern}, select={s})", calib=x)), x)
           for s in ("magnitude", "wanda", "sparsegpt")}
    assert err["sparsegpt"] < err["wanda"] < err["magnitude"], err


def test_sparsegpt_keeps_the_pattern_and_updates_weights(faces_wx: tuple[np.ndarray, np.ndarray]) -> None:
    w, x = faces_wx
    y = tp.decode(tp.encode(w, "nm(n=2, m=4, select=sparsegpt)", calib=x))
    assert np.all((y[:, :624].reshape(128, 156, 4) != 0).sum(axis=2) <= 2)
    assert np.all((y[:, 624:] != 0).sum(axis=1) <= 1)  # the short last group: one column
    kept = y != 0
    assert not np.allclose(y[kept], w[kept])  # compensating updates of the kept weights


@pytest.mark.parametrize("spec", ["nm(n=2, m=4, select=sparsegpt)", "bitmap(sparsity=0.5, select=wanda)",
                                  "nm(n=4, m=8, select=wanda)", "csr(sparsity=0.5, select=sparsegpt)"])
def test_a_hessian_calibrates_like_its_activations(faces_wx: tuple[np.ndarray, np.ndarray], spec: str) -> None:
    """``calib`` may be the accumulated Xᵀ X (what tensorpress.nn.calibrate collects over many tokens)."""
    from tensorpress.formats._calib import Hessian

    w, x = faces_wx
    from_x = tp.decode(tp.encode(w, spec, calib=x))
    from_h = tp.decode(tp.encode(w, spec, calib=Hessian.of(x)))
    np.testing.assert_array_equal(from_h != 0, from_x != 0)
    np.testing.assert_allclose(from_h, from_x, rtol=1e-5, atol=1e-6 * float(np.abs(w).max()))


def test_wanda_equals_magnitude_when_inputs_are_uniform(weight: np.ndarray) -> None:
    calib = np.ones((4, weight.shape[1]), np.float32)
    a = tp.encode(weight, "nm(n=2, m=4, select=wanda)", calib=calib)
    b = tp.encode(weight, "nm(n=2, m=4)")
    np.testing.assert_array_equal(tp.decode(a), tp.decode(b))


def test_wanda_follows_the_activation_norms(weight: np.ndarray) -> None:
    calib = np.ones((4, weight.shape[1]), np.float32)
    calib[:, 0::4] = 100.0  # the first input of every group carries large activations
    y = tp.decode(tp.encode(weight, "nm(n=1, m=4, select=wanda)", calib=calib))
    assert np.mean(y[:, 0::4] != 0) > 0.95


# --- bitmap / csr ----------------------------------------------------------------------------------------
def test_bitmap_sparsity_and_size(weight: np.ndarray) -> None:
    w16 = weight.astype(np.float16)
    enc = tp.encode(w16, "bitmap(sparsity=0.7)")
    y = tp.decode(enc)
    assert np.all((y != 0).sum(axis=1) == 512 - round(0.7 * 512))
    np.testing.assert_array_equal(y[y != 0], w16[y != 0])
    assert _payload_bits(enc) == (154 * 16 + 512) / 512  # 16 bits per kept value + 1 bit per element
    assert enc.bits_per_element <= 0.3 * 16 + 1.1


def test_bitmap_threshold_zero_is_lossless_on_sparse_data(disparity: np.ndarray) -> None:
    x = np.where(np.isfinite(disparity), disparity, 0).astype(np.float32)
    x[x < np.quantile(x, 0.8)] = 0  # a real array that is 80% zeros
    for spec in ("bitmap(threshold=0.0)", "bitmap(threshold=0.0, tile=8)", "csr(threshold=0.0)"):
        enc = tp.encode(x, spec)
        np.testing.assert_array_equal(tp.decode(enc), x)
        assert enc.nbytes < x.nbytes / 3


def test_csr_matches_scipy(weight: np.ndarray) -> None:
    sparse = pytest.importorskip("scipy.sparse")
    enc = tp.encode(weight, "csr(sparsity=0.9)")
    indptr, indices, values, shape = enc.codec.csr_parts(enc)
    ref = sparse.csr_array((values, indices, indptr), shape=shape)
    np.testing.assert_array_equal(ref.toarray(), tp.decode(enc))


# --- block / slice / topk --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 4), (4, 1), (2, 3)])
def test_block_keeps_whole_blocks(weight: np.ndarray, shape: tuple[int, int]) -> None:
    x = weight[:301, :250]
    bh, bw = shape
    y = tp.decode(tp.encode(x, f"block(shape={shape}, sparsity=0.75)"))
    np.testing.assert_array_equal(y[y != 0], x[y != 0])
    pad = np.zeros((-(-301 // bh) * bh, -(-250 // bw) * bw), bool)
    pad[:301, :250] = y != 0
    blocks = pad.reshape(pad.shape[0] // bh, bh, pad.shape[1] // bw, bw).any(axis=(1, 3))
    assert np.all(blocks.sum(axis=1) == pad.shape[1] // bw - round(0.75 * (pad.shape[1] // bw)))


def test_slice_restores_shape_and_computes(weight: np.ndarray) -> None:
    x = weight[:200, :300]
    for axis in (0, 1):
        enc = tp.encode(x, f"slice(axis={axis}, keep=0.25)")
        y = tp.decode(enc)
        assert y.shape == x.shape
        live = np.any(y != 0, axis=1 - axis)
        assert live.sum() == (50 if axis == 0 else 75)
        v = np.linspace(-1, 1, 300, dtype=np.float32)
        np.testing.assert_allclose(enc.codec.matmul(enc, v), y @ v, rtol=1e-5, atol=1e-4)


def test_topk_per_token(weight: np.ndarray) -> None:
    acts = weight[:16]  # 16 "tokens" of 512 features
    enc = tp.encode(acts, "topk(fraction=0.1)")
    y = tp.decode(enc)
    assert np.all((y != 0).sum(axis=1) == 51)
    assert np.all(np.abs(y).max(axis=1) == np.abs(acts).max(axis=1))
    w = weight[:, ::-1].copy()  # a dense (out, in) weight
    np.testing.assert_allclose(enc.codec.spmv_dense(enc, w), y @ w.T, rtol=1e-4, atol=1e-3)


# --- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nm(n=5, m=4)", "n must be in 1..m"),
        ("nm(n=2, m=0)", "m must be in"),
        ("nm(n=2, m=4, select=random)", "select must be one of"),
        ("bitmap(sparsity=0.5, threshold=0.1)", "exactly one of"),
        ("bitmap(threshold=0.1, select=wanda)", "threshold prunes by magnitude"),
        ("bitmap(sparsity=1.5)", "fraction"),
        ("bitmap(sparsity=0.5, tile=12)", "tile must be one of"),
        ("topk()", "exactly one of k"),
        ("block(shape=(1, 2, 3))", "shape must be"),
        ("slice(keep=0.0)", "keep must be"),
    ],
)
def test_bad_config(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tp.spec(spec)


def test_nan_weights_are_refused(weight: np.ndarray) -> None:
    x = weight.copy()
    x[3, 7] = np.nan
    for spec in ("nm(n=2, m=4)", "bitmap(sparsity=0.5)", "block(shape=(1, 4), sparsity=0.5)", "csr(sparsity=0.5)",
                 "slice(axis=0, keep=0.5)", "topk(k=4)"):
        with pytest.raises(InputError, match="1 NaN or Inf"):
            tp.encode(x, spec)


def test_calibration_errors_name_the_shapes(weight: np.ndarray) -> None:
    with pytest.raises(InputError, match=r"shape \(16, 100\).*\(512, 512\).*\(samples, 512\)"):
        tp.encode(weight, "nm(n=2, m=4, select=wanda)", calib=np.ones((16, 100)))
    with pytest.raises(InputError, match="needs calibration activations"):
        tp.encode(weight, "nm(n=2, m=4, select=sparsegpt)")
    with pytest.raises(InputError, match="2-D weight"):
        tp.encode(weight.reshape(8, 64, 512), "bitmap(sparsity=0.5, select=wanda)", calib=np.ones((4, 512)))
    with pytest.raises(InputError, match="axis=-1"):
        tp.encode(weight, "nm(n=2, m=4, axis=0, select=sparsegpt)", calib=np.ones((4, 512)))
    with pytest.raises(InputError, match="NaN or Inf"):
        tp.encode(weight, "nm(n=2, m=4, select=wanda)", calib=np.full((4, 512), np.inf))


def test_operand_shape_is_checked(weight: np.ndarray) -> None:
    enc = tp.encode(weight, "nm(n=2, m=4)")
    with pytest.raises(InputError, match=r"x of shape \(512,\) or \(512, batch\).*\(500,\)"):
        enc.codec.matmul(enc, np.ones(500, np.float32))


def test_corrupted_indices_are_detected() -> None:
    x = np.arange(1, 22, dtype=np.float32).reshape(3, 7)
    enc = tp.encode(x, "nm(n=1, m=3)")  # 2-bit positions that must stay below 3
    bad = tp.Encoded(enc.codec, enc.shape, enc.dtype, {**enc.parts, "indices": np.full_like(enc.parts["indices"], 255)})
    with pytest.raises(BlobError, match="not below m=3"):
        tp.decode(bad)
