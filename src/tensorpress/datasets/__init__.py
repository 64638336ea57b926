"""Real sample data that installable packages ship, with where each comes from and its licence.

Nothing here downloads anything at import. Loaders raise :class:`DataUnavailable` (with the install command)
when the package holding the data is missing; tests turn that into a skip on a laptop and a failure in CI.
"""

from __future__ import annotations

from .skimage_samples import disparity, face_stack, photo, photo_names
from .sources import SOURCES, DataUnavailable, Source

__all__ = ["SOURCES", "DataUnavailable", "Source", "disparity", "face_stack", "photo", "photo_names"]
