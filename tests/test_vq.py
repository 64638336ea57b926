"""vq on real data: SmolLM2 layer 0's q_proj with its real input activations, and scikit-image photos."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest

import tensorpress as tp
from tensorpress.core.errors import ConfigError, InputError
from tensorpress.core.metrics import relative_frobenius_error
from tensorpress.formats import _kmeans
from test_composites import layer0_q_proj, output_error, roundtrip
from test_llm_data import real


@pytest.fixture(scope="module")
def layer0() -> tuple[np.ndarray, np.ndarray]:
    return real(layer0_q_proj)


@pytest.fixture(scope="module")
def rows(layer0: Any) -> np.ndarray:
    return layer0[0][:256]  # 256 x 576: 18,432 sub-vectors of 8


@pytest.mark.llm
def test_codebooks_and_refinement_at_about_two_bits_beat_rtn_at_three(rows: np.ndarray) -> None:
    err, bits = {}, {}
    for name, spec in (("one", "vq(dim=8, codebook_bits=7)"),
                       ("residual", "vq(dim=8, codebook_bits=7, codebooks=2, residual=true)"),
                       ("additive", "vq(dim=8, codebook_bits=7, codebooks=2)")):
        enc, y = roundtrip(spec, rows)
        err[name], bits[name] = relative_frobenius_error(rows, y), enc.bits_per_element
    rtn = tp.encode(rows, "quant(bits=2, group=32)")
    assert bits["additive"] < 2.1 and rtn.bits_per_element > 3.0  # a 256-row slice: codebooks cost 0.22
    assert err["additive"] < relative_frobenius_error(rows, rtn.decode())
    assert err["residual"] < 0.8 * err["one"]
    assert err["additive"] <= err["residual"] * 1.001  # additive starts from the residual fit and only refines it


@pytest.mark.llm
def test_codes_are_packed_at_exactly_codebook_bits(rows: np.ndarray) -> None:
    for bits, books in ((3, 2), (8, 1), (9, 1)):
        enc = tp.encode(rows, f"vq(dim=8, codebook_bits={bits}, codebooks={books}, iters=1)")
        count = 256 * 72 * books
        assert enc.parts["codes"].nbytes == math.ceil(count * bits / 8)
        assert enc.parts["codebooks"].shape == (1, books, 1 << bits, 8)
        assert enc.parts["codebooks"].dtype == np.float16 and enc.parts["scales"].shape == (256,)
        payload = sum(p.nbytes for p in enc.parts.values())
        assert 0 < enc.nbytes - payload < 1024  # the rest is the header
        _, codes, _ = enc.codec.parts_of(enc)
        assert codes.shape == (256, 72, books) and codes.min() >= 0 and codes.max() < 1 << bits
        assert np.array_equal(_kmeans.unpack_codes(_kmeans.pack_codes(codes, bits), bits, codes.size),
                              codes.reshape(-1))


@pytest.mark.llm
def test_decode_is_the_sum_of_codewords_times_the_row_scale(rows: np.ndarray) -> None:
    enc = tp.encode(rows, "vq(dim=8, codebook_bits=6, codebooks=2, group=128, iters=3)")
    book, codes, scales = enc.codec.parts_of(enc)
    assert book.shape[0] == 2  # two row groups, each with its own codebooks
    r, v = 200, 17
    words = book[r // 128, 0, codes[r, v, 0]].astype(np.float32) + book[r // 128, 1, codes[r, v, 1]]
    assert np.allclose(enc.decode()[r, v * 8:(v + 1) * 8], words * np.float32(scales[r]), rtol=1e-6, atol=0)


@pytest.mark.llm
def test_importance_weighting_lowers_the_output_error(layer0: Any) -> None:
    w, x = layer0
    spec = "vq(dim=8, codebook_bits=8)"
    plain = output_error(w, tp.decode(tp.encode(w, spec)), x)
    weighted = output_error(w, tp.decode(tp.encode(w, spec, calib=x)), x)
    assert weighted < 0.95 * plain


@pytest.mark.llm
def test_encoding_is_deterministic_and_fast(layer0: Any) -> None:
    w, _ = layer0
    t = time.perf_counter()
    a = tp.encode(w, "vq(dim=8, codebook_bits=8)")
    assert time.perf_counter() - t < 30  # a 576 x 576 weight; about a second on an idle machine
    b = tp.encode(w, "vq(dim=8, codebook_bits=8)")
    assert a.to_bytes() == b.to_bytes()


def test_rows_that_do_not_divide_and_photos(camera: np.ndarray) -> None:
    img = camera[:, :509].astype(np.float32) / 255  # 509 = 63 sub-vectors of 8 and one of 5
    _, y = roundtrip("vq(dim=8, codebook_bits=8, scales=false)", img)
    assert relative_frobenius_error(img, y) < 0.1
    coarse = relative_frobenius_error(img, roundtrip("vq(dim=8, codebook_bits=4, scales=false)", img)[1])
    assert coarse > relative_frobenius_error(img, y)


@pytest.mark.llm
def test_bad_input_names_the_parameter(layer0: Any) -> None:
    w, _ = layer0
    with pytest.raises(InputError, match="codebook_bits=16"):
        tp.encode(w, "vq(dim=8, codebook_bits=16)")  # 41,472 sub-vectors for 65,536 codewords
    with pytest.raises(InputError, match="codebook_bits=8"):
        tp.encode(w, "vq(dim=8, codebook_bits=8, group=2)")  # 144 sub-vectors per group of 2 rows
    with pytest.raises(ConfigError, match="codebook_bits"):
        tp.spec("vq(codebook_bits=17)")
    with pytest.raises(InputError, match=r"\(samples, 576\)"):
        tp.encode(w, "vq(dim=8, codebook_bits=4)", calib=np.ones((4, 3), np.float32))
    with pytest.raises(InputError, match="floating point"):
        tp.encode(np.arange(10_000, dtype=np.int32).reshape(100, 100), "vq")


def test_small_tensors_keep_their_sub_vectors() -> None:
    norm = np.linspace(0.5, 1.5, 64, dtype=np.float32)  # fewer sub-vectors than codewords: stored as codewords
    y = tp.decode(tp.encode(norm, "vq(dim=8, codebook_bits=8)"))
    assert np.max(np.abs(y - norm)) < 2e-3
