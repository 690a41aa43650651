"""Stable regions in the residual stream (Janiak et al. 2024, arXiv 2409.17113).

>>> from mechscope.regions import RegionConfig, analyse, sweep
>>> stats, curves, isotropic = analyse("code-4l", revision="step-150")
>>> stats.sharpness            # (q25, median, q75) of max_alpha d'(alpha)/d(1)
>>> result = sweep(["code-2l", "code-4l"])   # every checkpoint of both sizes

Modules: `prompts` (random windows), `interpolate` (paths, running the rest of the model),
`boundaries` (sharpness, boundary counts), `polytopes` (MLP activation patterns crossed),
`semantic` (clusters by region), `analysis` (one model; its sweep over checkpoints and
sizes), `result`, `plot`, `cli`.
"""

from mechscope.errors import RegionsError
from mechscope.regions.analysis import RegionConfig, analyse, sweep
from mechscope.regions.boundaries import normalise, sharpness
from mechscope.regions.interpolate import PathCurves, PathRunner, interpolate, interpolate_pairs
from mechscope.regions.polytopes import polytope_counts
from mechscope.regions.prompts import sample_prompts
from mechscope.regions.result import RegionStats, RegionStatsTable, SemanticResult
from mechscope.regions.semantic import semantic_alignment

__all__ = [
    "PathCurves",
    "PathRunner",
    "RegionConfig",
    "RegionStats",
    "RegionStatsTable",
    "RegionsError",
    "SemanticResult",
    "analyse",
    "interpolate",
    "interpolate_pairs",
    "normalise",
    "polytope_counts",
    "sample_prompts",
    "semantic_alignment",
    "sharpness",
    "sweep",
]
