"""Path patching: known answers on a hand-built model, and consistency on a bundled one."""

from __future__ import annotations

import math

import pytest
import torch

from mechscope.patching import PatchMetric, all_senders, path_patch, run_patches, site, task_metric

LOGIT0 = PatchMetric("logit0", lambda lg, i: lg[:, -1, 0])


def _cummean(x: torch.Tensor) -> torch.Tensor:
    return x.cumsum(-1) / torch.arange(1, x.shape[-1] + 1)


def test_toy_model_direct_and_indirect_paths(toy):
    """S = 0.0 reaches the logit via R = 2.0 (value input) directly and via M = 1.0 -> R.

    With uniform causal attention and no LayerNorm everything is a running mean:
    A = cummean(E) (S's output), D = cummean(A) (M's output), logit = mean over positions of
    (A + D). Noising S (clean run, corrupted S) through one path changes only that path's term.
    """
    clean = torch.tensor([[1, 2, 3, 4, 5], [5, 1, 4, 2, 3]])
    corrupt = torch.tensor([[5, 4, 3, 2, 1], [0, 0, 1, 1, 2]])
    a_clean, a_corrupt = _cummean(clean.float()), _cummean(corrupt.float())
    d_clean, d_corrupt = _cummean(a_clean), _cummean(a_corrupt)
    base = (a_clean + d_clean).mean(-1).mean().item()
    direct = (a_corrupt + d_clean).mean(-1).mean().item()  # M frozen at its clean value
    via_m = (a_clean + d_corrupt).mean(-1).mean().item()  # R's direct input from S frozen
    total = (a_corrupt + d_corrupt).mean(-1).mean().item()

    receivers = ["2.0.v", "1.0.v", "2.0.q", "2.1.v", "resid_final", "0.1.v"]
    r = path_patch(toy, clean, corrupt, LOGIT0, ["0.0", "0.1"], receivers, "noising")
    assert r.axes == ("sender", "receiver") and r.clean == pytest.approx(base)
    got = dict(zip(receivers, r.values[0].tolist(), strict=True))
    assert got["2.0.v"] == pytest.approx(direct, abs=1e-5)
    assert got["1.0.v"] == pytest.approx(via_m, abs=1e-5)
    for no_path in ("2.0.q", "2.1.v", "resid_final"):
        assert got[no_path] == pytest.approx(base, abs=1e-5)
    assert math.isnan(got["0.1.v"])  # same layer: no path from S
    assert torch.allclose(r.values[1, :5], torch.tensor(base))  # head 0.1 writes nothing
    # the direct paths add up to the full effect of patching S (the model is linear here)
    exact = run_patches(toy, clean, corrupt, [(site("result", 0, heads=0),)], LOGIT0, "noising")
    assert exact.item() == pytest.approx(total, abs=1e-5)
    assert (direct - base) + (via_m - base) == pytest.approx(total - base, abs=1e-5)


def test_last_layer_sender_to_output_equals_patching_the_head(attn4, docstring8):
    """Nothing lies between a last-layer head and the final residual: path = exact patch."""
    t, m = docstring8, task_metric(docstring8)
    last = attn4.cfg.n_layers - 1
    senders = [f"{last}.{h}" for h in range(attn4.cfg.n_heads)]
    r = path_patch(
        attn4, t.clean_tokens, t.corrupt_tokens, m, senders, ["resid_final"], "denoising"
    )
    patches = [(site("result", last, heads=h),) for h in range(attn4.cfg.n_heads)]
    exact = run_patches(attn4, t.clean_tokens, t.corrupt_tokens, patches, m, "denoising")
    assert torch.allclose(r.values[:, 0], exact, atol=1e-5)


def test_all_senders_lists_heads_and_mlps(attn4, gpt2_2l):
    from mechscope.models.lean import LeanModel

    assert all_senders(LeanModel(attn4), before_layer=1) == [f"0.{h}" for h in range(8)]
    gpt = LeanModel(gpt2_2l)
    assert all_senders(gpt)[-1] == f"mlp{gpt.n_layers - 1}"
