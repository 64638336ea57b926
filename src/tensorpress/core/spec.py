"""Spec strings: ``name(key=value, …)``, nested specs as values, ``a | b`` chains.

Grammar (the Contracts section of ARCHITECTURE.md)::

    chain  := call ('|' call)*
    call   := NAME ['(' [arg (',' arg)*] ')']
    arg    := NAME '=' value | value            (a positional value only first, where a codec declares one)
    value  := NUMBER | true | false | none | STRING | NAME | tuple | chain
    tuple  := '(' [value (',' value)*] ')'

Parsing gives a small syntax tree (:class:`Call`); :func:`format_value` writes canonical text back.
Turning the tree into codec objects is the job of :mod:`tensorpress.core.codec`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import SpecError

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_])|[-+]inf(?![A-Za-z0-9_.\-]))
      | (?P<string>"[^"\\]*"|'[^'\\]*')
      | (?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)
      | (?P<punct>[(),=|])
    )""",
    re.VERBOSE,
)
_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
MAX_DEPTH = 32  # nested values (tuples, specs) deeper than this are refused, not recursed into
_KEYWORDS = {"true": True, "false": False, "none": None, "inf": math.inf, "nan": math.nan}


@dataclass(frozen=True)
class Call:
    """One ``name(args…)`` in a spec: positional values first, then keyword values."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def parse(text: str) -> list[Call]:
    """Parse ``text`` into the calls of a chain (a single codec is a chain of one)."""
    if not isinstance(text, str):
        raise SpecError(f"expected a spec string, got {type(text).__name__}")
    parser = _Parser(text)
    chain = parser.chain()
    parser.expect_end()
    return chain


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        stripped_end = len(text.rstrip())
        while pos < stripped_end:
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise self._error(pos, "unexpected character")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0
        self.depth = 0

    def _error(self, pos: int, what: str) -> SpecError:
        return SpecError(f"bad spec {self.text!r}: {what} at position {pos} ({self.text[pos:pos + 12]!r})")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise SpecError(f"bad spec {self.text!r}: it ends early" + (f", expected {value!r}" if value else ""))
        if value is not None and tok[1] != value:
            raise self._error(tok[2], f"expected {value!r}")
        self.i += 1
        return tok

    def at(self, value: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "punct" and tok[1] == value

    def expect_end(self) -> None:
        tok = self.peek()
        if tok is not None:
            raise self._error(tok[2], "unexpected text after the spec")

    def chain(self) -> list[Call]:
        calls = [self.call()]
        while self.at("|"):
            self.take("|")
            calls.append(self.call())
        return calls

    def call(self) -> Call:
        kind, name, pos = self.take()
        if kind != "name" or name in _KEYWORDS:
            raise self._error(pos, "expected a codec name")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        if self.at("("):
            self.take("(")
            while not self.at(")"):
                tok = self.peek()
                nxt = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else None
                if tok and tok[0] == "name" and nxt and nxt[1] == "=":
                    self.i += 2
                    if tok[1] in kwargs:
                        raise self._error(tok[2], f"parameter {tok[1]!r} given twice")
                    kwargs[tok[1]] = self.value()
                else:
                    if kwargs:
                        raise self._error(tok[2] if tok else len(self.text), "positional value after keywords")
                    args.append(self.value())
                if not self.at(")"):
                    self.take(",")
            self.take(")")
        return Call(name, tuple(args), kwargs)

    def value(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise SpecError(f"bad spec {self.text!r}: it ends where a value was expected")
        if self.depth >= MAX_DEPTH:
            raise self._error(tok[2], f"values nest deeper than {MAX_DEPTH} levels")
        self.depth += 1
        try:
            return self._value(tok)
        finally:
            self.depth -= 1

    def _value(self, tok: tuple[str, str, int]) -> Any:
        kind, text, pos = tok
        if kind == "number":
            self.i += 1
            return float(text) if any(c in text for c in ".eEn") else int(text)  # n: signed inf
        if kind == "string":
            self.i += 1
            return text[1:-1]
        if kind == "punct" and text == "(":
            self.take("(")
            items = []
            while not self.at(")"):
                items.append(self.value())
                if not self.at(")"):
                    self.take(",")
            self.take(")")
            return tuple(items)
        if kind == "name":
            if text.lower() in _KEYWORDS:
                self.i += 1
                return _KEYWORDS[text.lower()]
            nxt = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else None
            if nxt is not None and nxt[1] in "(|":
                chain = self.chain()
                return chain[0] if len(chain) == 1 else chain
            self.i += 1
            return text
        raise self._error(pos, "expected a value")


def format_value(value: Any) -> str:
    """Canonical spec text of one parameter value (codecs format themselves through ``str``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        if _BARE_WORD.match(value) and value.lower() not in _KEYWORDS:
            return value
        return f"'{value}'" if '"' in value else f'"{value}"'
    if isinstance(value, tuple):
        inner = ", ".join(format_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return str(value)
