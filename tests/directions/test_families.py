"""Direction families and the statistics they sample from."""

from __future__ import annotations

import pytest
import torch

from mechscope.directions.experiments import DirectionsConfig, prepare
from mechscope.directions.families import FAMILIES, BatchContext, directions, feature_pool
from mechscope.directions.perturb import clean_run
from mechscope.directions.stats import COV_JITTER, PAPER_JITTER, activation_stats, sae_activity
from mechscope.errors import DirectionsError

HOOK0 = "blocks.0.hook_resid_post"


def test_cov_sampler_matches_the_data_covariance():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 5, generator=g)
    cov = A @ A.T + 0.5 * torch.eye(5)
    mean = torch.randn(5, generator=g)
    data = mean + torch.randn(40_000, 5, generator=g) @ torch.linalg.cholesky(cov).T
    keep = torch.ones(1, 40_000, dtype=torch.bool)
    stats = activation_stats([data[None]], [keep], "h")
    assert torch.allclose(stats.cov.float(), cov, atol=0.15 * cov.abs().max())
    s = stats.sample((50_000,), torch.Generator().manual_seed(1))
    assert torch.allclose(s.mean(0), mean, atol=0.05)
    want = stats.cov + stats.diag_jitter * torch.eye(5, dtype=torch.float64)
    assert torch.allclose(torch.cov(s.double().T), want, atol=0.05 * float(want.abs().max()))


def _data(scale: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 500, 8, generator=g) * torch.linspace(0.1, 2.0, 8) * scale
    return [x], [torch.ones(1, 500, dtype=torch.bool)]


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_default_jitter_is_a_fixed_fraction_of_the_variance(scale):
    stats = activation_stats(*_data(scale), "h")
    assert stats.relative_jitter and stats.jitter == COV_JITTER == 1e-4
    total = float(stats.cov.trace())  # the total variance
    added = stats.d * stats.diag_jitter  # what cov + diag_jitter * I adds to it
    assert added / total == pytest.approx(1e-4, rel=1e-9)  # at every scale of the activations
    # a larger relative jitter is what the samples carry: cov + rel x mean variance x I
    big = activation_stats(*_data(scale), "h", jitter=0.5)
    s = big.sample((100_000,), torch.Generator().manual_seed(1)).double()
    want = big.cov + 0.5 * total / big.d * torch.eye(big.d, dtype=torch.float64)
    assert torch.allclose(torch.cov(s.T), want, atol=0.03 * float(want.diagonal().max()))


def test_absolute_jitter_reproduces_the_old_sampler():
    """relative_jitter=False, jitter=0.01: bit for bit the former N(mean, cov + 0.01 I)."""
    stats = activation_stats(*_data(1.0), "h", jitter=PAPER_JITTER, relative_jitter=False)
    assert stats.diag_jitter == 0.01
    got = stats.sample((4, 3), torch.Generator().manual_seed(7))
    chol = torch.linalg.cholesky(stats.cov + 0.01 * torch.eye(8, dtype=torch.float64))
    z = torch.randn((4, 3, 8), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.equal(got, (stats.mean + z @ chol.T).float())
    cfg = DirectionsConfig(cov_jitter=PAPER_JITTER, cov_jitter_relative=False)
    assert cfg.to_dict()["cov_jitter_relative"] is False
    with pytest.raises(DirectionsError, match="jitter"):
        activation_stats(*_data(1.0), "h", jitter=-1.0)


def test_config_jitter_reaches_the_statistics(lean2l, toks):
    absolute = DirectionsConfig(cov_jitter=PAPER_JITTER, cov_jitter_relative=False)
    assert prepare(lean2l, HOOK0, toks, absolute).stats.diag_jitter == 0.01
    rel = prepare(lean2l, HOOK0, toks, DirectionsConfig()).stats
    assert rel.diag_jitter == pytest.approx(1e-4 * float(rel.cov.trace()) / rel.d)


def test_statistics_leave_out_special_positions():
    x = torch.zeros(2, 4, 3)
    x[:, 0] = 100.0  # BOS: huge, must not enter the mean
    x[:, 1:] = torch.arange(6.0).view(2, 3, 1)
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[:, 0] = False
    stats = activation_stats([x], [keep], "h")
    assert stats.n == 6 and torch.allclose(stats.mean.float(), torch.full((3,), 2.5))
    assert float(stats.pool.max()) < 100


@pytest.fixture(scope="module")
def ctx(lean2l, toks, sae0):
    runs = [clean_run(lean2l, t, HOOK0) for t in toks]
    xs, keeps = [r.x for r in runs], [r.keep for r in runs]
    stats = activation_stats(xs, keeps, HOOK0)
    act = sae_activity(sae0, xs, keeps)
    return BatchContext(runs[0].x, runs[0].keep, torch.Generator(), stats, sae0, act)


@pytest.mark.parametrize("key", [k for k in FAMILIES if k != "feature_dead"])
def test_families_give_unit_directions(ctx, key):
    ctx.generator.manual_seed(0)
    d = directions(key, ctx)
    assert d.shape == ctx.x.shape
    assert torch.allclose(d.norm(dim=-1), torch.ones(d.shape[:-1]), atol=1e-5)


def test_families_are_deterministic_and_depend_on_the_seed(ctx):
    a = directions(
        "cov_mixture",
        BatchContext(**{**ctx.__dict__, "generator": torch.Generator().manual_seed(3)}),
    )
    b = directions(
        "cov_mixture",
        BatchContext(**{**ctx.__dict__, "generator": torch.Generator().manual_seed(3)}),
    )
    c = directions(
        "cov_mixture",
        BatchContext(**{**ctx.__dict__, "generator": torch.Generator().manual_seed(4)}),
    )
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sae_error_and_feature_directions_are_what_they_say(ctx, sae0):
    err = directions("sae_error", ctx)
    want = sae0(ctx.x) - ctx.x
    assert torch.allclose(err, want / want.norm(dim=-1, keepdim=True), atol=1e-5)
    ctx.generator.manual_seed(0)
    d = directions("feature_active", ctx)
    active = feature_pool(ctx, "active")
    rows = sae0.feature_directions[active]
    # every token's direction is the decoder row of a latent that fires in the batch
    match = (d.reshape(-1, d.shape[-1]) @ rows.T).max(-1).values
    assert torch.allclose(match, torch.ones_like(match), atol=1e-5)
    inactive = feature_pool(ctx, "inactive")
    assert not set(active.tolist()) & set(inactive.tolist())


def test_toward_families_contain_minus_x(ctx):
    """`toward_real` = a_j - x: its component along -x is large (a partial ablation)."""
    ctx.generator.manual_seed(0)
    toward = directions("toward_real", ctx)
    ctx.generator.manual_seed(0)
    mix = directions("real_mixture", ctx)
    unit_x = ctx.x / ctx.x.norm(dim=-1, keepdim=True)
    keep = ctx.keep
    assert (-(toward * unit_x).sum(-1))[keep].mean() > 0.3
    assert (mix * unit_x).sum(-1)[keep].mean().abs() < 0.15
