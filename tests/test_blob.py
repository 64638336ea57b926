"""The blob format against hostile input: every truncated, corrupted or forged blob raises a
TensorpressError naming what is wrong, and no declared size is trusted before it is checked.

Well-formed blobs: ``nbytes`` counts every byte, parts sit at 64-byte multiples, and parsing bytes, a
bytearray, a memoryview or a memory-mapped file gives zero-copy array parts.
Fuzzers over arbitrary bytes, forged headers and mutated real blobs are in test_blob_fuzz.py.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
import time
import tracemalloc
from typing import Any

import blosc2
import numpy as np
import pytest
import zstandard

import tensorpress as tp
from blob_helpers import BASE, crc, layout, pack, payload_spans, raw_layout, read_header
from tensorpress.core import CODECS, BlobError, Encoded, TensorpressError, UnknownCodecError

ZSTD = {"name": "zstd", "configuration": {"level": 3, "threads": 0}}
RAW = {"name": "raw", "configuration": {}}


@pytest.fixture(autouse=True)
def default_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests here run with the default decode limit (physical memory)."""
    monkeypatch.delenv("TENSORPRESS_MAX_DECODE_BYTES", raising=False)


@pytest.fixture(scope="module")
def cam(camera: np.ndarray) -> np.ndarray:
    """32x32 uint8 crop of the camera photo."""
    return np.ascontiguousarray(camera[200:232, 200:232])


@pytest.fixture(scope="module")
def disp(disparity: np.ndarray) -> np.ndarray:
    """32x32 float32 crop of the Middlebury disparity map, where every value is finite."""
    crop = np.ascontiguousarray(disparity[413:445, 148:180])
    assert np.isfinite(crop).all()
    return crop


def load(blob: Any, **kw: Any) -> np.ndarray:
    return Encoded.from_bytes(blob, **kw).decode()


DELETE = object()


def forged(header: dict[str, Any], region: bytes, path: tuple[Any, ...], value: Any) -> bytes:
    """``header`` with the field at ``path`` set to ``value`` (deleted when ``value`` is ``DELETE``)."""
    target = json.loads(json.dumps(header))
    node = target
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return pack(target, region)


# --- the hand-built layout is a valid blob (so the failures below are caused by the forged field) ---------
def test_hand_built_blob_decodes(disp: np.ndarray) -> None:
    assert np.array_equal(load(pack(*raw_layout(disp))), disp)


# --- prefix and header framing --------------------------------------------------------------------------
def test_every_truncation_is_refused(cam: np.ndarray) -> None:
    blob = tp.encode(cam[:8, :8], "raw").to_bytes()
    for n in range(len(blob)):
        with pytest.raises(BlobError, match="truncated"):
            Encoded.from_bytes(blob[:n])


def test_trailing_bytes_are_ignored(cam: np.ndarray) -> None:
    blob = tp.encode(cam, "zstd").to_bytes()
    assert np.array_equal(load(blob + b"\xff" * 100), cam)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        ({"magic": b"PNG\x89"}, "not a tensorpress blob"),
        ({"major": 2}, r"format version 2\.0 is newer .* upgrade tensorpress"),
        ({"major": 255, "minor": 7}, r"version 255\.7 is newer"),
        ({"header_crc": 12345}, "header is corrupt: checksum mismatch"),
    ],
)
def test_prefix_fields(cam: np.ndarray, edit: dict[str, Any], fragment: str) -> None:
    with pytest.raises(BlobError, match=fragment):
        Encoded.from_bytes(pack(*raw_layout(cam), **edit))


def test_header_checksum_is_checked_when_the_header_was_parsed_before(cam: np.ndarray) -> None:
    """Parsed headers are kept by their text; the same text under a wrong stored checksum is still refused."""
    blob = pack(*raw_layout(cam))
    assert np.array_equal(load(blob), cam)  # its header is now kept
    bad = bytearray(blob)
    struct.pack_into("<I", bad, 12, struct.unpack_from("<I", blob, 12)[0] ^ 1)
    with pytest.raises(BlobError, match="header is corrupt: checksum mismatch"):
        Encoded.from_bytes(bytes(bad))
    assert np.array_equal(load(blob), cam)


def test_newer_minor_version_is_read(cam: np.ndarray) -> None:
    assert np.array_equal(load(pack(*raw_layout(cam), minor=9)), cam)


def test_header_length_beyond_the_blob(cam: np.ndarray) -> None:
    blob = bytearray(pack(*raw_layout(cam)))
    for hlen in (len(blob), 2**32 - 1):
        struct.pack_into("<I", blob, 8, hlen)
        with pytest.raises(BlobError, match="truncated or corrupt: header of"):
            Encoded.from_bytes(bytes(blob))


