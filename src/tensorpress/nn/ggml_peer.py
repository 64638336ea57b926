"""llama.cpp's own quantizers as a benchmark peer: every GGML type (Q4_K, Q3_K, Q2_K, IQ4_XS, IQ2_S, …).

The ``gguf`` package quantizes only the simple types (Q4_0/Q4_1/Q5_0/Q5_1/Q8_0). The K- and I-quants come
from the ggml library that ``llama-cpp-python`` builds (the ``peers-llama`` extra): its ``libggml-base``
exports ``ggml_quantize_chunk``, called here through ctypes, and ``gguf.quants.dequantize`` reads the blocks
back. K- and I-quant blocks hold 256 weights, and our models' rows (576, 640 …) are not multiples of 256,
so a matrix is quantized as the rows of 256 its flattened elements make — blocks then span two of the
matrix's rows, which changes nothing in the block format and little in the error. No importance matrix.

Used by benchmarks only; :func:`available` tells whether the library is installed.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import importlib.util
import os
from typing import Any

import numpy as np

from ..core.errors import InputError, MissingDependencyError

#: the K- and I-quants the benchmarks set beside ours (budgets 4.5, 4.25, 3.44, 2.63, 2.56 bits per weight)
PEER_TYPES = ("Q4_K", "IQ4_XS", "Q3_K", "Q2_K", "IQ2_S")
#: types whose quantizer needs an importance matrix (refused without one)
NEEDS_IMATRIX = ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M")


def available() -> bool:
    try:
        _library()
    except MissingDependencyError:
        return False
    return True


@functools.cache
def _library() -> Any:
    spec = importlib.util.find_spec("llama_cpp")  # found, never imported: llama_cpp loads a model runtime
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("llama-cpp-python", "peers-llama",
                                     "llama.cpp's quantizers (K- and I-quants; it builds from source)")
    found = [p for folder in spec.submodule_search_locations
             for p in glob.glob(os.path.join(folder, "**", "libggml-base.*"), recursive=True)]
    if not found:
        raise MissingDependencyError("llama-cpp-python", "peers-llama",
                                     f"libggml-base (not found in {list(spec.submodule_search_locations)})")
    lib = ctypes.CDLL(sorted(found)[0])
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_init.restype = None
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    return lib


def quantize(w: np.ndarray, type_name: str) -> tuple[np.ndarray, int]:
    """``w`` quantized to GGML type ``type_name`` by llama.cpp and read back: (float32 array of ``w``'s
    shape, stored bytes). The element count must be a multiple of the type's block size."""
    import gguf

    try:
        qtype = gguf.GGMLQuantizationType[type_name]
    except KeyError:
        raise InputError(f"unknown GGML type {type_name!r}") from None
    if type_name in NEEDS_IMATRIX:
        raise InputError(f"GGML {type_name} needs an importance matrix; this peer quantizes without one")
    block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    x = np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
    if x.size % 256 or x.size % block:
        raise InputError(f"GGML {type_name}: {x.size} elements do not form rows of 256")
    rows = x.size // 256
    lib = _library()
    lib.ggml_quantize_init(int(qtype.value))
    out = np.zeros(rows * 256 // block * block_bytes, dtype=np.uint8)
    written = lib.ggml_quantize_chunk(int(qtype.value), x.ctypes.data, out.ctypes.data, 0, rows, 256, None)
    if written != out.size:
        raise InputError(f"GGML {type_name}: the quantizer wrote {written} bytes, expected {out.size}")
    back = gguf.quants.dequantize(out.reshape(rows, -1), qtype)
    return np.asarray(back, dtype=np.float32).reshape(w.shape), int(out.size)
