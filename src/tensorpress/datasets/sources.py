"""The catalogue of real data sources: package, how the files are found, licence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
    #: puts the data into the cache (``python -m tensorpress.datasets fetch NAME``); None: pip installs it
    fetch: Callable[[], object] | None = field(default=None, compare=False, repr=False)


SOURCES: dict[str, Source] = {}


def add(source: Source) -> Source:
    SOURCES[source.name] = source
    return source
