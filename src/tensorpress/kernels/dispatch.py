"""The kernel table: ``kernel(codec_id, op, backend)`` registers, ``get_kernel`` finds the best one.

Backends are tried in the order of ``TENSORPRESS_BACKEND`` (comma-separated) or, by default,
numba then reference. A backend whose package is missing is skipped, never an error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..core.errors import UnknownCodecError
from ..core.registry import Registry

BACKENDS = ("reference", "numba", "triton")
KERNELS: Registry[Callable[..., Any]] = Registry(
    "kernel", packages=tuple(f"tensorpress.kernels.{b}" for b in BACKENDS)
)
_DEFAULT_ORDER = ("numba", "reference")


def kernel(codec_id: str, op: str, backend: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` as ``op`` of ``codec_id`` on ``backend``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    return KERNELS.decorator(f"{codec_id}:{op}:{backend}")


def _order() -> tuple[str, ...]:
    env = os.environ.get("TENSORPRESS_BACKEND")
    if not env:
        return _DEFAULT_ORDER
    order = tuple(b.strip() for b in env.split(",") if b.strip())
    unknown = [b for b in order if b not in BACKENDS]
    if unknown:
        raise ValueError(f"TENSORPRESS_BACKEND names unknown backends {unknown}; expected {BACKENDS}")
    return order + tuple(b for b in ("reference",) if b not in order)


def get_kernel(codec_id: str, op: str, backend: str | None = None) -> Callable[..., Any]:
    """The kernel for ``op`` on ``codec_id`` data: from ``backend`` if given, else the first available."""
    for b in (backend,) if backend else _order():
        key = f"{codec_id}:{op}:{b}"
        if key in KERNELS:  # a lookup per backend: decoding a small tensor calls this a few times
            return KERNELS.get(key)
    have = [n for n in KERNELS.names() if n.startswith(f"{codec_id}:{op}:")]
    raise UnknownCodecError(
        f"no {backend or 'available'} kernel for {op} on {codec_id}; registered: {', '.join(have) or '(none)'}"
    )


def available_backends(codec_id: str, op: str) -> list[str]:
    return [b for b in BACKENDS if f"{codec_id}:{op}:{b}" in KERNELS.names()]
