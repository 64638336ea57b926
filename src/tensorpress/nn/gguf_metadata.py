"""A GGUF file's Hugging Face ``config.json`` and tokenizer files, built by transformers in a child process.

transformers' ``AutoConfig.from_pretrained(folder, gguf_file=…)`` parses the whole GGUF header with
``gguf.GGUFReader``, which on a 49k-token vocabulary makes about 150,000 small objects: some 165 MiB at its
peak, a good part of which the allocator keeps afterwards. Doing it in a short-lived child process keeps the
converting process as small as the tensor it is encoding (and free of torch and transformers).

Run as ``python -m tensorpress.nn.gguf_metadata FILE.gguf OUT.json``: writes
``{"config": {…}, "files": {name: base64}}``; a failure prints one line to stderr and exits with status 1.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def build(path: str) -> dict[str, Any]:
    """``{"config": config.json as a dict, "files": {tokenizer file name: base64 bytes}}`` for a GGUF file."""
    from transformers import AutoConfig, PreTrainedTokenizerFast

    folder, name = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder, gguf_file=name)
    with tempfile.TemporaryDirectory(prefix="tensorpress-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        files = {p.name: base64.b64encode(p.read_bytes()).decode("ascii")
                 for p in sorted(Path(tmp).iterdir()) if p.is_file()}
    return {"config": json.loads(config.to_json_string(use_diff=False)), "files": files}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tensorpress.nn.gguf_metadata FILE.gguf OUT.json", file=sys.stderr)
        return 2
    try:
        result = build(argv[0])
    except ImportError as exc:
        print(f"needs transformers (pip install 'tensorpress[llm]'): {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # transformers raises many kinds; the parent reports the one line
        print(f"transformers cannot build the config or tokenizer: {type(exc).__name__}: {exc}".replace("\n", " "),
              file=sys.stderr)
        return 1
    Path(argv[1]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
