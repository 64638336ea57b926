"""Write golden blobs: small real-data blobs that every later tensorpress must still decode exactly.

For each spec (default: the first example of every registered codec, plus the chain ``raw | zstd``) and
each real crop the codec takes (32x32 uint8 of the camera photo, 32x32 float32 of the disparity map), it
writes ``<name>.<crop>.tpb`` (the blob), ``<name>.<crop>.npy`` (the array it decodes to) and
``<name>.<crop>.json`` (the spec, its canonical form, the tensorpress version). Existing files are kept, so
re-running only adds new codecs; ``--force`` rewrites everything (only for a deliberate format change)::

    python tests/golden/make_golden.py                   # add what is missing
    python tests/golden/make_golden.py raw "raw | zstd"  # only these specs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import tensorpress as tp
from tensorpress.core import CODECS

HERE = Path(__file__).resolve().parent
CHAINS = ("raw | zstd",)


def crops() -> dict[str, tuple[str, Callable[[], np.ndarray]]]:
    """Crop name → (description, loader) of the real data the golden blobs hold."""
    from tensorpress.datasets import disparity, photo

    def disparity_crop() -> np.ndarray:
        crop = np.ascontiguousarray(disparity()[413:445, 148:180])
        if not np.isfinite(crop).all():
            raise RuntimeError("the disparity crop is expected to be finite")
        return crop

    def camera_crop() -> np.ndarray:
        return np.ascontiguousarray(photo("camera")[200:232, 200:232])

    return {
        "camera": ("scikit-image camera photo [200:232, 200:232], uint8", camera_crop),
        "disparity": ("scikit-image motorcycle disparity map [413:445, 148:180], float32", disparity_crop),
    }


def default_specs() -> list[str]:
    return [cls.examples[0] for _, cls in CODECS.items() if cls.examples] + list(CHAINS)


def file_stem(spec: str) -> str:
    """``"raw | zstd"`` → ``"raw_zstd"``; ``"quant(bits=4, group=128)"`` → ``"quant_bits_4_group_128"``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", spec).strip("_")


def write(specs: Sequence[str], out: Path, *, force: bool = False) -> list[Path]:
    """Write the golden files for ``specs`` into ``out``; returns the blobs written (existing ones are kept)."""
    written = []
    data = {name: (what, load()) for name, (what, load) in crops().items()}
    for spec in specs:
        codec = tp.spec(spec)
        for crop, (what, x) in data.items():
            if x.dtype.kind in "biu" and not codec.accepts_integers:
                continue
            base = out / f"{file_stem(spec)}.{crop}"
            blob_path = base.with_name(base.name + ".tpb")
            if blob_path.exists() and not force:
                continue
            enc = codec.encode(x)
            blob = enc.to_bytes()
            decoded = tp.Encoded.from_bytes(blob).decode()
            np.save(base.with_name(base.name + ".npy"), decoded, allow_pickle=False)
            info = {"spec": spec, "canonical": str(codec), "data": what, "tensorpress": tp.__version__}
            base.with_name(base.name + ".json").write_text(json.dumps(info, indent=1) + "\n")
            blob_path.write_bytes(blob)  # last: a blob on disk means its companions are complete
            written.append(blob_path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="*", help="spec strings (default: every registered codec's first example)")
    parser.add_argument("--force", action="store_true", help="rewrite existing files")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: this one)")
    args = parser.parse_args(argv)
    written = write(args.specs or default_specs(), args.out, force=args.force)
    for path in written:
        print(f"wrote {path.name} ({path.stat().st_size} bytes)")
    if not written:
        print("nothing to write: every golden blob exists (use --force to rewrite)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
