"""Fixtures for the sensitive-directions tests: a hand-built model whose unembedding has a null
space, small token batches and a bundled SAE of code-2l."""

from __future__ import annotations

import pytest
import torch

from mechscope.models.lean import LeanModel

D, VOCAB = 6, 5


def no_ln_model(seed: int = 0) -> LeanModel:
    """A 1-layer model without LayerNorm (d_model 6, vocab 5) whose unembedding reads only the
    first 3 residual dimensions: directions in span(e3, e4, e5) at blocks.0.hook_resid_post (the
    last residual before the unembedding) are in W_U's left null space and cannot change the
    logits. Attention and MLP weights are random, so other hooks do propagate."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.5  # noqa: E731
    W_U = torch.zeros(D, VOCAB)
    W_U[:3] = r(3, VOCAB) * 4
    weights = dict(
        W_E=r(VOCAB, D) * 2,
        W_pos=r(16, D),
        W_U=W_U,
        b_U=torch.zeros(VOCAB),
        W_Q=r(1, 2, D, 3),
        W_K=r(1, 2, D, 3),
        W_V=r(1, 2, D, 3),
        b_Q=torch.zeros(1, 2, 3),
        b_K=torch.zeros(1, 2, 3),
        b_V=torch.zeros(1, 2, 3),
        W_O=r(1, 2, 3, D),
        b_O=torch.zeros(1, D),
        W_in=r(1, D, 8),
        b_in=torch.zeros(1, 8),
        W_out=r(1, 8, D),
        b_out=torch.zeros(1, D),
    )
    return LeanModel.from_weights(weights)


@pytest.fixture(scope="session")
def tiny():
    return no_ln_model()


@pytest.fixture(scope="session")
def lean2l(gpt2_2l):
    return LeanModel(gpt2_2l)


@pytest.fixture(scope="session")
def toks():
    """Two batches [3, 20] of random tokens, BOS (id 0) first."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(2):
        t = torch.randint(1, 4096, (3, 20), generator=g)
        t[:, 0] = 0
        out.append(t)
    return out


@pytest.fixture(scope="session")
def sae0():
    from mechscope.sae.bundled import load_bundled

    return load_bundled("code-2l", "blocks.0.hook_resid_post__local__l1-2")
