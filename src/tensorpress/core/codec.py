"""The codec model: a frozen dataclass per method, registered by ``codec_id``; chains of codecs.

Roles (the zarr split):
- ``transform``: array → array of the same shape (``forward``/``backward``), e.g. ``bitround``.
- ``array``: array → :class:`Encoded` with named parts, e.g. ``quant``, ``raw``.
- ``bytes``: bytes → bytes (``compress``/``decompress``), e.g. ``zstd``; alone it compresses the array's bytes.

A chain ``t1 | … | tk | c | b1 | … | bj`` runs the transforms, lets the first non-transform ``c`` encode
the array, then compresses ``c``'s serialized blob with each bytes codec in turn.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from . import spec as spec_syntax
from .dtypes import as_array, byte_view, dtype_to_str, is_float, to_little_endian
from .errors import BlobError, ConfigError, InputError, SpecError
from .registry import Registry

if typing.TYPE_CHECKING:
    from .encoded import Encoded

CODECS: Registry[type[Codec]] = Registry(
    "codec", entry_point_group="tensorpress.codecs", packages=("tensorpress.codecs", "tensorpress.formats")
)


def register(cls: type[CodecT]) -> type[CodecT]:
    """Class decorator: add a codec to the registry under its ``codec_id``."""
    if not cls.codec_id:
        raise ValueError(f"{cls.__name__} has no codec_id")
    CODECS.register(cls.codec_id, cls)
    return cls


@dataclass(frozen=True)
class Codec:
    """Base of every codec. Subclasses are frozen dataclasses whose fields are the configuration."""

    codec_id: ClassVar[str] = ""
    role: ClassVar[str] = "array"
    lossless: ClassVar[bool] = False
    summary: ClassVar[str] = ""
    positional: ClassVar[str | None] = None
    #: spec strings the conformance tests run on real data; the first is the typical use
    examples: ClassVar[tuple[str, ...]] = ()
    #: whether integer/bool input and NaN/Inf are handled; where not, encode raises InputError
    accepts_integers: ClassVar[bool] = True
    accepts_nonfinite: ClassVar[bool] = True
    #: parameters added after spec strings and configurations of the codec were stored (blobs, result
    #: caches): left out of ``str`` and ``to_config`` while at their default, so those stay as they were
    omitted_at_default: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        hints = _field_types(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            coerced = _coerce(type(self).codec_id, f.name, value, hints[f.name])
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)
        self.validate()

    def validate(self) -> None:
        """Range checks of the configuration; raise :class:`ConfigError`."""

    # --- the work -------------------------------------------------------------------------------------
    def encode(self, x: Any, *, calib: Any = None) -> Encoded:
        """Compress ``x`` (any array-like; see :func:`as_array`) into an :class:`Encoded`."""
        arr = as_array(x)
        if self.role == "transform":
            data, meta = self.forward(arr)
            return self._make(arr, {"data": to_little_endian(data)}, meta)
        if self.role == "bytes":
            raw = to_little_endian(arr)
            return self._make(arr, {"data": self.compress(byte_view(raw), arr.dtype.itemsize)}, {})
        return self.encode_array(arr, calib=calib)

    def decode(self, enc: Encoded) -> np.ndarray:
        """Rebuild the array: the input's shape and dtype."""
        self._check_owner(enc)
        if self.role == "transform":
            data = enc.part_array("data", enc.dtype.newbyteorder("<"), enc.shape)
            return restore_dtype(self.backward(data, enc.meta, enc.dtype), enc.dtype)
        if self.role == "bytes":
            expected = math.prod(enc.shape) * enc.dtype.itemsize
            raw = self.decompress(enc.part_bytes("data"), expected)
            data = np.frombuffer(raw, dtype=enc.dtype.newbyteorder("<")).reshape(enc.shape)
            return restore_dtype(data, enc.dtype)
        return self.decode_array(enc)

    def encode_array(self, x: np.ndarray, *, calib: Any = None) -> Encoded:
        raise NotImplementedError

    def decode_array(self, enc: Encoded) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    def backward(self, y: np.ndarray, meta: Mapping[str, Any], dtype: np.dtype[Any]) -> np.ndarray:
        return y

    def compress(self, data: memoryview, typesize: int = 1) -> bytes | memoryview:
        """Bytes codecs: compress ``data`` whose elements are ``typesize`` bytes wide."""
        raise NotImplementedError

    def decompress(self, data: memoryview | bytes, size: int) -> bytes | np.ndarray:
        """Bytes codecs: the ``size`` bytes ``data`` holds (``bytes`` or a uint8 array); BlobError when it
        does not hold them."""
        raise NotImplementedError

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        """Largest allowed ``|decode(encode(x)) - x|`` per element (broadcastable); 0 for lossless codecs."""
        return 0.0

    # --- helpers for subclasses -----------------------------------------------------------------------
    def _make(self, x: np.ndarray, parts: dict[str, Any], meta: dict[str, Any]) -> Encoded:
        from .encoded import Encoded

        return Encoded(self, tuple(x.shape), x.dtype, parts, meta)

    def _check_owner(self, enc: Encoded) -> None:
        if enc.codec.codec_id != self.codec_id:
            raise BlobError(f"{self.codec_id} cannot decode data encoded by {enc.codec.codec_id}")

    # --- configuration --------------------------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        """``{"name": codec_id, "configuration": {…}}`` with every parameter, JSON-ready."""
        conf = {f.name: _to_json(getattr(self, f.name)) for f in self._written_fields()}
        return {"name": self.codec_id, "configuration": conf}

    def __str__(self) -> str:
        fields = self._written_fields()
        inner = ", ".join(f"{f.name}={spec_syntax.format_value(getattr(self, f.name))}" for f in fields)
        return f"{self.codec_id}({inner})"

    def _written_fields(self) -> list[dataclasses.Field[Any]]:
        """The fields ``str`` and ``to_config`` write: all but those of ``omitted_at_default`` at their default."""
        return [f for f in dataclasses.fields(self)
                if f.name not in self.omitted_at_default or getattr(self, f.name) != f.default]

    def __or__(self, other: Codec) -> Chain:
        if not isinstance(other, Codec):
            return NotImplemented
        left = self.stages if isinstance(self, Chain) else (self,)
        right = other.stages if isinstance(other, Chain) else (other,)
        return Chain(left + right)


