"""Sharpness, boundary counts and locations on curves whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from mechscope.errors import RegionsError
from mechscope.regions import boundaries as bd

S = 21
ALPHAS = torch.linspace(0, 1, S)


def test_straight_line_has_sharpness_one_and_no_boundary():
    curve = 2.5 * ALPHAS.unsqueeze(0)
    normed, kept = bd.normalise(curve)
    assert kept.tolist() == [True]
    torch.testing.assert_close(bd.sharpness(normed), torch.tensor([1.0]))
    assert bd.count_boundaries(bd.boundary_mask(normed)).tolist() == [0]


def test_jump_inside_one_step_has_sharpness_s_minus_one():
    curve = (ALPHAS > 0.42).float().unsqueeze(0) * 4.0  # jumps between alpha 0.40 and 0.45
    normed, _ = bd.normalise(curve)
    assert float(bd.sharpness(normed)[0]) == pytest.approx(S - 1)
    assert float(bd.locate(normed, ALPHAS)[0]) == pytest.approx(0.425)
    assert bd.count_boundaries(bd.boundary_mask(normed)).tolist() == [1]


def test_two_jumps_are_two_boundaries_three_regions():
    curve = 0.5 * (ALPHAS > 0.22).float() + 0.5 * (ALPHAS > 0.71).float()
    two_steps_wide = 0.3 * ((ALPHAS > 0.3).float() + (ALPHAS > 0.36).float()) / 2
    curves = torch.stack([curve, two_steps_wide + 0.7 * ALPHAS])
    normed, _ = bd.normalise(curves)
    counts = bd.count_boundaries(bd.boundary_mask(normed))
    assert counts.tolist() == [2, 1]  # a jump spread over two neighbouring steps is one boundary


def test_small_endpoint_distance_is_dropped():
    curves = torch.stack([ALPHAS, 1e-4 * ALPHAS])
    normed, kept = bd.normalise(curves, min_end=0.01)
    assert kept.tolist() == [True, False]
    assert torch.isnan(normed[1]).all()
    assert math.isnan(float(bd.sharpness(normed)[1]))
    assert not bd.boundary_mask(normed)[1].any()
    assert bd.quartiles(bd.sharpness(normed)) == pytest.approx((1.0, 1.0, 1.0))


def test_quartiles_and_median_curve():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert bd.quartiles(x) == (2.0, 3.0, 4.0)
    curves = torch.stack([ALPHAS, ALPHAS**2, ALPHAS**3])
    torch.testing.assert_close(bd.median_curve(curves), ALPHAS**2)


def test_top1_changes_counts_switches():
    top1 = torch.tensor([[1, 1, 2, 2, 1], [3, 3, 3, 3, 3]])
    assert bd.top1_changes(top1).tolist() == [2, 0]


def test_isotropic_targets_have_the_real_step_length_and_random_directions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 64, generator=g), torch.randn(200, 64, generator=g)
    far = bd.isotropic_targets(a, b, seed=1)
    torch.testing.assert_close((far - a).norm(dim=-1), (b - a).norm(dim=-1))
    u = (far - a) / (far - a).norm(dim=-1, keepdim=True)
    v = (b - a) / (b - a).norm(dim=-1, keepdim=True)
    assert (u * v).sum(-1).abs().mean() < 0.2  # unrelated to the real direction
    torch.testing.assert_close(far, bd.isotropic_targets(a, b, seed=1))  # seeded


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(RegionsError, match="straight line"):
        bd.boundary_mask(ALPHAS.unsqueeze(0), threshold=1.0)
    with pytest.raises(RegionsError, match=r"\[m, S\]"):
        bd.normalise(ALPHAS)
