"""Statistics of real activations at a hook, and of an SAE's latents on them.

`ActivationStats` holds what the baselines sample from: the mean and covariance of the hook's
activations over non-special tokens (BOS excluded, as Lee & Heimersheim do), the median norm that
scales the default length sweep, and a random pool of real activations for the "real" families.
`SAEActivity` holds which latents fire on the same tokens (alive vs dead) and the SAE's L0.

The covariance sampled from gets a jitter on its diagonal (Lee & Heimersheim add 0.01). By default
it is relative to the activations' scale: COV_JITTER x the mean variance trace(cov) / d, which adds
exactly the fraction COV_JITTER (1e-4, 0.01%) of the total variance, whatever the hook's scale,
and bounds the condition number of cov + jitter I by d / COV_JITTER (fp64 handles 1e12 easily).
The paper's absolute 0.01 is a fixed fraction only of GPT-2's activations (0.05% at layer 6);
on code-2l's much smaller residual stream it adds about 2% (docs/directions.md).
`relative_jitter=False` keeps the absolute form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope.errors import DirectionsError
from mechscope.sae.model import SparseAutoencoder

#: the default jitter added to the covariance's diagonal: this fraction of the mean variance
COV_JITTER = 1e-4
#: Lee & Heimersheim's absolute `+ 0.01` (relative_jitter=False, jitter=PAPER_JITTER)
PAPER_JITTER = 0.01
#: a latent fires when its code exceeds this (the paper's cut-off)
FIRE_THRESHOLD = 1e-8


@dataclass
class ActivationStats:
    """Mean, covariance, median norm and a pool of real activations [n_pool, d] at one hook.

    mean [d] and cov [d, d] (unbiased) are float64, over `n` non-special tokens. Samples come from
    N(mean, cov + diag_jitter * I): diag_jitter = jitter x trace(cov) / d (relative_jitter, the
    default) or jitter itself (absolute, the paper's form).
    """

    hook_name: str
    n: int
    mean: Tensor
    cov: Tensor
    median_norm: float
    pool: Tensor
    jitter: float = COV_JITTER
    relative_jitter: bool = True

    def __post_init__(self) -> None:
        if not self.jitter >= 0:
            raise DirectionsError(f"the covariance jitter must be >= 0, got {self.jitter}")

    @property
    def d(self) -> int:
        return int(self.mean.shape[0])

    @property
    def mean_variance(self) -> float:
        """trace(cov) / d: the mean variance per coordinate."""
        return float(self.cov.diagonal().sum()) / self.d

    @property
    def diag_jitter(self) -> float:
        """What is added to each diagonal entry of cov before sampling."""
        return self.jitter * (self.mean_variance if self.relative_jitter else 1.0)

    def cholesky(self) -> Tensor:
        """Lower-triangular L [d, d] with L L^T = cov + diag_jitter * I (float64)."""
        eye = torch.eye(self.d, dtype=self.cov.dtype, device=self.cov.device)
        try:
            return torch.linalg.cholesky(self.cov + self.diag_jitter * eye)
        except RuntimeError as e:  # only with jitter = 0 on a rank-deficient covariance
            raise DirectionsError(
                f"the covariance at {self.hook_name} is not positive definite with jitter "
                f"{self.diag_jitter:g}; use a jitter > 0 (default {COV_JITTER:g} x the mean "
                "variance)"
            ) from e

    def sample(self, shape: Sequence[int], generator: torch.Generator) -> Tensor:
        """Samples [*shape, d] (float32) of N(mean, cov + diag_jitter * I)."""
        chol = self.cholesky()
        z = torch.randn((*shape, self.d), generator=generator, dtype=chol.dtype, device=chol.device)
        return (self.mean + z @ chol.T).float()


def activation_stats(
    xs: Sequence[Tensor],
    keeps: Sequence[Tensor],
    hook_name: str,
    pool_size: int = 8192,
    seed: int = 0,
    jitter: float = COV_JITTER,
    relative_jitter: bool = True,
) -> ActivationStats:
    """Statistics of activations xs[i] [batch, pos, d] at the positions keeps[i] [batch, pos].

    The pool is a uniform random subset (at most `pool_size`) of the kept activations. Everything
    is kept on the CPU (samples are drawn with CPU generators and moved to the activations).
    jitter, relative_jitter: the covariance jitter of the samples (see `ActivationStats`).
    """
    rows = torch.cat([x[k] for x, k in zip(xs, keeps, strict=True)]).float().cpu()
    if rows.shape[0] < 2:
        raise DirectionsError(
            f"{rows.shape[0]} non-special token(s) at {hook_name}: too few for a covariance; "
            "pass more or longer token batches"
        )
    x64 = rows.double()
    mean = x64.mean(0)
    centred = x64 - mean
    cov = centred.T @ centred / (x64.shape[0] - 1)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(rows.shape[0], generator=g)[:pool_size]
    return ActivationStats(
        hook_name=hook_name,
        n=int(rows.shape[0]),
        mean=mean,
        cov=cov,
        median_norm=float(rows.norm(dim=-1).median()),
        pool=rows[pick].clone(),
        jitter=jitter,
        relative_jitter=relative_jitter,
    )


@dataclass
class SAEActivity:
    """Which latents of an SAE fire on the statistics' tokens (alive [d_sae] bool) and its L0
    (mean active latents per token) and mean reconstruction-error norm there."""

    alive: Tensor
    l0: float
    error_norm: float

    @property
    def n_alive(self) -> int:
        return int(self.alive.sum())


@torch.no_grad()
def sae_activity(
    sae: SparseAutoencoder, xs: Sequence[Tensor], keeps: Sequence[Tensor]
) -> SAEActivity:
    """Alive latents, L0 and mean ||SAE(x) - x|| over the kept positions of xs."""
    alive = torch.zeros(sae.d_sae, dtype=torch.bool, device=sae.W_dec.device)
    active, err, n = 0.0, 0.0, 0
    for x, keep in zip(xs, keeps, strict=True):
        rows = x[keep]
        x_hat, codes = sae.forward_with_codes(rows)
        fires = codes > FIRE_THRESHOLD
        alive |= fires.any(0)
        active += float(fires.sum())
        err += float((x_hat.to(rows.dtype) - rows).norm(dim=-1).sum())
        n += rows.shape[0]
    if n == 0:
        raise DirectionsError("no non-special tokens to measure the SAE's activity on")
    return SAEActivity(alive=alive, l0=active / n, error_norm=err / n)