@pytest.mark.parametrize("data", ["a string", 12345, None, [1, 2]])
def test_not_bytes(data: Any) -> None:
    with pytest.raises(BlobError, match="expected bytes-like blob"):
        Encoded.from_bytes(data)


@pytest.mark.parametrize(
    "text",
    [
        b"\xff\xfe not utf-8",
        b'{"size": 10',
        b'{"size": NaN}',
        b'{"meta": {"x": Infinity}}',
        b'{"meta": {"x": 1e999}}',
        b'{"size": 1' + b"0" * 5000 + b"}",  # past Python's int digit limit
        b"[" * 100_000 + b"]" * 100_000,  # deeper than Python can recurse
    ],
)
def test_header_is_not_valid_json(text: bytes) -> None:
    with pytest.raises(BlobError, match="not valid JSON"):
        Encoded.from_bytes(pack(text) + bytes(64))


@pytest.mark.parametrize("text", [b"[]", b'"header"', b"17", b"null"])
def test_header_is_not_an_object(text: bytes) -> None:
    with pytest.raises(BlobError, match="not a JSON object"):
        Encoded.from_bytes(pack(text))


def test_deeply_nested_header_is_refused(cam: np.ndarray) -> None:
    header, region = raw_layout(cam)
    deep: Any = 1
    for _ in range(40):
        deep = {"k": [deep]}
    header["meta"] = {"deep": deep}
    with pytest.raises(BlobError, match="nests deeper than 32 levels"):
        Encoded.from_bytes(pack(header, region))


# --- header fields: missing, wrong type, negative, absurd ---------------------------------------------------
TOP_LEVEL_CASES = [
    (("size",), DELETE, "'size' is missing or malformed"),
    (("size",), "8192", "'size' is missing or malformed"),
    (("size",), True, "'size' is missing or malformed"),
    (("size",), 1.5, "'size' is missing or malformed"),
    (("size",), -1, "'size' is negative"),
    (("size",), 2**62, "truncated: header declares 4611686018427387904 bytes"),
    (("shape",), DELETE, "'shape' is missing or malformed"),
    (("shape",), {"rows": 32}, "'shape' is missing or malformed"),
    (("shape",), [-1, 32], "not a list of non-negative integers"),
    (("shape",), [32.0, 32], "not a list of non-negative integers"),
    (("shape",), [True, 32], "not a list of non-negative integers"),
    (("shape",), [1] * 65, "not a list of non-negative integers"),
    (("shape",), [2**40, 2**40], "absurdly large"),
    (("dtype",), 7, "'dtype' is missing or malformed"),
    (("dtype",), "<c8", "unsupported dtype '<c8'"),
    (("dtype",), "a", "unsupported dtype 'a'"),
    (("dtype",), "O", "unsupported dtype 'O'"),
    (("dtype",), "float32", "unsupported dtype 'float32'"),
    (("dtype",), "<f3", "unknown dtype '<f3'"),
    (("meta",), [], "'meta' is missing or malformed"),
    (("parts",), {}, "'parts' is missing or malformed"),
    (("parts", 0), "data", "non-object entry"),
    (("codec",), DELETE, "'codec' is missing or malformed"),
    (("codec",), "raw", "'codec' is missing or malformed"),
]


@pytest.mark.parametrize(("path", "value", "fragment"), TOP_LEVEL_CASES)
def test_forged_header_fields(disp: np.ndarray, path: tuple[Any, ...], value: Any, fragment: str) -> None:
    header, region = raw_layout(disp)
    with pytest.raises(BlobError, match=fragment):
        Encoded.from_bytes(forged(header, region, path, value))


PART_CASES = [
    ("name", 5, "'name' is missing or malformed"),
    ("kind", "pickle", "unknown kind 'pickle'"),
    ("kind", DELETE, "'kind' is missing or malformed"),
    ("offset", -64, "'offset' is negative"),
    ("offset", BASE + 1, "bad offset 4097"),  # not 64-byte aligned
    ("offset", 0, "bad offset 0"),  # inside the prefix
    ("offset", 64, "bad offset 64"),  # inside the header
    ("offset", 2**62, "bad offset"),
    ("nbytes", -4, "'nbytes' is negative"),
    ("nbytes", 2**62, "bad offset 4096 / size 4611686018427387904"),
    ("nbytes", 4097, "bad offset 4096 / size 4097"),  # one byte past the declared size
    ("crc32c", "x", "'crc32c' is missing or malformed"),
    ("crc32c", 0, "part 'data' is corrupt: checksum mismatch"),
    ("dtype", ">f4", "do not hold"),  # array parts are little-endian
    ("dtype", "<f8", "do not hold"),
    ("dtype", "<U8", "unsupported dtype"),
    ("shape", [33, 32], "do not hold"),
    ("shape", [-32, -32], "not a list of non-negative integers"),
]


