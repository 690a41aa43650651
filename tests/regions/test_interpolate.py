"""Interpolation on the bundled code-2l: clean runs reproduced, same-context ends reproduce the
other prompt's run, batching and backends agree, and errors say what to do."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import RegionsError
from mechscope.regions.interpolate import PathRunner, interpolate, interpolate_pairs
from mechscope.regions.prompts import consecutive_pairs


def _last_token_swapped(tokens: torch.Tensor) -> torch.Tensor:
    """Prompts B: each prompt with its last token replaced (same context, different ending)."""
    b = tokens.clone()
    b[:, -1] = torch.roll(tokens[:, -1], 1)
    same = b[:, -1] == tokens[:, -1]
    b[same, -1] = (b[same, -1] + 1) % 4096
    return b


def test_clean_run_matches_the_bridge(gpt2_2l, runner2l, prompts8):
    with torch.no_grad():
        logits = gpt2_2l(prompts8)[:, -1]
    torch.testing.assert_close(runner2l.clean.logprobs, logits.log_softmax(-1), atol=1e-4, rtol=0)
    # writing a prompt's own activation back reproduces its clean run
    ctx = torch.arange(8)
    out = runner2l.run(ctx, runner2l.clean_write)
    torch.testing.assert_close(out.read, runner2l.clean.read, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layer", [-1, 0, 1])
def test_same_context_end_reproduces_the_other_prompt(gpt2_2l, prompts8, layer):
    b_tokens = _last_token_swapped(prompts8)
    both = torch.cat([prompts8, b_tokens])
    runner = PathRunner(gpt2_2l, both, layer=layer)
    first, second = torch.arange(8), torch.arange(8, 16)
    curves = interpolate_pairs(runner, first, second, n_steps=7)
    y = runner.clean.read
    torch.testing.assert_close(curves.dist[:, 0], torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        curves.dist[:, -1], (y[second] - y[first]).norm(dim=-1), atol=1e-4, rtol=0
    )
    assert torch.equal(curves.top1[:, -1], runner.clean.logprobs[second].argmax(-1))
    assert torch.equal(curves.top1[:, 0], runner.clean.logprobs[first].argmax(-1))
    kl_end = (
        runner.clean.logprobs[first].exp()
        * (runner.clean.logprobs[first] - runner.clean.logprobs[second])
    ).sum(-1)
    torch.testing.assert_close(curves.kl[:, -1], kl_end, atol=1e-4, rtol=1e-4)
    assert curves.gate_layers == list(range(layer + 1, 2))


def test_batching_does_not_change_results(runner2l):
    first, second = consecutive_pairs(8)
    big = interpolate_pairs(runner2l, first, second, n_steps=9, batch_size=4096)
    small = interpolate_pairs(runner2l, first, second, n_steps=9, batch_size=10)  # 1 path/batch
    for name in ("dist", "kl", "step_kl"):
        torch.testing.assert_close(getattr(big, name), getattr(small, name), atol=1e-5, rtol=1e-5)
    assert torch.equal(big.flips, small.flips) and torch.equal(big.top1, small.top1)


def test_bridge_backend_matches_lean_backend(gpt2_2l, prompts8):
    tokens = prompts8[:4]
    lean = PathRunner(gpt2_2l, tokens, layer=0, backend="lean")
    bridge = PathRunner(gpt2_2l, tokens, layer=0, backend="bridge")
    first, second = consecutive_pairs(4)
    cl = interpolate_pairs(lean, first, second, n_steps=5)
    cb = interpolate_pairs(bridge, first, second, n_steps=5)
    torch.testing.assert_close(lean.clean_write, bridge.clean_write, atol=1e-5, rtol=0)
    torch.testing.assert_close(cl.dist, cb.dist, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cl.kl, cb.kl, atol=1e-4, rtol=1e-4)
    assert torch.equal(cl.top1, cb.top1)
    # a pre-activation within float error of 0 could flip; none does on these prompts
    assert torch.equal(cl.flips, cb.flips)


def test_step_kl_and_flips_shapes(runner2l):
    first, second = consecutive_pairs(8)
    c = interpolate_pairs(runner2l, first, second, n_steps=6)
    assert c.dist.shape == c.kl.shape == c.top1.shape == (7, 6)
    assert c.step_kl.shape == (7, 5) and (c.step_kl >= 0).all()
    assert c.flips is not None and c.flips.shape == (7, 5, 1)  # block 1's MLP
    assert c.mismatch is not None and c.mismatch.shape == (7, 1)
    assert (c.flips.sum(1) >= c.mismatch).all()  # every end-to-end difference flips on the way
    torch.testing.assert_close(
        c.input_dist, (runner2l.clean_write[second] - runner2l.clean_write[first]).norm(dim=-1)
    )


def test_errors_say_what_to_do(gpt2_2l, prompts8, runner2l):
    with pytest.raises(RegionsError, match=r"use -1 .* to 1"):
        PathRunner(gpt2_2l, prompts8, layer=2)
    with pytest.raises(RegionsError, match="read must be"):
        PathRunner(gpt2_2l, prompts8, read="probs")  # type: ignore[arg-type]
    w = runner2l.clean_write
    with pytest.raises(RegionsError, match="at least 2"):
        interpolate(runner2l, torch.tensor([0]), w[:1], w[1:2], n_steps=1)
    with pytest.raises(RegionsError, match="one row per context prompt"):
        interpolate(runner2l, torch.tensor([0, 1]), w[:1], w[1:2])
