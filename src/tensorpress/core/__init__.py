"""Core model: registry, spec strings, codecs, Encoded, the blob format, errors and metrics.

Imports nothing else of tensorpress and nothing heavier than NumPy.
"""

from .codec import CODECS, Chain, Codec, build, config_of, register
from .encoded import Encoded
from .errors import (
    BlobError,
    BoundError,
    ConfigError,
    ContainerError,
    InputError,
    MissingDependencyError,
    SpecError,
    TensorpressError,
    UnknownCodecError,
)

__all__ = [
    "CODECS",
    "BlobError",
    "BoundError",
    "Chain",
    "Codec",
    "ConfigError",
    "ContainerError",
    "Encoded",
    "InputError",
    "MissingDependencyError",
    "SpecError",
    "TensorpressError",
    "UnknownCodecError",
    "build",
    "config_of",
    "register",
]
