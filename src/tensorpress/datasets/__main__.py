"""``python -m tensorpress.datasets fetch [NAME …|--all]``: fetch data into the cache ahead of time.

``python -m tensorpress.datasets list`` prints every source with its package and licence.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from . import SOURCES, DataUnavailable
from .cache import data_dir


def main(argv: Sequence[str] | None = None) -> int:
    fetchable = [name for name, source in SOURCES.items() if source.fetch is not None]
    parser = argparse.ArgumentParser(prog="python -m tensorpress.datasets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help=f"fetch into {data_dir()} ($TENSORPRESS_DATA)")
    fetch.add_argument("names", nargs="*", metavar="NAME", help=f"one of: {', '.join(fetchable)}")
    fetch.add_argument("--all", action="store_true", help="fetch every source")
    sub.add_parser("list", help="list the sources, their packages and licences")
    args = parser.parse_args(argv)

    if args.command == "list":
        for source in SOURCES.values():
            print(f"{source.name}: {source.contents}")
            print(f"  package: {source.package}\n  licence: {source.licence}")
        return 0
    names = fetchable if args.all else args.names
    unknown = [n for n in names if n not in fetchable]
    if not names or unknown:
        what = f"unknown name(s) {', '.join(unknown)}" if unknown else "nothing to fetch"
        parser.error(f"{what}: give --all or one or more of {', '.join(fetchable)}")
    failed = 0
    for name in names:
        start = time.perf_counter()
        fetcher = SOURCES[name].fetch
        if fetcher is None:  # pragma: no cover - filtered above
            continue
        try:
            fetcher()
        except DataUnavailable as exc:
            print(f"{name}: FAILED: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: ready ({time.perf_counter() - start:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
