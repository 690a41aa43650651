"""Attribution patching: the first-order estimate of every patch from one forward and backward.

For a patch replacing activation a (base run) by a_src (source run), Taylor's theorem gives

    M(base | a := a_src) - M(base)  ~=  sum over the patched entries of (a_src - a) * dM/da,

with the gradient taken at the base run. Denoising (Nanda 2023's original form) takes it at the
corrupted run with a_src = clean; noising at the clean run with a_src = corrupted. The results
are `PatchResult`s with the same axes as `patch_sweep`, values = M(base) + estimate, so they
compare element by element with exact patching. Estimates are good for small activations (head
outputs) and poor for large ones (the residual stream). With the KL metric and noising the
gradient at the clean run is zero, and so is every estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mechscope.models.lean import as_lean
from mechscope.patching.engine import baselines, make_runs
from mechscope.patching.grid import Positions, sweep_patches
from mechscope.patching.metric import PatchMetric, task_metric
from mechscope.patching.result import PatchResult, position_labels
from mechscope.patching.specs import PatchingError, check_component
from mechscope.tasks.base import Task


def attribution_patch(
    model: Any,
    clean_tokens: Tensor,
    corrupt_tokens: Tensor,
    metric: PatchMetric,
    components: Sequence[str],
    direction: str = "denoising",
    positions: Positions = "each",
    tokenizer: Any | None = None,
) -> dict[str, PatchResult]:
    """First-order estimates of `patch_sweep` for each component, from one backward pass.

    clean_tokens, corrupt_tokens: [batch, pos]. positions: "each" or "all" (as in patch_sweep).
    Returns component -> PatchResult (method "attribution"), axes as patch_sweep's.
    """
    if positions not in ("each", "all"):
        raise PatchingError("attribution patching supports positions='each' or 'all'")
    lean = as_lean(model)
    runs = make_runs(lean, clean_tokens, corrupt_tokens, direction)
    names = set(lean.hook_names())
    hooks_of: dict[str, list[str]] = {}
    for c in components:
        template, _ = check_component(c)
        hooks_of[c] = [template.format(l=l) for l in range(lean.n_layers)]
        missing = [h for h in hooks_of[c] if h not in names]
        if missing:
            raise PatchingError(f"the model has no hooks {missing} for component {c!r}")
    saved: dict[str, Tensor] = {}

    def keep(name: str) -> Any:
        def fn(x: Tensor) -> Tensor:
            x = x.clone().requires_grad_() if not x.requires_grad else x
            x.retain_grad()
            saved[name] = x
            return x

        return fn

    hooks = {h: keep(h) for hs in hooks_of.values() for h in hs}
    with torch.enable_grad():
        logits = lean(runs.base_tokens, hooks, logit_pos=metric.positions)
        batch = runs.base_tokens.shape[0]
        base_value = metric(logits, torch.arange(batch)).mean()
        base_value.backward()
    clean, corrupted = baselines(lean, clean_tokens, corrupt_tokens, metric)
    pos_labels = position_labels(clean_tokens, tokenizer or getattr(lean, "tokenizer", None))
    out = {}
    for c, hs in hooks_of.items():
        layout = check_component(c)[1]
        per_layer = []
        for h in hs:
            grad = saved[h].grad
            assert grad is not None
            delta = (runs.source(h) - runs.base_cache[h]).detach()
            est = (delta * grad).sum(dim=(0, -1))  # [pos] / [pos, head] / [head, dest]
            if positions == "all":
                est = est.sum(0) if layout == "pos_head" else est.sum(-1)
            per_layer.append(est.to(lean.device))  # a split model's layers: one device
        _, axes, labels = sweep_patches(
            c, lean.n_layers, lean.heads_at(hs[0]), clean_tokens.shape[1], positions
        )
        if "pos" in labels:
            labels["pos"] = pos_labels
        out[c] = PatchResult(
            values=float(base_value.detach()) + torch.stack(per_layer).detach(),
            axes=axes,
            labels=labels,
            clean=clean,
            corrupted=corrupted,
            metric=metric.name,
            direction=direction,
            component=c,
            method="attribution",
        )
    return out


def attribution_task(
    model: Any,
    task: Task,
    components: Sequence[str],
    direction: str = "denoising",
    metric: str | None = None,
    positions: Positions = "each",
) -> dict[str, PatchResult]:
    """`attribution_patch` on a task's prompt pairs with its metric (or `metric`), set up as
    `patch_task` sets up the exact sweep, so the two compare element by element."""
    lean = as_lean(model)
    kl = (metric or task.metric) == "kl"
    clean_logits = lean(task.clean_tokens, logit_pos=(-1,)) if kl else None
    m = task_metric(task, metric, clean_logits)
    out = attribution_patch(
        lean, task.clean_tokens, task.corrupt_tokens, m, components, direction, positions
    )
    for r in out.values():
        r.meta.update(task=task.name, n_prompts=len(task))
    return out
