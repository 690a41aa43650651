"""Sensitive directions (Lee & Heimersheim 2024): how much do perturbations along SAE errors, SAE
features and baseline directions change a model's next-token predictions?

The engine (`perturb`) moves activations at one hook, x -> x + L * d / |d|, for many directions
and lengths, and measures KL(P_orig || P_perturbed) per token; `families` names the directions
(SAE error and features, isotropic, the cov-random and real mixtures, the older "toward a target"
ones); `experiments` runs the paper's comparisons, each one call; `result` and `plot` hold the
tables and figures; `cli` is `mechscope directions`. See docs/directions.md.
"""

from mechscope.directions.experiments import (
    DirectionsConfig,
    bundled_saes,
    compare_features,
    e2e_vs_local,
    error_vs_baselines,
    feature_summary,
    features_by_l0,
    paper_comparisons,
    prepare,
    sweep_directions,
)
from mechscope.directions.families import FAMILIES, BatchContext, directions
from mechscope.directions.perturb import (
    PAPER_LENGTHS,
    clean_run,
    default_lengths,
    perturbed_kl,
)
from mechscope.directions.result import KLCurves, SubstitutionResult
from mechscope.directions.stats import ActivationStats, activation_stats

__all__ = [
    "FAMILIES",
    "PAPER_LENGTHS",
    "ActivationStats",
    "BatchContext",
    "DirectionsConfig",
    "KLCurves",
    "SubstitutionResult",
    "activation_stats",
    "bundled_saes",
    "clean_run",
    "compare_features",
    "default_lengths",
    "directions",
    "e2e_vs_local",
    "error_vs_baselines",
    "feature_summary",
    "features_by_l0",
    "paper_comparisons",
    "perturbed_kl",
    "prepare",
    "sweep_directions",
]