@pytest.mark.parametrize(("field", "value", "fragment"), PART_CASES)
def test_forged_part_fields(disp: np.ndarray, field: str, value: Any, fragment: str) -> None:
    header, region = raw_layout(disp)
    with pytest.raises(BlobError, match=fragment):
        Encoded.from_bytes(forged(header, region, ("parts", 0, field), value))


def test_overlapping_parts(cam: np.ndarray) -> None:
    data = cam.tobytes()
    extra = {"dtype": "|u1", "shape": [32, 32]}
    header, region = layout(RAW, (32, 32), "|u1", [("data", "array", data, extra), ("copy", "array", data, extra)])
    header["parts"][1]["offset"] = header["parts"][0]["offset"] + 64  # same checksum over an overlapping span
    header["parts"][1]["nbytes"] = len(data) - 64
    header["parts"][1]["shape"] = [30, 32]
    header["parts"][1]["crc32c"] = crc(region[64 : len(data)])
    with pytest.raises(BlobError, match="parts 'data' and 'copy' overlap"):
        Encoded.from_bytes(pack(header, region))


def test_duplicate_part_names(cam: np.ndarray) -> None:
    extra = {"dtype": "|u1", "shape": [32, 32]}
    data = cam.tobytes()
    header, region = layout(RAW, (32, 32), "|u1", [("data", "array", data, extra), ("data", "array", data, extra)])
    with pytest.raises(BlobError, match="part 'data' appears twice"):
        Encoded.from_bytes(pack(header, region))


# --- the codec named in the header ------------------------------------------------------------------------
def test_unknown_codec_lists_the_registered_ones(cam: np.ndarray) -> None:
    header, region = raw_layout(cam)
    with pytest.raises(UnknownCodecError, match="unknown codec 'pickle'; registered: ") as info:
        Encoded.from_bytes(forged(header, region, ("codec",), {"name": "pickle", "configuration": {}}))
    assert all(name in str(info.value) for name in CODECS.names())


@pytest.mark.parametrize(
    ("codec", "fragment"),
    [
        ({"name": "zstd", "configuration": {"level": "fast"}}, "level expected int, got 'fast'"),
        ({"name": "zstd", "configuration": {"level": 99}}, "level must be in -7..22, got 99"),
        ({"name": "zstd", "configuration": {"speed": 1}}, "zstd has no parameter 'speed'"),
        ({"name": "zstd", "config": {}}, "expected {\"name\""),
        ({"name": 5}, "expected {\"name\""),
        ([ZSTD, RAW], "only byte compressors .* may follow the encoder"),
        ([], "a chain needs at least two codecs"),
    ],
)
def test_bad_codec_configuration(cam: np.ndarray, codec: Any, fragment: str) -> None:
    header, region = raw_layout(cam)
    with pytest.raises(TensorpressError, match=fragment):
        Encoded.from_bytes(forged(header, region, ("codec",), codec))


def test_codec_of_other_data_refuses_parts(disp: np.ndarray) -> None:
    header, region = raw_layout(disp)
    with pytest.raises(BlobError, match="zstd part 'data': expected bytes, got ndarray"):
        load(forged(header, region, ("codec",), ZSTD))
    with pytest.raises(BlobError, match="raw data has no part 'data'"):
        load(forged(header, region, ("parts", 0, "name"), "values"))
    with pytest.raises(BlobError, match=r"raw part 'data': expected shape \(16, 64\)"):
        load(forged(header, region, ("shape",), [16, 64]))
    with pytest.raises(BlobError, match="raw part 'data': expected int32 array, got float32"):
        load(forged(header, region, ("dtype",), "<i4"))


def test_chain_body_of_another_shape_is_inconsistent(cam: np.ndarray) -> None:
    blob = tp.encode(cam, "raw | zstd").to_bytes()
    header = read_header(blob)
    header["shape"] = [16, 64]  # same size, another shape: the body decodes to (32, 32)
    region = blob[header["parts"][0]["offset"] :]
    header["parts"][0]["offset"] = BASE
    header["size"] = BASE + len(region)
    with pytest.raises(BlobError, match=r"decoded to shape \(32, 32\) uint8, but its header records \(16, 64\)"):
        load(pack(header, region))


