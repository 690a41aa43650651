"""Bad inputs fail with a DirectionsError that says what to do."""

from __future__ import annotations

import pytest
import torch

from mechscope.directions import DirectionsConfig, compare_features, sweep_directions
from mechscope.directions.families import BatchContext, directions
from mechscope.directions.perturb import check_sae, clean_run, perturbed_kl, perturbed_positions
from mechscope.errors import DirectionsError

HOOK0 = "blocks.0.hook_resid_post"
CFG = DirectionsConfig(lengths=(1.0,), progress=False)


def test_bad_hook_names_suggest_real_ones(lean2l, toks):
    with pytest.raises(DirectionsError, match=r"did you mean .*blocks\.\d\.hook_resid_post"):
        clean_run(lean2l, toks[0], "blocks.7.hook_resid_post")
    with pytest.raises(DirectionsError, match=r"\[batch, pos, d\] hook"):
        clean_run(lean2l, toks[0], "blocks.0.attn.hook_z")


def test_sae_width_must_match_the_hook(lean2l, sae0):
    with pytest.raises(DirectionsError, match=r"d_in=128 does not match .*mlp.hook_post.* 512"):
        check_sae(lean2l, sae0, "blocks.0.mlp.hook_post")
    with pytest.raises(DirectionsError, match="d_in=128 does not match"):
        sweep_directions(lean2l, "blocks.0.mlp.hook_post", ["sae_error"], sae=sae0, cfg=CFG,
                         tokens=[torch.zeros(1, 4, dtype=torch.long)])  # fmt: skip


def test_empty_or_negative_length_sweeps(lean2l, toks):
    run = clean_run(lean2l, toks[0], HOOK0)
    d = torch.randn(1, 128)
    with pytest.raises(DirectionsError, match="length sweep is empty"):
        perturbed_kl(lean2l, run, d, [])
    with pytest.raises(DirectionsError, match=">= 0"):
        perturbed_kl(lean2l, run, d, [1.0, -1.0])


def test_direction_shapes_positions_and_families(lean2l, toks, sae0):
    run = clean_run(lean2l, toks[0], HOOK0)
    with pytest.raises(DirectionsError, match=r"\[n, d\] or \[n, batch, pos, d\]"):
        perturbed_kl(lean2l, run, torch.randn(2, 64), [1.0])
    with pytest.raises(DirectionsError, match="outside the 20-token"):
        perturbed_positions(run, 20)
    ctx = BatchContext(run.x, run.keep, torch.Generator())
    with pytest.raises(DirectionsError, match="unknown direction family 'gaussian'; use one of"):
        directions("gaussian", ctx)
    with pytest.raises(DirectionsError, match="needs an SAE"):
        directions("sae_error", ctx)
    with pytest.raises(DirectionsError, match="needs activation statistics"):
        directions("cov_mixture", ctx)
    with pytest.raises(DirectionsError, match="needs an SAE; pass sae="):
        sweep_directions(lean2l, HOOK0, ["feature_active"], tokens=toks, cfg=CFG)


def test_feature_comparisons_need_one_hook(lean2l, toks, sae0):
    from mechscope.sae.bundled import load_bundled

    other = load_bundled("code-2l", "blocks.1.hook_resid_post__local__l1-2")
    with pytest.raises(DirectionsError, match="SAEs at one hook"):
        compare_features(lean2l, {"a": sae0, "b": other}, tokens=toks, cfg=CFG)
    with pytest.raises(DirectionsError, match="unknown feature pool 'alive'"):
        compare_features(lean2l, {"a": sae0}, pools=("alive",), tokens=toks, cfg=CFG)
