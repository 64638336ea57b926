"""Kernels against the NumPy oracle, and the dispatch table."""

from __future__ import annotations

import numpy as np
import pytest

import tensorpress as tp
from tensorpress.core.errors import UnknownCodecError
from tensorpress.kernels import available_backends, get_kernel

pytest.importorskip("numba")


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize(("rows", "n", "group"), [(3, 7, 3), (5, 128, 32), (2, 33, 128), (4, 10, 4), (1, 1, 1)])
def test_quant_decode_numba_matches_reference(bits: int, rows: int, n: int, group: int) -> None:
    rng = np.random.default_rng(bits * 1000 + n)
    codes = rng.integers(0, 1 << bits, (rows, n)).astype(np.uint8)
    packed = get_kernel("quant", "pack", "reference")(codes, bits)
    assert packed.size == (rows * n * bits + 7) // 8  # exactly `bits` bits per code
    ngroups = -(-n // group)
    scales = rng.standard_normal((rows, ngroups)).astype(np.float32)
    offsets = rng.standard_normal((rows, ngroups)).astype(np.float32)
    ref = get_kernel("quant", "decode", "reference")(packed, scales, offsets, bits, n, group)
    fast = get_kernel("quant", "decode", "numba")(packed, scales, offsets, bits, n, group)
    np.testing.assert_array_equal(fast, ref)
    unpacked = get_kernel("quant", "unpack", "reference")(packed, bits, rows * n)
    np.testing.assert_array_equal(unpacked, codes.reshape(-1))


@pytest.mark.parametrize("spec", ["quant(bits=4, group=128)", "quant(bits=3, group=32, symmetric=true)",
                                  "quant(bits=8, group=0, axis=0)"])
def test_quant_backends_agree_on_real_data(spec: str, camera: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    x = camera.astype(np.float32) / 255
    enc = tp.encode(x, spec)
    monkeypatch.setenv("TENSORPRESS_BACKEND", "reference")
    ref = tp.decode(enc)
    monkeypatch.setenv("TENSORPRESS_BACKEND", "numba")
    np.testing.assert_array_equal(tp.decode(enc), ref)


def test_dispatch_lists_and_refuses() -> None:
    assert available_backends("quant", "decode")[:2] == ["reference", "numba"]
    with pytest.raises(UnknownCodecError, match="no triton kernel for decode on quant"):
        get_kernel("quant", "decode", "triton")
    with pytest.raises(UnknownCodecError, match=r"no available kernel for frobnicate on quant; registered: \(none\)"):
        get_kernel("quant", "frobnicate")


def test_backend_order_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORPRESS_BACKEND", "reference")
    assert get_kernel("quant", "decode").__module__.endswith("reference.quant")
    monkeypatch.setenv("TENSORPRESS_BACKEND", "cuda-magic")
    with pytest.raises(ValueError, match="unknown backends"):
        get_kernel("quant", "decode")


def test_gguf_q4_0_layout_is_exact() -> None:
    """A symmetric group-32 4-bit tensor decodes exactly as GGUF's Q4_0 formula (q - 8) * d in fp32."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    enc = tp.encode(w, "quant(bits=4, group=32, symmetric=true)")
    d = enc.parts["scales"].astype(np.float32)
    q = get_kernel("quant", "unpack", "reference")(enc.parts["codes"], 4, w.size).reshape(8, 64)
    expected = (q.astype(np.float32) - 8) * np.repeat(d, 32, axis=1)
    np.testing.assert_array_equal(tp.decode(enc), expected)
