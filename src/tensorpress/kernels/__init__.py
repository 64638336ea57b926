"""Kernels that decode and compute on compressed data, looked up by (codec, op, backend).

Backends: ``reference`` (NumPy, the oracle, always there), ``numba`` (CPU, the default), ``triton`` (GPU).
"""

from .dispatch import BACKENDS, available_backends, get_kernel, kernel

__all__ = ["BACKENDS", "available_backends", "get_kernel", "kernel"]
