"""The spec grammar and the codec registry (Contracts section of ARCHITECTURE.md).

``str(codec)`` is canonical (every parameter written) and parses back to an equal codec; the JSON
configuration round-trips too, through ``json.dumps``/``json.loads``. Nested specs are exercised with a
test-only codec, ``spectest``, registered for this module.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tensorpress as tp
from tensorpress.core import (
    CODECS,
    Chain,
    Codec,
    ConfigError,
    SpecError,
    TensorpressError,
    UnknownCodecError,
    build,
    config_of,
    register,
)
from tensorpress.core import spec as spec_syntax
from tensorpress.core.registry import Registry


@dataclass(frozen=True)
class SpecTest(Codec):
    """Test-only codec with one field of every kind the grammar has (nested codec, tuple, string…)."""

    values: Codec | None = None
    scale: float = 1.0
    label: str = "plain"
    window: tuple[int, ...] = (1, 4)
    exact: bool = False
    count: int = 3

    codec_id: ClassVar[str] = "spectest"
    positional: ClassVar[str | None] = "values"
    examples: ClassVar[tuple[str, ...]] = ("spectest(values=zstd(5), window=(2, 8))",)


@pytest.fixture(scope="module", autouse=True)
def spectest_codec() -> Iterator[None]:
    register(SpecTest)
    try:
        yield
    finally:
        CODECS._entries.pop("spectest")


# --- canonical text and JSON round trips ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("zstd", "zstd(level=3, threads=0)"),
        ("zstd(5)", "zstd(level=5, threads=0)"),
        ("  zstd ( level = 19 )  ", "zstd(level=19, threads=0)"),
        ("blosc(cname=lz4, shuffle=bit)", "blosc(cname=lz4, clevel=5, shuffle=bit, typesize=0)"),
        ("blosc(cname='lz4')", "blosc(cname=lz4, clevel=5, shuffle=byte, typesize=0)"),
        ('blosc(cname="zstd", clevel=9)', "blosc(cname=zstd, clevel=9, shuffle=byte, typesize=0)"),
        ("raw|zstd", "raw() | zstd(level=3, threads=0)"),
        (
            "raw | zstd(1) | blosc",
            "raw() | zstd(level=1, threads=0) | blosc(cname=zstd, clevel=5, shuffle=byte, typesize=0)",
        ),
        (
            "spectest",
            "spectest(values=none, scale=1.0, label=plain, window=(1, 4), exact=false, count=3)",
        ),
        (
            "spectest(values=zstd(5), window=(7,), exact=true, scale=-inf)",
            "spectest(values=zstd(level=5, threads=0), scale=-inf, label=plain, window=(7,), exact=true, count=3)",
        ),
        (
            "spectest(raw | zstd, window=(), label='say \"hi\"', scale=2)",
            "spectest(values=raw() | zstd(level=3, threads=0), scale=2.0, label='say \"hi\"', window=(), "
            "exact=false, count=3)",
        ),
        (
            'spectest(values=spectest(values=blosc, label="a b", count=-2), label=none-of-these)',
            "spectest(values=spectest(values=blosc(cname=zstd, clevel=5, shuffle=byte, typesize=0), scale=1.0, "
            'label="a b", window=(1, 4), exact=false, count=-2), scale=1.0, label=none-of-these, window=(1, 4), '
            "exact=false, count=3)",
        ),
        (
            'spectest(label="true", scale=1e-05)',
            'spectest(values=none, scale=1e-05, label="true", window=(1, 4), exact=false, count=3)',
        ),
    ],
)
def test_canonical_text(text: str, canonical: str) -> None:
    codec = tp.spec(text)
    assert str(codec) == canonical
    assert tp.spec(canonical) == codec
    assert str(tp.spec(canonical)) == canonical
    check_json(codec)


def check_json(codec: Codec) -> None:
    config = config_of(codec)
    assert build(config) == codec
    through_text = json.loads(json.dumps(config, allow_nan=False))
    assert build(through_text) == codec
    assert type(build(through_text)) is type(codec)


def test_json_shape_of_a_codec_and_a_chain() -> None:
    assert config_of(tp.spec("zstd(7)")) == {"name": "zstd", "configuration": {"level": 7, "threads": 0}}
    chain = tp.spec("raw | zstd")
    assert isinstance(chain, Chain)
    assert config_of(chain) == [
        {"name": "raw", "configuration": {}},
        {"name": "zstd", "configuration": {"level": 3, "threads": 0}},
    ]
    nested = config_of(tp.spec("spectest(values=raw | zstd, window=(2, 8))"))
    assert isinstance(nested, dict)
    assert nested["configuration"]["values"] == config_of(chain)
    assert nested["configuration"]["window"] == [2, 8]


def test_values_and_their_types() -> None:
    c = tp.spec("spectest(values=zstd, scale=3, label=e4m3, window=(1, -4, 16), exact=TRUE, count=0)")
    assert isinstance(c, SpecTest)
    assert c.values == tp.spec("zstd(level=3)")  # a bare word names a codec where a codec is expected
    assert isinstance(c.scale, float) and c.scale == 3.0  # ints widen to floats
    assert c.label == "e4m3" and c.window == (1, -4, 16) and c.exact is True and c.count == 0
    assert tp.spec("spectest(scale=inf)").scale == math.inf
    assert tp.spec("spectest(scale=+inf)").scale == math.inf
    assert math.isnan(tp.spec("spectest(scale=nan)").scale)
    assert tp.spec("spectest(values=none)").values is None
    assert tp.spec("spectest(label='')").label == ""


def test_positional_first_value_only_where_declared() -> None:
    assert tp.spec("zstd(5)") == tp.spec("zstd(level=5)")
    assert tp.spec("zstd(5, threads=2)") == tp.spec("zstd(level=5, threads=2)")
    with pytest.raises(SpecError, match=r"blosc takes keyword parameters only \(name=value\), got positional"):
        tp.spec("blosc(lz4)")
    with pytest.raises(SpecError, match="zstd takes keyword parameters only"):
        tp.spec("zstd(5, 3)")
    with pytest.raises(SpecError, match="'level' given both positionally and by name"):
        tp.spec("zstd(5, level=3)")
    with pytest.raises(SpecError, match="positional value after keywords"):
        tp.spec("zstd(threads=1, 5)")


# --- errors -------------------------------------------------------------------------------------------------
def test_unknown_codec_lists_the_registered_ones() -> None:
    for text in ("zzstd(level=3)", "raw | nosuch", "spectest(values=nosuch(1))"):
        with pytest.raises(UnknownCodecError) as info:
            tp.spec(text)
        message = str(info.value)
        assert "unknown codec" in message and "registered: " in message
        assert all(name in message for name in CODECS.names())
    with pytest.raises(UnknownCodecError, match="unknown codec 'nope'"):
        build({"name": "nope", "configuration": {}})


@pytest.mark.parametrize(
    ("text", "error", "fragment"),
    [
        ("zstd(lvl=3)", SpecError, "zstd has no parameter 'lvl'; its parameters: level, threads"),
        ("raw(level=3)", SpecError, r"raw has no parameter 'level'; its parameters: \(none\)"),
        ("zstd(level=fast)", ConfigError, "zstd: level expected int, got 'fast'"),
        ("zstd(level=3.0)", ConfigError, "zstd: level expected int, got 3.0"),
        ("zstd(level=true)", ConfigError, "zstd: level expected int, got True"),
        ("zstd(level=(1, 2))", ConfigError, r"zstd: level expected int, got \(1, 2\)"),
        ("zstd(level=99)", ConfigError, "zstd: level must be in -7..22, got 99"),
        ("spectest(window=(1, x))", ConfigError, "spectest: window expected tuple"),
        ("spectest(exact=1)", ConfigError, "spectest: exact expected bool, got 1"),
        ("spectest(values=5)", ConfigError, "spectest: values expected Codec or NoneType, got 5"),
        ("zstd(level=3, level=4)", SpecError, "parameter 'level' given twice"),
        ("zstd(level=3", SpecError, "it ends early"),
        ("zstd(level=", SpecError, "it ends where a value was expected"),
        ("zstd(level=3))", SpecError, "unexpected text after the spec at position 13"),
        ("spectest(window=(1, 2)", SpecError, "it ends early"),
        ("zstd(3) extra", SpecError, r"unexpected text after the spec at position 8 \('extra'\)"),
        ("zstd level=3", SpecError, "unexpected text after the spec"),
        ("zstd |", SpecError, "it ends early"),
        ("| zstd", SpecError, "expected a codec name"),
        ("", SpecError, "it ends early"),
        ("true", SpecError, "expected a codec name"),
        ("zstd(level=3;)", SpecError, "unexpected character at position 12"),
        ("zstd(level=\"3)", SpecError, "unexpected character"),
        ("spectest(label=\"a\\b\")", SpecError, "unexpected character"),
        ("zstd | raw", ConfigError, "only byte compressors .* may follow the encoder"),
        ("spectest(" * 40 + ")" * 40, SpecError, "nest deeper than 32 levels"),
        ("spectest(window=" + "(" * 5000 + ")" * 5000 + ")", SpecError, "nest deeper than 32 levels"),
    ],
)
def test_errors_say_what_is_wrong(text: str, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        tp.spec(text)


@pytest.mark.parametrize(
    ("config", "error", "fragment"),
    [
        ({"name": "zstd", "config": {}}, SpecError, 'expected {"name": …, "configuration"'),
        ({"configuration": {}}, SpecError, 'expected {"name"'),
        ({"name": "zstd", "configuration": [3]}, SpecError, "configuration of 'zstd' must be an object"),
        ({"name": "zstd", "configuration": {"level": "3"}}, ConfigError, "level expected int, got '3'"),
        ({"name": "zstd", "configuration": {"speed": 1}}, SpecError, "zstd has no parameter 'speed'"),
        ([], ConfigError, "a chain needs at least two codecs, got 0"),
        (5, SpecError, "expected a spec string, JSON configuration or codec, got int"),
        (b"zstd", SpecError, "got bytes"),
    ],
)
def test_json_errors(config: Any, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        build(config)


def test_deeply_nested_json_is_refused_without_recursing() -> None:
    deep: Any = {"name": "raw", "configuration": {}}
    for _ in range(2000):
        deep = {"name": "spectest", "configuration": {"values": deep}}
    with pytest.raises(SpecError, match="configuration nests deeper than 32 levels"):
        build(deep)
    deep_list: Any = "raw"
    for _ in range(2000):
        deep_list = [deep_list]
    with pytest.raises(SpecError, match="nests deeper"):
        build(deep_list)


def test_every_error_is_a_tensorpress_error() -> None:
    for bad in ("zstd(level=fast)", "nosuch", "zstd((", "blosc(lz4)"):
        with pytest.raises(TensorpressError):
            tp.spec(bad)


# --- property tests: random configurations of every registered codec round-trip -------------------------
@functools.cache
def example_values() -> dict[tuple[str, str], list[Any]]:
    """Parameter values the registered codecs' own examples use, keyed by (codec id, field)."""
    seen: dict[tuple[str, str], list[Any]] = {}
    for name, cls in CODECS.items():
        for text in cls.examples:
            for call in spec_syntax.parse(text):
                for key, value in call.kwargs.items():
                    seen.setdefault((call.name, key), []).append(value)
        for f in dataclasses.fields(cls):
            seen.setdefault((name, f.name), []).append(f.default)
    return seen


