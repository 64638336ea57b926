"""Small Numba building blocks of the sparse kernels: float16 → float32 in registers, popcount, bit unpacking.

Numba has no float16 arithmetic, so float16 data travels as its uint16 bit patterns. :func:`to_f32` turns
one into float32 with LLVM's ``fpext half → float``, which compiles to the hardware conversion (F16C's
``vcvtph2ps`` on x86, vectorized by the loop vectorizer) and is exact for every value, subnormals included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload


@intrinsic
def _half_to_float(typingctx: Any, bits: Any) -> Any:
    if bits != types.uint16:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@intrinsic
def popcount64(typingctx: Any, word: Any) -> Any:
    """Number of set bits of a uint64, as int64."""
    if word != types.uint64:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.zext(builder.ctpop(args[0]), ir.IntType(64))

    return types.int64(types.uint64), codegen


def to_f32(value):  # no annotations: numba matches the overload's signature exactly
    """A stored value as float32: uint16 is read as float16 bits, floats are converted."""
    raise NotImplementedError  # only called from compiled code


@overload(to_f32, inline="always")
def _to_f32(value):
    if value == types.uint16:
        return lambda value: _half_to_float(value)  # type: ignore[call-arg]  # typingctx is numba's
    if isinstance(value, types.Float):
        return lambda value: np.float32(value)
    return None


@numba.njit(cache=True, nogil=True, inline="always")
def unpack_codes(packed, bits, start, count, out):  # numba infers the types
    """Codes ``start … start+count-1`` of an LSB-first ``bits``-wide stream into ``out[0:count]`` (uint8)."""
    if bits == 2 and (start & 3) == 0 and (count & 3) == 0:
        base = start >> 2
        for b in range(count >> 2):
            byte = packed[base + b]
            out[4 * b] = byte & np.uint8(3)
            out[4 * b + 1] = (byte >> np.uint8(2)) & np.uint8(3)
            out[4 * b + 2] = (byte >> np.uint8(4)) & np.uint8(3)
            out[4 * b + 3] = byte >> np.uint8(6)
        return
    if bits == 4 and (start & 1) == 0 and (count & 1) == 0:
        base = start >> 1
        for b in range(count >> 1):
            byte = packed[base + b]
            out[2 * b] = byte & np.uint8(15)
            out[2 * b + 1] = byte >> np.uint8(4)
        return
    if bits == 8:
        for k in range(count):
            out[k] = packed[start + k]
        return
    mask = (1 << bits) - 1
    pos = start * bits
    for k in range(count):
        byte = pos >> 3
        shift = pos & 7
        v = np.uint32(packed[byte]) >> shift
        if shift + bits > 8:
            v |= np.uint32(packed[byte + 1]) << (8 - shift)
        out[k] = np.uint8(v & mask)
        pos += bits


# --- 8-lane expansion of packed values (x86 AVX2) ---------------------------------------------------------
def has_avx2() -> bool:
    """Whether compiled code may use AVX2 (x86-64 host with AVX2, numba compiling for the host CPU)."""
    import llvmlite.binding as llvm

    if getattr(numba.config, "CPU_NAME", None) not in (None, "host"):
        return False
    try:
        return bool(llvm.get_host_cpu_features().get("avx2", False))
    except RuntimeError:  # pragma: no cover - feature detection unavailable on this platform
        return False


def expansion_table() -> np.ndarray:
    """int32 (256, 8): for bitmap byte ``b`` and lane ``j``, the rank of bit ``j`` among the set bits of
    ``b`` — the packed value that lands on lane ``j`` — or -1 (sign bit set) where bit ``j`` is clear."""
    table = np.full((256, 8), -1, dtype=np.int32)
    for b in range(256):
        rank = 0
        for j in range(8):
            if b >> j & 1:
                table[b, j] = rank
                rank += 1
    return table


_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_V8F = ir.VectorType(_F32, 8)
_V8I = ir.VectorType(_I32, 8)


def _vector_at(context: Any, builder: Any, arrtype: Any, arr: Any, offset: Any, vtype: Any) -> Any:
    data = context.make_array(arrtype)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [offset]), vtype.as_pointer())


@intrinsic
def expand8_fma(typingctx, acc, lane0, vals, k, x, base, table, byte):
    """``acc[lane0:lane0+8] += expand(vals[k:k+8], byte) * x[base:base+8]``, with AVX2's ``vpermps``.

    ``expand`` puts the packed values on the lanes whose bit is set in ``byte`` (via :func:`expansion_table`
    ``table``) and zero elsewhere. ``vals`` is float32 or float16 bits (uint16; converted with
    ``vcvtph2ps``). Reads 8 values from ``k`` whatever the popcount: the caller keeps ``k + 8`` in bounds.
    Only for hosts where :func:`has_avx2` is true.
    """
    if vals.dtype not in (types.float32, types.uint16) or x.dtype != types.float32 or byte != types.uint8:
        return None
    sig = types.void(acc, lane0, vals, k, x, base, table, byte)

    def codegen(context, builder, signature, args):
        acc_, lane0_, vals_, k_, x_, base_, table_, byte_ = args
        acc_t, _, vals_t, _, x_t, _, table_t, _ = signature.args
        i64 = ir.IntType(64)
        if vals_t.dtype == types.uint16:
            raw = builder.load(_vector_at(context, builder, vals_t, vals_, k_, ir.VectorType(ir.IntType(16), 8)),
                               align=2)
            v = builder.fpext(builder.bitcast(raw, ir.VectorType(ir.HalfType(), 8)), _V8F)
        else:
            v = builder.load(_vector_at(context, builder, vals_t, vals_, k_, _V8F), align=4)
        row = builder.mul(builder.zext(byte_, i64), ir.Constant(i64, 8))
        idx = builder.load(_vector_at(context, builder, table_t, table_, row, _V8I), align=4)
        permps = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8F, [_V8F, _V8I]),
                                                "llvm.x86.avx2.permps")
        expanded = builder.call(permps, [v, idx])
        clear = builder.icmp_signed("<", idx, ir.Constant(_V8I, [0] * 8))
        expanded = builder.select(clear, ir.Constant(_V8F, [0.0] * 8), expanded)
        xv = builder.load(_vector_at(context, builder, x_t, x_, base_, _V8F), align=4)
        ptr = _vector_at(context, builder, acc_t, acc_, lane0_, _V8F)
        total = builder.fadd(builder.load(ptr, align=4), builder.fmul(expanded, xv, flags=["fast"]), flags=["fast"])
        builder.store(total, ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


def pair_table() -> np.ndarray:
    """int32 (256, 4) for 2:4 metadata: a byte holds two groups' positions ``(i0 | i1<<2) | (i2 | i3<<2)<<4``;
    the row lists the lanes of an 8-column window that the group pair's four kept values sit on."""
    table = np.zeros((256, 4), dtype=np.int32)
    for b in range(256):
        table[b] = [b & 3, (b >> 2) & 3, 4 + ((b >> 4) & 3), 4 + (b >> 6)]
    return table


