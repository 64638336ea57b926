"""llama.cpp's quantizers as a peer (the ``peers-llama`` extra; skipped when llama-cpp-python is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load_real
from tensorpress.core.errors import InputError
from tensorpress.core.metrics import relative_frobenius_error
from tensorpress.nn import ggml_peer

pytestmark = pytest.mark.skipif(not ggml_peer.available(), reason="llama-cpp-python (peers-llama extra) not installed")


@pytest.fixture(scope="module")
def weight() -> np.ndarray:
    """SmolLM2-135M's first MLP up-projection (1536 × 576), dequantized to float32."""
    gguf = pytest.importorskip("gguf")
    from tensorpress.datasets import smollm2_gguf

    reader = gguf.GGUFReader(str(load_real(smollm2_gguf)))
    t = next(t for t in reader.tensors if t.name == "blk.0.ffn_up.weight")
    return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)


def test_k_quants_size_and_error_order(weight: np.ndarray) -> None:
    import gguf

    errors = {}
    for name in ("Q4_K", "Q3_K", "Q2_K", "IQ4_XS"):
        back, nbytes = ggml_peer.quantize(weight, name)
        block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]]
        assert back.shape == weight.shape and back.dtype == np.float32
        assert nbytes == weight.size // block * block_bytes
        errors[name] = relative_frobenius_error(weight, back)
    q40 = gguf.quants.dequantize(gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q4_0),
                                 gguf.GGMLQuantizationType.Q4_0)
    # the published ordering (and the numbers on another real weight): Q4_K < Q4_0 < Q3_K < Q2_K
    assert errors["Q4_K"] < relative_frobenius_error(weight, q40) < errors["Q3_K"] < errors["Q2_K"], errors
    assert errors["IQ4_XS"] < errors["Q3_K"]


def test_bad_requests_are_refused(weight: np.ndarray) -> None:
    with pytest.raises(InputError, match="importance matrix"):
        ggml_peer.quantize(weight, "IQ2_XXS")
    with pytest.raises(InputError, match="rows of 256"):
        ggml_peer.quantize(weight[:1, :100], "Q4_K")
    with pytest.raises(InputError, match="unknown GGML type"):
        ggml_peer.quantize(weight, "Q9_X")
