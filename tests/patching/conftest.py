"""Fixtures for the patching tests: small tasks on the bundled models and a hand-built toy model."""

from __future__ import annotations

import pytest
import torch

from mechscope.models.lean import LeanModel
from mechscope.tasks import make_task

# residual dimensions of the toy model
E, A, D, B = 0, 1, 2, 3


@pytest.fixture(scope="session")
def ioi2(tokenizer):
    """Two IOI prompt pairs (16 tokens): small enough to run TransformerLens's loops quickly."""
    return make_task("ioi", tokenizer, n=2, seed=0)


@pytest.fixture(scope="session")
def docstring8(tokenizer):
    return make_task("docstring", tokenizer, n=8, seed=0)


@pytest.fixture(scope="session")
def toy() -> LeanModel:
    """A 3-layer attention-only model, no LayerNorm, uniform causal attention (W_Q = W_K = 0).

    Token t embeds as t in dimension E. Layer 0 head 0 (S) copies E -> A; layer 1 head 0 (M)
    copies A -> D; layer 2 head 0 (R) reads A + D into B; the unembedding reads B into logit 0.
    Every other head is zero. So S reaches the output through S -> R.v directly and through
    S -> M.v -> R.v, and through nothing else.
    """
    n_layers, n_heads, d, vocab = 3, 2, 4, 6
    W_V = torch.zeros(n_layers, n_heads, d, 1)
    W_O = torch.zeros(n_layers, n_heads, 1, d)
    W_V[0, 0, E, 0], W_O[0, 0, 0, A] = 1.0, 1.0
    W_V[1, 0, A, 0], W_O[1, 0, 0, D] = 1.0, 1.0
    W_V[2, 0, A, 0], W_V[2, 0, D, 0], W_O[2, 0, 0, B] = 1.0, 1.0, 1.0
    W_E = torch.zeros(vocab, d)
    W_E[:, E] = torch.arange(vocab).float()
    W_U = torch.zeros(d, vocab)
    W_U[B, 0] = 1.0
    zeros_head = torch.zeros(n_layers, n_heads, 1)
    weights = dict(
        W_E=W_E,
        W_pos=torch.zeros(16, d),
        W_U=W_U,
        b_U=torch.zeros(vocab),
        W_Q=torch.zeros(n_layers, n_heads, d, 1),
        W_K=torch.zeros(n_layers, n_heads, d, 1),
        W_V=W_V,
        b_Q=zeros_head,
        b_K=zeros_head,
        b_V=zeros_head,
        W_O=W_O,
        b_O=torch.zeros(n_layers, d),
    )
    return LeanModel.from_weights(weights, act_fn="relu", attn_scale=1.0)
