"""Sweeps: one patch per layer x position (x head), evaluated by the batched engine.

`sweep_patches` builds the patches and the axes; `patch_sweep` runs them on any prompt pairs;
`patch_task` runs them on a `Task` with its metric and labels positions with its tokens.

Axes (as TransformerLens's `patching` functions order them):
    layout "pos"       positions="each": [layer, pos]          "all": [layer]
    layout "pos_head"  positions="each": [layer, pos, head]    "all": [layer, head]
    layout "head_pos"  positions="each": [layer, head, pos]    "all": [layer, head]
A list of positions sweeps just those positions (the "pos" axis then has that length);
"dest_src" sweeps single attention-pattern entries: [layer, head, pos (dest), src].
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from mechscope.models.lean import as_lean
from mechscope.patching.engine import (
    baselines,
    make_runs,
    run_variants,
    sweep_hooks,
    variants_from_patches,
)
from mechscope.patching.metric import PatchMetric, task_metric
from mechscope.patching.result import PatchResult, position_labels
from mechscope.patching.specs import Patch, PatchingError, Site, check_component
from mechscope.tasks.base import Task

Positions = str | Sequence[int]


def sweep_patches(
    component: str,
    n_layers: int,
    n_heads: int,
    seq_len: int,
    positions: Positions = "each",
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> tuple[list[Patch], tuple[str, ...], dict[str, list[str]]]:
    """(patches, axes, labels) of a sweep; patches in row-major order of the axes."""
    _, layout = check_component(component)
    grid: dict[str, list[int]] = {
        "layer": list(range(n_layers)) if layers is None else [int(l) for l in layers],
        "head": list(range(n_heads)) if heads is None else [int(h) for h in heads],
    }
    if not isinstance(positions, str):
        grid["pos"] = [int(p) for p in positions]
    elif positions in ("each", "dest_src"):
        grid["pos"] = list(range(seq_len))
    elif positions != "all":
        raise PatchingError(
            f"positions must be 'each', 'all', 'dest_src' or a list of ints, not {positions!r}"
        )
    if heads is not None and layout == "pos":
        raise PatchingError(f"component {component!r} has no head axis; leave heads=None")
    if positions == "dest_src" and layout != "head_pos":
        raise PatchingError("positions='dest_src' sweeps attention-pattern entries: use 'pattern'")
    axes: tuple[str, ...] = {
        "pos": ("layer", "pos"),
        "pos_head": ("layer", "pos", "head"),
        "head_pos": ("layer", "head", "pos"),
    }[layout]
    if "pos" not in grid:
        axes = tuple(a for a in axes if a != "pos")
    if positions == "dest_src":
        axes, grid["src"] = (*axes, "src"), grid["pos"]
    patches: list[Patch] = []
    for idx in itertools.product(*(grid[a] for a in axes)):
        at = dict(zip(axes, idx, strict=True))
        one = (at["pos"],) if "pos" in at else None
        head = (at["head"],) if "head" in at else None
        src = (at["src"],) if "src" in at else None
        patches.append((Site(component, at["layer"], one, head, src),))
    return patches, axes, {a: [str(i) for i in grid[a]] for a in axes}


def patch_sweep(
    model: Any,
    clean_tokens: Tensor,
    corrupt_tokens: Tensor,
    metric: PatchMetric,
    component: str,
    direction: str = "denoising",
    positions: Positions = "each",
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    memory_mb: float = 512.0,
    tokenizer: Any | None = None,
) -> PatchResult:
    """Patch `component` at every layer (x position x head) one at a time; see module docstring.

    clean_tokens, corrupt_tokens: [batch, pos]. model: a TransformerBridge or LeanModel.
    Returns a PatchResult whose values have the sweep's axes, plus clean/corrupted baselines.
    """
    lean = as_lean(model)
    hooks = sweep_hooks(lean, component, layers)
    runs = make_runs(lean, clean_tokens, corrupt_tokens, direction, hooks)
    n_heads = lean.heads_at(check_component(component)[0])  # key/value heads for k and v
    patches, axes, labels = sweep_patches(
        component, lean.n_layers, n_heads, clean_tokens.shape[1], positions, layers, heads
    )
    values = run_variants(lean, runs, variants_from_patches(lean, runs, patches), metric, memory_mb)
    every = position_labels(clean_tokens, tokenizer or getattr(lean, "tokenizer", None))
    for ax in ("pos", "src"):
        if ax in labels:
            labels[ax] = [every[int(p)] for p in labels[ax]]
    clean, corrupted = baselines(lean, clean_tokens, corrupt_tokens, metric)
    return PatchResult(
        values=values.view([len(labels[a]) for a in axes]),
        axes=axes,
        labels=labels,
        clean=clean,
        corrupted=corrupted,
        metric=metric.name,
        direction=direction,
        component=component,
    )


def patch_task(
    model: Any,
    task: Task,
    component: str,
    direction: str = "denoising",
    metric: str | None = None,
    positions: Positions = "each",
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    memory_mb: float = 512.0,
) -> PatchResult:
    """`patch_sweep` on a task's prompt pairs with its metric (or `metric`: logit_diff, logprob,
    prob, kl)."""
    lean = as_lean(model)
    kl = (metric or task.metric) == "kl"
    clean_logits = lean(task.clean_tokens, logit_pos=(-1,)) if kl else None
    m = task_metric(task, metric, clean_logits)
    result = patch_sweep(
        lean,
        task.clean_tokens,
        task.corrupt_tokens,
        m,
        component,
        direction,
        positions,
        layers,
        heads,
        memory_mb,
    )
    result.meta.update(task=task.name, n_prompts=len(task))
    return result
