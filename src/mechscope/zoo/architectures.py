"""Configs of the three model families the zoo ships: TL-native, HF GPT-2 and HF Llama."""

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


def llama_config(spec: dict[str, Any]):
    """HF LlamaConfig of a zoo spec dict: RMSNorm, rotary positions (theta 10,000), SwiGLU MLP of
    width d_mlp, grouped-query attention with n_kv_heads key/value heads, tied embeddings."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=spec["d_model"],
        intermediate_size=spec["d_mlp"],
        num_hidden_layers=spec["n_layers"],
        num_attention_heads=spec["n_heads"],
        num_key_value_heads=spec["n_kv_heads"] or spec["n_heads"],
        hidden_act="silu",
        max_position_embeddings=N_CTX,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
