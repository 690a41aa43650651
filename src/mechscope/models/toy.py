"""Tiny randomly initialised HF models of every declared family (no download), for tests,
examples and checking a family end to end: `save_toy(family, folder)` writes a folder that
`mechscope.load_model(folder)` loads like any model saved with `save_pretrained`.

Norm weights and biases are randomised too (HF initialises them to 1 and 0, which would hide a
norm that is applied twice or not at all); every family has 2 layers, d_model 64, 4 query heads
and, where the family has grouped-query attention, 2 key/value heads; sliding windows are 8
tokens, so prompts longer than that exercise them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mechscope.files import copy_file, write_files

VOCAB = 4096  # the bundled tokenizer's
_IDS = {"bos_token_id": 0, "eos_token_id": 0}
_LLAMA_LIKE = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 96,
    "max_position_embeddings": 128,
}
_GQA = {**_LLAMA_LIKE, "num_key_value_heads": 2}
_GEMMA = {**_GQA, "head_dim": 16, "pad_token_id": 1}

# family -> (config class, model class, config keywords)
TOYS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128},
    ),
    "opt": (
        "OPTConfig",
        "OPTForCausalLM",
        {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "ffn_dim": 128,
            "max_position_embeddings": 128,
            "word_embed_proj_dim": 64,
            "pad_token_id": 1,
        },
    ),
    "gpt_neox": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        {**_LLAMA_LIKE, "intermediate_size": 128, "rotary_pct": 0.25},
    ),
    "gptj": (
        "GPTJConfig",
        "GPTJForCausalLM",
        {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128, "rotary_dim": 8},
    ),
    "llama": ("LlamaConfig", "LlamaForCausalLM", _GQA),
    "mistral": ("MistralConfig", "MistralForCausalLM", {**_GQA, "sliding_window": 8}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", _GQA),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {**_GQA, "head_dim": 16}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {**_GEMMA, "num_key_value_heads": 1}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {**_GEMMA, "sliding_window": 8}),
    "gemma3_text": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        # one local layer (8-token window, rope base 1e4) and one global (rope base 1e6)
        {**_GEMMA, "sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"]},
    ),
    "olmo": ("OlmoConfig", "OlmoForCausalLM", {**_LLAMA_LIKE, "pad_token_id": 1}),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {**_LLAMA_LIKE, "pad_token_id": 1}),
    "phi": (
        "PhiConfig",
        "PhiForCausalLM",
        {**_LLAMA_LIKE, "intermediate_size": 128, "partial_rotary_factor": 0.5},
    ),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {**_LLAMA_LIKE, "pad_token_id": 1}),
}


def toy_model(family: str, seed: int = 0, **overrides: Any) -> Any:
    """A tiny random HF causal LM of `family` (a key of TOYS), in eval mode."""
    import transformers

    if family not in TOYS:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(TOYS)}")
    cfg_cls, model_cls, kw = TOYS[family]
    cfg = getattr(transformers, cfg_cls)(vocab_size=VOCAB, **{**_IDS, **kw, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:  # norm weights and biases, projection biases
                p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def save_toy(family: str, folder: str | Path, seed: int = 0, **overrides: Any) -> Path:
    """Save a toy model of `family` with the bundled tokenizer in `folder`; returns it."""
    from mechscope.artefacts import TOKENIZER_DIR

    folder = Path(folder)
    model = toy_model(family, seed, **overrides)
    write_files(folder, model.save_pretrained)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        copy_file(TOKENIZER_DIR / f, folder / f)
    return folder
