"""The ``tensorpress`` command, run in-process on real scikit-image samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

import tensorpress
from tensorpress.cli import main
from tensorpress.core import CODECS, Encoded
from tensorpress.datasets import DataUnavailable
from tensorpress.report import format_table

HAS_CONTAINERS = (Path(tensorpress.__file__).parent / "store" / "container.py").is_file()
needs_containers = pytest.mark.skipif(not HAS_CONTAINERS, reason="tensorpress.store.container is missing")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tensorpress: error: ")
    for word in words:
        assert word in lines[0]


def safetensors_tensor(path: Path, name: str) -> tuple[str, bytes]:
    """(dtype code, raw bytes) of one tensor, read straight from the file layout."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    entry = json.loads(data[8 : 8 + n])[name]
    begin, end = entry["data_offsets"]
    return entry["dtype"], data[8 + n + begin : 8 + n + end]


@pytest.fixture
def camera_npy(tmp_path: Path, camera: np.ndarray) -> Path:
    path = tmp_path / "camera.npy"
    np.save(path, camera)
    return path


@pytest.fixture
def samples_npz(tmp_path: Path, camera: np.ndarray, faces: np.ndarray, disparity: np.ndarray) -> Path:
    path = tmp_path / "samples.npz"
    np.savez(path, camera=camera, faces=faces, disparity=disparity)
    return path


@pytest.fixture
def faces_bf16(faces: np.ndarray) -> np.ndarray:
    return faces.astype(ml_dtypes.bfloat16)


# --- formats ---------------------------------------------------------------------------------------------


def test_formats_lists_every_registered_codec(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "formats")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert set(rows) == set(CODECS.names())
    for codec_id, cls in CODECS.items():
        assert cls.role in rows[codec_id] and cls.summary in rows[codec_id]
        assert ("lossless" if cls.lossless else "lossy") in rows[codec_id].split()
    assert "zstd(level=3, threads=0)" in rows["zstd"]


# --- blobs -----------------------------------------------------------------------------------------------


def test_blob_round_trip_of_a_photo(capsys: pytest.CaptureFixture[str], tmp_path: Path, camera: np.ndarray,
                                    camera_npy: Path) -> None:
    blob = tmp_path / "camera.tpb"
    code, out, _ = run(capsys, "encode", camera_npy, blob, "--spec", "zstd")
    assert code == 0 and "wrote" in out
    assert 0 < blob.stat().st_size < camera.nbytes
    enc = Encoded.from_bytes(blob.read_bytes())
    assert str(enc.codec) == "zstd(level=3, threads=0)"
    np.testing.assert_array_equal(enc.decode(), camera)

    code, out, _ = run(capsys, "decode", blob, tmp_path / "back.npy")
    assert code == 0
    back = np.load(tmp_path / "back.npy")
    assert back.dtype == camera.dtype
    np.testing.assert_array_equal(back, camera)

    code, out, _ = run(capsys, "info", blob)
    assert code == 0
    fields = dict(line.split(":", 1) for line in out.split("\n\n")[0].splitlines())
    assert fields["spec"].strip() == "zstd(level=3, threads=0)"
    assert fields["shape"].strip() == "(512, 512)" and fields["dtype"].strip() == "uint8"
    assert int(fields["stored bytes"]) == blob.stat().st_size
    assert int(fields["original bytes"]) == camera.nbytes
    assert float(fields["ratio"]) == pytest.approx(camera.nbytes / blob.stat().st_size, rel=1e-3)
    parts = out.split("\n\n")[1].splitlines()
    assert parts[0].split() == ["part", "kind", "dtype", "shape", "bytes"]
    assert parts[2].split()[:2] == ["data", "bytes"]


def test_bfloat16_safetensors_through_a_blob(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                             faces_bf16: np.ndarray) -> None:
    source = tmp_path / "faces.safetensors"
    safetensors.numpy.save_file({"faces": faces_bf16}, source)
    blob = tmp_path / "faces.tpb"
    assert run(capsys, "--quiet", "encode", source, blob, "--spec", "blosc") == (0, "", "")
    enc = Encoded.from_bytes(blob.read_bytes())
    assert enc.dtype == np.dtype(ml_dtypes.bfloat16) and enc.shape == faces_bf16.shape

    code, _, _ = run(capsys, "decode", blob, tmp_path / "out.safetensors")
    assert code == 0
    assert safetensors_tensor(tmp_path / "out.safetensors", "faces") == ("BF16", faces_bf16.tobytes())

    # NumPy files have no bfloat16: the values arrive as float32, exactly, with a note saying so
    code, _, err = run(capsys, "decode", blob, tmp_path / "out.npz")
    assert code == 0 and "float32" in err
    with np.load(tmp_path / "out.npz") as f:
        np.testing.assert_array_equal(f["faces"], faces_bf16.astype(np.float32))


