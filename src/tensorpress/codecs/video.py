"""``video(codec=h264|h265|av1|ffv1, crf=… | psnr=…, bits=8|10|12|16, pca=…)``: float cubes as video planes
through the ffmpeg binary (the xarrayvideo idea).

Layout: the input is seen as ``(time, y, x, bands)``: a 3-D ``(time, y, x)`` cube has one band, a 2-D image is
one frame, a 1-D array one row; more than 4 axes are merged into time. With ``pca=k`` the bands are first
rotated onto their ``k`` principal components (mean and basis stored as float64 parts). Each plane (band or
component) is scaled by its own minimum and range (kept in the header) to integer codes ``0 … 2**bits − 1``;
planes go three at a time into ``yuv444p*`` videos and one at a time into ``gray*`` videos, one video per part.
Non-finite cells (NaN, ±Inf: land, fill values) are kept exactly in a range-coded mask (the ``wavelet``
codec's) and filled with a smooth continuation before scaling, so the encoder sees no coastline edges.

Guarantees:

- ``ffv1`` is lossless on the codes: every element is within half a quantization step of its band, i.e.
  ``(max − min) / (2 (2**bits − 1))``, plus the rounding into the output dtype (no ``pca``).
- ``h264``/``h265``/``av1`` are lossy video codecs with no per-element bound of their own: ``crf`` sets the
  quality, ``psnr=p`` searches the largest ``crf`` whose reconstruction reaches ``p`` dB (peak = the finite
  value range). The header records the max abs error and PSNR the encoder reached on this array; that is the
  only per-element bound there is.

Encoders run single-threaded so that output is deterministic (dask runs chunks in parallel instead). The
ffmpeg binary comes from ``imageio-ffmpeg`` (``pip install 'tensorpress[video]'``, a static build with
libx264, libx265, libaom and ffv1), else ``ffmpeg`` on the PATH.
"""

from __future__ import annotations

import functools
import hashlib
import math
import shutil
import subprocess
import threading
import typing
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import ml_dtypes
import numpy as np

from ..core.codec import Codec, float_input, register
from ..core.dtypes import native
from ..core.encoded import Encoded
from ..core.errors import BlobError, BoundError, ConfigError, InputError, MissingDependencyError, TensorpressError
from . import _wavelet_layers as layers

#: codec name → (ffmpeg encoder, stream format, bit depths, crf range, default crf, encoder options)
CODECS: dict[str, tuple[str, str, tuple[int, ...], int, int, tuple[str, ...]]] = {
    "h264": ("libx264", "h264", (8, 10), 51, 20,
             ("-preset", "medium", "-tune", "psnr", "-threads", "1", "-bsf:v", "filter_units=remove_types=6")),
    "h265": ("libx265", "hevc", (8, 10, 12), 51, 20,
             ("-preset", "medium", "-tune", "psnr", "-x265-params", "log-level=error:pools=1:frame-threads=1:info=0")),
    "av1": ("libaom-av1", "obu", (8, 10, 12), 63, 30, ("-b:v", "0", "-cpu-used", "6", "-threads", "1")),
    "ffv1": ("ffv1", "nut", (8, 10, 12, 16), 0, 0, ("-level", "3", "-coder", "range_def", "-context", "1",
                                                    "-slicecrc", "0", "-threads", "1")),
}
#: frames are padded (edge values) to multiples of these: libx265 fails or corrupts memory on some small 8-bit
#: frames, ffv1 refuses frames one pixel wide
ALIGN = {"h264": 2, "h265": 16, "av1": 2, "ffv1": 2}
#: and to at least this width: libx265 + ffmpeg's decoder reconstruct frames 32 pixels wide or narrower wrongly
#: (errors of most of the code range on a few pixels, even with lossless=1); 48 and wider were exact
MIN_WIDTH = {"h265": 64}


class VideoToolError(TensorpressError, RuntimeError):
    """The ffmpeg binary failed on data it should take."""


