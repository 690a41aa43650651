"""The perturbation engine against cases whose answer is known."""

from __future__ import annotations

import torch

from mechscope.directions.perturb import (
    PAPER_LENGTHS,
    clean_run,
    counted_positions,
    default_lengths,
    perturbed_kl,
)
from mechscope.metrics import kl_div

HOOK0 = "blocks.0.hook_resid_post"


def _tiny_tokens() -> torch.Tensor:
    return torch.randint(0, 5, (4, 10), generator=torch.Generator().manual_seed(0))


def test_direction_in_the_unembedding_null_space_gives_zero_kl(tiny):
    run = clean_run(tiny, _tiny_tokens(), HOOK0)  # the last residual: no LayerNorm, then W_U
    null = torch.zeros(2, 6)
    null[0, 3] = 1.0
    null[1, 4:] = torch.tensor([1.0, -2.0])
    seen = torch.zeros(1, 6)
    seen[0, 0] = 1.0
    kl = perturbed_kl(tiny, run, torch.cat([null, seen]), [0.5, 5.0, 50.0])
    assert kl[:2].abs().max() < 1e-10
    assert (kl[2, :, :, :-1] > 1e-6).all()  # a direction W_U reads does move the output


def test_layernorm_removes_the_mean_direction_on_code_2l(lean2l, toks):
    """At the last residual, LayerNorm centres x: adding c * (1, ..., 1) changes nothing."""
    run = clean_run(lean2l, toks[0], "blocks.1.hook_resid_post")
    ones = torch.ones(1, lean2l.W_E.shape[1])
    kl = perturbed_kl(lean2l, run, ones, [1.0, 10.0])
    assert kl.abs().max() < 1e-6


def test_kl_is_zero_at_zero_length_and_grows_quadratically(lean2l, toks):
    run = clean_run(lean2l, toks[0], HOOK0)
    d = torch.randn(1, *run.x.shape, generator=torch.Generator().manual_seed(3))
    lengths = [0.0, 0.01, 0.02, 0.04, 0.08, 0.16]
    kl = perturbed_kl(lean2l, run, d, lengths)[0]  # [m, batch, pos]
    counted = counted_positions(run)
    mean = kl[:, counted].mean(-1)
    assert kl[0].abs().max() < 1e-7
    assert (mean[1:] > mean[:-1]).all()
    ratios = mean[2:] / mean[1:-1]  # doubling L: KL ~ L^2 for small L (Fisher information)
    assert ((ratios > 3.0) & (ratios < 5.0)).all(), ratios


def test_batched_directions_and_lengths_equal_a_loop(lean2l, toks):
    run = clean_run(lean2l, toks[1], HOOK0)
    d = torch.randn(3, *run.x.shape, generator=torch.Generator().manual_seed(4))
    lengths = [0.3, 1.0, 4.0]
    batched = perturbed_kl(lean2l, run, d, lengths, max_rows=7)  # chunks cross directions
    for i in range(3):
        for j, L in enumerate(lengths):
            one = perturbed_kl(lean2l, run, d[i : i + 1], [L])[0, 0]
            assert torch.allclose(batched[i, j], one, atol=1e-6)


def test_non_residual_hook_matches_a_hand_written_forward(lean2l, toks):
    hook = "blocks.0.hook_mlp_out"
    run = clean_run(lean2l, toks[0], hook)
    d = torch.randn(2, 128, generator=torch.Generator().manual_seed(5))
    scale = run.x.norm(dim=-1)  # relative lengths
    kl = perturbed_kl(lean2l, run, d, [0.5], scale=scale)
    for i in range(2):
        u = d[i] / d[i].norm()
        delta = 0.5 * scale[..., None] * u * run.keep[..., None]
        logits = lean2l.forward(run.tokens, hooks={hook: lambda a, dl=delta: a + dl})
        assert torch.allclose(kl[i, 0], kl_div(run.logits, logits, pos=None), atol=1e-6)


def test_special_positions_are_left_alone_and_not_counted(lean2l, toks):
    run = clean_run(lean2l, toks[0], HOOK0)
    assert not run.keep[:, 0].any() and run.keep[:, 1:].all()
    counted = counted_positions(run)
    assert not counted[:, 0].any() and not counted[:, -1].any() and counted[:, 1:-1].all()
    one = counted_positions(run, position=5, later=False)
    assert one.sum() == run.tokens.shape[0] and one[:, 5].all()
    # perturbing only position 5 leaves earlier positions' predictions exactly unchanged
    from mechscope.directions.perturb import perturbed_positions

    d = torch.randn(1, 128, generator=torch.Generator().manual_seed(6))
    kl = perturbed_kl(lean2l, run, d, [3.0], where=perturbed_positions(run, 5))[0, 0]
    assert kl[:, :5].abs().max() < 1e-7 and (kl[:, 5] > 1e-5).all()


def test_default_lengths_scale_the_paper_sweep():
    assert len(PAPER_LENGTHS) == 23 and PAPER_LENGTHS[:3] == (1.0, 3.0, 5.0)
    assert PAPER_LENGTHS[-1] == 91.0 and 20.0 in PAPER_LENGTHS and 48.0 in PAPER_LENGTHS
    lens = default_lengths(12.1)
    assert abs(lens[0] - 0.1) < 1e-12 and abs(lens[-1] - 9.1) < 1e-9
