"""Numba CPU products with a ``quant`` weight, computed from the packed codes (operands: see
:mod:`tensorpress.kernels.reference.quant_matvec`). ``W`` is never dense in memory.

``matvec`` uses the per-group sum trick,
``y[r] = Σ_g scale[r, g] · (Σ_{j∈g} x_j · code[r, j]) + offset[r, g] · Σ_{j∈g} x_j``, the group sums of ``x``
taken once per call. The inner loops are written as LLVM vector IR, 8 float32 lanes, the same on every host
(AVX2 on x86; reassociation is not allowed, so LLVM keeps the independent multiply-add chains):

- 2, 4 and 8 bits, rows that fill whole 32-bit words (:func:`planes_dot`): codes are read as uint32 words of
  ``k = 32 / bits`` codes, eight words at a time; ``x`` is laid out as ``k`` planes (plane ``t`` holds
  ``x[t], x[t + k], …``) so that code ``t`` of eight words meets eight consecutive entries of plane ``t``:
  shift, mask, convert and multiply-add, no shuffles and no gathers. Groups of ``2**m`` words; groups
  smaller than a step (e.g. 4-bit groups of 32) take per-lane scales.
- other widths, rows of whole 8-code chunks (:func:`chunks_dot`): each chunk (8 codes in ``bits`` bytes) is
  spread over the 8 lanes from two 32-bit loads and shifted per lane; ``x`` is read as it is.
- anything else goes group by group: the decode kernel's unpacking into a small buffer, then a dot product.

``matmul`` (a few right-hand sides) dequantizes one row at a time into a buffer that stays in L1, exactly as
``decode`` does, and takes its dot products with the columns of ``X``, four at a time.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..dispatch import kernel
from ._bits import balanced, dense_row_dot, task_rows, tasks
from .quant import _group_span

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V8F = ir.VectorType(_F32, 8)
_V8I = ir.VectorType(_I32, 8)
# fused multiply-adds allowed, reassociation not: LLVM would otherwise fold the independent chains of a
# step back into one serial chain of multiply-adds
_FLAGS = ("contract",)


def _at(context: Any, builder: Any, arrtype: Any, arr: Any, offset: Any, ty: Any) -> Any:
    """Pointer to element ``offset`` of a numba array, as ``ty*``."""
    data = context.make_array(arrtype)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [offset]), ty.as_pointer())


def _splat(value: int) -> Any:
    return ir.Constant(_V8I, [value] * 8)


@intrinsic
def planes_dot(typingctx, words, w0, xp, plane, nsteps, scales, s0, gshift, bits_t, spread_t):
    """``Σ scale · code · x`` over the first ``nsteps`` steps of eight uint32 words of a row that starts at
    ``words[w0]``; ``x`` is read from the planes ``xp`` (plane ``t`` at ``xp[t · plane]``, indexed by word).

    ``len(bits_t)`` is the code width (2, 4 or 8), a compile-time constant. Word ``c`` of the row belongs to
    group ``c >> gshift`` (groups are ``2**gshift`` words), whose scale is ``scales.flat[s0 + group]``.
    ``len(spread_t)`` is how many groups one step covers: 1 (one scale, broadcast) or 2, 4, 8 (a scale per
    lane, picked from consecutive scales). Returns float32.
    """
    if words.dtype != types.uint32 or xp.dtype != types.float32 or scales.dtype != types.float32:
        return None
    if not (isinstance(bits_t, types.UniTuple) and isinstance(spread_t, types.UniTuple)):
        return None
    bits, spread = bits_t.count, spread_t.count
    if bits not in (2, 4, 8) or spread not in (1, 2, 4, 8):
        return None
    if not all(isinstance(t, types.Integer) for t in (w0, plane, nsteps, s0, gshift)):
        return None
    sig = types.float32(words, w0, xp, plane, nsteps, scales, s0, gshift, bits_t, spread_t)

    def codegen(context, builder, signature, args):
        words_, w0_, xp_, plane_, nsteps_, scales_, s0_, gshift_, _, _ = args
        st = signature.args
        w0v, planev, nstepsv, s0v, gshiftv = (context.cast(builder, v, t, types.int64)
                                             for v, t in zip((w0_, plane_, nsteps_, s0_, gshift_),
                                                             (st[1], st[3], st[4], st[6], st[7]), strict=True))
        acc_ptr = cgutils.alloca_once_value(builder, ir.Constant(_V8F, [0.0] * 8))
        k = 32 // bits
        mask = _splat((1 << bits) - 1)
        with cgutils.for_range(builder, nstepsv) as loop:
            c = builder.mul(loop.index, ir.Constant(_I64, 8))
            wv = builder.load(_at(context, builder, st[0], words_, builder.add(w0v, c), _V8I), align=4)
            chains: list[Any] = [None] * 4
            for t in range(k):
                v = wv if t == 0 else builder.lshr(wv, _splat(bits * t))
                if bits * (t + 1) < 32:
                    v = builder.and_(v, mask)
                code = builder.sitofp(v, _V8F)  # codes < 256: the signed conversion is exact and cheaper
                off = builder.add(builder.mul(planev, ir.Constant(_I64, t)), c)
                xv = builder.load(_at(context, builder, st[2], xp_, off, _V8F), align=4)
                prod = builder.fmul(code, xv, flags=_FLAGS)
                j = t % 4
                chains[j] = prod if chains[j] is None else builder.fadd(chains[j], prod, flags=_FLAGS)
            live = [ch for ch in chains if ch is not None]
            while len(live) > 1:
                live = [builder.fadd(live[i], live[i + 1], flags=_FLAGS) if i + 1 < len(live) else live[i]
                        for i in range(0, len(live), 2)]
            first = builder.add(s0v, builder.ashr(c, gshiftv))
            vs = ir.VectorType(_F32, spread)
            small = builder.load(_at(context, builder, st[5], scales_, first, vs), align=4)
            lanes = builder.shuffle_vector(small, small, ir.Constant(_V8I, [lane * spread // 8 for lane in range(8)]))
            acc = builder.fadd(builder.load(acc_ptr), builder.fmul(live[0], lanes, flags=_FLAGS), flags=_FLAGS)
            builder.store(acc, acc_ptr)
        acc = builder.load(acc_ptr)
        lanes8 = [builder.extract_element(acc, ir.Constant(_I32, i)) for i in range(8)]
        pairs = [builder.fadd(lanes8[i], lanes8[i + 4], flags=_FLAGS) for i in range(4)]
        return builder.fadd(builder.fadd(pairs[0], pairs[2], flags=_FLAGS),
                            builder.fadd(pairs[1], pairs[3], flags=_FLAGS), flags=_FLAGS)

    return sig, codegen


@intrinsic
def planes_dot4(typingctx, words, w0, xp, plane, nsteps, scales, s0, gshift, bits_t, spread_t, out, ooff):
    """:func:`planes_dot` for four right-hand sides at once, each word decoded once for all four: rhs ``j``'s
    planes start at ``xp[j · k · plane]`` (``k = 32 / bits``); its sum is stored to ``out.flat[ooff + j]``."""
    if words.dtype != types.uint32 or xp.dtype != types.float32 or scales.dtype != types.float32:
        return None
    if out.dtype != types.float32 or not (isinstance(bits_t, types.UniTuple) and isinstance(spread_t, types.UniTuple)):
        return None
    bits, spread = bits_t.count, spread_t.count
    if bits not in (2, 4, 8) or spread not in (1, 2, 4, 8):
        return None
    if not all(isinstance(t, types.Integer) for t in (w0, plane, nsteps, s0, gshift, ooff)):
        return None
    sig = types.void(words, w0, xp, plane, nsteps, scales, s0, gshift, bits_t, spread_t, out, ooff)

    def codegen(context, builder, signature, args):
        words_, w0_, xp_, plane_, nsteps_, scales_, s0_, gshift_, _, _, out_, ooff_ = args
        st = signature.args
        w0v, planev, nstepsv, s0v, gshiftv, ooffv = (
            context.cast(builder, v, t, types.int64)
            for v, t in zip((w0_, plane_, nsteps_, s0_, gshift_, ooff_), (st[1], st[3], st[4], st[6], st[7], st[11]),
                            strict=True))
        k = 32 // bits
        rhs_stride = builder.mul(planev, ir.Constant(_I64, k))
        accs = [cgutils.alloca_once_value(builder, ir.Constant(_V8F, [0.0] * 8)) for _ in range(4)]
        mask = _splat((1 << bits) - 1)
        with cgutils.for_range(builder, nstepsv) as loop:
            c = builder.mul(loop.index, ir.Constant(_I64, 8))
            wv = builder.load(_at(context, builder, st[0], words_, builder.add(w0v, c), _V8I), align=4)
            chains: list[Any] = [None] * 4
            for t in range(k):
                v = wv if t == 0 else builder.lshr(wv, _splat(bits * t))
                if bits * (t + 1) < 32:
                    v = builder.and_(v, mask)
                code = builder.sitofp(v, _V8F)
                base = builder.add(builder.mul(planev, ir.Constant(_I64, t)), c)
                for j in range(4):
                    off = builder.add(base, builder.mul(rhs_stride, ir.Constant(_I64, j)))
                    xv = builder.load(_at(context, builder, st[2], xp_, off, _V8F), align=4)
                    prod = builder.fmul(code, xv, flags=_FLAGS)
                    chains[j] = prod if chains[j] is None else builder.fadd(chains[j], prod, flags=_FLAGS)
            first = builder.add(s0v, builder.ashr(c, gshiftv))
            small = builder.load(_at(context, builder, st[5], scales_, first, ir.VectorType(_F32, spread)), align=4)
            lanes = builder.shuffle_vector(small, small, ir.Constant(_V8I, [lane * spread // 8 for lane in range(8)]))
            for j in range(4):
                builder.store(builder.fadd(builder.load(accs[j]), builder.fmul(chains[j], lanes, flags=_FLAGS),
                                           flags=_FLAGS), accs[j])
        for j in range(4):
            acc = builder.load(accs[j])
            lanes8 = [builder.extract_element(acc, ir.Constant(_I32, i)) for i in range(8)]
            sums = [builder.fadd(lanes8[i], lanes8[i + 4], flags=_FLAGS) for i in range(4)]
            total = builder.fadd(builder.fadd(sums[0], sums[2], flags=_FLAGS),
                                 builder.fadd(sums[1], sums[3], flags=_FLAGS), flags=_FLAGS)
            builder.store(total, _at(context, builder, st[10], out_, builder.add(ooffv, ir.Constant(_I64, j)), _F32))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def chunks_dot(typingctx, packed, b0, x, nchunks, scales, s0, gshift, bits_t):
    """``Σ scale · code · x`` over the first ``nchunks`` chunks of a row of ``bits``-wide codes (``bits =
    len(bits_t)``, any of 2…8) starting at byte ``packed[b0]``: chunk ``c`` is 8 codes in ``bits`` bytes, for
    columns ``8c … 8c+7`` of ``x``, and belongs to group ``c >> gshift`` with scale ``scales.flat[s0 + …]``.

    Codes 0–3 of a chunk come from a 32-bit load at its start, codes 4–7 from one at byte ``4·bits / 8``
    (shifted by ``4·bits mod 8``); both are spread over 8 lanes and shifted by ``0, b, 2b, 3b`` per half.
    The loads may reach up to 2 bytes past the chunk: the caller keeps them inside ``packed``.
    """
    if packed.dtype != types.uint8 or x.dtype != types.float32 or scales.dtype != types.float32:
        return None
    if not isinstance(bits_t, types.UniTuple) or not 2 <= bits_t.count <= 8:
        return None
    if not all(isinstance(t, types.Integer) for t in (b0, nchunks, s0, gshift)):
        return None
    bits = bits_t.count
    sig = types.float32(packed, b0, x, nchunks, scales, s0, gshift, bits_t)

    def codegen(context, builder, signature, args):
        packed_, b0_, x_, nchunks_, scales_, s0_, gshift_, _ = args
        st = signature.args
        b0v, nchunksv, s0v, gshiftv = (context.cast(builder, v, t, types.int64)
                                       for v, t in zip((b0_, nchunks_, s0_, gshift_), (st[1], st[3], st[5], st[6]),
                                                       strict=True))
        accs = [cgutils.alloca_once_value(builder, ir.Constant(_V8F, [0.0] * 8)) for _ in range(2)]
        shifts = ir.Constant(_V8I, [bits * (lane % 4) for lane in range(8)])
        mask = _splat((1 << bits) - 1)
        hi_byte, hi_shift = (4 * bits) // 8, (4 * bits) % 8
        undef = ir.Constant(_V8I, ir.Undefined)
        halves = ir.Constant(_V8I, [0, 0, 0, 0, 1, 1, 1, 1])

        def chunk(c: Any, acc_ptr: Any) -> None:
            start = builder.add(b0v, builder.mul(c, ir.Constant(_I64, bits)))
            lo = builder.load(_at(context, builder, st[0], packed_, start, _I32), align=1)
            hi = builder.load(_at(context, builder, st[0], packed_, builder.add(start, ir.Constant(_I64, hi_byte)),
                                  _I32), align=1)
            if hi_shift:
                hi = builder.lshr(hi, ir.Constant(_I32, hi_shift))
            pair = builder.insert_element(builder.insert_element(undef, lo, ir.Constant(_I32, 0)), hi,
                                          ir.Constant(_I32, 1))
            v = builder.and_(builder.lshr(builder.shuffle_vector(pair, undef, halves), shifts), mask)
            code = builder.sitofp(v, _V8F)
            xv = builder.load(_at(context, builder, st[2], x_, builder.mul(c, ir.Constant(_I64, 8)), _V8F), align=4)
            scale = builder.load(_at(context, builder, st[4], scales_,
                                     builder.add(s0v, builder.ashr(c, gshiftv)), _F32), align=4)
            lanes = builder.shuffle_vector(builder.insert_element(ir.Constant(_V8F, ir.Undefined), scale,
                                                                  ir.Constant(_I32, 0)),
                                           ir.Constant(_V8F, ir.Undefined), ir.Constant(_V8I, [0] * 8))
            part = builder.fmul(code, xv, flags=_FLAGS)
            builder.store(builder.fadd(builder.load(acc_ptr), builder.fmul(part, lanes, flags=_FLAGS),
                                       flags=_FLAGS), acc_ptr)

        pairs = builder.ashr(nchunksv, ir.Constant(_I64, 1))
        with cgutils.for_range(builder, pairs) as loop:
            c = builder.mul(loop.index, ir.Constant(_I64, 2))
            chunk(c, accs[0])
            chunk(builder.add(c, ir.Constant(_I64, 1)), accs[1])
        odd = builder.icmp_signed("!=", builder.and_(nchunksv, ir.Constant(_I64, 1)), ir.Constant(_I64, 0))
        with builder.if_then(odd):
            chunk(builder.sub(nchunksv, ir.Constant(_I64, 1)), accs[0])
        acc = builder.fadd(builder.load(accs[0]), builder.load(accs[1]), flags=_FLAGS)
        lanes8 = [builder.extract_element(acc, ir.Constant(_I32, i)) for i in range(8)]
        sums = [builder.fadd(lanes8[i], lanes8[i + 4], flags=_FLAGS) for i in range(4)]
        return builder.fadd(builder.fadd(sums[0], sums[2], flags=_FLAGS), builder.fadd(sums[1], sums[3], flags=_FLAGS),
                            flags=_FLAGS)

    return sig, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _code_at(packed, pos, bits):  # numba infers the types
    """The code starting at bit ``pos`` of the LSB-first stream."""
    byte = pos >> 3
    shift = pos & 7
    v = np.uint32(packed[byte]) >> shift
    if shift + bits > 8:
        v |= np.uint32(packed[byte + 1]) << (8 - shift)
    return v & np.uint32((1 << bits) - 1)


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _matvec_planes(words, packed, scales, offsets, xp, x, xsum, n, group, gshift, bits_t, spread_t, y):  # inferred
    bits = len(bits_t)
    k = 32 // bits
    rows, ngroups = scales.shape
    words_per_row = n // k
    plane = xp.shape[0] // k
    steps = n // (8 * k)
    done = steps * 8 * k
    for task in numba.prange(tasks(rows)):
        r0, r1 = task_rows(task, rows)
        for r in range(r0, r1):
            total = planes_dot(words, r * words_per_row, xp, plane, steps, scales,  # type: ignore[call-arg,var-annotated]
                               r * ngroups, gshift, bits_t, spread_t)
            for j in range(done, n):  # the columns after the last whole step
                total += scales[r, j // group] * np.float32(_code_at(packed, (r * n + j) * bits, bits)) * x[j]
            for g in range(ngroups):
                total += offsets[r, g] * xsum[g]
            y[r] = total


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _matvec_groups(packed, scales, offsets, x, xsum, bits, n, group, y):  # numba infers the types
    rows, ngroups = scales.shape
    for task in numba.prange(tasks(rows)):
        lut = np.empty(256, np.float32)
        codes = np.empty(group, np.float32)
        r0, r1 = task_rows(task, rows)
        for r in range(r0, r1):
            total = np.float32(0.0)
            pos = r * n * bits
            for g in range(ngroups):
                j = g * group
                count = min(group, n - j)
                # the decode kernel's unpacking with scale 1 and offset 0: the codes as floats
                pos = _group_span(packed, lut, np.float32(1.0), np.float32(0.0), bits, pos, codes, 0, count)
                s = np.float32(0.0)
                for i in range(count):
                    s += x[j + i] * codes[i]
                total += scales[r, g] * s + offsets[r, g] * xsum[g]
            y[r] = total


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _matvec_chunks(packed, scales, offsets, x, xsum, n, group, gshift, bits_t, y):  # numba infers the types
    bits = len(bits_t)
    rows, ngroups = scales.shape
    row_bytes = n * bits // 8
    chunks = n // 8
    for task in numba.prange(tasks(rows)):
        lut = np.empty(256, np.float32)
        codes = np.empty(group, np.float32)
        r0, r1 = task_rows(task, rows)
        for r in range(r0, r1):
            total = np.float32(0.0)
            if r < rows - 1:  # the chunk loads reach past a chunk: not past the end of the stream
                total = chunks_dot(packed, r * row_bytes, x, chunks, scales,  # type: ignore[call-arg]
                                   r * ngroups, gshift, bits_t)
            else:
                pos = r * n * bits
                for g in range(ngroups):
                    j = g * group
                    count = min(group, n - j)
                    pos = _group_span(packed, lut, np.float32(1.0), np.float32(0.0), bits, pos, codes, 0, count)
                    s = np.float32(0.0)
                    for i in range(count):
                        s += x[j + i] * codes[i]
                    total += scales[r, g] * s
            for g in range(ngroups):
                total += offsets[r, g] * xsum[g]
            y[r] = total


def chunks_layout(bits: int, n: int, group: int) -> int:
    """log2 of the 8-code chunks per group when the chunk path applies (rows of whole chunks, groups of
    2**m chunks), else -1."""
    chunks = group // 8
    if n % 8 or group % 8 or chunks & (chunks - 1):
        return -1
    return chunks.bit_length() - 1


def _words(packed: np.ndarray) -> np.ndarray:
    """The stream as aligned uint32 words (a view when it can be)."""
    if packed.ctypes.data % 4 or not packed.flags.c_contiguous:
        packed = np.ascontiguousarray(packed).copy()
    return packed.view(np.uint32)


#: floats appended to each plane of x: planes (and right-hand sides) a multiple of 4 KiB apart would all fall
#: into the same L1 cache sets and evict each other
_PLANE_PAD = 16


def _planes(xt: np.ndarray, k: int) -> np.ndarray:
    """float32 (batch, k · plane): right-hand sides (batch, n) as ``k`` planes each, ``plane = n / k + pad``."""
    batch, n = xt.shape
    out = np.zeros((batch, k, n // k + _PLANE_PAD), np.float32)
    out[:, :, : n // k] = xt.reshape(batch, n // k, k).transpose(0, 2, 1)
    return out.reshape(batch, -1)


def planes_layout(bits: int, n: int, group: int) -> tuple[int, int]:
    """(groups per 8-word step, log2 of the words per group) when the plane path applies, else (0, 0)."""
    if bits not in (2, 4, 8):
        return 0, 0
    k = 32 // bits
    group_words = group // k
    if (n * bits) % 32 or group % k or group_words & (group_words - 1):
        return 0, 0  # rows end inside a word, groups split words, or groups are not 2**m words
    return max(1, 8 // group_words), group_words.bit_length() - 1


@kernel("quant", "matvec", "numba")
def matvec(packed: np.ndarray, scales: np.ndarray, offsets: np.ndarray, bits: int, n: int, group: int,
           x: np.ndarray) -> np.ndarray:
    """Same contract as :func:`tensorpress.kernels.reference.quant_matvec.matvec`."""
    rows = scales.shape[0]
    y = np.zeros(rows, np.float32)
    if rows == 0 or n == 0:
        return y
    x = np.ascontiguousarray(x, np.float32)
    sc = np.ascontiguousarray(scales, np.float32)
    of = np.ascontiguousarray(offsets, np.float32)
    xsum = np.add.reduceat(x.astype(np.float64), np.arange(0, n, group)).astype(np.float32)
    spread, gshift = planes_layout(bits, n, group)
    with balanced():
        if spread:
            k = 32 // bits
            xp = _planes(x[None, :], k).reshape(-1)
            _matvec_planes(_words(packed), packed, sc, of, xp, x, xsum, n, group, gshift, (0,) * bits, (0,) * spread,
                           y)
        elif chunks_layout(bits, n, group) >= 0:
            _matvec_chunks(packed, sc, of, x, xsum, n, group, chunks_layout(bits, n, group), (0,) * bits, y)
        else:
            _matvec_groups(packed, sc, of, x, xsum, bits, n, group, y)
    return y


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _matmul(packed, scales, offsets, bits, n, group, xt, out):  # numba infers the types
    rows, ngroups = scales.shape
    for task in numba.prange(tasks(rows)):
        lut = np.empty(256, np.float32)
        w = np.empty(n, np.float32)
        r0, r1 = task_rows(task, rows)
        for r in range(r0, r1):
            pos = r * n * bits
            for g in range(ngroups):
                j = g * group
                pos = _group_span(packed, lut, scales[r, g], offsets[r, g], bits, pos, w, j, min(j + group, n))
            dense_row_dot(w, xt, out[r])


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _matmul_planes(words, packed, scales, offsets, xp, xt, xsum, n, group, gshift, bits_t, spread_t, out):  # inferred
    bits = len(bits_t)
    k = 32 // bits
    rows, ngroups = scales.shape
    batch = out.shape[1]  # a multiple of 4 (zero right-hand sides pad it)
    words_per_row = n // k
    plane = xp.shape[1] // k
    steps = n // (8 * k)
    done = steps * 8 * k
    for task in numba.prange(tasks(rows)):
        r0, r1 = task_rows(task, rows)
        for r in range(r0, r1):
            for b0 in range(0, batch, 4):
                planes_dot4(words, r * words_per_row, xp[b0:], plane, steps, scales,  # type: ignore[call-arg]
                            r * ngroups, gshift, bits_t, spread_t, out[r], b0)
            for j in range(done, n):  # the columns after the last whole step
                w = scales[r, j // group] * np.float32(_code_at(packed, (r * n + j) * bits, bits))
                for b in range(batch):
                    out[r, b] += w * xt[b, j]
            for g in range(ngroups):
                for b in range(batch):
                    out[r, b] += offsets[r, g] * xsum[b, g]


@kernel("quant", "matmul", "numba")
def matmul(packed: np.ndarray, scales: np.ndarray, offsets: np.ndarray, bits: int, n: int, group: int,
           x: np.ndarray) -> np.ndarray:
    """Same contract as :func:`tensorpress.kernels.reference.quant_matvec.matmul`."""
    rows = scales.shape[0]
    batch = x.shape[1]
    if not (rows and n and batch):
        return np.zeros((rows, batch), np.float32)
    sc = np.ascontiguousarray(scales, np.float32)
    of = np.ascontiguousarray(offsets, np.float32)
    spread, gshift = planes_layout(bits, n, group)
    with balanced():
        if spread:
            k = 32 // bits
            padded = -(-batch // 4) * 4
            xt = np.zeros((padded, n), np.float32)
            xt[:batch] = np.asarray(x, np.float32).T
            xp = _planes(xt, k)
            xsum = np.add.reduceat(xt.astype(np.float64), np.arange(0, n, group), axis=1).astype(np.float32)
            out = np.zeros((rows, padded), np.float32)
            _matmul_planes(_words(packed), packed, sc, of, xp, xt, xsum, n, group, gshift, (0,) * bits,
                           (0,) * spread, out)
            return np.ascontiguousarray(out[:, :batch])
        out = np.zeros((rows, batch), np.float32)
        _matmul(packed, sc, of, bits, n, group, np.ascontiguousarray(np.asarray(x, np.float32).T), out)
    return out