CodecT = typing.TypeVar("CodecT", bound=Codec)


@dataclass(frozen=True)
class Chain(Codec):
    """Codecs applied left to right (see the module docstring)."""

    stages: tuple[Codec, ...] = ()
    codec_id: ClassVar[str] = "chain"
    summary: ClassVar[str] = "codecs applied left to right: transforms, one encoder, then byte compressors"

    def validate(self) -> None:
        if len(self.stages) < 2:
            raise ConfigError(f"a chain needs at least two codecs, got {len(self.stages)}")
        seen_encoder = False
        for stage in self.stages:
            if not isinstance(stage, Codec) or isinstance(stage, Chain):
                raise ConfigError(f"chain stages must be single codecs, got {stage!r}")
            if seen_encoder and stage.role != "bytes":
                raise ConfigError(
                    f"in a chain, only byte compressors (zstd, blosc…) may follow the encoder; got {stage}"
                )
            seen_encoder = seen_encoder or stage.role != "transform"

    @property
    def lossless(self) -> bool:  # type: ignore[override]
        return all(s.lossless for s in self.stages)

    @property
    def accepts_integers(self) -> bool:  # type: ignore[override]
        return all(s.accepts_integers for s in self.stages)

    @property
    def accepts_nonfinite(self) -> bool:  # type: ignore[override]
        return all(s.accepts_nonfinite for s in self.stages)

    def _split(self) -> tuple[list[Codec], Codec | None, list[Codec]]:
        stages = list(self.stages)
        k = next((i for i, s in enumerate(stages) if s.role != "transform"), len(stages))
        encoder = stages[k] if k < len(stages) else None
        return stages[:k], encoder, stages[k + 1 :]

    def encode(self, x: Any, *, calib: Any = None) -> Encoded:
        from .encoded import Encoded

        arr = as_array(x)
        transforms, encoder, compressors = self._split()
        y, metas = arr, []
        for t in transforms:
            y, meta = t.forward(y)
            metas.append(meta)
        inner = (encoder or _raw_codec()).encode(y, calib=calib)
        meta_out: dict[str, Any] = {"stages": metas}
        if not compressors:
            return Encoded(self, tuple(arr.shape), arr.dtype, {"body": inner}, meta_out)
        data: bytes | memoryview = inner.to_buffer().data
        meta_out["sizes"] = [len(data)]
        for c in compressors:
            data = c.compress(memoryview(data))
            meta_out["sizes"].append(len(data))
        return Encoded(self, tuple(arr.shape), arr.dtype, {"body": data}, meta_out)

    def decode(self, enc: Encoded) -> np.ndarray:
        from .encoded import Encoded

        self._check_owner(enc)
        transforms, _, compressors = self._split()
        metas = enc.meta.get("stages")
        if not isinstance(metas, list) or len(metas) != len(transforms):
            raise BlobError("chain header: 'stages' does not match the chain's transforms")
        if compressors:
            sizes = enc.meta.get("sizes")
            if not isinstance(sizes, list) or len(sizes) != len(compressors) + 1:
                raise BlobError("chain header: 'sizes' does not match the chain's compressors")
            data: bytes | memoryview = enc.part_bytes("body")
            for c, size in zip(reversed(compressors), reversed(sizes[:-1]), strict=True):
                raw = c.decompress(data, _checked_size(size))
                data = raw.data if isinstance(raw, np.ndarray) else raw
            body = Encoded.from_bytes(data)
        else:
            body = enc.part_encoded("body")
        y = body.decode()
        for t, meta in zip(reversed(transforms), reversed(metas), strict=True):
            y = t.backward(y, meta, enc.dtype)
        return restore_dtype(y, enc.dtype)

    def tolerance(self, x: np.ndarray) -> np.ndarray | float:
        # Errors of successive lossy stages add up (triangle inequality).
        transforms, encoder, _ = self._split()
        total: np.ndarray | float = 0.0
        y = x
        for t in transforms:
            total = total + t.tolerance(y)
            y, _ = t.forward(y)
        if encoder is not None:
            total = total + encoder.tolerance(y)
        return total

    def to_config(self) -> dict[str, Any]:
        raise SpecError("a chain's configuration is a list: use chain_config()")

    def chain_config(self) -> list[dict[str, Any]]:
        return [s.to_config() for s in self.stages]

    def __str__(self) -> str:
        return " | ".join(str(s) for s in self.stages)