NESTED_VALUES = ["raw", "zstd(1)", "blosc(cname=lz4)", "raw | zstd", "spectest(label='x y', scale=-inf) | zstd"]
# Strings the grammar can write: anything without a backslash or both kinds of quotes.
WORDS = st.text(max_size=12).filter(lambda s: "\\" not in s and not ('"' in s and "'" in s)) | st.sampled_from(
    ["", "true", "None", "inf", "5", "a b", 'say "hi"', "it's", "e4m3", "x-1.5", "(", "|", "é"]
)
FLOATS = st.floats(allow_nan=False) | st.floats(-10, 10) | st.sampled_from([math.inf, -math.inf, -0.0, 5e-324, 1e300])


def random_values(hint: Any) -> st.SearchStrategy[Any]:
    """Random values of a parameter's declared type."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    out: list[st.SearchStrategy[Any]] = []
    for option in options:
        if option is type(None):
            out.append(st.none())
        elif option is bool:
            out.append(st.booleans())
        elif option is int:
            out.append(st.integers(-(2**40), 2**40) | st.integers(-3, 300))
        elif option is float:
            out.append(FLOATS)
        elif option is str:
            out.append(WORDS)
        elif typing.get_origin(option) is tuple:
            out.append(st.lists(st.integers(-(2**31), 2**31), max_size=4).map(tuple))
        elif isinstance(option, type) and issubclass(option, Codec):
            out.append(st.sampled_from(NESTED_VALUES).map(tp.spec))
    return st.one_of(*out)


@st.composite
def codecs(draw: st.DrawFn, allowed: list[str] | None = None) -> Codec:
    """A codec with random parameters; mostly values its own examples use, so that most validate."""
    name = draw(st.sampled_from(allowed or CODECS.names()))
    cls = CODECS.get(name)
    hints = typing.get_type_hints(cls)
    known = example_values()
    kwargs, known_only = {}, {}
    for f in dataclasses.fields(cls):
        usable = [v for v in known.get((name, f.name), []) if not isinstance(v, (spec_syntax.Call, list))]
        usable = [v for v in usable if v is not dataclasses.MISSING]
        random = draw(random_values(hints[f.name]))
        kwargs[f.name] = draw(st.sampled_from(usable)) if usable and draw(st.booleans()) else random
        known_only[f.name] = draw(st.sampled_from(usable)) if usable else random
    for attempt in (kwargs, known_only):  # random values a codec refuses: fall back to its examples' values
        try:
            return cls(**attempt)
        except ConfigError:
            pass
    assume(False)
    raise AssertionError("unreachable")


@st.composite
def chains(draw: st.DrawFn) -> Codec:
    """A valid chain: an optional transform, one encoder or byte codec, then byte codecs."""
    roles: dict[str, list[str]] = {}
    for name, cls in CODECS.items():
        roles.setdefault(cls.role, []).append(name)
    stages = []
    if roles.get("transform") and draw(st.booleans()):
        stages.append(draw(codecs(roles["transform"])))
    stages.append(draw(codecs(roles["array"] + roles["bytes"])))
    for _ in range(draw(st.integers(0 if len(stages) > 1 else 1, 2))):
        stages.append(draw(codecs(roles["bytes"])))
    return Chain(tuple(stages))


PROPERTY = settings(
    max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.filter_too_much]
)


def check_round_trips(codec: Codec) -> None:
    text = str(codec)
    again = tp.spec(text)
    assert again == codec, text
    assert str(again) == text
    stages = codec.stages if isinstance(codec, Chain) else (codec,)
    for stage in stages:  # canonical: every parameter is written (those added later: once set)
        assert all(f"{f.name}=" in text for f in dataclasses.fields(stage)
                   if f.name not in stage.omitted_at_default or getattr(stage, f.name) != f.default)
    check_json(codec)


@PROPERTY
@given(codecs())
def test_random_configs_round_trip(codec: Codec) -> None:
    check_round_trips(codec)


@PROPERTY
@given(codecs(["spectest"]))
def test_random_nested_configs_round_trip(codec: Codec) -> None:
    check_round_trips(codec)


@settings(PROPERTY, max_examples=100)
@given(chains())
def test_random_chains_round_trip(codec: Codec) -> None:
    check_round_trips(codec)


# --- the registry -------------------------------------------------------------------------------------------
def test_duplicate_registration_raises() -> None:
    @dataclass(frozen=True)
    class OtherZstd(Codec):
        codec_id: ClassVar[str] = "zstd"

    with pytest.raises(ValueError, match="codec 'zstd' is already registered"):
        register(OtherZstd)
    assert CODECS.get("zstd") is not OtherZstd
    register(SpecTest)  # registering the same class again is harmless


def test_registry_names_are_checked() -> None:
    with pytest.raises(ValueError, match="must be letters, digits"):
        Registry[object]("thing").register("bad name(", object())


class BrokenEntryPoint(metadata.EntryPoint):
    def load(self) -> Any:
        raise ImportError("the plugin's module is broken")


def test_broken_plugin_warns_and_the_others_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    group = "tensorpress.test-plugins"
    good = metadata.EntryPoint(name="goodplugin", value="tensorpress.codecs.zstd:Zstd", group=group)
    broken = BrokenEntryPoint(name="brokenplugin", value="missing_module:Codec", group=group)

    def entry_points(*, group: str) -> list[metadata.EntryPoint]:
        return [broken, good] if group == "tensorpress.test-plugins" else []

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    registry: Registry[Any] = Registry("codec", entry_point_group=group)
    assert registry.names() == ["brokenplugin", "goodplugin"]  # listed, not imported yet
    with (
        pytest.warns(RuntimeWarning, match="plugin 'brokenplugin' .* failed to load and is skipped"),
        pytest.raises(UnknownCodecError, match="unknown codec 'brokenplugin'; registered: goodplugin"),
    ):
        registry.get("brokenplugin")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the broken one warned once; the rest load quietly
        assert registry.get("goodplugin") is tp.spec("zstd").__class__
        assert registry.names() == ["goodplugin"]


def test_broken_plugin_in_the_codec_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    CODECS.names()  # discovery done
    broken = BrokenEntryPoint(name="brokencodec", value="missing_module:Codec", group="tensorpress.codecs")
    monkeypatch.setitem(CODECS._plugins, "brokencodec", broken)
    with pytest.warns(RuntimeWarning, match="brokencodec"), pytest.raises(UnknownCodecError):
        tp.spec("brokencodec(level=1)")
    assert "brokencodec" not in CODECS.names()
    assert tp.spec("raw | zstd(5)") == Chain((tp.spec("raw"), tp.spec("zstd(5)")))
