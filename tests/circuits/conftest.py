"""Tiny random models (LeanModel over plain tensors) and prompts for the circuit tests."""

from __future__ import annotations

import pytest
import torch

from mechscope.models.lean import LeanModel


def tiny_model(
    n_layers: int = 2,
    n_heads: int = 2,
    d: int = 8,
    d_mlp: int | None = 12,
    vocab: int = 7,
    layer_norm: bool = True,
    seed: int = 0,
) -> LeanModel:
    """A random transformer: LayerNorm (no affine) or none, optional GELU MLPs, causal attention."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.5) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    L, H, dh = n_layers, n_heads, d // n_heads
    weights = dict(
        W_E=r(vocab, d, scale=1.0),
        W_pos=r(16, d),
        W_U=r(d, vocab),
        b_U=r(vocab),
        W_Q=r(L, H, d, dh),
        W_K=r(L, H, d, dh),
        W_V=r(L, H, d, dh),
        b_Q=r(L, H, dh),
        b_K=r(L, H, dh),
        b_V=r(L, H, dh),
        W_O=r(L, H, dh, d),
        b_O=r(L, d),
    )
    if d_mlp is not None:
        weights.update(W_in=r(L, d, d_mlp), b_in=r(L, d_mlp), W_out=r(L, d_mlp, d), b_out=r(L, d))
    return LeanModel.from_weights(
        weights,
        normalization="LN" if layer_norm else None,
        act_fn="gelu",
        attn_scale=float(dh) ** 0.5,
    )


@pytest.fixture(scope="session")
def tiny() -> LeanModel:
    return tiny_model()


@pytest.fixture(scope="session")
def tiny3() -> LeanModel:
    return tiny_model(n_layers=3, seed=2)


@pytest.fixture(scope="session")
def tiny_attn() -> LeanModel:
    return tiny_model(n_layers=3, n_heads=2, d_mlp=None, seed=1)


@pytest.fixture(scope="session")
def no_ln() -> LeanModel:
    """Attention-only, no LayerNorm: edges into the logits act linearly."""
    return tiny_model(n_layers=2, d_mlp=None, layer_norm=False, seed=4)


@pytest.fixture(scope="session")
def prompts() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    clean = torch.randint(0, 7, (4, 6), generator=g)
    corrupt = torch.randint(0, 7, (4, 6), generator=g)
    return clean, corrupt


@pytest.fixture(scope="session")
def toy_lean(toy_dir):
    """family -> the LeanModel of a tiny random HF model of that family (loaded once)."""
    import mechscope
    from mechscope.models.lean import as_lean

    models: dict[str, LeanModel] = {}

    def get(family: str) -> LeanModel:
        if family not in models:
            models[family] = as_lean(mechscope.load_model(toy_dir(family)))
        return models[family]

    return get


# every declared family whose residual stream is a sum of per-head terms (the others, Gemma-2/3
# and OLMo-2, are refused: test_acdc.py)
DECOMPOSABLE = [
    "gpt2", "opt", "gpt_neox", "gptj", "llama", "mistral", "qwen2", "qwen3", "gemma", "olmo",
    "phi", "phi3",
]  # fmt: skip


@pytest.fixture(scope="session", params=DECOMPOSABLE)
def toy_family(request: pytest.FixtureRequest) -> str:
    """Toy HF families: grouped-query attention (llama, qwen2, qwen3 with q/k norms, mistral with an
    8-token sliding window, gemma with one key/value head), parallel blocks with rotary positions
    (gpt_neox; gptj and phi with one norm for attention and MLP), learned positions (gpt2, opt),
    non-parametric LayerNorm (olmo), fused projections (phi3)."""
    return str(request.param)


@pytest.fixture(scope="session")
def toy_prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """3 clean and 3 corrupted prompts of 10 tokens (past the toy sliding windows of 8)."""
    g = torch.Generator().manual_seed(5)
    clean = torch.randint(0, 4096, (3, 10), generator=g)
    corrupt = torch.randint(0, 4096, (3, 10), generator=g)
    return clean, corrupt
