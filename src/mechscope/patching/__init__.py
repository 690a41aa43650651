"""Activation patching (Heimersheim & Nanda 2024): one batched engine for every granularity.

>>> from mechscope.patching import patch_task
>>> result = patch_task(model, task, "z", direction="denoising")   # [layer, pos, head]
>>> result.normalised()          # 0 = corrupted baseline, 1 = clean baseline
>>> plot_result(result).write_html("z.html"); result.save("out/z")  # patching.plot

Directions: "denoising" (corrupted run, clean activations patched in: sufficient?), "noising"
(clean run, corrupted activations patched in: necessary?), "zero" and "mean" ablation.
Also: `path_patch` (sender -> receiver through the direct path) and `attribution_patch` (the
first-order estimate of every patch from one backward pass; `attribution_task` on a task). Every
run uses the shared `LeanModel` forward, stacking patch variants along the batch.
"""

from mechscope.patching.attribution import attribution_patch, attribution_task
from mechscope.patching.engine import DIRECTIONS, run_patches
from mechscope.patching.grid import patch_sweep, patch_task, sweep_patches
from mechscope.patching.metric import PatchMetric, batch_metric, task_metric
from mechscope.patching.path import all_senders, path_patch
from mechscope.patching.result import PatchResult, pearson
from mechscope.patching.specs import COMPONENTS, Patch, PatchingError, Site, site

__all__ = [
    "COMPONENTS",
    "DIRECTIONS",
    "Patch",
    "PatchMetric",
    "PatchResult",
    "PatchingError",
    "Site",
    "all_senders",
    "attribution_patch",
    "attribution_task",
    "batch_metric",
    "patch_sweep",
    "patch_task",
    "path_patch",
    "pearson",
    "run_patches",
    "site",
    "sweep_patches",
    "task_metric",
]
