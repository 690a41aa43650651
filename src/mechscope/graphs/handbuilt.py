"""Hand-built models whose transcoders are exact: each MLP is a ReLU MLP and its transcoder has
the MLP's own weights (W_enc = W_in, b_enc = b_in, W_dec = W_out, b_dec = b_out), so every error
node is zero and the feature graph is the model's own MLP neurons."""

from __future__ import annotations

import torch

from mechscope.models.lean import LeanModel
from mechscope.sae.config import SAEConfig
from mechscope.sae.transcoder import INPUT_HOOK, Transcoder


def exact_model(
    n_layers: int = 2,
    d_model: int = 8,
    d_mlp: int = 16,
    n_heads: int = 2,
    vocab: int = 12,
    n_ctx: int = 16,
    normalization: str | None = "LN",
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[LeanModel, list[Transcoder]]:
    """(a random model with ReLU MLPs and learned positions, its exact transcoders, one per
    layer). Weights N(0, 1/sqrt(fan-in)); MLP biases N(0, 0.1) so a part of the neurons fire."""
    g = torch.Generator().manual_seed(seed)
    d_head = d_model // n_heads

    def rnd(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    L, H = n_layers, n_heads
    w = {
        "W_E": rnd(vocab, d_model),
        "W_pos": rnd(n_ctx, d_model, scale=0.3),
        "W_U": rnd(d_model, vocab, scale=d_model**-0.5),
        "b_U": rnd(vocab, scale=0.1),
        "W_Q": rnd(L, H, d_model, d_head, scale=d_model**-0.5),
        "W_K": rnd(L, H, d_model, d_head, scale=d_model**-0.5),
        "W_V": rnd(L, H, d_model, d_head, scale=d_model**-0.5),
        "b_Q": rnd(L, H, d_head, scale=0.1),
        "b_K": rnd(L, H, d_head, scale=0.1),
        "b_V": rnd(L, H, d_head, scale=0.1),
        "W_O": rnd(L, H, d_head, d_model, scale=d_head**-0.5),
        "b_O": rnd(L, d_model, scale=0.1),
        "W_in": rnd(L, d_model, d_mlp, scale=d_model**-0.5),
        "b_in": rnd(L, d_mlp, scale=0.1),
        "W_out": rnd(L, d_mlp, d_model, scale=d_mlp**-0.5),
        "b_out": rnd(L, d_model, scale=0.1),
    }
    lean = LeanModel.from_weights(w, normalization=normalization, act_fn="relu")
    lean.cfg.n_ctx = n_ctx
    tcs = []
    for l in range(L):
        cfg = SAEConfig(
            d_model, d_mlp, hook_name=INPUT_HOOK.format(layer=l), apply_b_dec_to_input=False
        )
        tc = Transcoder(cfg).to(dtype)
        with torch.no_grad():
            tc.W_enc.copy_(w["W_in"][l])
            tc.b_enc.copy_(w["b_in"][l])
            tc.W_dec.copy_(w["W_out"][l])
            tc.b_dec.copy_(w["b_out"][l])
        tcs.append(tc.eval())
    return lean, tcs
