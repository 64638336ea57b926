"""Large parts are checksummed when first read, or by the decode kernel while it reads them (see
:class:`tensorpress.core.blob.CheckedParts`): corruption is still always refused, and the parallel CRC
kernel agrees with google_crc32c."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor

import google_crc32c
import numpy as np
import pytest

import tensorpress as tp
from blob_helpers import payload_spans
from tensorpress.core import BlobError, Encoded
from tensorpress.core.blob import DEFERRED_CRC_BYTES, CheckedParts

crc_kernel = pytest.importorskip("tensorpress.kernels.numba.crc32c")


@pytest.fixture(scope="module")
def big(camera: np.ndarray, disparity: np.ndarray) -> np.ndarray:
    """Real data over the deferral threshold: the camera photo tiled with the disparity map, as float32."""
    disp = np.where(np.isfinite(disparity), disparity, 0).astype(np.float32)
    width = min(camera.shape[1], disp.shape[1])
    tile = np.concatenate([camera.astype(np.float32)[:, :width], disp[:, :width]], axis=0)
    reps = -(-12 * DEFERRED_CRC_BYTES // tile.nbytes)
    return np.ascontiguousarray(np.tile(tile, (reps, 1)))


@pytest.mark.skipif(not crc_kernel.available(), reason="no crc32 instruction on this CPU")
@pytest.mark.parametrize("n", [0, 1, 7, 8, 23, 24, 25, 1000, (1 << 18) - 3, (1 << 18) + 5, 3 * (1 << 18) + 17])
def test_sliced_crc_matches_google_crc32c(camera: np.ndarray, n: int) -> None:
    data = np.resize(camera.ravel(), n + 3)
    expected = google_crc32c.value(data[3:].tobytes())
    with ThreadPoolExecutor(3) as pool:
        for pieces in (1, 2, 3, 4):  # unaligned start too; slices of a few bytes, or none, included
            assert crc_kernel.crc32c(data[3:], pool, pieces) == expected


SPANS = [crc_kernel._span_streams] + ([crc_kernel.span] if crc_kernel.wide_available() else [])


@pytest.mark.skipif(not crc_kernel.available(), reason="no crc32 instruction on this CPU")
@pytest.mark.parametrize("span", SPANS, ids=lambda f: f.__name__)
def test_span_from_any_register_matches_google_crc32c(camera: np.ndarray, span: object) -> None:
    """Both engines (the three ``crc32`` streams everywhere, the fused fold and streams where the CPU has
    ``vpclmulqdq``): any start, any length around the step and block sizes, any starting register."""
    data = np.resize(camera.ravel(), (1 << 18) + 100)
    rng = np.random.default_rng(1)
    step = crc_kernel._STEP
    lengths = [0, 1, 8, 23, 24, 25, step - 1, step, step + 1, 2 * step, 2 * step + 7, 5 * step + 100, 65536,
               (1 << 18) + 3] + [int(n) for n in rng.integers(0, 20000, 40)]
    for n in lengths:
        start = int(rng.integers(0, 64))
        reg = int(rng.integers(0, 1 << 32))
        got = int(span(data, start, start + n, np.uint32(reg)))  # type: ignore[operator]
        assert got ^ 0xFFFFFFFF == google_crc32c.extend(reg ^ 0xFFFFFFFF, data[start:start + n].tobytes()), n


@pytest.mark.skipif(not crc_kernel.available(), reason="no crc32 instruction on this CPU")
def test_join_of_pieces_matches_google_crc32c(camera: np.ndarray) -> None:
    """Pieces of random lengths (empty ones and ones under the five bytes a power of x needs included) and of
    equal lengths, as a kernel's blocks are, joined into the CRC of the whole."""
    data = camera.ravel()
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(0, 5000))
        pieces = int(rng.integers(1, 70))
        cuts = (np.arange(1, pieces) * (n // pieces) if trial % 2 else
                np.sort(rng.integers(0, n + 1, pieces - 1)))
        bounds = np.concatenate([[0], cuts, [n]]).astype(np.int64)
        regs = np.array([crc_kernel.span(data, bounds[i], bounds[i + 1], 0xFFFFFFFF if i == 0 else 0)
                         for i in range(pieces)], np.uint32)
        assert crc_kernel.join(regs, np.diff(bounds)) == google_crc32c.value(data[:n].tobytes())


@pytest.mark.skipif(not crc_kernel.available(), reason="no crc32 instruction on this CPU")
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("rows, n", [(1, 7), (3, 100), (63, 131), (65, 512), (200, 37), (70, 7), (512, 96), (9, 40),
                                     (9, 80), (1100, 8192), (1100, 8189)])
def test_checked_decode_kernel_matches_plain_decode_and_crc(camera: np.ndarray, bits: int, rows: int,
                                                             n: int) -> None:
    """Row blocks of every length, rows that end mid-byte, shorter last blocks, trailing blocks with no rows
    before a padded last byte (70 x 7 at 3 and 5 bits), the word-wise loop (2, 4 and 8 bits with n a multiple of
    the codes per word; with a shorter last group at n = 40 and 80) and the byte-wise one, blocks checked in several
    32 KiB steps with a shorter last one (1100 rows of 8192, and of 8189 where rows end mid-byte): the fused CRCs
    of the codes, scales and minimums are exact, and the kernels decode what the reference does, from float16 or
    float32 parameters, with minimums or symmetric, also from codes that start at an odd address."""
    from tensorpress.kernels import get_kernel

    codec = tp.spec(f"quant(bits={bits}, group=32)")
    enc = codec.encode(np.resize(camera.astype(np.float32), (rows, n)))
    packed = enc.parts["codes"]
    shifted = np.zeros(packed.size + 3, np.uint8)[3:]
    shifted[:] = packed
    zero = 1 << (bits - 1)
    for dtype in (np.float16, np.float32):
        scales = enc.parts["scales"].astype(dtype)
        for mins in (enc.parts["mins"].astype(dtype), None):
            expected = get_kernel("quant", "decode_stored", "reference")(packed, scales, mins, zero, bits, n, 32)
            for codes in (packed, shifted):
                out, crc, crc_s, crc_m = get_kernel("quant", "decode_stored_crc", "numba")(codes, scales, mins, zero,
                                                                                           bits, n, 32)
                assert crc == google_crc32c.value(packed.tobytes())
                assert crc_s == google_crc32c.value(scales.tobytes())
                assert crc_m == (None if mins is None else google_crc32c.value(mins.tobytes()))
                np.testing.assert_array_equal(out, expected)
                np.testing.assert_array_equal(
                    get_kernel("quant", "decode_stored", "numba")(codes, scales, mins, zero, bits, n, 32), expected)
    scale32, offsets = get_kernel("quant", "parameters", "reference")(enc.parts["scales"], enc.parts["mins"], zero)
    np.testing.assert_array_equal(get_kernel("quant", "decode", "numba")(shifted, scale32, offsets, bits, n, 32),
                                  get_kernel("quant", "decode", "reference")(packed, scale32, offsets, bits, n, 32))


def test_decode_kernels_refuse_buffers_that_do_not_fit(camera: np.ndarray) -> None:
    """The numba decodes read raw addresses in their blocks: codes too short for the shape, or scales and offsets
    of another shape, are refused before any block runs."""
    from tensorpress.kernels import get_kernel

    enc = tp.spec("quant(bits=4, group=32)").encode(camera[:64, :128].astype(np.float32))
    packed = enc.parts["codes"]
    scales = enc.parts["scales"].astype(np.float32)
    offsets = enc.parts["mins"].astype(np.float32)
    for args in ((packed[:-1], scales, offsets), (packed, scales[:, :-1], offsets[:, :-1]),
                 (packed, scales, offsets[:-1])):
        with pytest.raises(ValueError, match="do not fit"):
            get_kernel("quant", "decode", "numba")(*args, 4, 128, 32)
    ops = ["decode_stored", "decode_stored_crc"] if crc_kernel.available() else ["decode_stored"]
    for op in ops:
        kernel = get_kernel("quant", op, "numba")
        for args in ((packed[:-1], scales, offsets), (packed, scales[:, :-1], offsets[:, :-1]),
                     (packed, scales, offsets[:-1]), (packed[:-1], scales, None)):
            with pytest.raises(ValueError, match="do not fit"):
                kernel(*args, 8, 4, 128, 32)
    if crc_kernel.available():
        with pytest.raises(ValueError, match="float16 or float32 of one type"):
            get_kernel("quant", "decode_stored_crc", "numba")(packed, scales, offsets.astype(np.float16), 8, 4, 128, 32)


def corrupt(blob: bytes, part: str, at: float = 0.5) -> bytes:
    spans = {name: (start, stop) for name, start, stop in payload_spans(blob)}
    start, stop = spans[part]
    pos = start + int((stop - start) * at)
    out = bytearray(blob)
    out[pos] ^= 0x10
    return bytes(out)


@pytest.mark.parametrize("backend", ["numba", "reference"])
@pytest.mark.parametrize("spec", ["quant(bits=4, group=128)", "quant(bits=8, group=64, symmetric=true)",
                                  "quant(bits=4, group=32, scale_bits=6)"])
def test_quant_codes_checked_while_decoding(big: np.ndarray, spec: str, backend: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORPRESS_BACKEND", backend)
    enc = tp.encode(big, spec)
    blob = enc.to_bytes()
    loaded = Encoded.from_bytes(blob)
    assert isinstance(loaded.parts, CheckedParts)  # the codes were left for the kernel
    np.testing.assert_array_equal(loaded.decode(), enc.decode())
    for at in (0.0, 0.5, 0.999):
        with pytest.raises(BlobError, match=r"codes.*checksum"):
            Encoded.from_bytes(corrupt(blob, "codes", at)).decode()


def test_deferred_part_checked_on_access(big: np.ndarray) -> None:
    blob = tp.encode(big, "raw").to_bytes()
    bad = Encoded.from_bytes(corrupt(blob, payload_spans(blob)[0][0]))
    with pytest.raises(BlobError, match="checksum"):
        dict(bad.parts)
    with pytest.raises(BlobError, match="checksum"):
        bad.to_bytes()
    good = Encoded.from_bytes(blob)
    assert good.to_bytes() == blob


def test_container_read_refuses_a_corrupt_chunk(big: np.ndarray, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "c.zarr")
    tp.save(path, {"w": tp.encode(big, "quant(bits=4, group=128)")}, progress=False)
    chunk = next(os.path.join(d, f) for d, _, files in os.walk(os.path.join(path, "w")) for f in files
                 if f != "zarr.json")
    with open(chunk, "rb") as fh:
        blob = fh.read()
    c = tp.open(path)
    np.testing.assert_array_equal(c.read("w"), c["w"][...])
    with open(chunk, "wb") as fh:
        fh.write(corrupt(blob, "codes"))
    with pytest.raises(BlobError, match="checksum"):
        tp.open(path).read("w")


@pytest.mark.parametrize("backend", ["numba", "reference"])
@pytest.mark.parametrize("spec", ["quant(bits=4, group=16)", "quant(bits=3, group=16, symmetric=true)"])
def test_quant_parameters_checked_while_converting(big: np.ndarray, spec: str, backend: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Scales and minimums over the deferral size are checked by the kernel that converts them (numba), or
    when taken as parts (reference): either way a flipped bit in them is refused."""
    monkeypatch.setenv("TENSORPRESS_BACKEND", backend)
    data = np.tile(big, (6, 1))
    enc = tp.encode(data, spec)
    blob = enc.to_bytes()
    names = ["scales"] if "symmetric" in spec else ["scales", "mins"]
    assert all(enc.parts[name].nbytes >= DEFERRED_CRC_BYTES for name in names)
    np.testing.assert_array_equal(Encoded.from_bytes(blob).decode(), enc.decode())
    for name in names:
        for at in (0.0, 0.5, 0.999):
            with pytest.raises(BlobError, match=rf"{name}.*checksum"):
                Encoded.from_bytes(corrupt(blob, name, at)).decode()


@pytest.mark.skipif(not crc_kernel.available(), reason="no crc32 instruction on this CPU")
@pytest.mark.parametrize("rows, groups", [(1, 1), (3, 5), (17, 2), (100, 33)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_parameters_kernel_matches_reference_and_crc(camera: np.ndarray, rows: int, groups: int,
                                                     dtype: type) -> None:
    from tensorpress.kernels import get_kernel

    values = np.resize(camera.astype(np.float32) / 255 - 0.5, (2, rows, groups)).astype(dtype)
    scales, mins = values[0], values[1]
    for m in (mins, None):
        want = get_kernel("quant", "parameters", "reference")(scales, m, 8)
        scale32, offsets, crc_s, crc_m = get_kernel("quant", "parameters_crc", "numba")(scales, m, 8)
        np.testing.assert_array_equal(scale32, want[0])
        np.testing.assert_array_equal(offsets, want[1])
        assert crc_s == google_crc32c.value(scales.tobytes())
        assert crc_m == (None if m is None else google_crc32c.value(m.tobytes()))
        for got, ref in zip(get_kernel("quant", "parameters", "numba")(scales, m, 8), want, strict=True):
            np.testing.assert_array_equal(got, ref)


def _decode_in_child(blob: bytes, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(float(np.asarray(tp.decode(blob), np.float64).sum()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("spec", ["raw", "blosc(cname=lz4)"])
def test_forked_child_decodes_after_the_parent_used_the_blob_threads(big: np.ndarray, spec: str) -> None:
    """The blob threads (sliced checksums, copies) and blosc's lock do not survive a fork: a child that
    decodes a large blob must get fresh ones rather than wait on the parent's."""
    blob = tp.encode(np.tile(big, (2, 1)), spec).to_buffer().tobytes()
    expected = float(np.asarray(tp.decode(blob), np.float64).sum())  # the parent's pool is busy first
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_decode_in_child, args=(blob, queue))
    child.start()
    child.join(timeout=60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the forked child hung decoding"
    assert queue.get(timeout=5) == expected
