"""NumPy reference kernels: the oracle every other backend is tested against."""