def _checked_size(size: Any) -> int:
    from .encoded import max_decode_bytes

    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or size > max_decode_bytes():
        raise BlobError(f"chain header: bad stage size {size!r}")
    return size


@functools.cache
def _raw_codec() -> Codec:
    return CODECS.get("raw")()


def restore_dtype(y: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """``y`` as ``dtype`` (byte order included), rounding and clipping into integer ranges."""
    if y.dtype == dtype:
        return y
    if dtype.kind in "iu" and y.dtype.kind == "f":
        info = np.iinfo(dtype)
        with np.errstate(invalid="ignore"):  # NaN can only come from data decoded without checksums
            y = np.clip(np.rint(y), info.min, info.max).astype(dtype)
    elif dtype.kind == "b":
        y = np.rint(y) != 0 if y.dtype.kind == "f" else y != 0
    return np.asarray(y).astype(dtype)  # NumPy turns 0-d results of ufuncs into scalars


# --- spec strings and JSON --------------------------------------------------------------------------


def build(spec: Any) -> Codec:
    """A codec from a spec string, a JSON configuration (dict or list), or a codec (returned as is)."""
    if isinstance(spec, Codec):
        return spec
    if isinstance(spec, str):
        calls = spec_syntax.parse(spec)
        codecs = [_from_call(c) for c in calls]
        return codecs[0] if len(codecs) == 1 else Chain(tuple(codecs))
    if isinstance(spec, (Mapping, list, tuple)) and nesting_depth(spec, MAX_NESTING) > MAX_NESTING:
        raise SpecError(f"configuration nests deeper than {MAX_NESTING} levels")
    if isinstance(spec, Mapping):
        return _from_mapping(spec)
    if isinstance(spec, Sequence) and not isinstance(spec, (bytes, bytearray)):
        codecs = [build(s) for s in spec]
        if len(codecs) == 1:
            return codecs[0]
        return Chain(tuple(codecs))
    raise SpecError(f"expected a spec string, JSON configuration or codec, got {type(spec).__name__}")


#: deepest nesting of lists/objects accepted in a JSON configuration or blob header
MAX_NESTING = 32


def nesting_depth(value: Any, limit: int) -> int:
    """Levels of nested lists/tuples/mappings in ``value`` (0 for a scalar), counted without recursion.

    Counting stops once it passes ``limit``, so hostile input costs at most ``limit`` passes over it.
    """
    depth, level = 0, [value]
    while depth <= limit:
        level = [v for v in level if isinstance(v, (Mapping, list, tuple))]
        if not level:
            break
        depth += 1
        level = [item for v in level for item in (v.values() if isinstance(v, Mapping) else v)]
    return depth


def config_of(codec: Codec) -> dict[str, Any] | list[dict[str, Any]]:
    """JSON configuration of a codec or chain (a chain is a list)."""
    return codec.chain_config() if isinstance(codec, Chain) else codec.to_config()


def _from_call(call: spec_syntax.Call) -> Codec:
    cls = CODECS.get(call.name)
    kwargs = {k: _spec_value(v) for k, v in call.kwargs.items()}
    if call.args:
        if cls.positional is None or len(call.args) > 1:
            raise SpecError(
                f"{call.name} takes keyword parameters only (name=value), got positional {call.args!r}"
            )
        if cls.positional in kwargs:
            raise SpecError(f"{call.name}: {cls.positional!r} given both positionally and by name")
        kwargs[cls.positional] = _spec_value(call.args[0])
    return _instantiate(cls, kwargs)


def _spec_value(value: Any) -> Any:
    """A parsed parameter value as a configuration value: a nested spec becomes a codec or chain."""
    if isinstance(value, spec_syntax.Call):
        return _from_call(value)
    if isinstance(value, list):  # the parser gives a chain written as a value as a list of calls
        return Chain(tuple(_from_call(c) for c in value))
    if isinstance(value, tuple):
        return tuple(_spec_value(v) for v in value)
    return value


def _from_mapping(cfg: Mapping[str, Any]) -> Codec:
    if set(cfg) - {"name", "configuration"} or not isinstance(cfg.get("name"), str):
        raise SpecError(f'expected {{"name": …, "configuration": {{…}}}}, got {dict(cfg)!r}')
    conf = cfg.get("configuration", {})
    if not isinstance(conf, Mapping):
        raise SpecError(f"configuration of {cfg['name']!r} must be an object, got {conf!r}")
    return _instantiate(CODECS.get(cfg["name"]), {k: _from_json(v) for k, v in conf.items()})


def _instantiate(cls: type[Codec], kwargs: dict[str, Any]) -> Codec:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise SpecError(
            f"{cls.codec_id} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters: {', '.join(sorted(names)) or '(none)'}"
        )
    return cls(**kwargs)


def _to_json(value: Any) -> Any:
    if isinstance(value, Codec):
        return config_of(value)
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return spec_syntax.format_value(value)
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, Mapping) and "name" in value:
        return _from_mapping(value)
    if isinstance(value, list):
        if value and all(isinstance(v, Mapping) and "name" in v for v in value):
            return build(value)
        return tuple(_from_json(v) for v in value)
    return value


