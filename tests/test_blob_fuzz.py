"""Fuzzing the blob reader: arbitrary bytes, forged headers and mutated real blobs either decode or raise a
TensorpressError — never another exception, never a hang.

The mutated blobs come from every example spec of every registered codec, so a new codec is fuzzed the
moment it registers. Decoding is limited to 64 MiB here, so a forged size cannot make a test allocate much.
"""

from __future__ import annotations

import copy
import json
import warnings
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensorpress as tp
from blob_helpers import BASE, PREFIX, crc, pack, payload_spans, relayout, time_limit
from tensorpress.core import CODECS, BlobError, Encoded, TensorpressError

LIMIT = 64 << 20
FUZZ = settings(
    max_examples=120,
    deadline=2000,  # ms; a decode of these small blobs takes well under 10 ms
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,  # the same examples every run: a failure here reproduces
)


@pytest.fixture(scope="module", autouse=True)
def small_decode_limit() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TENSORPRESS_MAX_DECODE_BYTES", str(LIMIT))
        yield


@pytest.fixture(scope="module")
def crops(camera: np.ndarray, disparity: np.ndarray) -> list[np.ndarray]:
    """Real data: a 48x64 uint8 crop of the camera photo and a finite 48x64 float32 disparity crop."""
    disp = np.ascontiguousarray(disparity[413:461, 148:212])
    assert np.isfinite(disp).all()
    return [np.ascontiguousarray(camera[180:228, 200:264]), disp]


def examples() -> list[str]:
    specs = [ex for _, cls in CODECS.items() for ex in cls.examples]
    return [*specs, "raw | zstd", "raw | zstd | blosc"]


def encodings(spec: str, crops: list[np.ndarray]) -> list[tuple[np.ndarray, bytes]]:
    """(input, blob) for each crop the codec takes."""
    codec = tp.spec(spec)
    out = []
    for x in crops:
        if x.dtype.kind == "u" and not codec.accepts_integers:
            continue
        out.append((x, codec.encode(x).to_bytes()))
    if not out:
        pytest.fail(f"{spec} takes neither real crop (uint8 photo, float32 disparity)")
    return out


def decode_or_refuse(blob: bytes, *, verify: bool = True) -> np.ndarray | None:
    """Decoded array, or None when the blob was refused with a TensorpressError.

    Any other exception propagates and fails the test. NumPy's floating-point warnings are silenced: with
    checksums off or a forged header, codecs legitimately compute on garbage numbers (inf * 0 and the like).
    """
    with time_limit(10), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, message=r"(invalid value|overflow|divide)")
        try:
            enc = Encoded.from_bytes(blob, verify=verify)
            out = enc.decode()
        except TensorpressError:
            return None
    assert isinstance(out, np.ndarray)
    assert out.shape == enc.shape and out.dtype == enc.dtype
    return out


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# --- arbitrary bytes --------------------------------------------------------------------------------------
def framed(text: bytes, tail: bytes) -> bytes:
    """A valid prefix (magic, version, length, checksum) around arbitrary header bytes."""
    return PREFIX.pack(b"TPRS", 1, 0, 0, len(text), crc(text)) + text + tail


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, -1, 63, 64, BASE, 2**31, 2**32 - 1, 2**62, 2**63, 10**12])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["raw", "zstd", "blosc", "array", "bytes", "encoded", "data", "body", "<f4", "|u1", "<f8"])
    | st.sampled_from(["a", "S1", "<U4", "O", "M8", "float32", "<c8", ">f4", "bfloat16", "<f16", "V8"])
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)
HEADER_KEYS = ["codec", "shape", "dtype", "meta", "parts", "size"]
JSON_HEADERS = st.dictionaries(st.sampled_from(HEADER_KEYS) | st.text(max_size=6), JSON_VALUES, max_size=7)

# Header text assembled from JSON tokens, hostile numbers and constants included.
JSON_TOKENS = [
    *(b"{", b"}", b"[", b"]", b",", b":", b"true", b"null", b"NaN", b"Infinity", b"-Infinity", b"1e999"),
    *(b"-1", b"0", b"64", b"4096", b"1" + b"0" * 5000, b'"\\ud800"', b'"a"', b'"<f4"', b'"|u1"'),
    *(b'"size"', b'"shape"', b'"dtype"', b'"meta"', b'"parts"', b'"codec"', b'"name"', b'"configuration"'),
    *(b'"kind"', b'"offset"', b'"nbytes"', b'"crc32c"', b'"raw"', b'"zstd"', b'"array"', b'"encoded"'),
]
TOKEN_HEADERS = st.lists(st.sampled_from(JSON_TOKENS), max_size=60).map(b"".join)

