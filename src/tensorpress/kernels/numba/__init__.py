"""Numba CPU kernels (parallel over rows). Each module registers only when numba imports."""
