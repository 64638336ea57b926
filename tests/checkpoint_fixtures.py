"""The real SmolLM2 GGUF converted once per test run (shared by test_convert.py and test_nn_load.py).

The conversion runs in a fresh Python process, so that its peak memory can be measured above the footprint
of that process after its imports; the same process then converts to a ``.zip`` through the command line.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tensorpress.core.errors import MissingDependencyError
from test_llm_data import real

SPEC = "quant(bits=4, group=128)"
#: embeddings 8-bit, attention 4-bit (both GGUF block layouts), norms raw; the MLP takes SPEC
POLICY = {
    "model.embed_tokens.weight": "quant(bits=8, group=32, symmetric=true)",
    "*.self_attn.*_proj.weight": "quant(bits=4, group=32, symmetric=true)",
    "*norm.weight": "raw",
}

_SCRIPT = r"""
import json, os, resource, sys, time
import numpy, numba, tqdm, zarr, gguf, gguf.quants
import tensorpress
from tensorpress.cli import main
from tensorpress.kernels.dispatch import KERNELS
from tensorpress.nn.convert import convert_checkpoint
from tensorpress.nn.sources import open_checkpoint
tensorpress.available(), KERNELS.names()  # import every codec and kernel module

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

src, out_dir, out_zip, policy_file, spec = sys.argv[1:]
with open(policy_file) as f:
    policy = json.load(f)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM, the peak resident size, to the current size
base, cpu, wall = status("VmRSS"), time.process_time(), time.perf_counter()
convert_checkpoint(src, out_dir, spec=spec, policy=policy, progress=False)
peak = status("VmHWM") - base
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
child = resource.getrusage(resource.RUSAGE_CHILDREN)
checkpoint = open_checkpoint(src)
result = {
    "baseline_bytes": base, "peak_above_baseline_bytes": peak,
    "largest_tensor_bytes": max(e.nbytes for e in checkpoint.entries.values()),
    "disk_bytes": checkpoint.disk_bytes,
    "parameters": sum(int(numpy.prod(e.shape)) for e in checkpoint.entries.values()),
    "cpu_seconds": cpu, "child_cpu_seconds": child.ru_utime + child.ru_stime,
    "child_peak_bytes": child.ru_maxrss * 1024, "wall_seconds": wall,
}
status_code = main(["--quiet", "convert-checkpoint", src, out_zip, "--spec", spec, "--policy", policy_file])
result["cli_status"] = status_code
print(json.dumps(result))
"""


def needs(package: str) -> None:
    """Import ``package``; raise MissingDependencyError (a skip, or a failure in CI) when it is missing."""
    try:
        importlib.import_module(package)
    except ImportError:
        raise MissingDependencyError(package, "llm", "these tests") from None


@functools.cache
def converted_smollm2() -> dict[str, Any]:
    """``{"gguf", "dir", "zip", "measured": {…}}`` of the real SmolLM2 conversion (run once)."""
    from tensorpress.datasets import smollm2_gguf

    gguf = real(smollm2_gguf)
    real(lambda: [needs(package) for package in ("gguf", "transformers", "torch")])
    if not Path("/proc/self/clear_refs").exists():
        import pytest

        pytest.skip("peak memory is measured through /proc (Linux)")
    folder = Path(tempfile.mkdtemp(prefix="tensorpress-smollm2-"))
    atexit.register(shutil.rmtree, folder, True)
    policy = folder / "policy.json"
    policy.write_text(json.dumps(POLICY))
    out_dir, out_zip = folder / "smollm2", folder / "smollm2.zip"
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(gguf), str(out_dir), str(out_zip), str(policy), SPEC],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"conversion failed:\n{proc.stderr[-3000:]}")
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"gguf": gguf, "dir": out_dir, "zip": out_zip, "measured": measured}


def reference_dir() -> Path:
    """The fp32 SmolLM2 reference as a Hugging Face folder (transformers' own reading of the GGUF)."""
    from tensorpress.nn.models import reference_folder

    return Path(real(lambda: reference_folder("smollm2")))


def write_small_checkpoint(folder: Path, *, layers: int = 2, shards: int = 1, bfloat16: bool = False) -> dict[str, Any]:
    """A Hugging Face folder holding the first ``layers`` blocks of the real SmolLM2 reference (config,
    tokenizer files, ``shards`` safetensors files with an index when several), written with the
    ``safetensors`` package; returns the tensors written (NumPy; bfloat16 as ``ml_dtypes.bfloat16``).
    """
    import ml_dtypes
    import numpy as np
    import safetensors.torch
    import torch

    from tensorpress.nn.sources import MODEL_FILES, open_checkpoint

    source = reference_dir()
    ref = open_checkpoint(source)
    keep = [n for n in ref.entries if not n.startswith("model.layers.")
            or int(n.split(".")[2]) < layers]
    tensors = {n: ref.read(n) for n in keep if n != "lm_head.weight"}
    if bfloat16:
        tensors = {n: t.astype(ml_dtypes.bfloat16) for n, t in tensors.items()}

    def save(part: dict[str, Any], path: Path) -> None:
        as_torch = {n: torch.from_numpy(t.view(np.int16)).view(torch.bfloat16) if bfloat16 else torch.from_numpy(t)
                    for n, t in part.items()}
        safetensors.torch.save_file(as_torch, path)

    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((source / "config.json").read_text())
    config["num_hidden_layers"] = layers
    (folder / "config.json").write_text(json.dumps(config))
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)
    names = list(tensors)
    if shards == 1:
        save(tensors, folder / "model.safetensors")
    else:
        weight_map = {}
        for i, part in enumerate(np.array_split(np.array(names, dtype=object), shards)):
            file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save({n: tensors[n] for n in part}, folder / file)
            weight_map.update({n: file for n in part})
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return tensors
