"""Configuration dataclasses: what an SAE is (`SAEConfig`) and how it is trained (`TrainConfig`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Architecture = Literal["standard", "topk", "jumprelu"]
LossKind = Literal["local", "e2e", "e2e_ds"]
ARCHITECTURES: tuple[str, ...] = ("standard", "topk", "jumprelu")
LOSS_KINDS: tuple[str, ...] = ("local", "e2e", "e2e_ds")


@dataclass
class SAEConfig:
    """Shape and placement of a sparse autoencoder.

    architecture: "standard" (ReLU, trained with an L1 penalty), "topk" (keep the k largest
        pre-activations) or "jumprelu" (ReLU gated by a learned threshold; loaded, not trained).
    hook_name: the TransformerLens hook whose activations [.., d_in] the SAE reads and replaces.
    """

    d_in: int
    d_sae: int
    architecture: Architecture = "standard"
    k: int | None = None
    hook_name: str = ""
    model_name: str = ""
    apply_b_dec_to_input: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown SAE architecture {self.architecture!r}; choose from {ARCHITECTURES}"
            )
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got {self.d_in}, {self.d_sae}")
        if self.architecture == "topk" and (self.k is None or not 0 < self.k <= self.d_sae):
            raise ValueError(f"a topk SAE needs 0 < k <= d_sae ({self.d_sae}), got k={self.k}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainConfig:
    """Everything that determines a training run (same config + seed = same SAE, bit for bit).

    loss: "local" = MSE + lambda*sparsity; "e2e" = KL(orig || spliced) + lambda*sparsity;
        "e2e_ds" = kl_coeff*KL + downstream MSE (ds_coeff spread over later residuals) + lambda*sp.
    sparsity_coeff: lambda; sparsity = L1 of the codes / d_in (Braun et al. 2024). Ignored by topk.
    expansion: d_sae = expansion * d_model.
    n_steps, batch_size: optimiser steps, and sequences [batch_size, n_ctx] per step.
    lr, warmup_steps, min_lr_frac: linear warm-up then cosine decay to min_lr_frac * lr.
    grad_clip: the gradient is clipped at norm grad_clip / d_in, i.e. grad_clip on the scale of
        SAELens's loss (MSE summed over dimensions), which is d_in times this one. SAELens's 1.0
        binds on nearly every step: Adam then sees gradients of one size, so the large gradients
        of the first steps do not inflate its second moment for the rest of a short run.
    sparsity_warmup_frac: lambda rises linearly from lambda / w to lambda over the first
        w = round(sparsity_warmup_frac * n_steps) steps (Anthropic, April 2024): fewer dead latents.
        (lr 2e-3 suits runs of ~1k steps; Braun et al. use 5e-4 over ~25k steps.)
    dead_window: a latent is dead after this many training tokens without firing.
    log_every: steps between the history rows holding L0 and the dead fraction (every row holds
        the loss and its terms; they are read from the device once per log_every steps).
    mixture: source weights of the zoo's token stream (`mechscope.data.mixture.TokenStream`).
    dataset, dataset_column: train instead on one pass over this HF `datasets` source (a data
        file or glob, a `save_to_disk` folder, a hub name; `mechscope.data.streams`), reading
        text or token ids from that column; it must hold n_steps batches. "" = the mixture.
    checkpoint_every: steps between checkpoints (0 = only at the end), with a checkpoint dir.
    """

    model: str
    hook_name: str
    loss: LossKind = "local"
    architecture: Architecture = "standard"
    k: int | None = None
    expansion: int = 8
    sparsity_coeff: float = 1.0
    kl_coeff: float = 1.0
    ds_coeff: float = 2.5
    n_steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 50
    min_lr_frac: float = 0.1
    grad_clip: float = 1.0
    sparsity_warmup_frac: float = 0.05
    dead_window: int = 100_000
    log_every: int = 25
    seed: int = 0
    mixture: dict[str, float] = field(default_factory=lambda: {"stdlib": 1.0})
    dataset: str = ""
    dataset_column: str = "text"
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSS_KINDS:
            raise ValueError(f"unknown loss {self.loss!r}; choose from {LOSS_KINDS}")
        if self.architecture == "jumprelu":
            raise ValueError("jumprelu SAEs can be loaded and evaluated but not trained here")
        if self.architecture == "topk" and not self.k:
            raise ValueError("architecture 'topk' needs k")
        if self.expansion < 1 or self.n_steps < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ValueError("expansion, n_steps, batch_size and log_every must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
