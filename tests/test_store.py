"""Storage layer: the zarr v3 codec, the numcodecs codec and zarr-group containers, on real sample data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import ml_dtypes
import numcodecs
import numpy as np
import pytest
import zarr

import tensorpress as tp
from tensorpress.core import BlobError, ContainerError, InputError, SpecError, build, config_of
from tensorpress.store import Container, TensorpressCodec, TensorpressNumcodecs, save
from tensorpress.store import container as container_module


def needs(*codec_ids: str) -> None:
    missing = [c for c in codec_ids if c not in tp.available()]
    if missing:
        pytest.skip(f"codec(s) {missing} not registered")


def chunk_files(root: Path) -> dict[str, bytes]:
    """Every chunk file under a directory container, by path relative to it (metadata documents left out)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    }


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (warnings are errors there too); return its stdout."""
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- zarr v3 codec ---------------------------------------------------------------------------------------


def test_zarr_codec_round_trip_in_several_chunks(tmp_path: Path, camera: np.ndarray) -> None:
    path = tmp_path / "camera.zarr"
    arr = zarr.create_array(
        path, shape=camera.shape, dtype=camera.dtype, chunks=(128, 200),
        serializer=tp.zarr_codec("zstd(level=5)"), compressors=None,
    )
    arr[...] = camera
    assert np.array_equal(arr[...], camera)
    assert np.array_equal(arr[100:300, 150:450], camera[100:300, 150:450])
    meta = json.loads((path / "zarr.json").read_text())
    assert meta["codecs"] == [
        {"name": "tensorpress", "configuration": {"spec": config_of(build("zstd(level=5)"))}}
    ]
    chunks = chunk_files(path)
    assert len(chunks) == 4 * 3  # 512/128 rows × ceil(512/200) columns
    for blob in chunks.values():  # each chunk is one self-describing blob of the full chunk shape
        enc = tp.Encoded.from_bytes(blob)
        assert enc.shape == (128, 200) and enc.dtype == np.uint8


def test_zarr_codec_lossy_chain_keeps_its_bound(tmp_path: Path, disparity: np.ndarray) -> None:
    needs("bitround")
    arr = zarr.create_array(
        tmp_path / "d.zarr", shape=disparity.shape, dtype=disparity.dtype, chunks=(128, 256),
        serializer=tp.zarr_codec("bitround(keep=7) | zstd"), compressors=None,
    )
    arr[...] = disparity
    got = arr[...]
    normal = np.isfinite(disparity) & (disparity != 0)
    rel = np.abs(got[normal] - disparity[normal]) / np.abs(disparity[normal])
    assert rel.max() <= 2.0**-8
    assert np.array_equal(got[~normal], disparity[~normal])  # zeros and infinities stay exact


def test_zarr_codec_configuration_round_trips() -> None:
    chain = "bitround(keep=7) | zstd" if "bitround" in tp.available() else "raw | zstd(level=9)"
    for spec in ("zstd(level=5)", chain):
        codec = TensorpressCodec(spec=spec)
        assert codec == TensorpressCodec(spec=build(spec)) == TensorpressCodec(spec=config_of(build(spec)))
        as_dict = codec.to_dict()
        assert as_dict == {"name": "tensorpress", "configuration": {"spec": config_of(build(spec))}}
        assert TensorpressCodec.from_dict(json.loads(json.dumps(as_dict))) == codec
    assert isinstance(TensorpressCodec(spec=chain).to_dict()["configuration"]["spec"], list)
    with pytest.raises(ValueError, match="spec"):
        TensorpressCodec.from_dict({"name": "tensorpress", "configuration": {"level": 3}})
    with pytest.raises(SpecError):
        TensorpressCodec(spec="zstd(levle=3)")
    with pytest.raises(ValueError, match="bool, integer and floating point"):
        zarr.create_array({}, shape=(3,), dtype="U5", serializer=tp.zarr_codec("zstd"), compressors=None)


def test_plain_zarr_reads_in_a_fresh_process(tmp_path: Path, camera: np.ndarray, faces: np.ndarray) -> None:
    save(tmp_path / "c.zarr", {"model.camera": camera, "faces/stack": faces}, spec="zstd", progress=False)
    save(tmp_path / "c.zip", {"model.camera": camera}, spec="blosc", progress=False)
    v2 = zarr.create_array(
        tmp_path / "v2.zarr", shape=faces.shape, dtype=faces.dtype, chunks=(64, 25, 25), zarr_format=2,
        compressors=TensorpressNumcodecs("zstd"), filters=None,
    )
    v2[...] = faces
    out = run_python(f"""
        import sys, zarr
        from zarr.storage import ZipStore
        assert "tensorpress" not in sys.modules
        g = zarr.open_group({str(tmp_path / "c.zarr")!r}, mode="r")
        z = zarr.open_group(ZipStore({str(tmp_path / "c.zip")!r}, mode="r"), mode="r")
        v2 = zarr.open_array({str(tmp_path / "v2.zarr")!r}, mode="r")
        print(int(g["model.camera"][...].astype("int64").sum()), repr(float(g["faces/stack"][...].sum())))
        print(int(z["model.camera"][...].astype("int64").sum()), repr(float(v2[...].sum())))
    """)
    first, second = out.split("\n")[:2]
    assert first == f"{int(camera.astype(np.int64).sum())} {float(faces.sum())!r}"
    assert second == f"{int(camera.astype(np.int64).sum())} {float(faces.sum())!r}"


def test_imports_stay_light() -> None:
    out = run_python("""
        import sys
        import tensorpress
        light = "zarr" not in sys.modules
        import tensorpress.store
        print(light, "zarr" in sys.modules, "torch" in sys.modules)
        tensorpress.store.Container, tensorpress.store.TensorpressNumcodecs
        print("torch" in sys.modules)
    """)
    assert out.split() == ["True", "False", "False", "False"]


# --- numcodecs codec -------------------------------------------------------------------------------------


def test_numcodecs_round_trip_and_config(faces: np.ndarray) -> None:
    codec = TensorpressNumcodecs("zstd(level=5)")
    blob = codec.encode(faces)
    assert isinstance(blob, bytes) and len(blob) < faces.nbytes
    assert np.array_equal(codec.decode(blob), faces)
    out = np.empty_like(faces)
    assert codec.decode(blob, out=out) is out and np.array_equal(out, faces)
    config = codec.get_config()
    assert config == {"id": "tensorpress", "spec": config_of(build("zstd(level=5)"))}
    again = numcodecs.get_codec(json.loads(json.dumps(config)))
    assert isinstance(again, TensorpressNumcodecs) and again == codec
    assert TensorpressNumcodecs.from_config(config) == codec
    assert repr(codec) == "TensorpressNumcodecs(spec='zstd(level=5, threads=0)')"
    # big-endian input decodes to big-endian output; into a little-endian ``out`` the values are kept
    big = faces.astype(">f8")
    out = np.empty_like(faces)
    codec.decode(codec.encode(big), out=out)
    assert np.array_equal(out, faces)
    with pytest.raises(ValueError, match="spec"):
        TensorpressNumcodecs.from_config({"id": "tensorpress", "level": 3})


# --- containers ------------------------------------------------------------------------------------------


@pytest.fixture()
def tensors(camera: np.ndarray, faces: np.ndarray, disparity: np.ndarray) -> dict[str, Any]:
    return {
        "model.layers.0.weight": disparity,
        "vision/camera": camera,
        "vision/faces": faces.astype(">f8"),  # big-endian input
        "model.norm.bias": disparity[0].copy(),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.float32(disparity[7, 9]),
        "flag": camera > 128,
    }


@pytest.mark.parametrize("suffix", [".zarr", ".zip"])
def test_save_and_open(tmp_path: Path, tensors: dict[str, Any], suffix: str) -> None:
    path = tmp_path / f"c{suffix}"
    attrs = {"model_type": "demo", "hidden_size": 741, "rope": {"theta": 1e4}}
    tp.save(path, tensors, spec="zstd", attrs=attrs, progress=False)
    assert path.is_dir() == (suffix == ".zarr") and path.is_file() == (suffix == ".zip")
    with tp.open(path) as c:
        assert list(c) == list(tensors) and len(c) == len(tensors)
        assert c.attrs == attrs
        for name, x in tensors.items():
            arr = c[name]
            assert isinstance(arr, zarr.Array)
            got = arr[...]
            assert got.shape == np.shape(x) and np.array_equal(got, x)
            assert got.dtype == np.asarray(x).dtype.newbyteorder("<")
            assert arr.attrs["tensorpress"] == {"spec": "zstd(level=3, threads=0)"}
        assert np.array_equal(c["vision/camera"][40:90, 7], tensors["vision/camera"][40:90, 7])
        assert "missing" not in c
        with pytest.raises(KeyError):
            c["missing"]


def test_encoded_is_stored_byte_for_byte(tmp_path: Path, camera: np.ndarray, disparity: np.ndarray) -> None:
    spec = "quant(bits=4, group=128)" if "quant" in tp.available() else "zstd(level=7)"
    enc = tp.encode(camera.astype(np.float32) / 255, spec)
    path = tmp_path / "c.zarr"
    tp.save(path, {"w": enc, "raw": disparity}, spec="raw", progress=False)
    assert chunk_files(path)["w/c/0/0"] == enc.to_bytes()
    with tp.open(path) as c:
        back = c.encoded("w")
        assert back.to_bytes() == enc.to_bytes() and str(back.codec) == str(enc.codec)
        assert np.array_equal(c["w"][...], enc.decode())
        assert c["w"].attrs["tensorpress"]["spec"] == str(build(spec))
        assert np.array_equal(c.encoded("raw").decode(), disparity)
    zipped = tmp_path / "c.zip"
    tp.save(zipped, {"w": enc}, progress=False)
    with tp.open(zipped) as c:
        assert c.encoded("w").to_bytes() == enc.to_bytes()


def test_container_reads_under_the_decode_limit_it_was_opened_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, camera: np.ndarray
) -> None:
    save(tmp_path / "c.zarr", {"img": camera}, spec="zstd", progress=False)
    monkeypatch.setenv("TENSORPRESS_MAX_DECODE_BYTES", str(camera.nbytes - 1))
    with tp.open(tmp_path / "c.zarr") as c, pytest.raises(BlobError, match="over the limit"):
        c.read("img")
    monkeypatch.setenv("TENSORPRESS_MAX_DECODE_BYTES", str(camera.nbytes))
    with tp.open(tmp_path / "c.zarr") as c:
        assert np.array_equal(c.read("img"), camera)


def test_policy_globs_and_skip(tmp_path: Path, tensors: dict[str, Any]) -> None:
    policy = {"*.bias": "skip", "vision/*": "blosc", "model.*": "zstd(level=9)"}
    path = tmp_path / "c.zarr"
    tp.save(path, tensors, spec="raw", policy=policy, progress=False)
    with tp.open(path) as c:
        assert "model.norm.bias" not in c and len(c) == len(tensors) - 1
        specs = {row["name"]: row["spec"] for row in c.info()}
    assert specs["vision/camera"] == specs["vision/faces"] == str(build("blosc"))
    assert specs["model.layers.0.weight"] == "zstd(level=9, threads=0)"
    assert specs["empty"] == specs["scalar"] == "raw()"


@pytest.mark.parametrize(
    ("policy", "error"),
    [
        ({"*.weight": "zstd", "decoder.*": "skip"}, ContainerError),  # matches nothing
        ({"model.*": "zstd", "model.layers.*": "blosc"}, ContainerError),  # only names taken already
        ({"*.weight": "zstd(levle=3)"}, SpecError),
    ],
)
def test_bad_policy_fails_before_writing(
    tmp_path: Path, tensors: dict[str, Any], policy: dict[str, str], error: type[Exception]
) -> None:
    path = tmp_path / "c.zarr"
    with pytest.raises(error) as info:
        tp.save(path, tensors, policy=policy, progress=False)
    if error is ContainerError:
        assert "match no tensor" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".zarr", ".zip"])
def test_failed_save_leaves_nothing_and_keeps_the_old_container(
    tmp_path: Path, camera: np.ndarray, disparity: np.ndarray, suffix: str
) -> None:
    path = tmp_path / f"c{suffix}"
    bad: dict[str, Any] = {"a": disparity, "b": object()}
    with pytest.raises(InputError):
        tp.save(path, bad, spec="zstd", progress=False)
    assert list(tmp_path.iterdir()) == []

    tp.save(path, {"camera": camera}, spec="zstd", progress=False)
    before = path.read_bytes() if suffix == ".zip" else chunk_files(path)
    failing = [{"a": disparity, "b": object()}]
    if "quant" in tp.available():
        nan = camera.astype(np.float32)
        nan[3, 4] = np.nan
        failing.append({"a": disparity, "nan": nan})
    for tensors in failing:
        with pytest.raises(tp.TensorpressError):
            tp.save(path, tensors, spec="quant(bits=8)" if "nan" in tensors else "zstd", progress=False)
        assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
        assert (path.read_bytes() if suffix == ".zip" else chunk_files(path)) == before
        with tp.open(path) as c:
            assert list(c) == ["camera"] and np.array_equal(c["camera"][...], camera)

    tp.save(path, {"disparity": disparity}, spec="zstd", progress=False)  # a complete save replaces it
    with tp.open(path) as c:
        assert list(c) == ["disparity"] and np.array_equal(c["disparity"][...], disparity)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_refuses_to_replace_what_is_not_a_container(tmp_path: Path, camera: np.ndarray) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(ContainerError, match="not a zarr container"):
        tp.save(folder, {"camera": camera}, progress=False)
    assert (folder / "keep.txt").read_text() == "mine"
    archive = tmp_path / "notes.zip"
    archive.write_bytes(b"not a zip")
    with pytest.raises(ContainerError, match="not a zarr container"):
        tp.save(archive, {"camera": camera}, progress=False)
    assert archive.read_bytes() == b"not a zip"


def test_info_counts_every_stored_byte(tmp_path: Path, camera: np.ndarray, faces: np.ndarray) -> None:
    path = tmp_path / "c.zarr"
    tp.save(path, {"camera": camera, "faces": faces}, spec="zstd", progress=False)
    files = chunk_files(path)
    with tp.open(path) as c:
        rows = {row["name"]: row for row in c.info()}
    for name, x in (("camera", camera), ("faces", faces)):
        row = rows[name]
        stored = sum(len(b) for k, b in files.items() if k.startswith(f"{name}/"))
        assert row["stored_bytes"] == stored == len(tp.encode(x, "zstd").to_bytes())
        assert row["original_bytes"] == x.nbytes
        assert row["shape"] == x.shape and row["dtype"] == x.dtype.name
        assert row["ratio"] == pytest.approx(x.nbytes / stored)
        assert row["bits_per_element"] == pytest.approx(8 * stored / x.size)


def test_chunked_tensors(tmp_path: Path, camera: np.ndarray, disparity: np.ndarray,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(container_module, "AUTO_CHUNK_BYTES", 64 << 10)
    path = tmp_path / "c.zip"
    tp.save(path, {"camera": camera, "disparity": disparity}, spec="zstd", chunks="auto", progress=False)
    with tp.open(path) as c:
        cam, disp = c["camera"], c["disparity"]
        assert cam.chunks == (128, 512)  # 256 KiB in 4 pieces
        assert disp.chunks == (22, 741)  # 1.48 MB in 23 pieces of ceil(500 / 23) rows, the last one padded
        assert np.array_equal(cam[...], camera) and np.array_equal(disp[...], disparity)
        rows = {row["name"]: row for row in c.info()}
        expected = sum(
            len(tp.encode(np.pad(disparity[i : i + 22], ((0, max(0, i + 22 - 500)), (0, 0))), "zstd").to_bytes())
            for i in range(0, 500, 22)
        )
        assert rows["disparity"]["stored_bytes"] == expected
        with pytest.raises(ContainerError, match="single-chunk"):
            c.encoded("disparity")
    tp.save(path, {"camera": camera}, spec="zstd", chunks=(100, None), progress=False)
    with tp.open(path) as c:
        assert c["camera"].chunks == (100, 512) and np.array_equal(c["camera"][...], camera)
    with pytest.raises(ContainerError, match="does not fit"):
        tp.save(path, {"camera": camera}, chunks=(100,), progress=False)


def test_bfloat16_tensors(tmp_path: Path, disparity: np.ndarray, faces: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    bf = disparity.astype(ml_dtypes.bfloat16)
    weights = {"ml": bf, "torch": torch.from_numpy(disparity).to(torch.bfloat16)}
    path = tmp_path / "c.zarr"
    tp.save(path, weights, spec="zstd", progress=False)
    bits = bf.view(np.uint16)
    with tp.open(path) as c:
        for name in weights:
            view = c[name]
            assert view.dtype == bf.dtype and view.shape == bf.shape
            assert np.array_equal(view[...].view(np.uint16), bits)
            assert np.array_equal(view[10:20, 5].view(np.uint16), bits[10:20, 5])
            assert c.encoded(name).dtype == bf.dtype
            assert np.array_equal(np.asarray(view).view(np.uint16), bits)
        assert {row["dtype"] for row in c.info()} == {"bfloat16"}
        assert all(row["original_bytes"] == bf.nbytes for row in c.info())
    plain = zarr.open_group(path, mode="r")["ml"]  # plain zarr sees the bit pattern, marked as such
    assert plain.dtype == np.uint16 and np.array_equal(plain[...], bits)
    assert plain.attrs["tensorpress"]["dtype"] == "bfloat16"
    if "quant" in tp.available():  # a lossy codec sees bfloat16 numbers, not their bits
        w = faces.reshape(200, 625).astype(ml_dtypes.bfloat16)
        tp.save(path, {"w": w}, spec="quant(bits=8, group=125)", progress=False)
        with tp.open(path) as c:
            got = c["w"][...].astype(np.float32)
        ref = w.astype(np.float32).reshape(200, 5, 125)
        half_step = (ref.max(axis=2) - ref.min(axis=2)) / 255 / 2  # per group, before fp16/bf16 rounding
        err = np.abs(got.reshape(200, 5, 125) - ref).max(axis=2)
        assert np.all(err <= half_step * 1.01 + np.abs(ref).max(axis=2) * 2.0**-8)
        assert err.max() > 0  # it was quantized as numbers, so it is not exact


def test_names_and_errors(tmp_path: Path, camera: np.ndarray) -> None:
    with pytest.raises(ContainerError, match="group holding"):
        tp.save(tmp_path / "a.zarr", {"a": camera, "a/b": camera}, progress=False)
    with pytest.raises(ContainerError, match="cannot be stored"):
        tp.save(tmp_path / "a.zarr", {"__meta": camera}, progress=False)
    with pytest.raises(ContainerError, match="reserved"):
        tp.save(tmp_path / "a.zarr", {"x": camera}, attrs={"tensorpress": 1}, progress=False)
    with pytest.raises(ContainerError, match="JSON"):
        tp.save(tmp_path / "a.zarr", {"x": camera}, attrs={"x": object()}, progress=False)
    assert list(tmp_path.iterdir()) == []
    missing = tmp_path / "nowhere.zarr"
    with pytest.raises(ContainerError, match=r"nowhere\.zarr"):
        Container(missing)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ContainerError, match="folder"):
        tp.open(folder)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ContainerError, match=r"notes\.txt"):
        tp.open(text)


def test_progress_bar_goes_to_stderr(tmp_path: Path, camera: np.ndarray,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    tp.save(tmp_path / "a.zarr", {"a": camera, "b": camera}, progress=True)
    assert "saving a.zarr" in capsys.readouterr().err
    tp.save(tmp_path / "b.zarr", {"a": camera, "b": camera}, progress=False)
    tp.save(tmp_path / "c.zarr", {"a": camera}, progress=True)
    assert capsys.readouterr().err == ""


def test_plain_zarr_group_opens_as_container(tmp_path: Path, faces: np.ndarray) -> None:
    group = zarr.create_group(tmp_path / "g.zarr")
    group.create_array("x/faces", data=faces, chunks=(50, 25, 25))
    with tp.open(tmp_path / "g.zarr") as c:
        assert list(c) == ["x/faces"] and np.array_equal(c["x/faces"][...], faces)
        (row,) = c.info()
        assert row["spec"].startswith("zarr: ") and 0 < row["stored_bytes"] < faces.nbytes
        with pytest.raises(ContainerError, match="tensorpress codec"):
            c.encoded("x/faces")
    assert os.path.isdir(tmp_path / "g.zarr")


def test_read_decodes_whole_tensors_both_ways(tmp_path: Path, camera: np.ndarray) -> None:
    x = camera.astype(np.float32) / 255
    path = tmp_path / "r.zarr"
    save(path, {"one": x}, spec="quant(bits=8, group=64)", progress=False)
    save(tmp_path / "m.zarr", {"many": x}, spec="quant(bits=8, group=64)", chunks=(128, None), progress=False)
    with Container(path) as c, Container(tmp_path / "m.zarr") as m:
        one, many = c.read("one"), m.read("many")
        np.testing.assert_array_equal(one, c["one"][...])
        np.testing.assert_array_equal(many, m["many"][...])
        assert m["many"].chunks == (128, 512)
        assert np.abs(one - x).max() <= 0.5 / 255 * 1.01
