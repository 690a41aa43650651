"""Interpolation paths: endpoints, shapes and the invariants each path keeps."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mechscope.errors import RegionsError
from mechscope.regions.interpolate import arc_path, linear_path, path_points, slerp_path

ALPHAS = torch.linspace(0, 1, 11)


def _ends(seed: int, m: int = 5, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=g), 3 * torch.randn(m, d, generator=g)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_linear_path_is_affine_in_alpha(seed):
    a, b = _ends(seed)
    p = linear_path(a, b, ALPHAS)
    assert p.shape == (5, 11, 16)
    torch.testing.assert_close(p[:, 0], a)
    torch.testing.assert_close(p[:, -1], b)
    torch.testing.assert_close(p[:, 3], 0.7 * a + 0.3 * b)
    steps = p.diff(dim=1)  # equal steps of (b - a) / 10
    torch.testing.assert_close(steps, ((b - a) / 10).unsqueeze(1).expand_as(steps))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_arc_path_keeps_the_distance_to_the_mean(seed):
    a, b = _ends(seed)
    mu = torch.randn(16, generator=torch.Generator().manual_seed(seed + 1))
    p = arc_path(a, b, ALPHAS, mu)
    radius = (a - mu).norm(dim=-1, keepdim=True)
    torch.testing.assert_close((p - mu).norm(dim=-1), radius.expand(5, 11))
    torch.testing.assert_close(p[:, 0], a)
    far = mu + (b - mu) * radius / (b - mu).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(p[:, -1], far)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_slerp_path_interpolates_the_norm_and_the_angle(seed):
    a, b = (x.double() for x in _ends(seed))  # float64: acos near 0 is ill-conditioned
    p = slerp_path(a, b, ALPHAS)
    torch.testing.assert_close(p[:, 0], a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p[:, -1], b, atol=1e-5, rtol=1e-5)
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    al = ALPHAS.double()
    torch.testing.assert_close(p.norm(dim=-1), (1 - al) * na + al * nb)
    cos = (p / p.norm(dim=-1, keepdim=True) * (a / na).unsqueeze(1)).sum(-1).clamp(-1, 1)
    angle = cos.acos()  # grows uniformly from 0 to the angle between a and b
    torch.testing.assert_close(angle.diff(dim=1), angle[:, -1:].expand(5, 10) / 10)


def test_slerp_of_parallel_ends_is_linear():
    a = torch.tensor([[1.0, 2.0, 0.0]])
    p = slerp_path(a, 3 * a, ALPHAS)
    torch.testing.assert_close(p, linear_path(a, 3 * a, ALPHAS))


def test_path_errors_say_what_to_do():
    a, b = _ends(0)
    with pytest.raises(RegionsError, match="one of linear, arc, slerp"):
        path_points("zigzag", a, b, ALPHAS)
    with pytest.raises(RegionsError, match="needs mu"):
        path_points("arc", a, b, ALPHAS)
    with pytest.raises(RegionsError, match=r"\[m, d_model\]"):
        path_points("linear", a, b[:2], ALPHAS)
