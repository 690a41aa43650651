"""The engine's recompute-only-what-changes path (one component at one layer, from the first
patched position on, the patch as a tensor operation on the stacked batch) against a literal
hooked full forward per patch, on every component, granularity and direction."""

from __future__ import annotations

import pytest
import torch

import mechscope
from mechscope.models.lean import LeanModel, as_lean
from mechscope.patching import patch_sweep, run_patches, site, task_metric
from mechscope.patching.specs import COMPONENTS


def _literal(lean, task, metric, component, direction, positions, dest_src=False):
    """The metric of each patch of a sweep at `positions` (every head, or every source position
    for dest_src), one hooked full forward per patch: [layer, pos, head] / [layer, head, pos]
    (/ [layer, head, pos, src])."""
    template, layout = COMPONENTS[component]
    base_tokens = task.corrupt_tokens if direction == "denoising" else task.clean_tokens
    src_tokens = task.clean_tokens if direction == "denoising" else task.corrupt_tokens
    with torch.no_grad():
        _, base_cache = lean.run_with_cache(base_tokens)
        _, src_cache = lean.run_with_cache(src_tokens)
    prompt = torch.arange(base_tokens.shape[0])
    seq_len = base_tokens.shape[1]
    out = []
    for l in range(lean.n_layers):
        hook = template.format(l=l)
        base = base_cache[hook]
        source = {
            "zero": torch.zeros_like(base),
            "mean": base.mean(0, keepdim=True).expand_as(base),
        }.get(direction, src_cache[hook])
        n_heads = lean.heads_at(hook)
        if layout == "pos":
            index = [(p,) for p in positions]
        elif layout == "pos_head":
            index = [(p, h) for p in positions for h in range(n_heads)]
        elif dest_src:
            index = [(h, p, s) for h in range(n_heads) for p in positions for s in range(seq_len)]
        else:
            index = [(h, p) for h in range(n_heads) for p in positions]
        row = []
        for at in index:

            def patch(x, at=at, source=source):
                x = x.clone()
                x[(slice(None), *at)] = source[(slice(None), *at)]
                return x

            with torch.no_grad():
                logits = lean(base_tokens, {hook: patch}, logit_pos=metric.positions)
            row.append(float(metric(logits, prompt).mean()))
        out.append(row)
    return torch.tensor(out)


# every component, each direction and ablation on a model with MLPs and on the GQA model
CASES = [
    ("gpt2_2l", c, d)
    for c in COMPONENTS
    for d in ("denoising", "noising", "zero", "mean")
    if c not in ("q_input", "k_input", "v_input") or d in ("noising", "mean")
]
CASES += [
    ("llama_2l", c, d) for c in ("z", "k", "v", "k_input", "pattern") for d in ("zero", "mean")
]
CASES += [("llama_2l", c, "denoising") for c in ("resid_pre", "q", "mlp_out", "resid_mid")]
CASES += [("attn4", c, d) for c in ("z", "attn_out", "q") for d in ("denoising", "mean")]


@pytest.mark.parametrize(("model", "component", "direction"), CASES)
def test_sweep_equals_a_hooked_forward_per_patch(model, component, direction, docstring8, request):
    """Positions before, at and after the first token where clean and corrupted prompts differ
    (no-op and changing patches), every head."""
    lean = LeanModel(request.getfixturevalue(model))
    task = docstring8
    metric = task_metric(task)
    differ = int((task.clean_tokens != task.corrupt_tokens).any(0).nonzero()[0])
    positions = [2, differ, differ + 3, task.clean_tokens.shape[1] - 1]
    r = patch_sweep(
        lean, task.clean_tokens, task.corrupt_tokens, metric, component, direction, positions
    )
    want = _literal(lean, task, metric, component, direction, positions)
    torch.testing.assert_close(r.values.flatten(1), want, atol=1e-5, rtol=0)


def test_dest_src_pattern_equals_a_hooked_forward_per_entry(llama_2l, docstring8):
    lean, task = LeanModel(llama_2l), docstring8
    metric = task_metric(task)
    positions = [task.clean_tokens.shape[1] - 1]
    r = patch_sweep(
        lean, task.clean_tokens, task.corrupt_tokens, metric, "pattern", "noising", "dest_src"
    )
    want = _literal(lean, task, metric, "pattern", "noising", positions, dest_src=True)
    torch.testing.assert_close(r.values[:, :, -1].flatten(1), want, atol=1e-5, rtol=0)


def test_unchanged_patches_give_the_base_run_and_grouping_changes_nothing(gpt2_2l, docstring8):
    """Patches before the first differing token change nothing (the base run's metric, exactly
    as computed); one call mixing components, layers and positions equals separate calls."""
    lean, task = LeanModel(gpt2_2l), docstring8
    metric = task_metric(task)
    differ = int((task.clean_tokens != task.corrupt_tokens).any(0).nonzero()[0])
    r = patch_sweep(lean, task.clean_tokens, task.corrupt_tokens, metric, "z", "denoising")
    assert torch.equal(r.values[:, :differ], torch.full_like(r.values[:, :differ], r.corrupted))
    assert (r.values[:, differ:] != r.corrupted).any()
    patches = [
        (site("z", 1, positions=differ, heads=2),),
        (site("resid_pre", 0, positions=[differ + 1, differ + 4]),),
        (site("k", 0, positions=differ + 2, heads=1),),
        (site("z", 0, positions=differ, heads=3),),
        (site("mlp_out", 1, positions=differ + 1),),
    ]
    args = (lean, task.clean_tokens, task.corrupt_tokens)
    together = run_patches(*args, patches, metric, "noising", memory_mb=0.01)
    alone = torch.cat([run_patches(*args, [p], metric, "noising") for p in patches])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)


def test_bf16_sweep_follows_float32(docstring8):
    """Under bf16 the engine's sweep stays within bf16 rounding of the float32 sweep and of a
    hooked bf16 forward per patch (GQA model, key patches, mean ablation)."""
    task, metric = docstring8, task_metric(docstring8)
    lean16 = as_lean(mechscope.load_model("code-llama-2l", dtype=torch.bfloat16))
    lean32 = as_lean(mechscope.load_model("code-llama-2l"))
    positions = [3, task.clean_tokens.shape[1] - 1]
    args = (task.clean_tokens, task.corrupt_tokens, metric, "k", "mean", positions)
    r16, r32 = patch_sweep(lean16, *args), patch_sweep(lean32, *args)
    want16 = _literal(lean16, task, metric, "k", "mean", positions)
    scale = float(r32.values.abs().max())
    torch.testing.assert_close(r16.values.flatten(1), want16, atol=0.02 * scale, rtol=0)
    torch.testing.assert_close(r16.values, r32.values, atol=0.05 * scale, rtol=0)
