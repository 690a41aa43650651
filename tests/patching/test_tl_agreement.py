"""Every granularity TransformerLens's `patching` module offers agrees with mechscope to 1e-5.

TL runs on the bridge (one hooked forward per patch); mechscope runs batched on the lean forward.
Sweeps with many entries are compared on a random subset of TL's index rows (`index_df`).
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import transformer_lens.patching as tlp

from mechscope.patching import patch_sweep, task_metric

# (TL function, component, positions, TL axis names, subset of rows or None for all)
CASES = [
    (tlp.get_act_patch_resid_pre, "resid_pre", "each", None),
    (tlp.get_act_patch_resid_mid, "resid_mid", "each", None),
    (tlp.get_act_patch_attn_out, "attn_out", "each", None),
    (tlp.get_act_patch_mlp_out, "mlp_out", "each", None),
    (tlp.get_act_patch_attn_head_out_all_pos, "z", "all", None),
    (tlp.get_act_patch_attn_head_q_all_pos, "q", "all", None),
    (tlp.get_act_patch_attn_head_k_all_pos, "k", "all", None),
    (tlp.get_act_patch_attn_head_v_all_pos, "v", "all", None),
    (tlp.get_act_patch_attn_head_pattern_all_pos, "pattern", "all", None),
    (tlp.get_act_patch_attn_head_out_by_pos, "z", "each", ("layer", "pos", "head")),
    (tlp.get_act_patch_attn_head_q_by_pos, "q", "each", ("layer", "pos", "head")),
    (tlp.get_act_patch_attn_head_k_by_pos, "k", "each", ("layer", "pos", "head")),
    (tlp.get_act_patch_attn_head_v_by_pos, "v", "each", ("layer", "pos", "head")),
    (tlp.get_act_patch_attn_head_pattern_by_pos, "pattern", "each", ("layer", "head", "pos")),
    (
        tlp.get_act_patch_attn_head_pattern_dest_src_pos,
        "pattern",
        "dest_src",
        ("layer", "head", "pos", "src"),
    ),
]


def _rows(shape: tuple[int, ...], names: tuple[str, ...], n: int = 24) -> pd.DataFrame:
    """n random index rows of a grid (always including the last position of the last layer)."""
    g = torch.Generator().manual_seed(0)
    flat = torch.randperm(int(torch.tensor(shape).prod()), generator=g)[: n - 1].tolist()
    flat.append(int(torch.tensor(shape).prod()) - 1)
    rows = [list(torch.unravel_index(torch.tensor(i), shape)) for i in flat]
    return pd.DataFrame([[int(x) for x in r] for r in rows], columns=list(names))


def _compare(bridge, task, fn, component, positions, subset, direction="denoising"):
    base, src = (
        (task.corrupt_tokens, task.clean_tokens)
        if direction == "denoising"
        else (task.clean_tokens, task.corrupt_tokens)
    )
    with torch.no_grad():
        _, src_cache = bridge.run_with_cache(src)
        ours = patch_sweep(
            bridge,
            task.clean_tokens,
            task.corrupt_tokens,
            task_metric(task),
            component,
            direction,
            positions,
        )

        def tl_metric(logits):
            return task.score(logits).mean()

        if subset is None:
            theirs = fn(bridge, base, src_cache, tl_metric)
            assert theirs.shape == ours.values.shape
            diff = (theirs - ours.values).abs().max()
        else:
            df = _rows(tuple(ours.values.shape), subset)
            theirs = fn(bridge, base, src_cache, tl_metric, index_axis_names=None, index_df=df)
            mine = ours.values[tuple(torch.tensor(df[c].values) for c in subset)]
            diff = (theirs - mine).abs().max()
    # a patch that changes nothing would agree trivially: the sweep must move the metric
    assert (ours.values - ours.values.flatten()[0]).abs().max() > 1e-4
    assert diff < 1e-5, f"{component} {positions}: {diff}"


@pytest.mark.parametrize(("fn", "component", "positions", "subset"), CASES)
def test_matches_transformer_lens_on_gpt2_bridge(gpt2_2l, ioi2, fn, component, positions, subset):
    _compare(gpt2_2l, ioi2, fn, component, positions, subset)


def test_noising_matches_transformer_lens_with_runs_swapped(gpt2_2l, ioi2):
    _compare(gpt2_2l, ioi2, tlp.get_act_patch_attn_out, "attn_out", "each", None, "noising")


@pytest.mark.parametrize(
    ("fn", "component", "positions", "subset"),
    [c for c in CASES if c[1] in ("resid_pre", "attn_out", "z", "q", "v") and c[2] != "dest_src"],
)
def test_matches_transformer_lens_on_native_attn_only_bridge(
    attn4, ioi2, fn, component, positions, subset
):
    """code-attn4's bridge has hook_z/q/k/v but no per-head results: TL patches those."""
    _compare(attn4, ioi2, fn, component, positions, subset)
