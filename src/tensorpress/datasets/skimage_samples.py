"""Photos, a face stack and a disparity map that scikit-image bundles inside its wheel.

Only the files inside the installed package count (``skimage/data/*``); scikit-image's other samples are
downloads and are never used. Each image's own licence is in the docstring of its ``skimage.data`` loader.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .sources import DataUnavailable, Source, add

SKIMAGE = add(
    Source(
        name="skimage",
        package="pip: scikit-image (the `demo` and `test` extras)",
        how="files in the installed package's skimage/data/ folder, located with importlib.util.find_spec",
        licence="scikit-image BSD-3-Clause; images: public domain / CC0 / BSD per skimage.data docstrings "
        "(camera CC0 Lav Varshney, astronaut NASA public domain, coffee/chelsea CC0, lfw_subset from "
        "Labeled Faces in the Wild, motorcycle from the Middlebury 2014 stereo set)",
        contents="8-bit photos (gray and RGB), lfw_subset.npy (200 faces 25x25 float64), "
        "motorcycle_disp.npz (500x741 float32 disparity map)",
    )
)

# name → file; all bundled in the wheel (checked against scikit-image 0.26)
_PHOTOS = {
    "camera": "camera.png",
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
    "moon": "moon.png",
    "coins": "coins.png",
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "horse": "horse.png",
    "page": "page.png",
    "text": "text.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "ihc": "ihc.png",
}


def _data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable(
            "scikit-image is not installed, so its bundled sample images are missing: "
            "pip install 'tensorpress[demo]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _file(name: str) -> Path:
    path = _data_dir() / name
    if not path.is_file():
        raise DataUnavailable(f"scikit-image's bundled file {name} is missing from {path.parent}")
    return path


def photo_names() -> list[str]:
    return sorted(_PHOTOS)


def photo(name: str) -> np.ndarray:
    """A bundled photo as uint8, (H, W) or (H, W, 3|4)."""
    if name not in _PHOTOS:
        raise KeyError(f"unknown photo {name!r}; bundled: {', '.join(photo_names())}")
    from skimage.io import imread

    return np.asarray(imread(_file(_PHOTOS[name])))


def face_stack() -> np.ndarray:
    """200 grayscale faces, 25x25, float64 in [0, 1]: a small real volume."""
    return np.load(_file("lfw_subset.npy"), allow_pickle=False)


def disparity() -> np.ndarray:
    """Stereo disparity map of the Middlebury motorcycle scene, float32 (500, 741): real measured floats."""
    with np.load(_file("motorcycle_disp.npz"), allow_pickle=False) as f:
        return np.asarray(f["arr_0"])
