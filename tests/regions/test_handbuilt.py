"""A hand-built model whose output flips at a known point of the path: the boundary is found
within one interpolation step, with exactly one polytope face crossed, and nowhere else."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mechscope.regions import boundaries as bd
from mechscope.regions.interpolate import interpolate
from mechscope.regions.polytopes import polytope_counts

CTX = torch.tensor([0])


@settings(max_examples=30, deadline=None)
@given(
    n_steps=st.sampled_from([11, 21, 31, 51]),
    cell=st.integers(min_value=0, max_value=50),
    frac=st.floats(min_value=0.05, max_value=0.95),
)
def test_known_boundary_is_located_within_one_step(step_runner, ends, n_steps, cell, frac):
    h = 1 / (n_steps - 1)
    k0 = cell % (n_steps - 1)  # the grid cell [alpha_k0, alpha_k0+1] holding the boundary
    alpha0 = (k0 + frac) * h
    a, b = ends(alpha0)
    curves = interpolate(step_runner, CTX, a, b, n_steps=n_steps)
    normed, kept = bd.normalise(curves.dist)
    assert kept.all()
    assert abs(float(bd.locate(normed, curves.alphas)[0]) - alpha0) <= h
    kl_normed, _ = bd.normalise(curves.kl)
    assert abs(float(bd.locate(kl_normed, curves.alphas)[0]) - alpha0) <= h
    # the top token flips once, between the two grid points around alpha0
    top1 = curves.top1[0]
    assert top1[: k0 + 1].eq(0).all() and top1[k0 + 1 :].eq(1).all()
    # one boundary, sharp: most of the output change happens inside one step
    assert int(bd.count_boundaries(bd.boundary_mask(normed))[0]) == 1
    assert float(bd.sharpness(normed)[0]) > 0.5 * (n_steps - 1)
    # exactly one MLP pattern bit changes, in the same cell
    assert curves.flips is not None
    per_step = curves.flips[0].sum(-1)
    assert int(per_step.sum()) == 1 and int(per_step[k0]) == 1
    counts = polytope_counts(curves)
    assert counts.crossings.tolist() == [1] and counts.mismatch.tolist() == [1]


def test_path_that_stays_on_one_side_has_no_boundary(step_runner, ends):
    a, b = ends(0.4)
    b = a + 0.3 * (b - a)  # u . x goes from -0.8 to -0.2: the gate never opens
    curves = interpolate(step_runner, CTX, a, b, n_steps=21)
    normed, _ = bd.normalise(curves.dist)
    assert float(bd.sharpness(normed)[0]) < 1.5
    assert int(bd.count_boundaries(bd.boundary_mask(normed))[0]) == 0
    assert curves.flips is not None and int(curves.flips.sum()) == 0
    assert curves.top1.eq(0).all()


def test_located_boundary_moves_with_the_true_one(step_runner, ends):
    located = []
    for alpha0 in (0.23, 0.48, 0.81):
        curves = interpolate(step_runner, CTX, *ends(alpha0), n_steps=41)
        located.append(float(bd.locate(bd.normalise(curves.dist)[0], curves.alphas)[0]))
    assert located == sorted(located)
    assert all(abs(x - t) <= 1 / 40 for x, t in zip(located, (0.23, 0.48, 0.81), strict=True))
