"""Polytopes crossed along an interpolation path, next to the stable-region boundaries crossed.

A polytope is a set of residuals sharing one MLP activation pattern. The bundled models use
gelu_new, which has no hard gate, so the pattern here is the sign of the pre-activation,
`blocks.{l}.mlp.hook_pre > 0`, at the last position, over every block after the write site (for a
gated MLP, `hook_pre` is the gate, as in the paper's count of "mismatched gate activations").
Each bit that changes between neighbouring path steps is one polytope face crossed (a lower
bound: a bit that flips twice within one step is missed).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from mechscope.errors import RegionsError
from mechscope.regions.boundaries import boundary_mask, count_boundaries, normalise
from mechscope.regions.interpolate import PathCurves


@dataclass
class PolytopeCounts:
    """Per path [m]: polytope faces crossed, pattern bits differing end to end (the paper's
    mismatch count), stable-region boundaries crossed, and steps with any face crossed."""

    crossings: Tensor
    mismatch: Tensor
    boundaries: Tensor
    steps_with_crossing: Tensor


def polytope_counts(
    curves: PathCurves, threshold: float = 3.0, min_end: float = 0.01
) -> PolytopeCounts:
    """Polytope and stable-region counts of each path (see the module docstring)."""
    if curves.flips is None or curves.mismatch is None:
        raise RegionsError(
            "these curves have no MLP activation patterns: the model is attention-only or the "
            "write site is after the last MLP; write at an earlier layer"
        )
    normed, _ = normalise(curves.dist, min_end)
    per_step = curves.flips.sum(-1)  # [m, S-1]
    return PolytopeCounts(
        crossings=per_step.sum(1),
        mismatch=curves.mismatch.sum(-1),
        boundaries=count_boundaries(boundary_mask(normed, threshold)),
        steps_with_crossing=(per_step > 0).sum(1),
    )


def crossings_per_layer(curves: PathCurves) -> dict[int, Tensor]:
    """Faces crossed per later block: {layer: [m]}."""
    if curves.flips is None:
        return {}
    return {l: curves.flips[:, :, i].sum(1) for i, l in enumerate(curves.gate_layers)}
