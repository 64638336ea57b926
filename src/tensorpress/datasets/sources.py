"""The catalogue of real data sources: package, how the files are found, licence."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import TensorpressError


class DataUnavailable(TensorpressError, LookupError):
    """The package that ships a sample is not installed."""


@dataclass(frozen=True)
class Source:
    name: str
    package: str  #: how to get it: a pip or Debian package name
    how: str  #: how the files are found once installed
    licence: str
    contents: str


SOURCES: dict[str, Source] = {}


def add(source: Source) -> Source:
    SOURCES[source.name] = source
    return source
