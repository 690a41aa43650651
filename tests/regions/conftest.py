"""Fixtures for the stable-regions tests: a hand-built model with a known boundary, and small
prompt sets on the bundled code-2l."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from mechscope.models.lean import LeanModel
from mechscope.regions.interpolate import PathRunner
from mechscope.regions.prompts import sample_prompts

# the decision direction u = e0 - e1 (mean zero, so LayerNorm keeps the sign of u . x)
U = torch.tensor([1.0, -1.0, 0.0, 0.0])
W_OUT = 20 * torch.tensor([0.0, 0.0, -1.0, 1.0])  # what the gate neuron writes when it opens


def step_model(gain: float = 1000.0) -> LeanModel:
    """A 1-layer model (d_model 4, LayerNorms, one MLP neuron that matters, no attention).

    Written at `blocks.0.hook_resid_pre` (layer=-1), the last position's residual x reaches the
    output only through the MLP: neuron 0 has pre-activation gain * u . LN(x), whose sign is the
    sign of u . x. Once it opens it writes W_OUT, which dominates the final residual and flips
    the top token from 0 (reads x2 - x3 > 0) to 1. Along a straight path from a to b the output
    therefore jumps where u . x(alpha) = 0, a point known in closed form. Neurons 1-3 are dead
    (pre-activation exactly 0). The unembedding reads e2 - e3 into token 0 and e3 - e2 into 1.
    """
    d, d_mlp, vocab, n_pos = 4, 4, 4, 16
    W_in = torch.zeros(1, d, d_mlp)
    W_in[0, :, 0] = gain * U
    W_out = torch.zeros(1, d_mlp, d)
    W_out[0, 0] = W_OUT
    W_U = torch.zeros(d, vocab)
    W_U[:, 0] = torch.tensor([0.0, 0.0, 1.0, -1.0])
    W_U[:, 1] = -W_U[:, 0]
    zero_w = torch.zeros(1, 1, d, 1)
    zero_b = torch.zeros(1, 1, 1)

    weights = dict(
        W_E=torch.randn(vocab, d, generator=torch.Generator().manual_seed(0)),
        W_pos=torch.zeros(n_pos, d),
        W_U=W_U,
        b_U=torch.zeros(vocab),
        W_Q=zero_w,
        W_K=zero_w,
        W_V=zero_w,
        b_Q=zero_b,
        b_K=zero_b,
        b_V=zero_b,
        W_O=torch.zeros(1, 1, 1, d),
        b_O=torch.zeros(1, d),
        W_in=W_in,
        b_in=torch.zeros(1, d_mlp),
        W_out=W_out,
        b_out=torch.zeros(1, d),
    )
    return LeanModel.from_weights(weights, normalization="LN", attn_scale=1.0)


def crossing_ends(alpha0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ends a, b [1, 4] of a path with u . x(alpha) = 2 (alpha - alpha0): the gate opens at
    alpha0. Both ends read x2 - x3 > 0 (token 0) on their own."""
    a = torch.tensor([[-alpha0, alpha0, 2.0, -2.0]])
    b = torch.tensor([[1 - alpha0, -(1 - alpha0), 1.0, -1.0]])
    return a, b


@pytest.fixture(scope="session")
def ends() -> Callable[[float], tuple[torch.Tensor, torch.Tensor]]:
    """`crossing_ends`: path ends whose boundary is at a given alpha."""
    return crossing_ends


@pytest.fixture(scope="session")
def step_runner() -> PathRunner:
    """The hand-built model with two context prompts, written at its embedding output."""
    return PathRunner(step_model(), torch.tensor([[1, 2, 3], [3, 2, 1]]), layer=-1)


@pytest.fixture(scope="session")
def prompts8(tokenizer) -> torch.Tensor:
    """Eight 10-token held-out windows (BOS first)."""
    return sample_prompts(tokenizer, 8, seq_len=10, seed=0)


@pytest.fixture(scope="session")
def runner2l(gpt2_2l, prompts8) -> PathRunner:
    return PathRunner(gpt2_2l, prompts8, layer=0)
