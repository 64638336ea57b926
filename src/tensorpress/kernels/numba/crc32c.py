"""CRC-32C (Castagnoli) with the CPU's ``crc32`` instruction, over slices checksummed at once.

The blob format checks every part with CRC-32C. ``google_crc32c`` computes it at about 8 GB/s on one core and
holds the GIL; next to a decode kernel that produces 3 GB/s of output from a quarter of the bytes, that is
5-8 % of the read. Here a buffer is split into slices checked on several threads (the kernel releases the
GIL), each slice as three interleaved streams (the instruction's latency is three times its issue rate), and
the partial CRCs are joined with carry-less arithmetic modulo the polynomial:

    crc(A ‖ B) = crc(A) · x^(8·|B|)  ⊕  crc₀(B)          (mod P, registers without the final xor)

Decode kernels chain :func:`span_fixed` over each block's bytes (from ~0 for the first block, else from 0)
and join the blocks' registers with :func:`join`.

Values are in the reflected convention of the instruction: bit 31 holds the coefficient of x^0. The joins
inside a span multiply with ``pclmulqdq`` and reduce with ``crc32`` itself: for 32-bit reflected ``a`` and
``k``, the 64-bit carry-less product read as a reflected polynomial is x·A·K, and ``crc32`` of it from a zero
register multiplies by x^32 and reduces, so ``crc32(0, clmul(a, k)) = A·K·x^33 mod P``: with K = x^(e-33)
that is A·x^e (a few cycles, where the bit-serial :func:`_mul` takes a few hundred).
x86-64 with SSE 4.2 and PCLMULQDQ only; :func:`available` tells, and the blob code falls back to
``google_crc32c``.

Where the CPU has 256-bit ``vpclmulqdq`` (:func:`wide_available`), a span runs two engines at once
(:func:`_fused`): four 256-bit accumulators fold the span's first part forward with carry-less multiplies, on
the vector units, while three ``crc32`` streams take the rest on the integer units. One engine alone checksums
18-23 GB/s on a core here; the two together 27-33 GB/s, which halved the checksum's share of the 8-bit decode.
A fold keeps a 16-byte slot's value congruent to the message it stands for: the slot's first half ``H`` (the
higher powers) and second half ``L``, moved ``T`` bits on, become ``H·x^(T+64) ⊕ L·x^T``, which the multiply by
the reflected constants x^(T+31) and x^(T-33) gives (the product lands 33 bits up, as above). At the end the
sixteen words of the accumulators go through ``crc32`` from a zero register (the starting register was xored
into the first slot) and the streams' registers are joined after them.
"""

from __future__ import annotations

import platform
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_POLY = np.uint32(0x82F63B78)  # CRC-32C polynomial, reflected
_ONE = np.uint32(0x80000000)  # the polynomial 1 in reflected form


def _has(*names: str) -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    from llvmlite import binding

    features = binding.get_host_cpu_features()
    return all(features.get(name, False) for name in names)


def available() -> bool:
    """True where the ``crc32`` and ``pclmulqdq`` instructions exist (x86-64 with SSE 4.2 and PCLMUL)."""
    return _has("sse4.2", "pclmul")


