"""What each bundled model is: architecture and training recipe (the card is written from this)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

VOCAB_SIZE = 4096
N_CTX = 96


@dataclass(frozen=True)
class ModelSpec:
    """A bundled model's architecture and deterministic training recipe."""

    name: str
    # TL-native (boot_native), HF GPT-2 or HF Llama (both save_pretrained)
    kind: Literal["native", "gpt2", "llama"]
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int | None  # None = attention-only
    steps: int
    n_kv_heads: int | None = None  # key/value heads of grouped-query attention; None = n_heads
    batch_size: int = 24
    lr: float = 2e-3
    warmup: int = 60
    weight_decay: float = 0.01
    seed: int = 0
    checkpoint_steps: tuple[int, ...] = ()
    mixture: dict[str, float] = field(
        default_factory=lambda: {"stdlib": 0.45, "docstring": 0.35, "ioi": 0.1, "induction": 0.1}
    )
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checkpoint_steps"] = list(self.checkpoint_steps)
        return d


SPECS: dict[str, ModelSpec] = {
    "code-attn4": ModelSpec(
        name="code-attn4",
        kind="native",
        n_layers=4,
        d_model=128,
        n_heads=8,
        d_mlp=None,
        steps=8000,  # 74M tokens: built on a GPU (`--device cuda`, 4.5 min on an H200)
        batch_size=96,
        lr=3e-3,
        warmup=300,
        mixture={"stdlib": 0.1, "docstring": 0.6, "ioi": 0.05, "induction": 0.25},
        description="4-layer attention-only TL-native model (LayerNorm) trained on stdlib code "
        "plus synthetic docstrings; the docstring-circuit model of ACDC, in small.",
    ),
    "code-2l": ModelSpec(
        name="code-2l",
        kind="gpt2",
        n_layers=2,
        d_model=128,
        n_heads=4,
        d_mlp=512,
        steps=800,
        checkpoint_steps=(0, 25, 75, 150, 300, 500),
        description="2-layer GPT-2-style model with MLPs (HF GPT2LMHeadModel), with checkpoints.",
    ),
    "code-4l": ModelSpec(
        name="code-4l",
        kind="gpt2",
        n_layers=4,
        d_model=128,
        n_heads=4,
        d_mlp=512,
        steps=800,
        checkpoint_steps=(0, 25, 75, 150, 300, 500),
        description="4-layer GPT-2-style model with MLPs (HF GPT2LMHeadModel), with checkpoints.",
    ),
    "code-llama-2l": ModelSpec(
        name="code-llama-2l",
        kind="llama",
        n_layers=2,
        d_model=128,
        n_heads=4,
        n_kv_heads=2,
        d_mlp=400,  # SwiGLU has 3 matrices: 400 puts the parameter count 0.3% under code-2l's
        steps=800,
        checkpoint_steps=(0, 25, 75, 150, 300, 500),
        description="2-layer Llama-style model (HF LlamaForCausalLM): RMSNorm, rotary positions, "
        "SwiGLU MLP, grouped-query attention (4 query / 2 key-value heads), with checkpoints; "
        "trained like code-2l.",
    ),
}
