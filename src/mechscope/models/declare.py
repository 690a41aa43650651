"""Architecture as data: what `LeanModel` computes for a model, read from its HF config.

`declare(bridge)` turns a TransformerBridge (with the HF model it wraps) into an `Arch`: one
choice per component (components.py). Families are declared by what their HF config says, not by
a branch in the forward; a model type outside `FAMILIES`, or an option of a listed family that the
components do not compute (see `_refusals`), is refused with the list of what differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from mechscope.models.components import ACTS, Norm, Rotary

# HF model types whose every option below is declared, each tested on a tiny random model
# against HF's own logits and the bridge's hooks (tests/models/test_families.py)
FAMILIES = {
    "gpt2": "GPT-2",
    "opt": "OPT",
    "gpt_neox": "GPT-NeoX (Pythia)",
    "gptj": "GPT-J",
    "llama": "Llama",
    "mistral": "Mistral",
    "qwen2": "Qwen2",
    "qwen3": "Qwen3",
    "gemma": "Gemma",
    "gemma2": "Gemma-2",
    "gemma3_text": "Gemma-3 (text)",
    "olmo": "OLMo",
    "olmo2": "OLMo-2",
    "phi": "Phi (Phi-2)",
    "phi3": "Phi-3",
}
_GEMMA = ("gemma", "gemma2", "gemma3_text")


@dataclass
class Arch:
    """One model's components (per-layer lists where layers differ)."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    norm: Norm
    act: str
    attn_only: bool = False
    gated: bool = False
    parallel: bool = False
    positions: str | None = "learned"  # "learned", "rotary" or None
    rotary: list[Rotary | None] = field(default_factory=list)  # per layer
    window: list[int | None] = field(default_factory=list)  # per layer; None = full attention
    attn_scale: float = 1.0  # scores are divided by this
    attn_softcap: float | None = None
    final_softcap: float | None = None
    embed_scale: float = 1.0
    clip_qkv: float | None = None
    pre_norm: bool = True  # False: OLMo-2, whose blocks norm only their outputs (ln1, ln2 after)
    family: str = "native"

    def __post_init__(self) -> None:
        self.rotary = self.rotary or [None] * self.n_layers
        self.window = self.window or [None] * self.n_layers

    @property
    def group(self) -> int:
        """Query heads per key/value head (1: multi-head; n_heads: multi-query)."""
        return self.n_heads // self.n_kv_heads


def _hf(bridge: Any) -> Any:
    """The HF model a bridge wraps (None for TransformerLens-native and hand-built models)."""
    hf = getattr(bridge, "original_model", None)
    return hf if hasattr(getattr(hf, "config", None), "model_type") else None


def _rotary_module(hf: Any) -> Any:
    return next((m for n, m in hf.named_modules() if n.endswith("rotary_emb")), None)


def _rotary(hf: Any, hc: Any, layer_type: str | None, d_head: int) -> Rotary:
    """The HF model's own rotary frequencies (its rope scaling included) for one layer type."""
    if hc.model_type == "gptj":  # GPT-J: sin/cos table of its own, interleaved pairs
        dim = hc.rotary_dim or d_head
        inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        return Rotary(inv, 1.0, interleaved=True)
    mod = _rotary_module(hf)
    prefix = f"{layer_type}_" if layer_type and hasattr(mod, f"{layer_type}_inv_freq") else ""
    inv = getattr(mod, f"{prefix}inv_freq").detach().float().cpu()
    scaling = float(getattr(mod, f"{prefix}attention_scaling", 1.0) or 1.0)
    return Rotary(inv, scaling)


