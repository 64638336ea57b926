"""Golden blobs: files written by earlier versions (tests/golden/, made by make_golden.py) must decode to
exactly the stored arrays, and the codec configuration inside them must still parse. A format change that
breaks old files fails here; regenerate with ``--force`` only when breaking them is the intent.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import tensorpress as tp
from tensorpress.core import Encoded, build, config_of

GOLDEN = Path(__file__).parent / "golden"
BLOBS = sorted(GOLDEN.glob("*.tpb"))
# the files this suite was started with; more appear as codecs are added
REQUIRED = {f"{name}.{crop}" for name in ("raw", "zstd", "blosc", "raw_zstd") for crop in ("camera", "disparity")}


def make_golden() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stem(path: Path) -> str:
    return path.name.removesuffix(".tpb")


def test_golden_files_are_present() -> None:
    missing = REQUIRED - {stem(p) for p in BLOBS}
    assert not missing, f"golden blobs missing: {sorted(missing)}"
    for blob in BLOBS:
        for suffix in (".npy", ".json"):
            assert blob.with_name(stem(blob) + suffix).is_file(), f"{blob.name} has no {suffix} companion"


@pytest.mark.parametrize("path", BLOBS, ids=stem)
def test_golden_blob_decodes_exactly(path: Path) -> None:
    blob = path.read_bytes()
    expected = np.load(path.with_name(stem(path) + ".npy"), allow_pickle=False)
    decoded = Encoded.from_bytes(blob).decode()
    assert decoded.shape == expected.shape and decoded.dtype == expected.dtype
    assert decoded.tobytes() == expected.tobytes()  # bit for bit, NaN payloads and signed zeros included


@pytest.mark.parametrize("path", BLOBS, ids=stem)
def test_golden_codec_configuration_still_parses(path: Path) -> None:
    blob = path.read_bytes()
    hlen = struct.unpack_from("<I", blob, 8)[0]
    stored = json.loads(blob[16 : 16 + hlen])["codec"]
    codec = build(stored)
    info = json.loads(path.with_name(stem(path) + ".json").read_text())
    assert tp.spec(info["spec"]) == codec  # the spec that wrote the file still means the same codec
    assert tp.spec(info["canonical"]) == codec
    assert tp.spec(str(codec)) == codec and build(config_of(codec)) == codec
    assert Encoded.from_bytes(blob).codec == codec


def test_make_golden_adds_without_rewriting(tmp_path: Path) -> None:
    script = make_golden()
    first = script.write(["zstd", "raw | zstd"], tmp_path)
    names = ["raw_zstd.camera.tpb", "raw_zstd.disparity.tpb", "zstd.camera.tpb", "zstd.disparity.tpb"]
    assert sorted(p.name for p in first) == names
    kept = tmp_path / "zstd.camera.tpb"
    kept.write_bytes(b"kept")
    added = script.write(["zstd", "raw | zstd", "raw"], tmp_path)
    assert [p.name for p in added] == ["raw.camera.tpb", "raw.disparity.tpb"]
    assert kept.read_bytes() == b"kept"
    assert len(script.write(["zstd"], tmp_path, force=True)) == 2
    assert kept.read_bytes() != b"kept"
    assert "raw | zstd" in script.default_specs() and "zstd" in script.default_specs()
