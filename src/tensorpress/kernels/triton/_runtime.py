"""What the Triton kernels share: the availability check, the device, and moving operands there and back.

Kernel modules call :func:`require_triton` at import: without ``triton`` and ``torch`` installed they raise
``ModuleNotFoundError`` and the kernel table skips them. ``triton`` itself is imported only when a kernel
runs. Kernels run on the CUDA device when there is one, else in Triton's interpreter when
``TRITON_INTERPRET=1`` (on the CPU, for tests); otherwise they raise a clear error. They take NumPy arrays
(copied to the device, results copied back) or torch tensors (kept where they are, results returned as
tensors on the same device).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any

import numpy as np

from ...core.errors import TensorpressError

tl: Any = None  # bound when the kernels are first built (Triton resolves names through the globals)


class NoDeviceError(TensorpressError, RuntimeError):
    """Triton kernels were asked for without a GPU and without the interpreter."""


def require_triton() -> None:
    for package in ("triton", "torch"):
        if importlib.util.find_spec(package) is None:
            raise ModuleNotFoundError(f"No module named {package!r}", name=package)


def device() -> str:
    """``"cuda"`` when a GPU is there, ``"cpu"`` under ``TRITON_INTERPRET=1``; else a clear error."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "cpu"
    raise NoDeviceError(
        "Triton kernels need a CUDA GPU, and torch sees none; set TRITON_INTERPRET=1 to run them on the CPU "
        "(slowly, for tests) or use the numba backend"
    )


def pow2(n: int) -> int:
    """The smallest power of two at least ``n`` (1 for ``n <= 1``): a tile size for ``n`` items, since Triton's
    block sizes are powers of two."""
    return max(1, 1 << (n - 1).bit_length())


_SIGNED = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


def to_device(a: Any, dev: str, *, bits: bool = False) -> Any:
    """A torch tensor on ``dev``. ``bits=True`` moves the bit patterns as signed integers of the same width
    (decode kernels copy bits, so every dtype decodes exactly); float16 stays float16, other floats float32,
    unsigned index arrays become int32/int64."""
    import torch

    if isinstance(a, torch.Tensor):
        return a.to(dev)
    arr = np.ascontiguousarray(a)
    if bits:
        arr = arr.view(_SIGNED[arr.dtype.itemsize])
    elif arr.dtype.kind == "u":
        arr = arr.astype(np.int32 if arr.dtype.itemsize < 4 else np.int64)
    elif arr.dtype.kind == "f" and arr.dtype != np.float16:
        arr = arr.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr)).to(dev)


def to_host(t: Any, like: Any, dtype: Any = None) -> Any:
    """``t`` as NumPy (viewed as ``dtype`` when given) if ``like`` is a NumPy array, else the tensor."""
    import torch

    if isinstance(like, torch.Tensor):
        return t
    out = t.cpu().numpy()
    return out.view(dtype) if dtype is not None else out


@functools.cache
def f32_product() -> Any:
    """The Triton function ``mul_sum(a, b, WIDE)``: ``a @ b`` of a (M, K) and a (K, N) float32 tile, to float32
    accuracy. Triton rewrites ``tl.sum(a[:, :, None] * b[None, :, :], axis=1)`` into a matrix product, and where
    that fits the tensor cores it runs with TF32 inputs: 10-bit mantissas, errors of ~1e-3 of |a|·|b| (measured
    on an H200, batch 16). So where the caller says ``WIDE`` (K >= 16, what ``tl.dot`` takes for float32) the
    product is asked for as three TF32 products that carry the low mantissa bits too ("tf32x3", ~1e-6);
    narrower tiles keep the broadcast sum, which compiles to float32 multiply-adds."""
    global tl
    import triton
    import triton.language as tl

    @triton.jit
    def mul_sum(a, b, WIDE: tl.constexpr):  # type: ignore[no-untyped-def]
        if WIDE:
            return tl.dot(a, b, input_precision="tf32x3")
        else:
            return tl.sum(a[:, :, None] * b[None, :, :], axis=1)

    return mul_sum