def _refusals(bridge: Any) -> list[str]:
    """What this model has that the components do not compute (empty: supported)."""
    cfg, hf = bridge.cfg, _hf(bridge)
    if hf is None:  # TransformerLens-native (code-attn4): GPT-2-style blocks
        bad = []
        if getattr(cfg, "positional_embedding_type", "standard") != "standard":
            bad.append(f"{cfg.positional_embedding_type} positions")
        if getattr(cfg, "normalization_type", None) not in ("LN", "LNPre", None):
            bad.append(f"normalization {cfg.normalization_type}")
        if str(getattr(cfg, "act_fn", "gelu_new")) not in ACTS:
            bad.append(f"activation {cfg.act_fn}")
        return bad
    hc = hf.config
    mt = hc.model_type
    if mt not in FAMILIES:
        return [f"architecture {mt!r} is not declared (declared: {', '.join(sorted(FAMILIES))})"]
    bad = []
    act = str(getattr(cfg, "act_fn", ""))
    if act not in ACTS:
        bad.append(f"activation {act!r}")
    rope = getattr(_rotary_module(hf), "rope_type", "default")
    if isinstance(rope, dict):
        rope = next(iter(rope.values()), "default")
    if rope in ("dynamic", "longrope"):
        bad.append(f"{rope} rope scaling (frequencies depend on the sequence length)")
    checks = [
        (mt == "opt" and not getattr(hc, "do_layer_norm_before", True), "post-LayerNorm blocks"),
        (
            mt == "opt" and getattr(hc, "word_embed_proj_dim", hc.hidden_size) != hc.hidden_size,
            "projected word embeddings",
        ),
        (mt == "gpt2" and getattr(hc, "scale_attn_by_inverse_layer_idx", False), "layer scaling"),
        (mt == "phi" and getattr(hc, "qk_layernorm", False), "q/k LayerNorm (Phi)"),
    ]
    return bad + [what for cond, what in checks if cond]


def unsupported(bridge: Any) -> str | None:
    """Why `LeanModel` cannot compute this model exactly, or None if it can."""
    bad = _refusals(bridge)
    return "; ".join(bad) or None


def declare(bridge: Any) -> Arch:
    """The Arch of a TransformerBridge (call `unsupported` first)."""
    cfg, hf = bridge.cfg, _hf(bridge)
    n_heads, d_head, L = int(cfg.n_heads), int(cfg.d_head), int(cfg.n_layers)
    norm_type = getattr(cfg, "normalization_type", None)
    kind = None if norm_type is None else ("RMS" if "RMS" in str(norm_type) else "LN")
    offset = 1.0 if getattr(cfg, "rmsnorm_uses_offset", False) else 0.0
    arch = Arch(
        n_layers=L,
        n_heads=n_heads,
        n_kv_heads=int(getattr(cfg, "n_key_value_heads", None) or n_heads),
        d_head=d_head,
        norm=Norm(kind, float(cfg.eps), offset),
        act=str(getattr(cfg, "act_fn", "gelu_new")),
        attn_only=bool(getattr(cfg, "attn_only", False)),
        gated=bool(getattr(cfg, "gated_mlp", False)),
        parallel=bool(getattr(cfg, "parallel_attn_mlp", False)),
        attn_scale=float(cfg.attn_scale) if getattr(cfg, "attn_scale", -1.0) > 0 else d_head**0.5,
    )
    if hf is None:
        return arch
    hc = hf.config
    arch.family = hc.model_type
    arch.parallel = hc.model_type in ("gptj", "phi") or bool(
        getattr(hc, "use_parallel_residual", False)
    )
    scaling = next(
        (m.scaling for m in hf.modules() if isinstance(getattr(m, "scaling", None), float)), None
    )
    if scaling:
        arch.attn_scale = 1.0 / scaling
    if getattr(bridge, "pos_embed", None) is None:
        arch.positions = (
            "rotary" if _rotary_module(hf) is not None or hc.model_type == "gptj" else None
        )
    types = getattr(hc, "layer_types", None) or [None] * L
    if arch.positions == "rotary":
        arch.rotary = [_rotary(hf, hc, t, d_head) for t in types]
    sliding = getattr(hc, "sliding_window", None)
    if sliding is not None and getattr(hc, "use_sliding_window", True):
        arch.window = [int(sliding) if t in (None, "sliding_attention") else None for t in types]
    arch.attn_softcap = getattr(hc, "attn_logit_softcapping", None)
    arch.final_softcap = getattr(hc, "final_logit_softcapping", None)
    if hc.model_type in _GEMMA:
        arch.embed_scale = math.sqrt(hc.hidden_size)
    arch.clip_qkv = getattr(hc, "clip_qkv", None)
    arch.pre_norm = hc.model_type != "olmo2"
    return arch
