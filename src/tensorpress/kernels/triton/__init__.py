"""Triton GPU kernels; tested on CPU with ``TRITON_INTERPRET=1``. Modules register only when triton imports."""