@register
@dataclass(frozen=True)
class Video(Codec):
    codec: str = "h265"
    crf: int | None = None
    psnr: float | None = None
    bits: int = 10
    pca: int | None = None

    codec_id: ClassVar[str] = "video"
    accepts_integers: ClassVar[bool] = False
    summary: ClassVar[str] = "float cubes as video planes through ffmpeg (h264, h265, av1; ffv1 lossless on codes)"
    examples: ClassVar[tuple[str, ...]] = (
        "video(codec=ffv1, bits=12)",
        "video(codec=h264, crf=18)",
        "video(codec=h264, psnr=40)",
    )

    def validate(self) -> None:
        if self.codec not in CODECS:
            raise ConfigError(f"video: codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        _, _, depths, crf_max, _, _ = CODECS[self.codec]
        if self.bits not in depths:
            raise ConfigError(f"video: {self.codec} takes bits={' | '.join(map(str, depths))}, got {self.bits}")
        if self.codec == "ffv1" and (self.crf is not None or self.psnr is not None):
            raise ConfigError("video: ffv1 is lossless on the codes and takes no crf or psnr; set bits= instead")
        if self.crf is not None and self.psnr is not None:
            raise ConfigError("video: give crf=… or psnr=…, not both")
        if self.crf is not None and not 0 <= self.crf <= crf_max:
            raise ConfigError(f"video: crf for {self.codec} must be in 0..{crf_max}, got {self.crf}")
        if self.psnr is not None and not (math.isfinite(self.psnr) and self.psnr > 0):
            raise ConfigError(f"video: psnr must be a finite number of dB > 0, got {self.psnr}")
        if self.pca is not None and self.pca < 1:
            raise ConfigError(f"video: pca must be a number of components >= 1, got {self.pca}")

    # --- encoding -------------------------------------------------------------------------------------
    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        float_input(x, self.codec_id)
        parts, meta = self._encode(x)
        if "max_abs" in meta:
            _remember(self, x, float(meta["max_abs"]))
        return self._make(x, parts, meta)

    def _encode(self, x: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
        if x.size == 0:
            return {}, {"mode": "empty"}
        work = work_shape(x.shape)
        x64 = np.asarray(x, dtype=np.float64).reshape(work)
        finite = np.isfinite(x64)
        parts = layers.encode_mask(x.reshape(work), finite)
        if not finite.any():
            return parts, {"mode": "mask"}
        filled = np.stack([layers.smooth_fill(x64[..., b], finite[..., b]) for b in range(work[3])], axis=-1)
        planes = filled
        if self.pca is not None:
            if self.pca > work[3]:
                raise InputError(f"video: pca={self.pca} needs input (time, y, x, bands) with at least {self.pca} "
                                 f"bands, got shape {x.shape}; lower pca or leave it out")
            mean, basis = principal_axes(filled, self.pca)
            planes = (filled - mean) @ basis
            parts.update(pca_mean=mean, pca_basis=basis)
        lo = planes.min(axis=(0, 1, 2))
        span = planes.max(axis=(0, 1, 2)) - lo
        if not np.all(np.isfinite(span)):
            raise InputError(f"video: the value range of {x.dtype} input overflows float64 (min {float(lo.min())!r});"
                             " scale the data first")
        codes = quantize(planes, lo, span, self.bits)
        meta: dict[str, Any] = {"mode": "video", "lo": lo.tolist(), "span": span.tolist()}
        ctx = _Trial(self, x, x64, finite, parts, meta, codes)
        if self.codec == "ffv1":
            return ctx.at_crf(0)
        if self.psnr is not None:
            return ctx.at_psnr(self.psnr)
        return ctx.at_crf(CODECS[self.codec][4] if self.crf is None else self.crf)

    # --- decoding -------------------------------------------------------------------------------------
    def decode_array(self, enc: Encoded) -> np.ndarray:
        self._check_owner(enc)
        shape, dtype = enc.shape, enc.dtype
        mode = enc.meta.get("mode")
        if mode == "empty":
            if math.prod(shape):
                raise BlobError(f"video: an 'empty' blob records the non-empty shape {shape}")
            return np.zeros(shape, dtype)
        work = work_shape(shape)
        if mode == "mask":
            out = np.zeros(work, native(dtype))
        elif mode == "video":
            out = _cast(self._reconstruct(enc, work), dtype)
        else:
            raise BlobError(f"video: unknown mode {mode!r} in header")
        layers.apply_mask(enc, out, dtype)
        return out.reshape(shape).astype(dtype, copy=False)

    def _reconstruct(self, enc: Encoded, work: tuple[int, ...]) -> np.ndarray:
        """float64 values in the work shape ``(time, y, x, bands)``."""
        n_planes = work[3] if self.pca is None else self.pca
        lo, span = (_floats(enc.meta.get(k), n_planes, k) for k in ("lo", "span"))
        codes = np.empty((*work[:3], n_planes), np.uint16)
        for i, (first, count) in enumerate(plane_groups(n_planes)):
            codes[..., first:first + count] = decode_video(self.codec, self.bits, enc.part_bytes(f"video{i}"),
                                                           work[:3], count)
        planes = dequantize(codes, lo, span, self.bits)
        if self.pca is None:
            return planes
        mean = enc.part_array("pca_mean", "<f8", (work[3],))
        basis = enc.part_array("pca_basis", "<f8", (work[3], self.pca))
        return planes @ basis.T + mean

    # --- the guarantee --------------------------------------------------------------------------------
    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """ffv1 without pca: half a quantization step of each band plus the rounding into ``x``'s dtype.
        Otherwise the max abs error the encoder reached on ``x`` (recorded in the header; ``x`` is encoded
        again unless it was just encoded)."""
        float_input(x, self.codec_id)
        if x.size == 0:
            return 0.0
        if self.codec == "ffv1" and self.pca is None:
            return _ffv1_tolerance(x, self.bits)
        found = _recall(self, x)
        if found is None:
            _, meta = self._encode(x)
            found = float(meta.get("max_abs", 0.0))
        return found


class _Trial:
    """One array being encoded: its codes, and encodings at given crf values."""

    def __init__(self, codec: Video, x: np.ndarray, x64: np.ndarray, finite: np.ndarray, parts: dict[str, Any],
                 meta: dict[str, Any], codes: np.ndarray) -> None:
        self.codec, self.x, self.x64, self.finite = codec, x, x64, finite
        self.parts, self.meta, self.codes = parts, meta, codes
        self.range = float(x64[finite].max() - x64[finite].min())

    def at_crf(self, crf: int) -> tuple[dict[str, Any], dict[str, Any]]:
        c = self.codec
        parts = dict(self.parts)
        for i, (first, count) in enumerate(plane_groups(self.codes.shape[3])):
            parts[f"video{i}"] = encode_video(c.codec, c.bits, self.codes[..., first:first + count], crf)
        meta = {**self.meta, "crf": crf} if c.codec != "ffv1" else dict(self.meta)
        enc = Encoded(c, tuple(self.x.shape), self.x.dtype, parts, meta)
        out = c.decode_array(enc).reshape(self.x64.shape).astype(np.float64)
        err = np.abs(out[self.finite] - self.x64[self.finite])
        meta["max_abs"] = float(err.max())
        if meta["max_abs"] > 0 and self.range > 0:
            rel = err / self.range
            meta["psnr"] = -10 * math.log10(float(np.mean(rel * rel)))
        return parts, meta

    def at_psnr(self, target: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """The largest crf whose reconstruction reaches ``target`` dB.

        PSNR falls by about 1 dB per crf step (6 steps double the quantizer step): secant-like moves from the
        codec's default crf, inside the bracket [largest crf that passed, smallest that failed]."""
        top = CODECS[self.codec.codec][3]
        tried: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        passed, failed = -1, top + 1
        crf = CODECS[self.codec.codec][4]
        while failed - passed > 1:
            tried[crf] = self.at_crf(crf)
            margin = float(tried[crf][1].get("psnr", math.inf)) - target
            if margin >= 0:
                passed = crf
            else:
                failed = crf
            move = round(margin) if math.isfinite(margin) else top
            crf = min(max(crf + (move or (1 if margin >= 0 else -1)), passed + 1), failed - 1)
        if passed < 0:
            best = max(float(meta.get("psnr", math.inf)) for _, meta in tried.values())
            raise BoundError(f"video: psnr={target} dB is out of reach for {self.codec.codec} at bits="
                             f"{self.codec.bits} on this array (best {best:.2f} dB, at crf=0); allow more bits "
                             "or lower the target")
        return tried[passed]


# --- layout ---------------------------------------------------------------------------------------------------


def work_shape(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """``(time, y, x, bands)`` of an input shape (see the module docstring)."""
    if len(shape) >= 4:
        return (math.prod(shape[:-3]), shape[-3], shape[-2], shape[-1])
    padded = (1,) * (3 - len(shape)) + tuple(shape)
    return (padded[0], padded[1], padded[2], 1)


def plane_groups(n: int) -> list[tuple[int, int]]:
    """(first plane, plane count) of each video: three planes per yuv444 video, the rest one per gray video."""
    triples = [(i, 3) for i in range(0, n - n % 3, 3)]
    return triples + [(i, 1) for i in range(n - n % 3, n)]


def principal_axes(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean (bands,), basis (bands, k)) of ``values`` (..., bands): the ``k`` leading principal axes."""
    flat = values.reshape(-1, values.shape[-1])
    mean = flat.mean(axis=0)
    centred = flat - mean
    eigval, eigvec = np.linalg.eigh(centred.T @ centred)
    basis = eigvec[:, np.argsort(eigval)[::-1][:k]]
    basis *= np.where(basis[np.argmax(np.abs(basis), axis=0), np.arange(k)] < 0, -1.0, 1.0)  # a fixed sign
    return mean, np.ascontiguousarray(basis)


def quantize(planes: np.ndarray, lo: np.ndarray, span: np.ndarray, bits: int) -> np.ndarray:
    """float64 planes (t, y, x, p) → uint16 codes ``0 … 2**bits − 1`` (a constant plane: all 0)."""
    top = (1 << bits) - 1
    scale = np.divide(top, span, out=np.zeros_like(span), where=span > 0)
    return np.clip(np.rint((planes - lo) * scale), 0, top).astype(np.uint16)


def dequantize(codes: np.ndarray, lo: np.ndarray, span: np.ndarray, bits: int) -> np.ndarray:
    step = span / ((1 << bits) - 1)
    return np.minimum(lo + codes * step, lo + span)


# --- ffmpeg -----------------------------------------------------------------------------------------------


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: imageio-ffmpeg's (or the one ``IMAGEIO_FFMPEG_EXE`` names), else the PATH's."""
    try:
        import imageio_ffmpeg
    except ImportError:
        found = shutil.which("ffmpeg")
        if found is None:
            raise MissingDependencyError("imageio-ffmpeg", "video", "the video codec (an ffmpeg binary)") from None
        return found
    return str(imageio_ffmpeg.get_ffmpeg_exe())


@functools.cache
def ffmpeg_encoders() -> frozenset[str]:
    """Names of the video encoders the ffmpeg binary has."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=60)
    return frozenset(line.split()[1] for line in out.stdout.splitlines() if line.startswith(" V"))


def available_codecs() -> list[str]:
    """The ``codec=`` values this machine's ffmpeg can encode (empty without an ffmpeg binary)."""
    try:
        have = ffmpeg_encoders()
    except MissingDependencyError:
        return []
    return [name for name, entry in CODECS.items() if entry[0] in have]


def _encoder(codec: str) -> str:
    name = CODECS[codec][0]
    if name not in ffmpeg_encoders():
        raise MissingDependencyError(
            "imageio-ffmpeg", "video", f"video(codec={codec}) (ffmpeg's {name} encoder, missing from {ffmpeg_exe()})"
        )
    return name


def frame_size(codec: str, h: int, w: int) -> tuple[int, int]:
    """(height, width) of the coded frames for ``h`` × ``w`` planes (see :data:`ALIGN`, :data:`MIN_WIDTH`)."""
    align = ALIGN[codec]
    return h + -h % align, max(w + -w % align, MIN_WIDTH.get(codec, 0))


def _pix_fmt(count: int, bits: int) -> str:
    base = "yuv444p" if count == 3 else "gray"
    return base if bits == 8 else f"{base}{bits}le"


def encode_video(codec: str, bits: int, codes: np.ndarray, crf: int) -> bytes:
    """uint16 codes (t, y, x, planes of one group) → the video stream's bytes."""
    t, h, w, count = codes.shape
    fh, fw = frame_size(codec, h, w)
    ph, pw = fh - h, fw - w
    frames = np.pad(codes, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge") if ph or pw else codes
    raw = np.ascontiguousarray(frames.transpose(0, 3, 1, 2)).astype("u1" if bits == 8 else "<u2")
    pix = _pix_fmt(count, bits)
    name, fmt, _, _, _, options = CODECS[codec]
    quality = () if codec == "ffv1" else ("-crf", str(crf))
    args = ["-f", "rawvideo", "-pix_fmt", pix, "-s", f"{w + pw}x{h + ph}", "-r", "25", "-i", "pipe:0",
            "-c:v", _encoder(codec), *quality, *options, "-pix_fmt", pix, "-f", fmt, "pipe:1"]
    return _run(args, raw.tobytes(), limit=2 * raw.nbytes + (1 << 20), failure=VideoToolError,
                what=f"encoding {t} frames of {h}x{w} with {name}")


def decode_video(codec: str, bits: int, stream: bytes | memoryview, frames: tuple[int, ...], count: int) -> np.ndarray:
    """A video stream → uint16 codes (t, y, x, count), padding cropped."""
    t, h, w = frames
    ph, pw = frame_size(codec, h, w)
    dtype = np.dtype("u1" if bits == 8 else "<u2")
    size = t * count * ph * pw * dtype.itemsize
    args = ["-f", CODECS[codec][1], "-i", "pipe:0", "-frames:v", str(t), "-f", "rawvideo",
            "-pix_fmt", _pix_fmt(count, bits), "pipe:1"]
    raw = _run(args, bytes(stream), limit=size, failure=BlobError, what=f"decoding a {codec} stream")
    if len(raw) != size:
        raise BlobError(f"video: the {codec} stream decoded to {len(raw)} bytes, expected {size} "
                        f"({t} frames of {ph}x{pw}, {count} plane(s)); the blob is corrupt")
    out = np.frombuffer(raw, dtype).reshape(t, count, ph, pw)[:, :, :h, :w]
    return out.transpose(0, 2, 3, 1).astype(np.uint16)


def _run(args: list[str], data: bytes, *, limit: int, failure: type[TensorpressError], what: str) -> bytes:
    """Run ffmpeg with ``data`` on stdin; stdout, at most ``limit`` bytes (more raises ``failure``)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", *args]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdin, stdout, stderr = (typing.cast(typing.IO[bytes], s) for s in (proc.stdin, proc.stdout, proc.stderr))
    errors: list[bytes] = []

    def feed() -> None:
        try:
            stdin.write(data)
        except BrokenPipeError:  # ffmpeg stopped reading: its exit status and stderr say why
            pass
        finally:
            stdin.close()

    def drain() -> None:
        errors.append(stderr.read(1 << 16))
        stderr.read()

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=drain, daemon=True)]
    for th in threads:
        th.start()
    out = stdout.read(limit + 1)
    if len(out) > limit:
        proc.kill()
    stdout.close()
    proc.wait()
    for th in threads:
        th.join()
    stderr.close()
    if len(out) > limit:
        raise failure(f"video: {what}: ffmpeg wrote more than the {limit} bytes expected")
    if proc.returncode != 0:
        message = b"".join(errors).decode(errors="replace").strip().splitlines()[-3:]
        raise failure(f"video: {what}: ffmpeg failed (exit status {proc.returncode}): {' | '.join(message)}")
    return out


# --- bounds -----------------------------------------------------------------------------------------------


def _ffv1_tolerance(x: np.ndarray, bits: int) -> np.ndarray:
    """Per element: half a code step of the element's band, float64 rounding, and rounding into x's dtype."""
    work = work_shape(x.shape)
    x64 = np.asarray(x, dtype=np.float64).reshape(work)
    finite = np.isfinite(x64)
    lo = np.where(finite, x64, np.inf).min(axis=(0, 1, 2))
    hi = np.where(finite, x64, -np.inf).max(axis=(0, 1, 2))
    lo, span = np.where(np.isfinite(lo), lo, 0.0), np.where(np.isfinite(hi - lo), hi - lo, 0.0)
    half = span / (2 * ((1 << bits) - 1)) + 4 * np.finfo(np.float64).eps * (np.abs(lo) + span)
    tol = half + _ulp(np.abs(np.where(finite, x64, 0.0)) + half, x.dtype)
    return tol.reshape(x.shape)


def _ulp(a: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """Spacing of ``dtype``'s values at magnitude ``a`` (float64): what rounding into the dtype can add."""
    if native(dtype) == np.float64:
        return np.zeros_like(a)
    info = ml_dtypes.finfo(dtype)
    exp = np.floor(np.log2(np.maximum(a, float(info.smallest_normal))))
    return np.exp2(exp - int(info.nmant))


_RECENT: OrderedDict[tuple[str, str, tuple[int, ...], bytes], float] = OrderedDict()
_RECENT_LOCK = threading.Lock()


def _key(codec: Video, x: np.ndarray) -> tuple[str, str, tuple[int, ...], bytes]:
    digest = hashlib.blake2b(np.ascontiguousarray(x).view(np.uint8).reshape(-1).data, digest_size=16).digest()
    return str(codec), x.dtype.str, tuple(x.shape), digest


def _remember(codec: Video, x: np.ndarray, bound: float) -> None:
    """Keep the bound reached on the last few arrays, so ``tolerance`` right after ``encode`` is free."""
    with _RECENT_LOCK:
        _RECENT[_key(codec, x)] = bound
        while len(_RECENT) > 16:
            _RECENT.popitem(last=False)


def _recall(codec: Video, x: np.ndarray) -> float | None:
    with _RECENT_LOCK:
        return _RECENT.get(_key(codec, x))


def _cast(rec: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    with np.errstate(over="ignore"):
        return rec.astype(native(dtype))


def _floats(v: Any, n: int, name: str) -> np.ndarray:
    if not isinstance(v, list) or len(v) != n or not all(isinstance(f, (int, float)) for f in v):
        raise BlobError(f"video: header {name!r} must list {n} numbers, got {v!r:.80}")
    out = np.array(v, dtype=np.float64)
    if not np.all(np.isfinite(out)) or (name == "span" and np.any(out < 0)):
        raise BlobError(f"video: bad {name!r} in header: {v!r:.80}")
    return out
