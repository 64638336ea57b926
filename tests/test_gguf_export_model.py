"""GGUF export of a converted model as a complete model file: hyperparameters and tokenizer metadata, read back
by ``gguf.GGUFReader`` and by transformers' GGUF loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from checkpoint_fixtures import needs, write_small_checkpoint
from tensorpress.nn import convert_checkpoint, load
from test_llm_data import real

pytestmark = pytest.mark.llm
TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"


def test_exported_gguf_is_a_complete_model(tmp_path: Path) -> None:
    """Two real SmolLM2 blocks, attention in Q4_0 and the rest Q8_0 (norms F32), exported: the file carries
    the llama hyperparameters and the gpt2 BPE tokenizer (49,152 tokens, merges, special ids, chat template);
    transformers loads tokenizer and model from it alone, tokenizes as the container's tokenizer does and gives
    the logits of ``tensorpress.nn.load`` of the container."""
    real(lambda: [needs(p) for p in ("gguf", "transformers", "torch")])
    import gguf
    import torch
    import transformers

    from tensorpress.nn.gguf_export import export_gguf

    write_small_checkpoint(tmp_path / "small", layers=2)
    policy = {"*norm.weight": "raw", "*.self_attn.*_proj.weight": "quant(bits=4, group=32, symmetric=true)"}
    out = convert_checkpoint(tmp_path / "small", tmp_path / "small.zip", spec="quant(bits=8, group=32, symmetric=true)",
                             policy=policy, progress=False)
    (tmp_path / "gguf").mkdir()
    rows = export_gguf(out, tmp_path / "gguf" / "model.gguf", progress=False)
    assert {r["type"] for r in rows} == {"Q8_0", "Q4_0", "F32"}

    reader = gguf.GGUFReader(tmp_path / "gguf" / "model.gguf")

    def field(key: str) -> object:
        return reader.fields[key].contents()

    assert field("general.architecture") == "llama" and field("tokenizer.ggml.model") == "gpt2"
    assert field("llama.block_count") == 2 and field("llama.embedding_length") == 576
    assert field("llama.context_length") == 8192 and field("llama.rope.freq_base") == 100000.0
    tokens = field("tokenizer.ggml.tokens")
    assert isinstance(tokens, list) and len(tokens) == 49152 == field("llama.vocab_size")
    assert len(field("tokenizer.ggml.merges")) > 40000  # type: ignore[arg-type]
    model, tokenizer = load(out)
    assert tokens[field("tokenizer.ggml.eos_token_id")] == tokenizer.eos_token == "<|im_end|>"  # type: ignore[index]
    assert "im_start" in str(field("tokenizer.chat_template"))

    kwargs = {"gguf_file": "model.gguf", "local_files_only": True}
    theirs_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "gguf", **kwargs)
    ids = tokenizer(TEXT)["input_ids"]
    assert theirs_tok(TEXT)["input_ids"] == ids and theirs_tok.decode(ids) == TEXT
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "gguf", dtype=torch.float32, **kwargs)
    assert theirs.config.num_hidden_layers == 2 and theirs.config.tie_word_embeddings
    with torch.no_grad():
        a = theirs.eval()(torch.tensor([ids])).logits.numpy()
        b = model(torch.tensor([ids])).logits.numpy()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(np.abs(b).max()))