def test_lossy_blob_keeps_its_bound(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                    disparity: np.ndarray) -> None:
    if "bitround" not in tensorpress.available():
        pytest.skip("bitround is not registered")
    np.save(tmp_path / "disp.npy", disparity)
    spec = "bitround(keep=7) | zstd"
    code, _, _ = run(capsys, "encode", tmp_path / "disp.npy", tmp_path / "d.tpb", "--spec", spec)
    assert code == 0
    assert run(capsys, "decode", tmp_path / "d.tpb", tmp_path / "d.npy")[0] == 0
    back = np.load(tmp_path / "d.npy")
    finite = np.isfinite(disparity)
    np.testing.assert_array_equal(back[~finite], disparity[~finite])
    rel = np.abs(back[finite].astype(np.float64) - disparity[finite]) / np.abs(disparity[finite])
    assert rel[disparity[finite] != 0].max() <= 2.0**-8


# --- containers ------------------------------------------------------------------------------------------


@needs_containers
@pytest.mark.parametrize("suffix", ["", ".zip"])
def test_npz_to_container_and_back(capsys: pytest.CaptureFixture[str], tmp_path: Path, samples_npz: Path,
                                   suffix: str) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"faces": "blosc"}))
    target = tmp_path / f"samples{suffix}"
    code, _, _ = run(capsys, "--quiet", "encode", samples_npz, target, "--spec", "zstd", "--policy", policy)
    assert code == 0

    code, out, _ = run(capsys, "info", target)
    assert code == 0
    lines = out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"camera", "faces", "disparity", "total"}
    assert "blosc(cname=zstd," in rows["faces"] and "zstd(level=3," in rows["camera"]
    with tensorpress.open(target) as container:
        info = container.info()
    stored = sum(r["stored_bytes"] for r in info)
    assert str(stored) in rows["total"] and stored < sum(r["original_bytes"] for r in info)

    code, _, _ = run(capsys, "decode", target, tmp_path / "back.npz")
    assert code == 0
    with np.load(samples_npz) as want, np.load(tmp_path / "back.npz") as got:
        assert sorted(got.files) == sorted(want.files)
        for name in want.files:
            np.testing.assert_array_equal(got[name], want[name])


@needs_containers
def test_safetensors_checkpoint_to_zip_and_back(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                faces_bf16: np.ndarray, disparity: np.ndarray) -> None:
    source = tmp_path / "ckpt.safetensors"
    safetensors.numpy.save_file({"faces": faces_bf16, "disparity": disparity}, source)
    target = tmp_path / "ckpt.zip"
    assert run(capsys, "--quiet", "encode", source, target, "--spec", "zstd")[0] == 0
    with tensorpress.open(target) as container:
        assert container["faces"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert run(capsys, "decode", target, tmp_path / "back.safetensors")[0] == 0
    back = tmp_path / "back.safetensors"
    assert safetensors_tensor(back, "faces") == ("BF16", faces_bf16.tobytes())
    assert safetensors_tensor(back, "disparity") == ("F32", disparity.tobytes())
    # a container of two tensors does not fit a .npy file, and nothing is written
    code, _, err = run(capsys, "decode", target, tmp_path / "back.npy")
    assert_one_line_error(code, err, ".npz", "not 2")
    assert not (tmp_path / "back.npy").exists()


# --- errors ----------------------------------------------------------------------------------------------


def test_missing_input_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.npy"
    code, _, err = run(capsys, "encode", missing, tmp_path / "out.tpb", "--spec", "zstd")
    assert_one_line_error(code, err, str(missing), "No such file")
    code, _, err = run(capsys, "decode", tmp_path / "missing.tpb", tmp_path / "out.npy")
    assert_one_line_error(code, err, "missing.tpb")
    code, _, err = run(capsys, "info", tmp_path / "nothing")
    assert_one_line_error(code, err, "nothing")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bad_spec_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                      camera_npy: Path) -> None:
    for spec in ("quant(bits=99)", "zstd(level=", "nosuchcodec"):
        code, _, err = run(capsys, "encode", camera_npy, tmp_path / "out.tpb", "--spec", spec)
        assert_one_line_error(code, err)
    code, _, err = run(capsys, "encode", camera_npy, tmp_path / "out.tpb", "--spec", "quant(bits=99)")
    assert_one_line_error(code, err, "quant", "99")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camera.npy"]