# --- decompression bombs: declared sizes are checked before anything is allocated ------------------------
def zstd_frame_claiming(n: int) -> bytes:
    """A zstd frame whose header declares ``n`` content bytes, followed by one empty last block."""
    return struct.pack("<IBQ", 0xFD2FB528, 0xE0, n) + b"\x01\x00\x00"


def refuse_fast(blob: bytes, fragment: str) -> None:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(BlobError, match=fragment):
            load(blob)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0
    assert peak < 1 << 20, f"refusing the blob allocated {peak} bytes"


@pytest.mark.parametrize("part", [zstandard.ZstdCompressor().compress(b"\0" * 1000), zstd_frame_claiming(8 * 10**12)])
def test_terabyte_shape_with_tiny_zstd_part(part: bytes) -> None:
    header, region = layout(ZSTD, (10**6, 10**6), "<f8", [("data", "bytes", part, {})])
    refuse_fast(pack(header, region), "decoded size of 8000000000000 bytes, over the limit")


@pytest.mark.parametrize("claimed", [129, 8 * 10**12, 2**63])
def test_zstd_frame_claiming_more_than_the_header(claimed: int) -> None:
    header, region = layout(ZSTD, (16,), "<f8", [("data", "bytes", zstd_frame_claiming(claimed), {})])
    refuse_fast(pack(header, region), f"zstd frame declares {claimed} bytes, the header 128")


def test_zstd_frame_without_content_size() -> None:
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"\1" * 128)
    header, region = layout(ZSTD, (16,), "<f8", [("data", "bytes", frame, {})])
    refuse_fast(pack(header, region), "zstd frame declares -1 bytes, the header 128")


def test_zstd_frame_holding_more_than_it_declares() -> None:
    frame = bytearray(zstandard.ZstdCompressor().compress(b"\7" * 100_000))
    assert zstandard.frame_content_size(bytes(frame)) == 100_000
    frame[5:9] = struct.pack("<I", 128)  # frame header: declare 128 bytes (the 4-byte content size field)
    if zstandard.frame_content_size(bytes(frame)) != 128:
        pytest.fail("test setup: could not rewrite the frame's content size")
    header, region = layout(ZSTD, (16,), "<f8", [("data", "bytes", bytes(frame), {})])
    refuse_fast(pack(header, region), "zstd data is corrupt")


def test_blosc_buffer_claiming_more_than_the_header() -> None:
    data = bytearray(blosc2.compress2(np.arange(16, dtype=np.float64).tobytes(), typesize=8))
    struct.pack_into("<I", data, 4, 2**31 - 1)  # blosc header: uncompressed size
    blosc = {"name": "blosc", "configuration": {"cname": "zstd", "clevel": 5, "shuffle": "byte", "typesize": 0}}
    header, region = layout(blosc, (16,), "<f8", [("data", "bytes", bytes(data), {})])
    refuse_fast(pack(header, region), "blosc data declares 2147483647 bytes, the header 128")


def test_chain_stage_size_over_the_limit(cam: np.ndarray) -> None:
    blob = tp.encode(cam, "raw | zstd").to_bytes()
    header = read_header(blob)
    header["meta"]["sizes"][0] = 10**15
    region = blob[header["parts"][0]["offset"] :]
    header["parts"][0]["offset"] = BASE
    header["size"] = BASE + len(region)
    refuse_fast(pack(header, region), "chain header: bad stage size 1000000000000000")


def test_decode_limit_follows_the_environment(monkeypatch: pytest.MonkeyPatch, cam: np.ndarray) -> None:
    blob = tp.encode(cam, "zstd").to_bytes()
    monkeypatch.setenv("TENSORPRESS_MAX_DECODE_BYTES", str(cam.size - 1))
    with pytest.raises(BlobError, match="decoded size of 1024 bytes, over the limit of 1023"):
        load(blob)
    monkeypatch.setenv("TENSORPRESS_MAX_DECODE_BYTES", str(cam.size))
    assert np.array_equal(load(blob), cam)


# --- nesting ------------------------------------------------------------------------------------------------
def test_nested_blob_parts_deeper_than_the_limit() -> None:
    inner = tp.encode(np.zeros(0, np.uint8), "raw").to_bytes()
    for _ in range(20):
        header, region = layout(RAW, (0,), "|u1", [("inner", "encoded", inner, {})])
        inner = pack(header, region)
    with pytest.raises(BlobError, match="blob nests deeper than 16 levels"):
        Encoded.from_bytes(inner)


