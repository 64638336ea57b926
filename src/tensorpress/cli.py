"""The ``tensorpress`` command.

    tensorpress formats                                       every registered codec
    tensorpress encode camera.npy camera.tpb --spec zstd      one array → one blob
    tensorpress encode model.safetensors model.zip --spec "quant(bits=4)" --policy policy.json
    tensorpress decode model.zip model.npz                    back to plain arrays
    tensorpress info model.zip                                sizes, ratios, specs
    tensorpress convert-checkpoint model.gguf model.zip --spec "quant(bits=4)" --policy policy.json
    tensorpress convert-dataset winds.nc winds.zarr --spec "wavelet(max_abs=0.01)" --var "VWND=video(codec=h265)"
    tensorpress demo                                          real samples through several codecs

User errors (a missing file, a bad spec, a corrupt blob) print one line ``tensorpress: error: …`` and exit
with status 1; usage errors exit with 2. Nothing is written when a command fails.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

import tensorpress

from .core import CODECS, Codec, Encoded, InputError, SpecError, TensorpressError, build, metrics
from .core.blob import MAGIC
from .core.spec import parse as parse_spec
from .datasets.tensor_files import (
    SUFFIXES,
    TensorFileError,
    check_output,
    needs_widening,
    read_tensors,
    write_atomic,
    write_tensors,
)
from .report import Column, format_table, format_value

T = TypeVar("T")

# quant groups run along axis 1 (image rows), not along the 3 colour channels of an RGB photo
DEMO_SPECS = (
    "zstd", "blosc", "bitround(keep=7) | zstd", "bitround(info=0.99) | zstd", "quant(bits=8, axis=1)",
    "quant(bits=4, axis=1)",
)
TENSOR_COLUMNS: list[Column] = [
    "name", "shape", "dtype", "spec", ("stored_bytes", "stored B"), ("original_bytes", "original B"),
    "ratio", ("bits_per_element", "bits/elem"),
]


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        status: int = args.run(args)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        _silence_stdout()
        return 1
    except (TensorpressError, OSError, ValueError, zipfile.BadZipFile) as exc:
        print(f"tensorpress: error: {_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tensorpress: interrupted", file=sys.stderr)
        return 130
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tensorpress", description="Compress tensors: model weights, data cubes, images, volumes."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {tensorpress.__version__}")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars, minimal output")
    # the same flag after the subcommand; SUPPRESS keeps it from resetting a --quiet given before it
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def command(name: str, run: Any, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[quiet], help=text, description=text)
        sub.set_defaults(run=run)
        return sub

    command("formats", run_formats, "list every registered codec with its default spec")
    encode = command("encode", run_encode, "compress .npy/.npz/.safetensors into a .tpb blob or a container")
    encode.add_argument("input", help=f"array file: {', '.join(SUFFIXES)}")
    encode.add_argument("output", help="a .tpb blob (one array), or a container: a directory or a .zip file")
    encode.add_argument("--spec", required=True, help='codec spec, e.g. "zstd" or "bitround(keep=7) | zstd"')
    encode.add_argument("--policy", metavar="FILE", help='JSON {glob: spec} choosing specs by tensor name')
    decode = command("decode", run_decode, "decompress a .tpb blob or a container into plain arrays")
    decode.add_argument("input", help="a .tpb blob or a container (directory or .zip)")
    decode.add_argument("output", help="a .npy file (one tensor), .npz or .safetensors (all tensors)")
    convert = command("convert-checkpoint", run_convert_checkpoint,
                      "convert a model checkpoint (GGUF, safetensors, Hugging Face folder, torch state dict) "
                      "into a container with its config and tokenizer")
    convert.add_argument("source", help="a .gguf, .safetensors or .pt/.pth/.bin file, or a Hugging Face folder")
    convert.add_argument("output", help="the container: a directory or a .zip file")
    convert.add_argument("--spec", required=True, help='spec of every tensor no policy pattern matches')
    convert.add_argument("--policy", metavar="FILE",
                         help='JSON {glob: spec or "skip"}; the first matching pattern wins')
    dataset = command("convert-dataset", run_convert_dataset,
                      "compress a NetCDF file or zarr store into a zarr v3 store, one spec per float variable")
    dataset.add_argument("input", help="a NetCDF file (.nc, .cdf) or a zarr store (directory)")
    dataset.add_argument("output", help="the zarr store to write (a directory; must not exist)")
    dataset.add_argument("--spec", help='spec of every float variable no --var names (with --max-error E alone: '
                         '"wavelet(max_abs=E)"); other variables are copied losslessly')
    dataset.add_argument("--var", action="append", default=[], metavar="NAME=SPEC",
                         help='spec of one variable (repeatable), e.g. --var "SST=wavelet(rel=0.001)"')
    dataset.add_argument("--max-error", type=float, metavar="E",
                         help="check that every element of every compressed variable is within E; else write nothing")
    info = command("info", run_info, "describe a .tpb blob or a container: specs, sizes, ratios")
    info.add_argument("path")
    demo = command("demo", run_demo, "compress scikit-image's sample images and volumes with several codecs")
    demo.add_argument("--json", metavar="FILE", help="also write the table's rows as JSON")
    return parser


# --- subcommands -------------------------------------------------------------------------------------


def run_formats(args: argparse.Namespace) -> int:
    rows = [
        {"id": codec_id, "role": cls.role, "kind": "lossless" if cls.lossless else "lossy",
         "summary": cls.summary, "default spec": _default_spec(cls)}
        for codec_id, cls in CODECS.items()
    ]
    print(format_table(rows, ["id", "role", "kind", "summary", "default spec"]))
    return 0


def run_encode(args: argparse.Namespace) -> int:
    codec = build(args.spec)  # a bad spec fails before anything is read
    policy = _read_policy(args.policy) if args.policy else None
    out = Path(args.output)
    is_blob = out.suffix.lower() == ".tpb"
    if is_blob and policy:
        raise SpecError("--policy applies to containers; a .tpb blob holds one tensor encoded with --spec")
    tensors = read_tensors(args.input)
    if is_blob:
        if len(tensors) != 1:
            raise TensorFileError(
                f"a .tpb blob holds one array, {args.input} has {len(tensors)}; "
                "write a container instead (a directory or a .zip file)"
            )
        ((name, array),) = tensors.items()
        enc = codec.encode(array)
        blob = enc.to_bytes()
        write_atomic(out, lambda f: f.write(blob))
        rows = [_blob_row(name, enc, len(blob))]
    else:
        tensorpress.save(out, tensors, spec=args.spec, policy=policy, progress=not args.quiet)
        with tensorpress.open(out) as container:
            rows = container.info()
    if not args.quiet:
        total = _totals(rows)
        print(
            f"wrote {out}: {len(rows)} tensor(s), {total['stored_bytes']} bytes from "
            f"{total['original_bytes']} (ratio {total['ratio']:.4g}, "
            f"{total['bits_per_element']:.4g} bits/element)"
        )
    return 0


def run_convert_checkpoint(args: argparse.Namespace) -> int:
    from .nn.convert import convert_checkpoint

    policy = _read_policy(args.policy) if args.policy else None
    out = convert_checkpoint(args.source, args.output, spec=args.spec, policy=policy, progress=not args.quiet)
    if not args.quiet:
        with tensorpress.open(out) as container:
            rows = container.info()
        total = _totals(rows)
        print(
            f"wrote {out}: {len(rows)} tensor(s) from {args.source}, {total['stored_bytes']} bytes from "
            f"{total['original_bytes']} (ratio {total['ratio']:.4g}, {total['bits_per_element']:.4g} "
            f"bits/element); per tensor: tensorpress info {out}"
        )
    return 0


def run_convert_dataset(args: argparse.Namespace) -> int:
    from . import xarray as tpx

    policy: dict[str, str] = {}
    for item in args.var:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            raise SpecError(f"--var expects NAME=SPEC, got {item!r}")
        policy[name] = spec
    default = args.spec or (f"wavelet(max_abs={args.max_error!r})" if args.max_error is not None else None)
    if default is None and not policy:
        raise SpecError("give --spec SPEC (or --max-error E for wavelet(max_abs=E)), and/or --var NAME=SPEC")
    if default is not None:
        policy["*"] = default
    ds = tpx.open_dataset(args.input)
    out = tpx.compress(ds, policy, args.output, max_error=args.max_error, progress=not args.quiet)
    rows = tpx.report(ds, out)
    if not args.quiet:
        columns: list[Column] = [*TENSOR_COLUMNS, ("max_abs_error", "max abs err"), ("psnr_db", "PSNR dB")]
        print(format_table([*rows, _totals(rows)], columns))
        print(f"wrote {args.output}: open it with xarray.open_zarr({str(args.output)!r}, consolidated=False)")
    return 0


def run_decode(args: argparse.Namespace) -> int:
    source, out = Path(args.input), Path(args.output)
    if _is_blob(source):
        check_output(out, 1)
        tensors = {source.stem: _read_blob(source).decode()}
    else:
        with tensorpress.open(source) as container:
            check_output(out, len(container))  # before any decoding
            names = _progress(list(container), args.quiet, "decoding", "tensor")
            tensors = {name: np.asarray(container[name][...]) for name in names}
    widened = [n for n, a in tensors.items() if needs_widening(a.dtype)]
    write_tensors(out, tensors)
    if widened and not args.quiet and out.suffix.lower() != ".safetensors":
        print(f"note: {', '.join(widened)} written as float32 (exact): NumPy files have no "
              f"{tensors[widened[0]].dtype}; write .safetensors to keep it", file=sys.stderr)
    if not args.quiet:
        print(f"wrote {out}: {len(tensors)} tensor(s)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if _is_blob(path):
        data = path.read_bytes()
        enc = Encoded.from_bytes(data)
        row = _blob_row(path.name, enc, len(data))
        fields = [("spec", "spec"), ("shape", "shape"), ("dtype", "dtype"), ("stored_bytes", "stored bytes"),
                  ("original_bytes", "original bytes"), ("ratio", "ratio"),
                  ("bits_per_element", "bits/element")]
        width = max(len(title) for _, title in fields)
        for key, title in fields:
            print(f"{title + ':':<{width + 1}}  {format_value(row[key])}")
        print()
        print(format_table(list(_part_rows(enc)), ["part", "kind", "dtype", "shape", "bytes"]))
        return 0
    with tensorpress.open(path) as container:
        rows = container.info()
    print(format_table([*rows, _totals(rows)], TENSOR_COLUMNS))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from . import datasets  # raises DataUnavailable (a TensorpressError) when scikit-image is missing

    samples = {
        "camera": datasets.photo("camera"),
        "astronaut": datasets.photo("astronaut"),
        "face_stack": datasets.face_stack(),
        "disparity": datasets.disparity(),
    }
    registered = set(tensorpress.available())
    specs = [s for s in DEMO_SPECS if all(call.name in registered for call in parse_spec(s))]
    jobs = [(name, x, s) for name, x in samples.items() for s in specs]
    rows = [_demo_row(name, x, s) for name, x, s in _progress(jobs, args.quiet, "demo", "run")]
    columns: list[Column] = ["sample", "shape", "dtype", "spec", "ratio", ("bits_per_element", "bits/elem"),
               ("max_abs_error", "max abs err"), ("psnr_db", "PSNR dB"), "check"]
    print(format_table(rows, columns))
    if args.json:
        text = json.dumps([_jsonable(r) for r in rows], indent=1).encode()
        write_atomic(Path(args.json), lambda f: f.write(text))
    failed = [r for r in rows if r["check"].startswith("FAILED")]
    if failed:
        print(f"tensorpress: error: {len(failed)} decoded result(s) failed their check", file=sys.stderr)
        return 1
    if not args.quiet:
        skipped = sum(r["check"].startswith("n/a") for r in rows)
        print(f"\n{len(rows) - skipped} results decoded and checked, all ok; {skipped} not applicable. "
              "Errors and PSNR are over the finite elements.")
    return 0


# --- helpers -----------------------------------------------------------------------------------------


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, TensorpressError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # one line


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def _default_spec(cls: type[Codec]) -> str:
    try:
        return str(cls())
    except (TypeError, TensorpressError):
        return f"(needs parameters, e.g. {cls.examples[0]})" if cls.examples else "(needs parameters)"


def _read_policy(path: str) -> dict[str, str]:
    """A JSON object mapping tensor-name globs to specs (``tensorpress.save`` checks the specs)."""
    try:
        policy = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"policy {path} is not valid JSON: {exc}") from None
    if not isinstance(policy, dict) or not all(isinstance(k, str) for k in policy):
        raise SpecError(f'policy {path}: expected a JSON object {{"glob": "spec", …}}, got {policy!r:.80}')
    return policy


def _is_blob(path: Path) -> bool:
    """A ``.tpb`` file or any file that starts with the blob magic; anything else is a container."""
    if path.is_dir():
        return False
    if path.suffix.lower() == ".tpb":
        return True
    with open(path, "rb") as f:  # a missing file raises FileNotFoundError here
        return f.read(len(MAGIC)) == MAGIC


def _read_blob(path: Path) -> Encoded:
    return Encoded.from_bytes(path.read_bytes())


def _blob_row(name: str, enc: Encoded, stored: int) -> dict[str, Any]:
    original = enc.size * enc.dtype.itemsize
    return {
        "name": name, "shape": enc.shape, "dtype": str(enc.dtype), "spec": str(enc.codec),
        "stored_bytes": stored, "original_bytes": original,
        "ratio": metrics.compression_ratio(original, stored),
        "bits_per_element": metrics.bits_per_element(stored, enc.size),
    }


def _part_rows(enc: Encoded, prefix: str = "") -> Iterator[dict[str, Any]]:
    """One row per part, nested ``Encoded`` parts expanded as ``outer/inner``."""
    for name, part in enc.parts.items():
        row: dict[str, Any] = {"part": prefix + name}
        if isinstance(part, Encoded):
            yield {**row, "kind": f"encoded: {part.codec}", "dtype": str(part.dtype), "shape": part.shape,
                   "bytes": part.nbytes}
            yield from _part_rows(part, f"{prefix}{name}/")
        elif isinstance(part, np.ndarray):
            yield {**row, "kind": "array", "dtype": str(part.dtype), "shape": part.shape,
                   "bytes": part.nbytes}
        else:
            yield {**row, "kind": "bytes", "bytes": memoryview(part).nbytes}


def _totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    stored = sum(int(r["stored_bytes"]) for r in rows)
    original = sum(int(r["original_bytes"]) for r in rows)
    elements = sum(math.prod(r["shape"]) for r in rows)
    return {
        "name": f"total ({len(rows)} tensor{'' if len(rows) == 1 else 's'})",
        "stored_bytes": stored, "original_bytes": original,
        "ratio": metrics.compression_ratio(original, stored),
        "bits_per_element": metrics.bits_per_element(stored, elements),
    }


def _demo_row(sample: str, x: np.ndarray, spec: str) -> dict[str, Any]:
    """Encode, serialize, parse and decode ``x``; measure it and check it against the codec's promise."""
    codec = build(spec)
    row: dict[str, Any] = {"sample": sample, "shape": x.shape, "dtype": str(x.dtype), "spec": spec}
    try:
        blob = codec.encode(x).to_bytes()
    except InputError as exc:
        return {**row, "check": f"n/a: {_message(exc)}"}
    y = Encoded.from_bytes(blob).decode()
    finite = np.isfinite(x) if x.dtype.kind == "f" else np.ones(x.shape, dtype=bool)
    return {
        **row,
        "ratio": metrics.compression_ratio(x.nbytes, len(blob)),
        "bits_per_element": metrics.bits_per_element(len(blob), x.size),
        "max_abs_error": metrics.max_abs_error(x[finite], y[finite]),
        "psnr_db": metrics.psnr(x[finite], y[finite]),
        "check": _check(codec, x, y),
    }