@intrinsic
def select24_fma(typingctx, acc, lane0, vals, k, x, base, table, code0, code1):
    """2:4 on AVX2: ``acc[lane0:lane0+8] += vals[k:k+8] * x[kept columns of 4 groups from base]``.

    ``code0``/``code1`` are the metadata bytes of groups ``(base/4) … +1`` and ``+2 … +3``; ``table`` is
    :func:`pair_table`. Each half of the result is picked from its own 8 columns of ``x`` by ``vpermps``.
    """
    if vals.dtype not in (types.float32, types.uint16) or x.dtype != types.float32:
        return None
    if code0 != types.uint8 or code1 != types.uint8:
        return None
    sig = types.void(acc, lane0, vals, k, x, base, table, code0, code1)

    def codegen(context, builder, signature, args):
        acc_, lane0_, vals_, k_, x_, base_, table_, c0, c1 = args
        acc_t, _, vals_t, _, x_t, _, table_t, _, _ = signature.args
        i64 = ir.IntType(64)
        v4i = ir.VectorType(_I32, 4)
        if vals_t.dtype == types.uint16:
            raw = builder.load(_vector_at(context, builder, vals_t, vals_, k_, ir.VectorType(ir.IntType(16), 8)),
                               align=2)
            v = builder.fpext(builder.bitcast(raw, ir.VectorType(ir.HalfType(), 8)), _V8F)
        else:
            v = builder.load(_vector_at(context, builder, vals_t, vals_, k_, _V8F), align=4)
        four = ir.Constant(i64, 4)
        lo = builder.load(_vector_at(context, builder, table_t, table_, builder.mul(builder.zext(c0, i64), four), v4i),
                          align=4)
        hi = builder.load(_vector_at(context, builder, table_t, table_, builder.mul(builder.zext(c1, i64), four), v4i),
                          align=4)
        idx = builder.shuffle_vector(lo, hi, ir.Constant(_V8I, list(range(8))))
        permps = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8F, [_V8F, _V8I]),
                                                "llvm.x86.avx2.permps")
        x_lo = builder.load(_vector_at(context, builder, x_t, x_, base_, _V8F), align=4)
        x_hi = builder.load(_vector_at(context, builder, x_t, x_, builder.add(base_, ir.Constant(base_.type, 8)),
                                       _V8F), align=4)
        picked = builder.shuffle_vector(builder.call(permps, [x_lo, idx]), builder.call(permps, [x_hi, idx]),
                                        ir.Constant(_V8I, [0, 1, 2, 3, 12, 13, 14, 15]))
        ptr = _vector_at(context, builder, acc_t, acc_, lane0_, _V8F)
        total = builder.fadd(builder.load(ptr, align=4), builder.fmul(v, picked, flags=["fast"]), flags=["fast"])
        builder.store(total, ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


def shuffle_table() -> np.ndarray:
    """uint8 (256, 16): for bitmap byte ``b``, the ``pshufb`` control that moves 8 packed float16 values onto
    the lanes of their columns: lane ``j`` takes the two bytes of value ``rank(j)`` where bit ``j`` is set,
    and 0x80 (a zero byte) where it is clear — the zeroing comes with the shuffle."""
    table = np.full((256, 16), 0x80, dtype=np.uint8)
    ranks = expansion_table()
    for b in range(256):
        for j in range(8):
            if ranks[b, j] >= 0:
                table[b, 2 * j], table[b, 2 * j + 1] = 2 * ranks[b, j], 2 * ranks[b, j] + 1
    return table


@intrinsic
def expand64_fma(typingctx, acc, vals, k, x, base, table, bitmap, offset):
    """Eight bitmap bytes at once: the 64 columns from ``base`` whose bits are ``bitmap[offset:offset+8]``;
    ``acc[0:32]`` (four 8-lane accumulators) ``+= expand(vals[k:…]) · x``. Returns ``k`` advanced past the
    bytes' values. Same conditions as :func:`expand8_fma`: the caller keeps ``k + popcount + 8`` inside
    ``vals``.

    float16 values (uint16 bits) with ``table`` = :func:`shuffle_table`: the 16 bytes of 8 values are
    expanded by one in-lane ``pshufb`` that also zeroes the clear lanes, then converted — no cross-lane
    permute, no blend. float32 values with ``table`` = :func:`expansion_table` as int8 (one 8-byte load
    sign-extended to lane indices): ``vpermps``, and the clear lanes' -1 as ``vblendvps``'s zeroing mask.
    """
    if x.dtype != types.float32 or bitmap.dtype != types.uint8:
        return None
    if not ((vals.dtype == types.uint16 and table.dtype == types.uint8)
            or (vals.dtype == types.float32 and table.dtype == types.int8)):
        return None
    sig = types.int64(acc, vals, k, x, base, table, bitmap, offset)

    def codegen(context, builder, signature, args):
        acc_, vals_, k_, x_, base_, table_, bitmap_, offset_ = args
        acc_t, vals_t, _, x_t, _, table_t, bitmap_t, _ = signature.args
        i64 = ir.IntType(64)
        v16b = ir.VectorType(ir.IntType(8), 16)
        half = vals_t.dtype == types.uint16
        if half:
            pshufb = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16b, [v16b, v16b]),
                                                    "llvm.x86.ssse3.pshuf.b.128")
        else:
            permps = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8F, [_V8F, _V8I]),
                                                    "llvm.x86.avx2.permps")
            blendv = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8F, [_V8F, _V8F, _V8F]),
                                                    "llvm.x86.avx.blendv.ps.256")
        ptrs = [_vector_at(context, builder, acc_t, acc_, ir.Constant(i64, 8 * a), _V8F) for a in range(4)]
        accs = [builder.load(p, align=4) for p in ptrs]
        k = k_
        zero = ir.Constant(_V8F, [0.0] * 8)
        bytes_ptr = context.make_array(bitmap_t)(context, builder, bitmap_).data
        for b in range(8):
            at = builder.add(offset_, ir.Constant(i64, b))
            byte = builder.zext(builder.load(builder.gep(bytes_ptr, [at])), i64)
            if half:
                control = builder.load(_vector_at(context, builder, table_t, table_,
                                                  builder.mul(byte, ir.Constant(i64, 16)), v16b), align=1)
                raw = builder.load(_vector_at(context, builder, vals_t, vals_, k, v16b), align=1)
                moved = builder.bitcast(builder.call(pshufb, [raw, control]), ir.VectorType(ir.HalfType(), 8))
                expanded = builder.fpext(moved, _V8F)
            else:
                row = _vector_at(context, builder, table_t, table_, builder.mul(byte, ir.Constant(i64, 8)),
                                 ir.VectorType(ir.IntType(8), 8))
                idx = builder.sext(builder.load(row, align=1), _V8I)
                v = builder.load(_vector_at(context, builder, vals_t, vals_, k, _V8F), align=4)
                expanded = builder.call(blendv, [builder.call(permps, [v, idx]), zero, builder.bitcast(idx, _V8F)])
            col = builder.add(base_, ir.Constant(i64, 8 * b))
            xv = builder.load(_vector_at(context, builder, x_t, x_, col, _V8F), align=4)
            accs[b % 4] = builder.fadd(accs[b % 4], builder.fmul(expanded, xv, flags=["fast"]), flags=["fast"])
            k = builder.add(k, builder.ctpop(byte))
        for p, a in zip(ptrs, accs, strict=True):
            builder.store(a, p, align=4)
        return k

    return sig, codegen


