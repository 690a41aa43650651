"""SAE evaluation: SAELens definitions on known cases, bridge vs LeanModel splice, table, figure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from mechscope.models.lean import LeanModel
from mechscope.sae import (
    SAEConfig,
    SAEError,
    SparseAutoencoder,
    eval_table,
    evaluate_sae,
    pareto_figure,
)
from mechscope.sae.activations import collect, keep_mask, special_ids, splice_hook

HOOK = "blocks.0.hook_resid_post"


def batches(n: int, seed: int = 1) -> Iterator[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        t = torch.randint(1, 4096, (4, 20), generator=g)
        t[:, 0] = 0
        yield t


@pytest.fixture(scope="module")
def lean(gpt2_2l) -> LeanModel:
    return LeanModel(gpt2_2l)


def identity_sae(d: int) -> SparseAutoencoder:
    """relu(x) - relu(-x) = x: a perfect reconstruction with 2d latents."""
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=2 * d, hook_name=HOOK))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_perfect_sae_scores_one(lean: LeanModel) -> None:
    ev = evaluate_sae(lean, identity_sae(128), batches(2))
    assert ev.explained_variance == pytest.approx(1.0, abs=1e-6)
    assert ev.ce_recovered == pytest.approx(1.0, abs=1e-4)
    assert ev.kl_score == pytest.approx(1.0, abs=1e-5) and ev.kl_sae < 1e-6
    assert ev.mse < 1e-8 and ev.n_tokens == 2 * 4 * 19  # BOS positions left out


def test_metrics_match_their_definitions(lean: LeanModel) -> None:
    sae = SparseAutoencoder(SAEConfig(d_in=128, d_sae=256, hook_name=HOOK), seed=3)
    toks = list(batches(2))
    ev = evaluate_sae(lean, sae, toks)
    keep = [keep_mask(t, special_ids(lean)) for t in toks]
    x = torch.cat([collect(lean, t, HOOK)[k] for t, k in zip(toks, keep, strict=True)])
    with torch.no_grad():
        codes = sae.encode(x)
        x_hat = sae.decode(codes)
    mse = (x - x_hat).pow(2).sum(-1).mean()
    total_var = x.pow(2).sum(-1).mean() - x.mean(0).pow(2).sum()
    assert ev.mse == pytest.approx(float(mse), rel=1e-4)
    assert ev.explained_variance == pytest.approx(float(1 - mse / total_var), rel=1e-4)
    assert ev.l0 == pytest.approx(float((codes != 0).sum(-1).float().mean()), rel=1e-6)
    density = (codes != 0).float().mean(0)
    assert ev.dead_frac == pytest.approx(float((density == 0).float().mean()))
    assert ev.dense_frac == pytest.approx(float((density > 0.1).float().mean()))
    expected_ce = (ev.ce_zero_abl - ev.ce_sae) / (ev.ce_zero_abl - ev.ce_orig)
    assert ev.ce_recovered == pytest.approx(expected_ce)
    assert set(ev.to_dict()) >= {"l0", "mse", "explained_variance", "ce_recovered", "kl_score"}
    assert "feature_density" not in ev.to_dict()


def test_bridge_splice_equals_lean_splice(gpt2_2l, lean: LeanModel) -> None:
    sae = SparseAutoencoder(SAEConfig(d_in=128, d_sae=256, hook_name=HOOK), seed=4)
    toks = next(batches(1))
    keep = keep_mask(toks, special_ids(lean))
    splice = splice_hook(sae, keep)
    with torch.no_grad():
        lean_logits = lean.forward(toks, hooks={HOOK: splice})
        bridge_logits = gpt2_2l.run_with_hooks(toks, fwd_hooks=[(HOOK, lambda x, hook: splice(x))])
        plain = lean.forward(toks)
    assert (lean_logits - plain).abs().max() > 1e-3  # the splice changes the output
    assert torch.allclose(bridge_logits, lean_logits, atol=1e-4)


def test_width_mismatch_and_unknown_hook(lean: LeanModel) -> None:
    small = SparseAutoencoder(SAEConfig(d_in=64, d_sae=128, hook_name=HOOK))
    with pytest.raises(SAEError, match=r"d_in=64 does not match hook 'blocks.0.hook_resid_post'"):
        evaluate_sae(lean, small, batches(1))
    sae = identity_sae(128)
    with pytest.raises(SAEError, match=r"d_in=128 does not match hook 'blocks.0.mlp.hook_post'"):
        evaluate_sae(lean, sae, batches(1), hook_name="blocks.0.mlp.hook_post")
    with pytest.raises(SAEError, match=r"unknown hook 'blocks.0.resid'"):
        evaluate_sae(lean, sae, batches(1), hook_name="blocks.0.resid")


def test_table_and_figure(lean: LeanModel) -> None:
    evals = [evaluate_sae(lean, identity_sae(128), batches(1), name=f"sae{i}") for i in range(2)]
    table = eval_table(evals)
    assert table.row_count == 2 and len(table.columns) == 8
    fig = pareto_figure(evals, groups=["a", "b"])
    assert len(fig.data) == 4  # two groups x (CE recovered, explained variance)
