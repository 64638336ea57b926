"""Plain-text tables for the command line and the benchmarks.

>>> print(format_table([{"spec": "zstd", "ratio": 3.14159}, {"spec": "raw", "ratio": 1}], ["spec", "ratio"]))
spec  ratio
----  -----
zstd  3.142
raw       1
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: a column is a row key, or (row key, header text)
Column = str | tuple[str, str]


def format_value(value: Any) -> str:
    """One cell: floats to 4 significant digits (``inf``/``nan`` spelled out), ``None`` as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """``rows`` as aligned text columns under a header; numbers right-aligned, text left-aligned.

    A key missing from a row gives an empty cell. No trailing spaces, no trailing newline.
    """
    keys = [c if isinstance(c, str) else c[0] for c in columns]
    titles = [c if isinstance(c, str) else c[1] for c in columns]
    cells = [[format_value(row.get(k)) for k in keys] for row in rows]
    numeric = [
        all(isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool)
            for row in rows if row.get(k) is not None)
        for k in keys
    ]
    widths = [max([len(t)] + [len(r[i]) for r in cells]) for i, t in enumerate(titles)]

    def line(values: Sequence[str]) -> str:
        out = []
        for value, width, is_num in zip(values, widths, numeric, strict=True):
            out.append(value.rjust(width) if is_num else value.ljust(width))
        return "  ".join(out).rstrip()

    lines = [line(titles), line(["-" * w for w in widths])] + [line(r) for r in cells]
    return "\n".join(lines)