#: rows per parallel task: scratch buffers are allocated once per task, not once per row
TASK_ROWS = 16


@numba.njit(cache=True, nogil=True, inline="always")
def task_rows(task, rows):  # numba infers the types
    """The range of rows of parallel task ``task``."""
    return task * TASK_ROWS, min(rows, (task + 1) * TASK_ROWS)


@numba.njit(cache=True, nogil=True, inline="always")
def tasks(rows):  # numba infers the types
    """Parallel tasks for ``rows`` rows."""
    return (rows + TASK_ROWS - 1) // TASK_ROWS


@numba.njit(cache=True, nogil=True, inline="always")
def dense_row_dot(w, xt, out_row):  # numba infers the types
    """``out_row[b] = w · xt[b]`` for every b: four right-hand sides per pass over ``w`` (float32)."""
    batch, width = xt.shape
    b = 0
    while b + 4 <= batch:
        x0, x1, x2, x3 = xt[b], xt[b + 1], xt[b + 2], xt[b + 3]
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for c in range(width):
            wc = w[c]
            s0 += wc * x0[c]
            s1 += wc * x1[c]
            s2 += wc * x2[c]
            s3 += wc * x3[c]
        out_row[b], out_row[b + 1], out_row[b + 2], out_row[b + 3] = s0, s1, s2, s3
        b += 4
    while b < batch:
        xb = xt[b]
        s = np.float32(0.0)
        for c in range(width):
            s += w[c] * xb[c]
        out_row[b] = s
        b += 1


