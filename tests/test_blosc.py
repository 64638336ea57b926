"""The blosc codec's two compression routes: the C library python-blosc2 ships (straight into a NumPy buffer)
and ``blosc2.compress2``. Both must give Blosc2 chunks that python-blosc2 itself decompresses to the input."""

from __future__ import annotations

import blosc2
import numpy as np
import pytest

import tensorpress as tp
from tensorpress.codecs import blosc as blosc_module


def compressed(codec: blosc_module.Blosc, x: np.ndarray) -> bytes:
    return bytes(codec.compress(memoryview(x.reshape(-1).view(np.uint8)), x.dtype.itemsize))


@pytest.mark.parametrize("cname", ["lz4", "zstd", "blosclz", "zlib", "lz4hc"])
@pytest.mark.parametrize("shuffle", ["none", "byte", "bit"])
def test_c_route_and_compress2_agree(camera: np.ndarray, cname: str, shuffle: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if not blosc_module._c_library():
        pytest.skip("python-blosc2 ships no C library here: only compress2 runs")
    x = camera.astype(np.float32)
    codec = blosc_module.Blosc(cname=cname, clevel=5, shuffle=shuffle)
    via_c = compressed(codec, x)
    monkeypatch.setattr(blosc_module, "_c_lib", False)
    via_python = compressed(codec, x)
    for data in (via_c, via_python):
        np.testing.assert_array_equal(np.frombuffer(blosc2.decompress2(data), np.float32), x.ravel())
    # the same codec at the same level: the sizes agree closely (the routes may place the shuffle filter
    # differently in the chunk header)
    assert abs(len(via_c) - len(via_python)) <= 0.01 * len(via_python) + 64


def test_blosc_environment_settings_leave_the_c_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """BLOSC_* variables override the C API's arguments, so then only compress2 does what the spec asks."""
    monkeypatch.setattr(blosc_module, "_c_lib", None)
    monkeypatch.setenv("BLOSC_CLEVEL", "1")
    assert blosc_module._c_library() is False
    monkeypatch.setattr(blosc_module, "_c_lib", None)  # looked up again once the variable is gone


def test_blosc_decode_is_writable_and_exact(camera: np.ndarray) -> None:
    x = camera.astype(np.float32)
    y = tp.decode(tp.encode(x, "blosc(cname=lz4)").to_bytes())
    np.testing.assert_array_equal(y, x)
    assert y.flags.writeable


def test_shuffle_none_is_spelled_as_the_grammar_reads_it() -> None:
    codec = tp.spec("blosc(cname=lz4, shuffle=none)")
    assert codec.shuffle == "none"
    assert tp.spec(str(codec)) == codec and tp.spec(codec.to_config()) == codec
