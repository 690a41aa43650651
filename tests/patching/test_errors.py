"""Bad input gives a PatchingError that says what was wrong and what to do."""

from __future__ import annotations

import pytest
import torch

from mechscope.patching import (
    PatchingError,
    PatchMetric,
    attribution_patch,
    batch_metric,
    patch_sweep,
    path_patch,
    run_patches,
    site,
    task_metric,
)


@pytest.fixture(scope="module")
def pair(docstring8):
    return docstring8.clean_tokens[:2], docstring8.corrupt_tokens[:2], task_metric(docstring8[:2])


def test_unknown_component(attn4, pair):
    with pytest.raises(PatchingError, match=r"Unknown component 'attn_z'.*resid_pre"):
        patch_sweep(attn4, *pair, "attn_z")


def test_hook_the_model_lacks(attn4, pair):
    with pytest.raises(PatchingError, match=r"no hook 'blocks.0.hook_mlp_out'.*attention-only"):
        run_patches(attn4, pair[0], pair[1], [(site("mlp_out", 0),)], pair[2])


def test_layer_head_and_position_out_of_range(attn4, pair):
    seq = pair[0].shape[1]
    with pytest.raises(PatchingError, match=r"layer 9 out of range"):
        run_patches(attn4, pair[0], pair[1], [(site("z", 9),)], pair[2])
    with pytest.raises(PatchingError, match=rf"positions \[{seq}\] out of range.*0..{seq - 1}"):
        run_patches(attn4, pair[0], pair[1], [(site("resid_pre", 0, positions=seq),)], pair[2])
    with pytest.raises(PatchingError, match=r"heads \[8\] out of range"):
        run_patches(attn4, pair[0], pair[1], [(site("z", 0, heads=8),)], pair[2])
    with pytest.raises(PatchingError, match=r"has no head axis"):
        run_patches(attn4, pair[0], pair[1], [(site("attn_out", 0, heads=1),)], pair[2])


def test_clean_corrupt_shape_mismatch(attn4, pair):
    with pytest.raises(PatchingError, match=r"differ in shape.*equal token length"):
        patch_sweep(attn4, pair[0], pair[1][:, :-1], pair[2], "resid_pre")


def test_metric_returning_the_wrong_shape(attn4, pair):
    mean = PatchMetric("mean_logit", lambda lg, i: lg[:, -1, 0].mean())
    with pytest.raises(PatchingError, match=r"returned \(\), expected shape.*one value per"):
        patch_sweep(attn4, pair[0], pair[1], mean, "attn_out", positions="all")
    per_batch = batch_metric("scalar", lambda lg: lg[:, -1, 0].mean())
    with pytest.raises(PatchingError, match=r"returned shape \(\) for a batch of 2 prompts"):
        patch_sweep(attn4, pair[0], pair[1], per_batch, "attn_out", positions="all")


def test_unknown_direction_and_nodes(attn4, pair):
    with pytest.raises(PatchingError, match=r"Unknown direction 'forward'"):
        patch_sweep(attn4, *pair, "z", direction="forward")
    with pytest.raises(PatchingError, match=r"unknown sender 'head3'"):
        path_patch(attn4, *pair, senders=["head3"], receivers=["resid_final"])
    with pytest.raises(PatchingError, match=r"unknown receiver '3.0.x'"):
        path_patch(attn4, *pair, senders=["0.1"], receivers=["3.0.x"])
    with pytest.raises(PatchingError, match=r"node '7.0.q' is out of range"):
        path_patch(attn4, *pair, senders=["0.1"], receivers=["7.0.q"])
    with pytest.raises(PatchingError, match=r"no hooks .*mlp_out"):
        attribution_patch(attn4, *pair, ["mlp_out"])


def test_a_batch_metric_sees_whole_batches(attn4, pair):
    m = batch_metric("logit0", lambda lg: lg[:, -1, 0])
    r = patch_sweep(attn4, pair[0], pair[1], m, "attn_out", positions="all")
    assert r.values.shape == (4,) and torch.isfinite(r.values).all()
