"""Configs of the two model families the zoo ships: TL-native and HF GPT-2."""

from __future__ import annotations

from typing import Any

from mechscope.zoo.specs import N_CTX, VOCAB_SIZE


def native_config_dict(spec: dict[str, Any]) -> dict[str, Any]:
    """TransformerBridgeConfig fields of a TL-native model described by a zoo spec dict."""
    return {
        "d_model": spec["d_model"],
        "d_head": spec["d_model"] // spec["n_heads"],
        "n_heads": spec["n_heads"],
        "n_layers": spec["n_layers"],
        "n_ctx": N_CTX,
        "d_vocab": VOCAB_SIZE,
        "d_mlp": spec["d_mlp"],
        "attn_only": spec["d_mlp"] is None,
        "normalization_type": "LN",
        "act_fn": "gelu_new",
        "positional_embedding_type": "standard",
        "model_name": spec["name"],
        "seed": spec["seed"],
    }


def native_config(spec: dict[str, Any]):
    from transformer_lens.config import TransformerBridgeConfig

    d = native_config_dict(spec)
    d = {k: v for k, v in d.items() if v is not None}
    return TransformerBridgeConfig(**d)


def gpt2_config(spec: dict[str, Any]):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_positions=N_CTX,
        n_embd=spec["d_model"],
        n_layer=spec["n_layers"],
        n_head=spec["n_heads"],
        n_inner=spec["d_mlp"],
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
