"""Boundaries along interpolation paths: the paper's sharpness, boundary counts and locations.

Curves are [m, S] values of an output distance at alpha_k = k / (S - 1) (`PathCurves.dist`).

- normalised curve (paper): d~(alpha) = d(alpha) / d(1); pairs with d(1) <= min_end are dropped.
- sharpness (paper, `max_deriv`): s = (S - 1) max_k [d~(alpha_k+1) - d~(alpha_k)], the steepest
  finite-difference slope of the normalised curve. A straight line gives 1; a jump inside one
  step gives S - 1. It depends on S: compare only at equal S.
- boundary (ours, on top of the paper's slope): a run of neighbouring steps whose slope
  (S - 1) (d~_k+1 - d~_k) is at least `threshold`; the path crosses `count` boundaries and so
  `count + 1` stable regions, and the steepest step of each run locates it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mechscope.errors import RegionsError


def _check(curves: Tensor) -> None:
    if curves.ndim != 2 or curves.shape[1] < 2:
        raise RegionsError(f"curves must be [m, S] with S >= 2 steps, got {tuple(curves.shape)}")


def normalise(curves: Tensor, min_end: float = 0.01) -> tuple[Tensor, Tensor]:
    """(d / d(1) [m, S] with NaN rows where d(1) <= min_end, kept [m] bool)."""
    _check(curves)
    end = curves[:, -1:]
    kept = end.squeeze(1) > min_end
    out = curves / end.where(end > min_end, torch.ones_like(end))
    out[~kept] = math.nan
    return out, kept


def slopes(normalised: Tensor) -> Tensor:
    """Finite-difference slopes (S - 1)(d~_k+1 - d~_k): [m, S-1]."""
    _check(normalised)
    return normalised.diff(dim=1) * (normalised.shape[1] - 1)


def sharpness(normalised: Tensor) -> Tensor:
    """The paper's s = max_alpha d~'(alpha): [m] (NaN for dropped rows)."""
    return slopes(normalised).max(dim=1).values


def boundary_mask(normalised: Tensor, threshold: float = 3.0) -> Tensor:
    """Bool [m, S-1]: steps whose slope is at least `threshold` (NaN rows: all False)."""
    if threshold <= 1.0:
        raise RegionsError(
            f"threshold {threshold} <= 1 would call a straight line a boundary; use e.g. 3"
        )
    return slopes(normalised).nan_to_num(nan=-math.inf) >= threshold


def count_boundaries(mask: Tensor) -> Tensor:
    """Boundaries per path [m]: runs of consecutive True steps in mask [m, S-1]."""
    starts = mask.clone()
    starts[:, 1:] &= ~mask[:, :-1]
    return starts.sum(1)


def locate(normalised: Tensor, alphas: Tensor) -> Tensor:
    """Alpha [m] at the middle of each path's steepest step (where the paper's s is taken)."""
    k = slopes(normalised).nan_to_num(nan=-math.inf).argmax(dim=1)
    return (alphas[k] + alphas[k + 1]) / 2


def top1_changes(top1: Tensor) -> Tensor:
    """Changes of the argmax next token between neighbouring steps [m] from top1 [m, S]."""
    return (top1[:, 1:] != top1[:, :-1]).sum(1)


def quartiles(x: Tensor) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile) of the finite values of x (NaN if none)."""
    x = x[torch.isfinite(x)].float()
    if x.numel() == 0:
        return (math.nan, math.nan, math.nan)
    q = torch.quantile(x, torch.tensor([0.25, 0.5, 0.75]))
    return (float(q[0]), float(q[1]), float(q[2]))


def median_curve(normalised: Tensor) -> Tensor:
    """Pointwise median [S] over the kept paths (the paper's median d~ curve)."""
    return normalised.nanmedian(dim=0).values


def isotropic_targets(a: Tensor, b: Tensor, seed: int = 0) -> Tensor:
    """Far ends a + ||b - a|| u [m, d], u uniform on the unit sphere (one per row, seeded).

    The random (isotropic) control: a step of the same length as the real pair's, in a random
    direction.
    """
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(a.shape, generator=g, dtype=torch.float32).to(a.dtype)
    u = u / u.norm(dim=-1, keepdim=True)
    return a + (b - a).norm(dim=-1, keepdim=True) * u