def _check(codec: Codec, x: np.ndarray, y: np.ndarray) -> str:
    """``ok`` when ``y`` has ``x``'s shape and dtype and is within the codec's bound (exact if lossless)."""
    if y.shape != x.shape or y.dtype != x.dtype:
        return f"FAILED: decoded {y.dtype} {y.shape}, expected {x.dtype} {x.shape}"
    if codec.lossless:
        return "ok: exact" if np.array_equal(x, y, equal_nan=x.dtype.kind == "f") else "FAILED: not exact"
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    finite = np.isfinite(xf)
    bound = np.broadcast_to(np.asarray(codec.tolerance(x), dtype=np.float64), x.shape)
    over = int(np.count_nonzero(np.abs(xf[finite] - yf[finite]) > bound[finite]))
    if over or not np.array_equal(xf[~finite], yf[~finite], equal_nan=True):
        return f"FAILED: {over} element(s) over the bound, or non-finite values changed"
    return "ok: within bound"


def _progress(items: list[T], quiet: bool, what: str, unit: str) -> Iterable[T]:
    """``items``, with a progress bar on stderr when there are several and output is not quiet."""
    if quiet or len(items) < 2:
        return items
    from tqdm import tqdm

    bar: Iterable[T] = tqdm(items, desc=what, unit=unit, file=sys.stderr, leave=False)
    return bar


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    """A demo row for JSON: tuples as lists, non-finite floats as strings (``"inf"``)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        out[key] = list(value) if isinstance(value, tuple) else value
    return out