_FIELD_TYPES: dict[type[Codec], dict[str, Any]] = {}


def _field_types(cls: type[Codec]) -> dict[str, Any]:
    if cls not in _FIELD_TYPES:
        _FIELD_TYPES[cls] = typing.get_type_hints(cls)
    return _FIELD_TYPES[cls]


def _coerce(codec_id: str, name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's annotation; widen ints to floats, words to codecs."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        ok, out = _try_type(value, option)
        if ok:
            return out
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{codec_id}: {name} expected {expected}, got {value!r}")


def _try_type(value: Any, option: Any) -> tuple[bool, Any]:
    if option is type(None):
        return value is None, None
    if option is bool:
        return isinstance(value, bool), value
    if option is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if option is float:
        if isinstance(value, str) and value in ("inf", "nan", "-inf"):
            return True, float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if option is str:
        return isinstance(value, str), value
    if isinstance(option, type) and issubclass(option, Codec):
        if isinstance(value, Codec):
            return True, value
        if isinstance(value, (str, list, Mapping)):
            return True, build(value)
        return False, value
    if typing.get_origin(option) is tuple:
        if not isinstance(value, (tuple, list)):
            return False, value
        args = typing.get_args(option)
        item = args[0] if args else Any
        if item is Any:
            return True, tuple(value)
        converted = []
        for v in value:
            ok, out = _try_type(v, item)
            if not ok:
                return False, value
            converted.append(out)
        return True, tuple(converted)
    if typing.get_origin(option) is typing.Literal:
        return value in typing.get_args(option), value
    if option is Any:
        return True, value
    return isinstance(value, option), value


def float_input(x: np.ndarray, codec_id: str) -> None:
    """Raise a clear error unless ``x`` holds floating point numbers."""
    if not is_float(x.dtype):
        raise InputError(f"{codec_id} works on floating point data, got {dtype_to_str(x.dtype)}")
