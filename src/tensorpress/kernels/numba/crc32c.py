"""CRC-32C (Castagnoli) with the CPU's ``crc32`` instruction, over slices checksummed at once.

The blob format checks every part with CRC-32C. ``google_crc32c`` computes it at about 8 GB/s on one core and
holds the GIL; next to a decode kernel that produces 3 GB/s of output from a quarter of the bytes, that is
5-8 % of the read. Here a buffer is split into slices checked on several threads (the kernel releases the
GIL), each slice as three interleaved streams (the instruction's latency is three times its issue rate), and
the partial CRCs are joined with carry-less arithmetic modulo the polynomial:

    crc(A ‖ B) = crc(A) · x^(8·|B|)  ⊕  crc₀(B)          (mod P, registers without the final xor)

Decode kernels checksum the words they read with :data:`crc_word`, or the bytes they have just read with
:func:`block_span`, and join the blocks' registers with :func:`join`.

Values are in the reflected convention of the instruction: bit 31 holds the coefficient of x^0. The joins
inside a span multiply with ``pclmulqdq`` and reduce with ``crc32`` itself: for 32-bit reflected ``a`` and
``k``, the 64-bit carry-less product read as a reflected polynomial is x·A·K, and ``crc32`` of it from a zero
register multiplies by x^32 and reduces, so ``crc32(0, clmul(a, k)) = A·K·x^33 mod P``: with K = x^(e-33)
that is A·x^e (a few cycles, where the bit-serial :func:`_mul` takes a few hundred).
x86-64 with SSE 4.2 and PCLMULQDQ only; :func:`available` tells, and the blob code falls back to
``google_crc32c``.
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


def available() -> bool:
    """True where the ``crc32`` and ``pclmulqdq`` instructions exist (x86-64 with SSE 4.2 and PCLMUL)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    from llvmlite import binding

    features = binding.get_host_cpu_features()
    return bool(features.get("sse4.2", False) and features.get("pclmul", False))


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
crc_word = _crc_u64  # for kernels that checksum 64-bit words as they read them (a register chain, then join)