def wide_available() -> bool:
    """True where spans also fold with 256-bit ``vpclmulqdq`` (AVX2 and VPCLMULQDQ: Zen 3, Ice Lake and later).
    Numba's cache keeps one compiled kernel per CPU model and feature set, so the choice made at import and
    compiled into the kernels holds for every machine that loads them."""
    return available() and _has("avx2", "vpclmulqdq")


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
def _streams_constants(shortest):  # for spans of >= ``shortest`` bytes: (third, x^(64·third-33), x^(128·third-33))
    third = (shortest // 8) // 3
    if third == 0:
        return 0, np.uint32(0), np.uint32(0)
    return third, _xpow(64 * third - 33), _xpow(128 * third - 33)


@numba.njit(cache=True, nogil=True, inline="always")
def _streams_fixed(data, start, stop, crc, third, join_b, join_a):  # numba infers the types
    """The span's register on the integer units alone: three ``crc32`` streams of ``third`` words each,
    joined with the powers of :func:`_streams_constants`; the rest runs as one stream."""
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
    return _tail(data, start + 24 * third, stop, wide)


@numba.njit(cache=True, nogil=True, inline="always")
def _tail(data, start, stop, wide):  # numba infers the types
    """The register after ``data[start:stop]`` as one stream from ``wide``: words, then the last bytes."""
    words = data[start:start + 8 * ((stop - start) // 8)].view(np.uint64)
    for i in range(words.size):
        wide = _crc_u64(wide, words[i])
    reg = np.uint32(wide)
    for i in range(start + 8 * words.size, stop):
        reg = _crc_u8(reg, data[i])
    return reg


_FOLD_BYTES = 128  # folded per step: four 256-bit accumulators
_STREAM_WORDS = 6  # words per crc32 stream per step (the split that measured fastest, 4-8 tried)
_STEP = _FOLD_BYTES + 3 * 8 * _STREAM_WORDS


@intrinsic
def _fused(typingctx: Any, data: Any, start: Any, steps: Any, crc: Any, k_high: Any, k_low: Any) -> Any:
    """``steps`` steps over ``data[start:]``: the first ``128·steps`` bytes folded into four 256-bit accumulators
    (``crc`` xored into the first), the next ``144·steps`` as three ``crc32`` streams of ``6·steps`` words from
    zero registers, both in one loop. Returns the accumulators' 16 words, then the 3 stream registers."""
    result = types.UniTuple(types.uint64, 19)
    sig = result(data, types.int64, types.int64, types.uint32, types.uint64, types.uint64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
        lanes = ir.VectorType(i64, 4)
        array, start, steps, crc, k_high, k_low = args
        base = builder.gep(context.make_array(signature.args[0])(context, builder, array).data, [start])
        vectors = builder.bitcast(base, lanes.as_pointer())
        words = builder.bitcast(base, i64.as_pointer())
        clmul = builder.module.declare_intrinsic("llvm.x86.pclmulqdq.256",
                                                 fnty=ir.FunctionType(lanes, [lanes, lanes, i8]))
        crc32 = builder.module.declare_intrinsic("llvm.x86.sse42.crc32.64.64", fnty=ir.FunctionType(i64, [i64, i64]))
        k = ir.Constant(lanes, None)
        for q, value in enumerate((k_high, k_low, k_high, k_low)):  # each 128-bit lane: (high-half, low-half)
            k = builder.insert_element(k, value, ir.Constant(i32, q))

        def const(v: int) -> Any:
            return ir.Constant(i64, v)

        accumulators = [cgutils.alloca_once(builder, lanes) for _ in range(4)]
        registers = [cgutils.alloca_once_value(builder, const(0)) for _ in range(3)]
        first_stream = builder.mul(steps, const(_FOLD_BYTES // 8))
        stream_words = builder.mul(steps, const(_STREAM_WORDS))
        for i, acc in enumerate(accumulators):
            v = builder.load(builder.gep(vectors, [const(i)]), align=1)
            if i == 0:
                v = builder.xor(v, builder.insert_element(ir.Constant(lanes, [0] * 4), builder.zext(crc, i64),
                                                          ir.Constant(i32, 0)))
            builder.store(v, acc)

        def streams(step: Any) -> None:
            for w in range(_STREAM_WORDS):
                at = builder.add(first_stream, builder.add(builder.mul(step, const(_STREAM_WORDS)), const(w)))
                for reg in registers:
                    word = builder.load(builder.gep(words, [at]), align=1)
                    builder.store(builder.call(crc32, [builder.load(reg), word]), reg)
                    at = builder.add(at, stream_words)

        streams(const(0))
        with cgutils.for_range_slice(builder, const(1), steps, const(1), inc=True) as (step, _):
            for i, acc in enumerate(accumulators):
                v = builder.load(builder.gep(vectors, [builder.add(builder.mul(step, const(4)), const(i))]), align=1)
                a = builder.load(acc)
                high = builder.call(clmul, [a, k, ir.Constant(i8, 0x00)])  # each lane's first word · x^(T+31)
                low = builder.call(clmul, [a, k, ir.Constant(i8, 0x11)])  # its second word · x^(T-33)
                builder.store(builder.xor(builder.xor(high, low), v), acc)
            streams(step)
        out = [builder.extract_element(builder.load(acc), ir.Constant(i32, q)) for acc in accumulators
               for q in range(4)]
        return context.make_tuple(builder, result, out + [builder.load(reg) for reg in registers])

    return sig, codegen


_FOLD_HIGH = np.uint64(_xpow(8 * _FOLD_BYTES + 31))  # x^(T+31), T the fold distance in bits
_FOLD_LOW = np.uint64(_xpow(8 * _FOLD_BYTES - 33))  # x^(T-33)


@numba.njit(cache=True, nogil=True)
def _fused_constants(shortest):  # for spans of >= ``shortest`` bytes: (steps, x^(8·stream-33), unused)
    steps = shortest // _STEP
    if steps == 0:
        return 0, np.uint32(0), np.uint32(0)
    return steps, _xpow(8 * 8 * _STREAM_WORDS * steps - 33), np.uint32(0)


@numba.njit(cache=True, nogil=True, inline="always")
def _fused_fixed(data, start, stop, crc, steps, join_stream, unused):  # numba infers the types
    """The span's register on both engines (:func:`_fused`), ``steps`` steps from :func:`_fused_constants`; the
    rest runs as one stream."""
    wide = np.uint64(crc)
    if steps:
        parts = _fused(data, start, steps, np.uint32(crc), _FOLD_HIGH, _FOLD_LOW)  # type: ignore[call-arg,var-annotated]
        wide = np.uint64(0)
        for i in range(16):
            wide = _crc_u64(wide, parts[i])
        reg = np.uint32(wide)
        for s in range(16, 19):
            reg = _times(reg, join_stream) ^ np.uint32(parts[s])
        wide = np.uint64(reg)
    return _tail(data, start + _STEP * steps, stop, wide)


# A kernel computes ``count, k1, k2 = span_constants(shortest)`` once for spans of at least ``shortest`` bytes
# (its row blocks), then each span's register with ``span_fixed(data, start, stop, crc, count, k1, k2)``: on both
# engines where :func:`wide_available`, else on three ``crc32`` streams.
if wide_available():
    span_constants, span_fixed = _fused_constants, _fused_fixed
else:
    span_constants, span_fixed = _streams_constants, _streams_fixed


@numba.njit(cache=True, nogil=True)
def span(data, start, stop, crc):  # register after data[start:stop] from ``crc``; no final xor
    count, k1, k2 = span_constants(stop - start)
    return span_fixed(data, start, stop, crc, count, k1, k2)


@numba.njit(cache=True, nogil=True)
def _span_streams(data, start, stop, crc):  # :func:`span` on the integer units alone, whatever the CPU
    count, k1, k2 = _streams_constants(stop - start)
    return _streams_fixed(data, start, stop, crc, count, k1, k2)


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
        return span(view, bounds[i], bounds[i + 1], 0xFFFFFFFF if i == 0 else 0)

    regs = list(pool.map(piece, range(pieces))) if pieces > 1 else [piece(0)]
    return int(join(np.array(regs, np.uint32), np.diff(np.array(bounds, np.int64))))
