"""CRC-32C (Castagnoli) with the CPU's ``crc32`` instruction, parallel over blocks.

The blob format checks every part with CRC-32C. ``google_crc32c`` computes it at about 8 GB/s on one core and
holds the GIL; next to a decode kernel that produces 3 GB/s of output from a quarter of the bytes, that is
5-8 % of the read. Here the buffer is split into blocks checked in parallel, each block as three interleaved
streams (the instruction's latency is three times its issue rate), and the partial CRCs are joined with
carry-less arithmetic modulo the polynomial:

    crc(A ‖ B) = crc(A) · x^(8·|B|)  ⊕  crc₀(B)          (mod P, registers without the final xor)

Values are in the reflected convention of the instruction: bit 31 holds the coefficient of x^0.
x86-64 with SSE 4.2 only; :func:`available` tells, and the blob code falls back to ``google_crc32c``.
"""

from __future__ import annotations

import platform
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_POLY = np.uint32(0x82F63B78)  # CRC-32C polynomial, reflected
_ONE = np.uint32(0x80000000)  # the polynomial 1 in reflected form
_BLOCK = 1 << 18  # bytes per parallel block


def available() -> bool:
    """True where the ``crc32`` instruction exists (x86-64 with SSE 4.2)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    from llvmlite import binding

    return bool(binding.get_host_cpu_features().get("sse4.2", False))


def _crc_step(reg_bits: int, data_bits: int) -> Any:
    """The ``crc32`` instruction on a ``reg_bits`` register fed ``data_bits`` of data: the register after it."""

    @intrinsic
    def step(typingctx: Any, crc: Any, data: Any) -> Any:
        reg_type = getattr(types, f"uint{reg_bits}")
        sig = reg_type(reg_type, getattr(types, f"uint{data_bits}"))

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            fnty = ir.FunctionType(ir.IntType(reg_bits), [ir.IntType(reg_bits), ir.IntType(data_bits)])
            fn = builder.module.declare_intrinsic(f"llvm.x86.sse42.crc32.{reg_bits}.{data_bits}", fnty=fnty)
            return builder.call(fn, args)

        return sig, codegen

    return step


_crc_u64 = _crc_step(64, 64)  # crc32 r64, r/m64: 8 bytes
_crc_u8 = _crc_step(32, 8)  # crc32 r32, r/m8: 1 byte


@numba.njit(cache=True, nogil=True)
def _mul(a, b):  # a·b mod P, both reflected; numba infers the types
    a = np.uint32(a)
    b = np.uint32(b)
    product = np.uint32(0)
    for k in range(32):
        if a & (_ONE >> np.uint32(k)):
            product ^= b
        b = (b >> np.uint32(1)) ^ _POLY if b & np.uint32(1) else b >> np.uint32(1)
    return product


@numba.njit(cache=True, nogil=True)
def _shift(crc, nbytes):  # crc · x^(8·nbytes) mod P: the register carried over nbytes zero bytes
    power = _ONE
    base = np.uint32(0x40000000)  # x
    e = np.uint64(nbytes) * np.uint64(8)
    while e:
        if e & np.uint64(1):
            power = _mul(power, base)
        base = _mul(base, base)
        e >>= np.uint64(1)
    return _mul(np.uint32(crc), power)


@numba.njit(cache=True, nogil=True)
def _span(data, start, stop, crc):  # register after data[start:stop] from ``crc``; no final xor
    third, join_b, join_a = span_constants(stop - start)
    return span_fixed(data, start, stop, crc, third, join_b, join_a)


@numba.njit(cache=True, nogil=True)
def span_constants(shortest):  # for spans of >= ``shortest`` bytes: (third, x^(8·8·third), x^(8·16·third))
    third = (shortest // 8) // 3
    return third, _shift(_ONE, 8 * third), _shift(_ONE, 16 * third)


@numba.njit(cache=True, nogil=True, inline="always")
def span_fixed(data, start, stop, crc, third, join_b, join_a):  # numba infers the types
    """:func:`_span` for many short spans (rows): the three streams cover ``third`` words each, joined with the
    precomputed powers of :func:`span_constants` (no per-span exponentiation); the rest runs as one stream."""
    words = data[start:start + 8 * ((stop - start) // 8)].view(np.uint64)
    a = np.uint64(crc)
    b = np.uint64(0)
    c = np.uint64(0)
    for i in range(third):
        a = _crc_u64(a, words[i])
        b = _crc_u64(b, words[third + i])
        c = _crc_u64(c, words[2 * third + i])
    reg = np.uint32(c) ^ _mul(np.uint32(b), join_b) ^ _mul(np.uint32(a), join_a)
    wide = np.uint64(reg)
    for i in range(3 * third, words.size):
        wide = _crc_u64(wide, words[i])
    reg = np.uint32(wide)
    for i in range(start + 8 * words.size, stop):
        reg = _crc_u8(reg, data[i])
    return reg


@numba.njit(parallel=True, cache=True, nogil=True)
def _crc32c(data, block):
    n = data.size
    n_blocks = max(1, (n + block - 1) // block)
    partial = np.zeros(n_blocks, dtype=np.uint32)
    for k in numba.prange(n_blocks):
        start = k * block
        partial[k] = _span(data, start, min(n, start + block), np.uint32(0xFFFFFFFF) if k == 0 else np.uint32(0))
    reg = partial[0]
    for k in range(1, n_blocks):
        reg = _shift(reg, min(block, n - k * block)) ^ partial[k]
    return reg ^ np.uint32(0xFFFFFFFF)


def crc32c(data: Any) -> int:
    """CRC-32C of a contiguous buffer (bytes, memoryview, ndarray), as ``google_crc32c.value`` gives it."""
    view = np.frombuffer(data, dtype=np.uint8)
    return int(_crc32c(view, _BLOCK))