@contextlib.contextmanager
def balanced(chunk: int = 2) -> Iterator[None]:
    """Run the parallel loops inside in chunks of ``chunk`` tasks that threads take as they free up, so a
    thread slowed down by other work on the machine does not hold the others up at the end."""
    previous = numba.set_parallel_chunksize(chunk)
    try:
        yield
    finally:
        numba.set_parallel_chunksize(previous)


@intrinsic
def blocks14_fma(typingctx, acc, lane0, vals, k, x, col0, col1):
    """Two 1×4 blocks on AVX2: ``acc[lane0:lane0+8] += vals[k:k+8] · (x[col0:col0+4] ‖ x[col1:col1+4])``.

    ``vals`` float32 or float16 bits (uint16), ``x`` float32; the 8 values are the two blocks' in order."""
    if vals.dtype not in (types.float32, types.uint16) or x.dtype != types.float32:
        return None
    sig = types.void(acc, lane0, vals, k, x, col0, col1)

    def codegen(context, builder, signature, args):
        acc_, lane0_, vals_, k_, x_, c0, c1 = args
        acc_t, _, vals_t, _, x_t, _, _ = signature.args
        v4f = ir.VectorType(_F32, 4)
        if vals_t.dtype == types.uint16:
            raw = builder.load(_vector_at(context, builder, vals_t, vals_, k_, ir.VectorType(ir.IntType(16), 8)),
                               align=2)
            v = builder.fpext(builder.bitcast(raw, ir.VectorType(ir.HalfType(), 8)), _V8F)
        else:
            v = builder.load(_vector_at(context, builder, vals_t, vals_, k_, _V8F), align=4)
        lo = builder.load(_vector_at(context, builder, x_t, x_, c0, v4f), align=4)
        hi = builder.load(_vector_at(context, builder, x_t, x_, c1, v4f), align=4)
        xv = builder.shuffle_vector(lo, hi, ir.Constant(_V8I, list(range(8))))
        ptr = _vector_at(context, builder, acc_t, acc_, lane0_, _V8F)
        total = builder.fadd(builder.load(ptr, align=4), builder.fmul(v, xv, flags=["fast"]), flags=["fast"])
        builder.store(total, ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen
