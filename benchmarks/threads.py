"""Thread counts of a speed benchmark, fixed before NumPy and Numba start their pools.

Import this module first (before numpy): it reads ``--threads 2,1`` from the command line (default: all cores,
then 1) and sets the BLAS, OpenMP and Numba pool sizes to the largest count; each run then limits itself to
its count (threadpoolctl / ``numba.set_num_threads``). No NumPy here, so the variables take effect.
"""

from __future__ import annotations

import os
import sys


def from_argv() -> list[int]:
    text = None
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            text = sys.argv[i + 1]
        elif arg.startswith("--threads="):
            text = arg.split("=", 1)[1]
    if text:
        return [int(t) for t in text.split(",")]
    cores = os.cpu_count() or 1
    return [cores, 1] if cores > 1 else [1]


THREADS = from_argv()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = str(max(THREADS))
