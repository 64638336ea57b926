"""Errors raised by tensorpress. Every message says what was wrong, what was expected and what to do."""

from __future__ import annotations


class TensorpressError(Exception):
    """Base class of every error tensorpress raises on purpose."""


class ConfigError(TensorpressError, ValueError):
    """A codec parameter has the wrong type or value."""


class SpecError(TensorpressError, ValueError):
    """A spec string or JSON configuration cannot be parsed or names nothing registered."""


class UnknownCodecError(SpecError, KeyError):
    """A codec name is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputError(TensorpressError, TypeError):
    """The input array cannot be handled by the codec (dtype, shape, NaN, ...)."""


class BlobError(TensorpressError, ValueError):
    """A serialized blob is truncated, corrupted, hostile or from an unknown format version."""


class ContainerError(TensorpressError, OSError):
    """A container cannot be read or written."""


class BoundError(TensorpressError, ArithmeticError):
    """A requested error bound or rate cannot be met."""


class MissingDependencyError(TensorpressError, ImportError):
    """An optional dependency needed for this operation is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package; install it with: pip install 'tensorpress[{extra}]'"
        )