def test_chains_nested_in_chain_bodies_deeper_than_the_limit(cam: np.ndarray) -> None:
    chain = tp.spec("raw | zstd")
    blob = tp.encode(cam[:4, :4], chain).to_bytes()
    for _ in range(40):  # each level: a chain whose compressed body is the previous chain blob
        body = zstandard.ZstdCompressor(level=1).compress(blob)
        meta = {"stages": [], "sizes": [len(blob), len(body)]}
        blob = Encoded(chain, (4, 4), np.dtype(np.uint8), {"body": body}, meta).to_bytes()
    with pytest.raises(BlobError, match="encoded data nests deeper than 32 levels"):
        load(blob)


# --- well-formed blobs: sizes, alignment, zero-copy parsing ------------------------------------------------
def examples() -> list[str]:
    return [ex for _, cls in CODECS.items() for ex in cls.examples] + ["raw | zstd", "raw | zstd | blosc"]


@pytest.mark.parametrize("spec", examples())
def test_nbytes_counts_every_byte_and_parts_are_aligned(spec: str, cam: np.ndarray, disp: np.ndarray) -> None:
    codec = tp.spec(spec)
    for data in (cam, disp):
        if data.dtype.kind == "u" and not codec.accepts_integers:
            continue
        enc = codec.encode(data)
        blob = enc.to_bytes()
        assert enc.nbytes == len(blob)
        again = Encoded.from_bytes(blob)
        assert again.nbytes == len(blob)
        assert again.to_bytes() == blob
        for name, start, end in payload_spans(blob):
            assert start % 64 == 0, f"part {name!r} starts at {start}"
            assert end <= len(blob)
        assert np.array_equal(again.decode(), enc.decode())


def test_empty_and_zero_d_blobs_round_trip() -> None:
    for x in (np.zeros((0, 5), np.float32), np.float64(math.pi), np.array(7, np.int16)):
        blob = tp.encode(x, "raw").to_bytes()
        y = load(blob)
        assert y.shape == np.shape(x) and y.dtype == np.asarray(x).dtype and np.array_equal(y, x)


def shares(part: np.ndarray, buffer: Any) -> bool:
    return bool(np.shares_memory(part, np.frombuffer(buffer, dtype=np.uint8)))


def test_parsing_bytes_bytearray_memoryview_is_zero_copy(disp: np.ndarray) -> None:
    blob = tp.encode(disp, "raw").to_bytes()
    for buffer in (blob, bytearray(blob), memoryview(blob), memoryview(bytearray(blob))):
        enc = Encoded.from_bytes(buffer)
        part = enc.parts["data"]
        assert shares(part, buffer), type(buffer).__name__
        assert not part.flags.writeable  # a decoded view must not write into the caller's blob
        assert np.array_equal(enc.decode(), disp)


def test_memory_mapped_file_is_zero_copy(tmp_path: Any, disp: np.ndarray) -> None:
    path = tmp_path / "disparity.tpb"
    path.write_bytes(tp.encode(disp, "raw").to_bytes())
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        enc = Encoded.from_bytes(mm)
        part = enc.parts["data"]
        assert shares(part, mm)
        decoded = enc.decode()
        assert np.array_equal(decoded, disp)
        assert np.shares_memory(decoded, part)  # raw decode of little-endian data copies nothing
        del enc, part, decoded  # release the views before the map closes


def test_payload_flip_is_detected_only_when_verifying(disp: np.ndarray) -> None:
    blob = bytearray(tp.encode(disp, "raw").to_bytes())
    (_, start, end), = payload_spans(bytes(blob))
    blob[(start + end) // 2] ^= 0x10
    with pytest.raises(BlobError, match="part 'data' is corrupt: checksum mismatch"):
        Encoded.from_bytes(bytes(blob))
    changed = load(bytes(blob), verify=False)
    assert int((changed != disp).sum()) == 1  # without checksums the flipped element comes through


def test_header_cache_under_threads(camera: np.ndarray) -> None:
    """Blobs parsed from several threads at once, more distinct headers than the cache keeps: every one
    parses and decodes to its own data (the cache evicts under a lock)."""
    from concurrent.futures import ThreadPoolExecutor

    from tensorpress.core import blob as blob_module

    blobs = [(camera[: 8 + i % 40, : 8 + i // 40], tp.encode(camera[: 8 + i % 40, : 8 + i // 40], "zstd").to_bytes())
             for i in range(blob_module._CACHED_HEADERS + 64)]

    def check(item: tuple[np.ndarray, bytes]) -> bool:
        return bool(np.array_equal(tp.decode(item[1]), item[0]))

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(check, blobs * 2))
    assert len(blob_module._HEADERS) <= blob_module._CACHED_HEADERS
