"""Steering with a key/value cache gives the tokens of re-running the whole sequence with the same
hooks each step; unsteered greedy generation is the model's argmax; bad steers fail clearly."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import GraphError
from mechscope.graphs.handbuilt import exact_model
from mechscope.graphs.steer import (
    AblateDirection,
    AddDirection,
    ClampFeature,
    generate,
    steering_hooks,
)
from mechscope.sae.config import SAEConfig
from mechscope.sae.model import SparseAutoencoder

PROMPT = torch.tensor([0, 3, 5, 7])


@pytest.fixture(scope="module")
def model():
    return exact_model(n_ctx=16, vocab=12, seed=6)


def _reference(lean, tokens, n_new, steers):
    """Greedy generation re-running the full sequence with the steering hooks every step."""
    fns = steering_hooks(lean, steers)

    def compose(chain):
        def hook(x):
            for fn in chain:
                x = fn(x)
            return x

        return hook

    hooks = {name: compose(chain) for name, chain in fns.items()}
    seq = tokens[None]
    for _ in range(n_new):
        logits = lean.forward(seq, hooks=hooks)[0, -1]
        seq = torch.cat([seq, logits.argmax()[None, None]], 1)
    return seq[0]


def test_unsteered_is_greedy(model) -> None:
    lean, _ = model
    assert torch.equal(generate(lean, PROMPT, 8), _reference(lean, PROMPT, 8, []))


def test_cached_equals_recomputed(model) -> None:
    lean, tcs = model
    g = torch.Generator().manual_seed(0)
    d = lean.W_E.shape[1]
    sae = SparseAutoencoder(SAEConfig(d, 16, hook_name="blocks.0.hook_resid_post"), seed=1)
    steers = [
        AddDirection(
            "blocks.0.hook_resid_post", torch.randn(d, generator=g, dtype=torch.float64), 3.0
        ),
        AblateDirection("blocks.1.hook_attn_out", torch.randn(d, generator=g, dtype=torch.float64)),
        ClampFeature(tcs[1], 3, 5.0),
        ClampFeature(sae.to(torch.float64), 2, 4.0),
    ]
    got = generate(lean, PROMPT, 10, steers)
    assert torch.equal(got, _reference(lean, PROMPT, 10, steers))
    assert not torch.equal(got, generate(lean, PROMPT, 10))  # the steering changes the text


def test_sampling_is_seeded(model) -> None:
    lean, _ = model
    a = generate(lean, PROMPT, 10, temperature=1.0, seed=3)
    assert torch.equal(a, generate(lean, PROMPT, 10, temperature=1.0, seed=3))
    outs = {tuple(generate(lean, PROMPT, 10, temperature=2.0, seed=s).tolist()) for s in range(5)}
    assert len(outs) > 1


def test_bad_steers(model) -> None:
    lean, tcs = model
    with pytest.raises(GraphError, match="no steerable hook"):
        generate(lean, PROMPT, 2, [AddDirection("blocks.7.hook_resid_post", torch.ones(8))])
    with pytest.raises(GraphError, match="width 3"):
        generate(lean, PROMPT, 2, [AddDirection("blocks.0.hook_resid_post", torch.ones(3))])
    with pytest.raises(GraphError, match="out of range"):
        generate(lean, PROMPT, 2, [ClampFeature(tcs[0], 999, 1.0)])
    with pytest.raises(GraphError, match="exceeds the context"):
        generate(lean, PROMPT, 13)


@pytest.mark.slow
def test_cached_equals_recomputed_llama(llama_2l) -> None:
    """Rotary positions and grouped-query attention: the cached keys are the rotated ones."""
    from mechscope.models.lean import as_lean

    lean = as_lean(llama_2l)
    d = lean.W_E.shape[1]
    u = torch.randn(d, generator=torch.Generator().manual_seed(0))
    steers = [AddDirection("blocks.0.hook_resid_post", u, 4.0)]
    prompt = torch.tensor([0, 311, 668, 65, 8, 1619])
    assert torch.equal(generate(lean, prompt, 8, steers), _reference(lean, prompt, 8, steers))
    assert torch.equal(generate(lean, prompt, 8), _reference(lean, prompt, 8, []))
