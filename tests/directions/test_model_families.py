"""The perturbation engine on every declared family's toy model: its KL equals a literal
computation through the bridge's hooks, at a residual hook (the engine starts the forward at the
next block) and at an MLP hook (the engine replaces the hook's value)."""

from __future__ import annotations

import pytest
import torch

from mechscope.directions.perturb import clean_run, counted_positions, perturbed_kl
from mechscope.models.declare import FAMILIES


def _tokens() -> torch.Tensor:
    """[3, 16] random tokens, BOS (0) first; longer than the toys' 8-token sliding windows."""
    t = torch.randint(1, 4096, (3, 16), generator=torch.Generator().manual_seed(1))
    t[:, 0] = 0
    return t


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"])
def test_kl_equals_the_bridges(family, hook, toy_model) -> None:
    bridge = toy_model(family)
    run = clean_run(bridge, _tokens(), hook)
    g = torch.Generator().manual_seed(5)
    dirs = torch.randn(3, run.x.shape[-1], generator=g)
    scale = run.x.norm(dim=-1)  # lengths relative to each activation's norm
    lengths = [0.3, 3.0]
    kl = perturbed_kl(bridge, run, dirs, lengths, scale=scale, max_rows=4)  # chunks cut variants
    counted = counted_positions(run)
    with torch.no_grad():
        ref_lp = bridge(run.tokens).float().log_softmax(-1)
        for i, d in enumerate(dirs):
            for j, length in enumerate(lengths):
                delta = length * scale[..., None] * (d / d.norm()) * run.keep[..., None]
                logits = bridge.run_with_hooks(
                    run.tokens, fwd_hooks=[(hook, lambda x, hook, dl=delta: x + dl)]
                )
                lp = logits.float().log_softmax(-1)
                want = (ref_lp.exp() * (ref_lp - lp)).sum(-1)
                tol = 1e-4 * float(want[counted].max()) + 1e-6
                torch.testing.assert_close(kl[i, j][counted], want[counted], atol=tol, rtol=1e-3)
    assert float(kl[:, 1][:, counted].mean()) > 1e-5  # the perturbations do move the output