ARBITRARY_BLOBS = st.one_of(
    st.tuples(TOKEN_HEADERS, st.binary(max_size=200)).map(lambda t: framed(*t)),
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b"TPRS" + b),
    st.tuples(st.binary(max_size=200), st.binary(max_size=200)).map(lambda t: framed(*t)),
    st.tuples(JSON_HEADERS, st.binary(max_size=2000)).map(lambda t: framed(json.dumps(t[0]).encode(), t[1])),
)


@FUZZ
@given(ARBITRARY_BLOBS, st.booleans())
def test_arbitrary_bytes(blob: bytes, verify: bool) -> None:
    decode_or_refuse(blob, verify=verify)


# --- forged headers on real blobs ---------------------------------------------------------------------------
def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key/index path in a JSON tree."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


@pytest.fixture(scope="module")
def relaid(crops: list[np.ndarray]) -> list[tuple[bytes, dict[str, Any], bytes]]:
    """(blob, header, payload region) of every example encoding; header and region in the hand-built layout."""
    return [(blob, *relayout(blob)) for spec in examples() for _, blob in encodings(spec, crops)]


def test_relaid_blobs_decode_like_the_originals(relaid: list[Any]) -> None:
    for blob, header, region in relaid:
        y = decode_or_refuse(pack(header, region))
        assert y is not None and same(y, Encoded.from_bytes(blob).decode())


@FUZZ
@given(data=st.data())
def test_forged_header_fields(relaid: list[Any], data: st.DataObject) -> None:
    _, header, region = data.draw(st.sampled_from(relaid))
    header = copy.deepcopy(header)
    path = data.draw(st.sampled_from(list(paths(header))))
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    value, new_key, verify = data.draw(JSON_VALUES), data.draw(st.text(max_size=6)), data.draw(st.booleans())
    if action == "replace":
        parent[path[-1]] = value
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[new_key] = value
    else:
        parent.insert(path[-1], value)
    decode_or_refuse(pack(header, region), verify=verify)


# --- byte mutations of real blobs --------------------------------------------------------------------------
def mutate(blob: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    b = bytearray(blob)
    op = ("flip", "insert", "delete", "truncate")[int(rng.integers(4))]
    if op == "flip":
        b[int(rng.integers(len(b)))] ^= int(rng.integers(1, 256))
    elif op == "insert":
        at = int(rng.integers(len(b) + 1))
        b[at:at] = rng.bytes(int(rng.integers(1, 9)))
    elif op == "delete":
        at = int(rng.integers(len(b)))
        del b[at : at + int(rng.integers(1, 9))]
    else:
        del b[int(rng.integers(len(b))) :]
    return op, bytes(b)


MUTATIONS = 300  # random mutations per blob, read with checksums
UNVERIFIED = 20  # of those, read again without checksums (a full decode each: the slow part)
PAYLOAD_FLIPS = 40  # flips inside part payloads per blob


@pytest.mark.parametrize("spec", examples())
def test_mutated_real_blobs(spec: str, crops: list[np.ndarray]) -> None:
    rng = np.random.default_rng(zlib.crc32(spec.encode()))
    for _, blob in encodings(spec, crops):
        expected = Encoded.from_bytes(blob).decode()
        for i in range(MUTATIONS):
            op, bad = mutate(blob, rng)
            y = decode_or_refuse(bad)
            # Checksums cover the header and every payload: what still decodes differs only in padding,
            # reserved bytes or the minor version, so it must decode to exactly the same array.
            if y is not None:
                assert same(y, expected), f"{op} mutation decoded to different data"
            if i < UNVERIFIED:
                decode_or_refuse(bad, verify=False)


@pytest.mark.parametrize("spec", examples())
def test_payload_flips_are_always_detected(spec: str, crops: list[np.ndarray]) -> None:
    rng = np.random.default_rng(zlib.crc32(spec.encode()) + 1)
    for _, blob in encodings(spec, crops):
        spans = [s for s in payload_spans(blob) if s[2] > s[1]]
        assert spans, f"{spec} stored no payload bytes"
        for i in range(PAYLOAD_FLIPS):
            name, start, end = spans[i % len(spans)]
            bad = bytearray(blob)
            bad[int(rng.integers(start, end))] ^= int(rng.integers(1, 256))
            with pytest.raises(BlobError, match=f"part {name!r} is corrupt: checksum mismatch"):
                Encoded.from_bytes(bytes(bad))
            if i < UNVERIFIED:  # without checksums the codec's decoder meets the damage: data or a clear error
                decode_or_refuse(bytes(bad), verify=False)


def test_header_flips_are_always_detected(crops: list[np.ndarray]) -> None:
    blob = tp.encode(crops[1], "raw | zstd").to_bytes()
    hlen = PREFIX.unpack_from(blob, 0)[4]
    for at in range(PREFIX.size, PREFIX.size + hlen):
        bad = bytearray(blob)
        bad[at] ^= 0x01
        with pytest.raises(BlobError, match="header is corrupt: checksum mismatch"):
            Encoded.from_bytes(bytes(bad))
