"""Path patching: the effect of a sender on one receiver's input through the direct path only.

The residual stream is a sum, so with every other component frozen at its base value, patching
sender S changes receiver R's (pre-LayerNorm) input by exactly S_source - S_base. Path patching
S -> R therefore runs the base prompts with R's input replaced by base input + (S_source - S_base)
(LayerNorm recomputed inside R) and lets everything downstream of R recompute. This equals Wang
et al.'s two-step procedure with all non-R components frozen in step 2.

Node names (ACDC's vocabulary):
    senders    "L.H" (head H of layer L, its hook_result), "mlpL" (hook_mlp_out)
    receivers  "L.H.q" / "L.H.k" / "L.H.v" (that head's query/key/value input),
               "mlpL" (hook_mlp_in), "resid_final" (the residual feeding ln_final and the unembed)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mechscope.models.lean import LeanModel, as_lean
from mechscope.patching.engine import (
    Replacement,
    Runs,
    Variant,
    baselines,
    make_runs,
    run_variants,
)
from mechscope.patching.metric import PatchMetric
from mechscope.patching.result import PatchResult
from mechscope.patching.specs import PatchingError

_HEAD = re.compile(r"^(\d+)\.(\d+)$")
_HEAD_INPUT = re.compile(r"^(\d+)\.(\d+)\.([qkv])$")
_MLP = re.compile(r"^mlp(\d+)$")


def _check(lean: LeanModel, name: str, layer: int, head: int | None, hook: str) -> None:
    n_heads = lean.heads_at(hook)  # key/value inputs: the model's key/value heads
    if not 0 <= layer < lean.n_layers or (head is not None and not 0 <= head < n_heads):
        raise PatchingError(
            f"node {name!r} is out of range: the model has {lean.n_layers} layers of "
            f"{n_heads} heads at {hook.rsplit('.', 1)[1]}"
        )
    if hook not in lean.hook_names():
        raise PatchingError(f"node {name!r}: the model has no hook {hook!r} (attention-only?)")


def sender_hook(lean: LeanModel, name: str) -> tuple[str, int | None, float]:
    """(hook, head or None, order) of a sender; order: where in the forward it writes."""
    if m := _HEAD.match(name):
        layer, head = int(m[1]), int(m[2])
        hook = f"blocks.{layer}.attn.hook_result"
        _check(lean, name, layer, head, hook)
        if lean.head_decomposition is not None:
            raise PatchingError(
                f"sender {name!r}: a head's output is not a term of the residual stream in this "
                f"model ({lean.head_decomposition}); patch 'mlpL' senders, or the whole "
                "attention output with patch_sweep(component='attn_out')"
            )
        return hook, head, layer + 0.25
    if m := _MLP.match(name):
        layer = int(m[1])
        hook = f"blocks.{layer}.hook_mlp_out"
        _check(lean, name, layer, None, hook)
        # parallel blocks: the MLP writes beside the heads, not after them
        return hook, None, layer + (0.25 if lean.arch.parallel else 0.75)
    raise PatchingError(f"unknown sender {name!r}: use 'L.H' for a head or 'mlpL' for an MLP")


def receiver_hook(lean: LeanModel, name: str) -> tuple[str, int | None, float]:
    """(hook, head or None, order) of a receiver input; order: where in the forward it reads."""
    if name == "resid_final":
        return f"blocks.{lean.n_layers - 1}.hook_resid_post", None, float(lean.n_layers)
    if m := _HEAD_INPUT.match(name):
        layer, head = int(m[1]), int(m[2])
        hook = f"blocks.{layer}.hook_{m[3]}_input"
        _check(lean, name, layer, head, hook)
        return hook, head, float(layer)
    if m := _MLP.match(name):
        layer = int(m[1])
        hook = f"blocks.{layer}.hook_mlp_in"
        _check(lean, name, layer, None, hook)
        # parallel blocks: the MLP reads the block's input, as the heads do
        return hook, None, layer + (0.0 if lean.arch.parallel else 0.5)
    raise PatchingError(
        f"unknown receiver {name!r}: use 'L.H.q', 'L.H.k', 'L.H.v', 'mlpL' or 'resid_final'"
    )


def _delta(runs: Runs, hook: str, head: int | None) -> Tensor:
    """Sender source - base output [batch, pos, d_model]."""
    diff = runs.source(hook) - runs.base_cache[hook]
    return diff[:, :, head] if head is not None else diff


def _variant(
    runs: Runs, delta: Tensor, hook: str, head: int | None, n_heads: int, seq_len: int
) -> Variant:
    base = runs.base_cache[hook]
    if head is None:
        return {hook: Replacement(torch.ones(seq_len, dtype=torch.bool), base + delta, "pos")}
    mask = torch.zeros(seq_len, n_heads, dtype=torch.bool)
    mask[:, head] = True
    return {hook: Replacement(mask, base + delta[:, :, None], "pos_head")}


def path_patch(
    model: Any,
    clean_tokens: Tensor,
    corrupt_tokens: Tensor,
    metric: PatchMetric,
    senders: Sequence[str],
    receivers: Sequence[str],
    direction: str = "noising",
    memory_mb: float = 512.0,
) -> PatchResult:
    """Metric after patching each sender into each receiver through the direct path only.

    clean_tokens, corrupt_tokens: [batch, pos]. Returns a PatchResult with axes
    ("sender", "receiver"); pairs where the sender does not write before the receiver reads are
    NaN. direction: "noising" (clean run, corrupted sender; Wang et al.'s form), "denoising",
    "zero" or "mean".
    """
    lean = as_lean(model)
    runs = make_runs(lean, clean_tokens, corrupt_tokens, direction)
    seq_len = clean_tokens.shape[1]
    s_info = [sender_hook(lean, s) for s in senders]
    r_info = [receiver_hook(lean, r) for r in receivers]
    variants: list[Variant] = []
    where: list[tuple[int, int]] = []
    for i, (s_hook, s_head, s_order) in enumerate(s_info):
        delta = _delta(runs, s_hook, s_head)
        for j, (r_hook, r_head, r_order) in enumerate(r_info):
            if s_order < r_order:
                n_heads = lean.heads_at(r_hook)
                variants.append(_variant(runs, delta, r_hook, r_head, n_heads, seq_len))
                where.append((i, j))
    values = torch.full((len(senders), len(receivers)), float("nan"))
    if variants:
        flat = run_variants(lean, runs, variants, metric, memory_mb)
        for (i, j), v in zip(where, flat.tolist(), strict=True):
            values[i, j] = v
    clean, corrupted = baselines(lean, clean_tokens, corrupt_tokens, metric)
    return PatchResult(
        values=values,
        axes=("sender", "receiver"),
        labels={"sender": list(senders), "receiver": list(receivers)},
        clean=clean,
        corrupted=corrupted,
        metric=metric.name,
        direction=direction,
        component="path",
        method="path",
    )


def all_senders(lean: LeanModel, before_layer: int | None = None) -> list[str]:
    """Every head ("L.H") and MLP ("mlpL") in forward order, up to layer `before_layer`."""
    stop = lean.n_layers if before_layer is None else before_layer
    names = []
    for l in range(stop):
        names += [f"{l}.{h}" for h in range(lean.n_heads)]
        if not lean.attn_only:
            names.append(f"mlp{l}")
    return names
