"""The engine's directions, ablations, multi-site patches, chunking and metrics."""

from __future__ import annotations

import pytest
import torch

from mechscope.models.lean import LeanModel
from mechscope.patching import patch_sweep, patch_task, run_patches, site, task_metric


def test_patching_everything_restores_the_source_run(attn4, docstring8):
    t, m = docstring8, task_metric(docstring8)
    everything = [(site("resid_pre", 0),)]
    restored = run_patches(attn4, t.clean_tokens, t.corrupt_tokens, everything, m, "denoising")
    broken = run_patches(attn4, t.clean_tokens, t.corrupt_tokens, everything, m, "noising")
    r = patch_sweep(attn4, t.clean_tokens, t.corrupt_tokens, m, "resid_pre", positions="all")
    assert abs(restored.item() - r.clean) < 1e-5
    assert abs(broken.item() - r.corrupted) < 1e-5
    assert torch.allclose(r.normalised()[0], torch.tensor(1.0), atol=1e-4)
    assert r.clean != pytest.approx(r.corrupted, abs=1e-3)


def test_multi_site_patch_and_ablations_equal_hand_written_hooks(attn4, docstring8):
    t, m = docstring8, task_metric(docstring8)
    lean = LeanModel(attn4)
    clean = t.clean_tokens
    _, cache = lean.run_with_cache(clean)
    patch = (
        site("z", 1, positions=[3, 7], heads=[2]),
        site("pattern", 2, heads=0, positions=-1 % clean.shape[1]),
    )

    def by_hand(z_src, pattern_src):
        def z_hook(x):
            x = x.clone()
            x[:, [3, 7], 2] = z_src[:, [3, 7], 2]
            return x

        def pattern_hook(x):
            x = x.clone()
            x[:, 0, -1] = pattern_src[:, 0, -1]
            return x

        hooks = {"blocks.1.attn.hook_z": z_hook, "blocks.2.attn.hook_pattern": pattern_hook}
        return float(m(lean(clean, hooks), torch.arange(len(t))).mean())

    z, pat = cache["blocks.1.attn.hook_z"], cache["blocks.2.attn.hook_pattern"]
    zero = run_patches(lean, clean, t.corrupt_tokens, [patch], m, "zero")
    mean = run_patches(lean, clean, t.corrupt_tokens, [patch], m, "mean")
    assert zero.item() == pytest.approx(by_hand(z * 0, pat * 0), abs=1e-5)
    z_mean = z.mean(0, keepdim=True).expand_as(z)
    pat_mean = pat.mean(0, keepdim=True).expand_as(pat)
    assert mean.item() == pytest.approx(by_hand(z_mean, pat_mean), abs=1e-5)
    assert zero.item() != pytest.approx(
        float(m(lean(clean), torch.arange(len(t))).mean()), abs=1e-4
    )


def test_chunking_does_not_change_results(attn4, docstring8):
    small = patch_task(attn4, docstring8, "z", "noising", positions="all", memory_mb=0.001)
    big = patch_task(attn4, docstring8, "z", "noising", positions="all", memory_mb=4096)
    assert small.values.shape == (attn4.cfg.n_layers, attn4.cfg.n_heads)
    assert torch.allclose(small.values, big.values, atol=1e-6)


@pytest.mark.parametrize("metric", ["logit_diff", "logprob", "prob", "kl"])
def test_every_metric_runs_and_normalises(attn4, docstring8, metric):
    r = patch_task(attn4, docstring8, "attn_out", "denoising", metric=metric, positions="all")
    assert r.metric == metric and r.values.shape == (attn4.cfg.n_layers,)
    if metric == "kl":
        assert r.clean == pytest.approx(0.0, abs=1e-5) and r.corrupted > 0
    assert torch.isfinite(r.normalised()).all()


def test_chosen_positions_and_heads(attn4, docstring8):
    full = patch_task(attn4, docstring8, "result", "denoising")
    part = patch_task(attn4, docstring8, "result", "denoising", positions=[2, 5], heads=[1, 3])
    assert part.axes == ("layer", "pos", "head") and part.values.shape == (4, 2, 2)
    assert torch.allclose(part.values, full.values[:, [2, 5]][:, :, [1, 3]], atol=1e-6)
    assert part.labels["pos"] == [full.labels["pos"][2], full.labels["pos"][5]]


def test_result_and_z_patches_agree(attn4, docstring8):
    """Patching a head's output before or after W_O is the same intervention."""
    z = patch_task(attn4, docstring8, "z", "denoising", positions="all")
    result = patch_task(attn4, docstring8, "result", "denoising", positions="all")
    assert torch.allclose(z.values, result.values, atol=1e-5)


@pytest.mark.parametrize("model", ["attn4", "gpt2_2l"])
def test_lean_entry_points_the_engine_uses(model, docstring8, request):
    """Starting at a layer from the cached residual, and unembedding a few positions, change
    nothing; the fast path (no per-head hooks) equals the bridge."""
    bridge = request.getfixturevalue(model)
    lean = LeanModel(bridge)
    tok = docstring8.clean_tokens[:4]
    with torch.no_grad():
        ref = bridge(tok)
        _, cache = lean.run_with_cache(tok)
        last = lean.n_layers - 1
        mid = lean(tok, start_layer=1, resid=cache["blocks.1.hook_resid_pre"], logit_pos=(-1, 5))
        end = lean(tok, start_layer=last + 1, resid=cache[f"blocks.{last}.hook_resid_post"])
        full = lean(tok)
    # logits up to ~20: float32 with another summation order differs by ~1e-6 of that scale
    tol = dict(atol=1e-6 * float(ref.abs().max()) + 1e-6, rtol=1e-5)
    torch.testing.assert_close(full, ref, **tol)
    torch.testing.assert_close(mid, ref[:, [-1, 5]], **tol)
    torch.testing.assert_close(end, ref, **tol)