def test_corrupt_blob_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          camera_npy: Path) -> None:
    blob = tmp_path / "camera.tpb"
    assert run(capsys, "encode", camera_npy, blob, "--spec", "zstd")[0] == 0
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    for command in (["decode", blob, tmp_path / "out.npy"], ["info", blob]):
        code, _, err = run(capsys, *command)
        assert_one_line_error(code, err, "corrupt")
    blob.write_bytes(bytes(data[:100]))
    code, _, err = run(capsys, "decode", blob, tmp_path / "out.npy")
    assert_one_line_error(code, err, "truncated")
    assert not (tmp_path / "out.npy").exists()


def test_several_arrays_do_not_fit_a_blob(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          samples_npz: Path) -> None:
    out = tmp_path / "out.tpb"
    out.write_bytes(b"previous contents")
    code, _, err = run(capsys, "encode", samples_npz, out, "--spec", "zstd")
    assert_one_line_error(code, err, "container")
    assert out.read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tpb", "samples.npz"]


def test_unsupported_file_kinds(capsys: pytest.CaptureFixture[str], tmp_path: Path, camera_npy: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an array")
    code, _, err = run(capsys, "encode", tmp_path / "notes.txt", tmp_path / "x.tpb", "--spec", "zstd")
    assert_one_line_error(code, err, ".safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes((1000).to_bytes(8, "little") + b"{}")
    code, _, err = run(capsys, "encode", broken, tmp_path / "x.tpb", "--spec", "zstd")
    assert_one_line_error(code, err, "header")


def test_usage_errors_exit_2_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["encode", "only-one-argument"]) == 2
    assert main(["no-such-command"]) == 2
    capsys.readouterr()
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"tensorpress {tensorpress.__version__}"


def test_python_dash_m() -> None:
    done = subprocess.run([sys.executable, "-m", "tensorpress", "--version"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0 and done.stdout.strip() == f"tensorpress {tensorpress.__version__}"


# --- demo ------------------------------------------------------------------------------------------------


def test_demo_quiet(capsys: pytest.CaptureFixture[str], tmp_path: Path, camera: np.ndarray) -> None:
    report = tmp_path / "demo.json"
    code, out, err = run(capsys, "demo", "--quiet", "--json", report)
    assert code == 0 and err == ""
    rows = json.loads(report.read_text())
    samples = ["camera", "astronaut", "face_stack", "disparity"]
    assert sorted({r["sample"] for r in rows}) == sorted(samples)
    table = out.splitlines()
    assert len(table) == 2 + len(rows)
    for sample in samples:
        assert sum(line.startswith(sample + " ") for line in table) == len(rows) // len(samples)
    assert not any(r["check"].startswith("FAILED") for r in rows)
    for row in rows:
        if row["spec"] in ("zstd", "blosc"):
            assert row["max_abs_error"] == 0 and row["check"] == "ok: exact"
    camera_zstd = next(r for r in rows if r["sample"] == "camera" and r["spec"] == "zstd")
    assert camera_zstd["ratio"] > 1 and camera_zstd["shape"] == list(camera.shape)
    if "bitround" in tensorpress.available():  # bitround takes floats only: said so, not silently dropped
        camera_bitround = [r for r in rows if r["sample"] == "camera" and r["spec"].startswith("bitround")]
        assert camera_bitround and all(r["check"].startswith("n/a: ") for r in camera_bitround)


def test_demo_without_data(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(name: str) -> np.ndarray:
        raise DataUnavailable("scikit-image is not installed: pip install 'tensorpress[demo]'")

    monkeypatch.setattr("tensorpress.datasets.photo", unavailable)
    code, out, err = run(capsys, "demo", "--quiet")
    assert_one_line_error(code, err, "pip install")
    assert out == ""


def test_format_table_aligns_numbers_right() -> None:
    text = format_table([{"spec": "zstd", "ratio": 3.14159}, {"spec": "quant(bits=4)", "ratio": 12.5}],
                        ["spec", ("ratio", "x")])
    assert text.splitlines() == [
        "spec               x",
        "-------------  -----",
        "zstd           3.142",
        "quant(bits=4)   12.5",
    ]
