"""Parallel loops whose per-block work is a serial ``cfunc``, so that the cached kernel is the kernel measured.

Numba compiles the body of a ``prange`` loop into a library of its own, then links it into the wrapper's
library and that into the calling function's, optimizing the whole module again at every level. The process
that compiled the function runs the first copy; the disk cache keeps the last, and every later process loads
that one. For the quant decode the two are different machine code (a larger stack frame, twice the vector
inserts): loaded from the cache, the same source ran 4-13 % slower here than in the process that compiled it,
by an amount that changed with unrelated edits to the loop. A ``cfunc`` is compiled once, and its cache holds
the code that ran.

So a kernel here is a serial block function with the signature :data:`BLOCK` (five buffer addresses and a
block index, returning a 64-bit register such as a block's CRC), run on Numba's threads by :func:`run`: one
parallel loop for every kernel, which calls the block function through its address.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

BLOCK = types.uint64(types.voidptr, types.voidptr, types.voidptr, types.voidptr, types.voidptr, types.int64)
"""Signature of a block function: ``block(a0, a1, a2, a3, a4, b) -> register`` over the buffers' addresses."""


@intrinsic
def _call(typingctx: Any, fn: Any, a0: Any, a1: Any, a2: Any, a3: Any, a4: Any, b: Any) -> Any:
    """Call the :data:`BLOCK` function at address ``fn``."""
    sig = types.uint64(types.uintp, types.uintp, types.uintp, types.uintp, types.uintp, types.uintp, types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        address = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.IntType(64), [address] * 5 + [ir.IntType(64)])
        target = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(target, [builder.inttoptr(a, address) for a in args[1:6]] + [args[6]])

    return sig, codegen


@numba.njit(parallel=True, cache=True, nogil=True)
def _run(fn, a0, a1, a2, a3, a4, registers):  # numba infers the types
    p0, p1, p2, p3, p4 = a0.ctypes.data, a1.ctypes.data, a2.ctypes.data, a3.ctypes.data, a4.ctypes.data
    for b in numba.prange(registers.size):
        registers[b] = _call(fn, p0, p1, p2, p3, p4, b)  # type: ignore[call-arg]


def run(block: Any, arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        n_blocks: int) -> np.ndarray:
    """Blocks ``0 … n_blocks-1`` of the compiled ``block`` (a ``numba.cfunc`` of signature :data:`BLOCK`) over
    the five ``arrays``, on Numba's threads; returns the blocks' registers. The block function reads raw
    addresses, so the arrays must be C-contiguous; it is the caller's part to pass shapes that match them."""
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError("block kernels read C-contiguous buffers only")
    registers = np.empty(n_blocks, np.uint64)
    if n_blocks:
        _run(block.address, *arrays, registers)
    return registers
