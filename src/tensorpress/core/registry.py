"""One registry class for everything tensorpress looks up by name: codecs, kernels.

Built-in entries live in modules of named packages, imported the first time the registry is asked anything;
third-party entries come from an entry-point group and are imported only when their name is asked for.
A plugin that fails to import warns and leaves the rest working. Names inside user files only ever select
registered entries: nothing a file names is imported.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
import warnings
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from .errors import UnknownCodecError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → object table with lazy discovery of built-in modules and entry-point plugins."""

    def __init__(self, kind: str, *, entry_point_group: str | None = None, packages: tuple[str, ...] = ()):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.packages = packages
        self._entries: dict[str, T] = {}
        self._plugins: dict[str, metadata.EntryPoint] = {}
        self._loaded = False
        self._loading = False
        # zarr decodes chunks in worker threads: the first lookups may race, so discovery holds a lock
        self._lock = threading.RLock()
        #: built-in modules skipped because an optional dependency is missing: module → reason
        self.unavailable: dict[str, str] = {}

    def register(self, name: str, obj: T) -> T:
        """Add ``obj`` under ``name``; a second registration of the same name is an error."""
        if not name or not all(c.isalnum() or c in "_-.:" for c in name):
            raise ValueError(f"{self.kind} name {name!r} must be letters, digits, '_', '-', '.' or ':'")
        existing = self._entries.get(name)
        if existing is not None and existing is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered to {existing!r}")
        self._entries[name] = obj
        return obj

    def decorator(self, name: str) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            return self.register(name, obj)

        return wrap

    def get(self, name: str) -> T:
        """The entry called ``name``; raises :class:`UnknownCodecError` listing what exists."""
        self._load()
        if name in self._entries:
            return self._entries[name]
        plugin = self._plugins.get(name)
        if plugin is not None:
            with self._lock:
                if name not in self._entries and name in self._plugins:
                    self._load_plugin(name, plugin)
            if name in self._entries:
                return self._entries[name]
        known = ", ".join(self.names()) or "(none)"
        raise UnknownCodecError(f"unknown {self.kind} {name!r}; registered: {known}")

    def names(self) -> list[str]:
        self._load()
        return sorted(set(self._entries) | set(self._plugins))

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self.get(name)

    def __contains__(self, name: object) -> bool:
        self._load()
        return isinstance(name, str) and (name in self._entries or name in self._plugins)

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded or self._loading:  # done meanwhile, or re-entered by a module being imported
                return
            self._discover()

    def _discover(self) -> None:
        self._loading = True
        try:
            for package in self.packages:
                pkg = importlib.import_module(package)
                for info in pkgutil.iter_modules(pkg.__path__):
                    if not info.name.startswith("_"):
                        self._import_builtin(f"{package}.{info.name}")
            if self.entry_point_group:
                for ep in metadata.entry_points(group=self.entry_point_group):
                    if ep.name not in self._entries:
                        self._plugins[ep.name] = ep
            self._loaded = True
        finally:
            self._loading = False

    def _import_builtin(self, module: str) -> None:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # An optional dependency (numba, triton, torch…) is missing: that module's entries are absent.
            if exc.name is None or exc.name.split(".")[0] == module.split(".")[0]:
                raise
            self.unavailable[module] = f"needs {exc.name}"

    def _load_plugin(self, name: str, plugin: metadata.EntryPoint) -> None:
        try:
            obj = plugin.load()
        except Exception as exc:  # a broken plugin must not break the others
            del self._plugins[name]
            warnings.warn(
                f"{self.kind} plugin {name!r} ({plugin.value}) failed to load and is skipped: {exc!r}",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        if name not in self._entries:
            self.register(name, obj)
