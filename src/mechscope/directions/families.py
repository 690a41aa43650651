"""Direction families: named generators of one unit direction per token.

Each family maps a `BatchContext` (the clean activations x [batch, pos, d] of one token batch, the
statistics of real activations, optionally an SAE) to directions [batch, pos, d], unit-normalised
per token; the perturbed activation is x + L * d. As in Lee & Heimersheim's code, every token
gets its own draw, fixed across the lengths L of a sweep.

    sae_error          d = SAE(x) - x
    feature_active     the unit decoder row of a random latent firing somewhere in the batch
    feature_inactive   ... of a random latent alive in the data but silent in the batch
    feature_dead       ... of a random latent that never fires in the data
    isotropic          u uniform on the sphere (Gurnee's epsilon-random baseline)
    cov_mixture        v1 - v2, v1, v2 ~ N(mean, cov + j I) of real activations (the paper's
                       improved baseline, "cov-random mixture"; j: the statistics' jitter,
                       1e-4 x the mean variance by default, the paper's 0.01 as an option)
    real_mixture       a_i - a_j, two real activations from the pool (the "real mixture")
    toward_random      target - x, target = randn * median norm per coordinate (Heimersheim's
                       "naive random"; these three partly ablate x, which inflates their KL)
    toward_cov         target - x, target ~ N(mean, cov + j I)
    toward_real        target - x, target a real activation from the pool
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope.directions.stats import FIRE_THRESHOLD, ActivationStats, SAEActivity
from mechscope.errors import DirectionsError
from mechscope.sae.model import SparseAutoencoder


@dataclass
class BatchContext:
    """What a family may read for one token batch.

    x: clean activations [batch, pos, d] at the hook; keep: bool [batch, pos], the non-special
    positions; stats: real-activation statistics at the hook; sae and activity: the SAE whose
    error or features are wanted (activity: alive latents over the statistics' tokens).
    """

    x: Tensor
    keep: Tensor
    generator: torch.Generator
    stats: ActivationStats | None = None
    sae: SparseAutoencoder | None = None
    activity: SAEActivity | None = None


@dataclass(frozen=True)
class Family:
    """A named direction generator: func(ctx) -> directions [batch, pos, d] (any norm)."""

    key: str
    description: str
    func: Callable[[BatchContext], Tensor]
    needs_sae: bool = False
    needs_stats: bool = False


def unit(d: Tensor) -> Tensor:
    """d / |d| along the last axis (a zero vector stays zero)."""
    return d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _need_sae(ctx: BatchContext, key: str) -> SparseAutoencoder:
    if ctx.sae is None:
        raise DirectionsError(f"direction family {key!r} needs an SAE; pass sae=...")
    return ctx.sae


def _need_stats(ctx: BatchContext, key: str) -> ActivationStats:
    if ctx.stats is None:
        raise DirectionsError(
            f"direction family {key!r} needs activation statistics (directions.stats."
            "activation_stats); the experiments compute them from the token batches"
        )
    return ctx.stats


def _sae_error(ctx: BatchContext) -> Tensor:
    sae = _need_sae(ctx, "sae_error")
    with torch.no_grad():
        return sae(ctx.x).to(ctx.x.dtype) - ctx.x


def _isotropic(ctx: BatchContext) -> Tensor:
    return torch.randn(ctx.x.shape, generator=ctx.generator).to(ctx.x)


def _cov_mixture(ctx: BatchContext) -> Tensor:
    v = _need_stats(ctx, "cov_mixture").sample((2, *ctx.x.shape[:-1]), ctx.generator)
    return (v[0] - v[1]).to(ctx.x)


def _pool_pick(ctx: BatchContext, key: str) -> tuple[Tensor, Tensor]:
    """Two distinct random pool indices per token, each [batch, pos]."""
    n = _need_stats(ctx, key).pool.shape[0]
    if n < 2:
        raise DirectionsError(f"direction family {key!r} needs a pool of >= 2 real activations")
    shape = ctx.x.shape[:-1]
    i = torch.randint(n, shape, generator=ctx.generator)
    j = (i + torch.randint(1, n, shape, generator=ctx.generator)) % n  # j != i
    return i, j


def _real_mixture(ctx: BatchContext) -> Tensor:
    i, j = _pool_pick(ctx, "real_mixture")
    pool = _need_stats(ctx, "real_mixture").pool
    return (pool[i] - pool[j]).to(ctx.x)


def _toward_random(ctx: BatchContext) -> Tensor:
    scale = _need_stats(ctx, "toward_random").median_norm
    target = torch.randn(ctx.x.shape, generator=ctx.generator).to(ctx.x) * scale
    return target - ctx.x


def _toward_cov(ctx: BatchContext) -> Tensor:
    target = _need_stats(ctx, "toward_cov").sample(ctx.x.shape[:-1], ctx.generator)
    return target.to(ctx.x) - ctx.x


def _toward_real(ctx: BatchContext) -> Tensor:
    i, _ = _pool_pick(ctx, "toward_real")
    return _need_stats(ctx, "toward_real").pool[i].to(ctx.x) - ctx.x


def feature_pool(ctx: BatchContext, pool: str) -> Tensor:
    """Latent indices [k] of the pool "active" (fires somewhere in the batch's kept tokens),
    "inactive" (alive in the statistics' tokens, silent in the batch) or "dead" (never fires)."""
    sae = _need_sae(ctx, f"feature_{pool}")
    with torch.no_grad():
        codes = sae.encode(ctx.x[ctx.keep])
    active = (codes > FIRE_THRESHOLD).any(0)
    alive = ctx.activity.alive.to(active.device) if ctx.activity is not None else active
    masks = {"active": active, "inactive": alive & ~active, "dead": ~alive & ~active}
    if pool not in masks:
        raise DirectionsError(f"unknown feature pool {pool!r}; use one of {sorted(masks)}")
    return masks[pool].nonzero().flatten()


def _feature(pool: str) -> Callable[[BatchContext], Tensor]:
    def func(ctx: BatchContext) -> Tensor:
        idx = feature_pool(ctx, pool)
        if idx.numel() == 0:
            raise DirectionsError(
                f"the SAE has no {pool} latents on these tokens (pool empty); drop "
                f"'feature_{pool}' or use more tokens"
            )
        assert ctx.sae is not None
        draw = torch.randint(idx.numel(), ctx.x.shape[:-1], generator=ctx.generator)
        pick = idx[draw.to(idx.device)]
        return ctx.sae.feature_directions[pick].to(ctx.x)

    return func


FAMILIES: dict[str, Family] = {
    f.key: f
    for f in [
        Family("sae_error", "SAE(x) - x", _sae_error, needs_sae=True),
        Family("feature_active", "SAE latent firing in the batch", _feature("active"), True),
        Family(
            "feature_inactive", "alive SAE latent silent in the batch", _feature("inactive"), True
        ),
        Family("feature_dead", "SAE latent that never fires", _feature("dead"), True),
        Family("isotropic", "uniform on the sphere (Gurnee)", _isotropic),
        Family("cov_mixture", "v1 - v2 ~ N(mu, cov + j I)", _cov_mixture, needs_stats=True),
        Family("real_mixture", "a_i - a_j, real activations", _real_mixture, needs_stats=True),
        Family("toward_random", "randn * median norm - x", _toward_random, needs_stats=True),
        Family("toward_cov", "N(mu, cov + j I) - x", _toward_cov, needs_stats=True),
        Family("toward_real", "a_j - x, a real activation", _toward_real, needs_stats=True),
    ]
}

#: the baselines of the epsilon-substitution comparison (finding a)
BASELINES = ("isotropic", "cov_mixture", "real_mixture")


def get_family(key: str) -> Family:
    """The family `key`; DirectionsError listing the families otherwise."""
    if key not in FAMILIES:
        raise DirectionsError(f"unknown direction family {key!r}; use one of {list(FAMILIES)}")
    return FAMILIES[key]


def directions(key: str, ctx: BatchContext) -> Tensor:
    """Unit directions [batch, pos, d] of family `key` for the batch in ctx."""
    return unit(get_family(key).func(ctx))