@intrinsic
def _clmul(typingctx: Any, a: Any, b: Any) -> Any:
    """Carry-less product of two 64-bit words, low 64 bits (``pclmulqdq`` on the low lanes)."""
    sig = types.uint64(types.uint64, types.uint64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        lanes = ir.VectorType(ir.IntType(64), 2)
        fnty = ir.FunctionType(lanes, [lanes, lanes, ir.IntType(8)])
        fn = builder.module.declare_intrinsic("llvm.x86.pclmulqdq", fnty=fnty)
        low = ir.Constant(ir.IntType(32), 0)
        va = builder.insert_element(ir.Constant(lanes, None), args[0], low)
        vb = builder.insert_element(ir.Constant(lanes, None), args[1], low)
        return builder.extract_element(builder.call(fn, [va, vb, ir.Constant(ir.IntType(8), 0)]), low)

    return sig, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _times(crc, k):  # crc · K · x^33 mod P (see the module docstring); numba infers the types
    return np.uint32(_crc_u64(np.uint64(0), _clmul(np.uint64(crc), np.uint64(k))))  # type: ignore[call-arg]


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
def _xpow(e):  # x^e mod P
    power = _ONE
    base = np.uint32(0x40000000)  # x
    e = np.uint64(e)
    while e:
        if e & np.uint64(1):
            power = _mul(power, base)
        base = _mul(base, base)
        e >>= np.uint64(1)
    return power


@numba.njit(cache=True, nogil=True)
def _shift(crc, nbytes):  # crc · x^(8·nbytes) mod P: the register carried over nbytes zero bytes
    return _mul(np.uint32(crc), _xpow(np.uint64(nbytes) * np.uint64(8)))


@numba.njit(cache=True, nogil=True)
def _span(data, start, stop, crc):  # register after data[start:stop] from ``crc``; no final xor
    third, join_b, join_a = span_constants(stop - start)
    return span_fixed(data, start, stop, crc, third, join_b, join_a)


@numba.njit(cache=True, nogil=True)
def span_constants(shortest):  # for spans of >= ``shortest`` bytes: (third, x^(64·third-33), x^(128·third-33))
    third = (shortest // 8) // 3
    if third == 0:
        return 0, np.uint32(0), np.uint32(0)
    return third, _xpow(64 * third - 33), _xpow(128 * third - 33)


@numba.njit(cache=True, nogil=True, inline="always")
def span_fixed(data, start, stop, crc, third, join_b, join_a):  # numba infers the types
    """:func:`_span` for many spans of at least one length (a kernel's row blocks): the three streams cover
    ``third`` words each, joined with the precomputed powers of :func:`span_constants` (no per-span
    exponentiation); the rest runs as one stream."""
    words = data[start:start + 8 * ((stop - start) // 8)].view(np.uint64)
    a = np.uint64(crc)
    b = np.uint64(0)
    c = np.uint64(0)
    for i in range(third):
        a = _crc_u64(a, words[i])
        b = _crc_u64(b, words[third + i])
        c = _crc_u64(c, words[2 * third + i])
    wide = a
    if third:
        wide = np.uint64(np.uint32(c) ^ _times(b, join_b) ^ _times(a, join_a))
    for i in range(3 * third, words.size):
        wide = _crc_u64(wide, words[i])
    reg = np.uint32(wide)
    for i in range(start + 8 * words.size, stop):
        reg = _crc_u8(reg, data[i])
    return reg


@numba.njit(cache=True, nogil=True, inline="always")
def block_span(data, start, stop, first, shortest, third, join_b, join_a):  # numba infers the types
    """The register of one of a kernel's blocks, ``data[start:stop]``, for :func:`join`: from ~0 for the
    ``first`` block, else from 0; blocks of at least ``shortest`` bytes use the constants
    :func:`span_constants` gave for that length, a shorter one (the last) computes its own."""
    reg = np.uint32(0xFFFFFFFF) if first else np.uint32(0)
    if stop - start >= shortest:
        return span_fixed(data, start, stop, reg, third, join_b, join_a)
    return _span(data, start, stop, reg)


@numba.njit(cache=True, nogil=True)
def join(partial, lengths):  # numba infers the types
    """CRC-32C of consecutive pieces from their registers (the first started from ~0, the others from 0) and
    byte lengths, the final xor applied. A kernel's blocks share one length but the last: the power of x for a
    length is computed once and applied with the carry-less multiply (a bit-serial shift per block cost
    ~0.7 µs each, 46 µs for 64 blocks, on the reading thread after the parallel decode)."""
    crc = np.uint32(partial[0])
    length = -1
    power = np.uint32(0)
    for b in range(1, partial.size):
        if lengths[b] < 5:  # x^(8·n - 33) needs 8·n >= 33
            crc = _shift(crc, lengths[b])
        else:
            if lengths[b] != length:
                length = lengths[b]
                power = _xpow(np.uint64(8) * np.uint64(length) - np.uint64(33))
            crc = _times(crc, power)
        crc ^= np.uint32(partial[b])
    return crc ^ np.uint32(0xFFFFFFFF)


def crc32c(data: Any, pool: Any = None, pieces: int = 1) -> int:
    """CRC-32C of a contiguous buffer (bytes, memoryview, ndarray), as ``google_crc32c.value`` gives it:
    ``pieces`` slices checksummed at once on ``pool``'s threads (the kernel releases the GIL), joined here.
    No parallel region: its OpenMP workers would spin on after it, taking the cores from what runs next."""
    view = np.frombuffer(data, dtype=np.uint8)
    pieces = max(1, pieces if pool is not None else 1)
    bounds = [view.size * i // pieces for i in range(pieces + 1)]

    def piece(i: int) -> Any:
        return _span(view, bounds[i], bounds[i + 1], 0xFFFFFFFF if i == 0 else 0)

    regs = list(pool.map(piece, range(pieces))) if pieces > 1 else [piece(0)]
    return int(join(np.array(regs, np.uint32), np.diff(np.array(bounds, np.int64))))
