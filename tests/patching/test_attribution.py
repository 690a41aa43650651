"""Attribution patching: exact on a linear model, close to exact patching on the docstring task."""

from __future__ import annotations

import pytest
import torch

from mechscope.patching import PatchMetric, attribution_patch, patch_sweep, pearson, task_metric

LOGIT0 = PatchMetric("logit0", lambda lg, i: lg[:, -1, 0])


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_exact_when_the_model_is_linear(toy, direction):
    """The toy model's attention is uniform and it has no LayerNorm: the estimate is exact."""
    clean = torch.tensor([[1, 2, 3, 4, 5], [5, 1, 4, 2, 3]])
    corrupt = torch.tensor([[5, 4, 3, 2, 1], [0, 0, 1, 1, 2]])
    comps = ["z", "result", "resid_pre", "attn_out", "v"]
    est = attribution_patch(toy, clean, corrupt, LOGIT0, comps, direction)
    for c in comps:
        exact = patch_sweep(toy, clean, corrupt, LOGIT0, c, direction)
        assert est[c].axes == exact.axes and est[c].method == "attribution"
        assert torch.allclose(est[c].values, exact.values, atol=1e-5), c


def test_per_head_estimate_tracks_exact_patching_on_docstring(attn4, tokenizer):
    from mechscope.tasks import make_task

    t = make_task("docstring", tokenizer, n=20, seed=1)
    m = task_metric(t)
    est = attribution_patch(attn4, t.clean_tokens, t.corrupt_tokens, m, ["z"], positions="all")
    exact = patch_sweep(attn4, t.clean_tokens, t.corrupt_tokens, m, "z", positions="all")
    r = pearson(est["z"].values, exact.values)
    print(f"attribution vs exact, per head (docstring, denoising): Pearson r = {r:.3f}")
    assert r > 0.8
    assert est["z"].clean == pytest.approx(exact.clean, abs=1e-5)


@pytest.mark.parametrize("metric", [None, "kl"])
def test_attribution_task_is_attribution_patch_with_the_task_metric(attn4, tokenizer, metric):
    """The CLI's `patch --attribution` set-up, as `patch_task` sets up the exact sweep."""
    from mechscope.models.lean import as_lean
    from mechscope.patching import attribution_task
    from mechscope.tasks import make_task

    t = make_task("docstring", tokenizer, n=4, seed=0)
    lean = as_lean(attn4)
    clean = lean(t.clean_tokens, logit_pos=(-1,)) if metric == "kl" else None
    m = task_metric(t, metric, clean)
    want = attribution_patch(attn4, t.clean_tokens, t.corrupt_tokens, m, ["z", "resid_pre"])
    got = attribution_task(attn4, t, ["z", "resid_pre"], metric=metric)
    for c in ("z", "resid_pre"):
        assert torch.equal(got[c].values, want[c].values), c
        assert got[c].meta["task"] == "docstring" and got[c].meta["n_prompts"] == 4
