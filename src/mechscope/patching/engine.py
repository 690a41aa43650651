"""The patching engine: run many patched forwards in batches on the shared lean forward.

A *variant* is one patched run: for some hooks, replace the activation where a boolean mask is set
by a source value. Variants are stacked along the batch (variant-major: row v*B + b is prompt b of
variant v), chunked to a memory budget, and each chunk starts at the earliest layer any of its
patches touches (earlier layers are shared with the base run and read from its cache). Only the
logit positions the metric reads are unembedded.

Directions (Heimersheim & Nanda 2024):
    denoising: run the corrupted prompts, patch in clean activations (is it sufficient?)
    noising:   run the clean prompts, patch in corrupted activations (is it necessary?)
    zero:      run the clean prompts, patch in zeros
    mean:      run the clean prompts, patch in the mean over the clean prompts (per position)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from mechscope.models.lean import Hook, LeanModel, as_lean
from mechscope.patching.metric import PatchMetric
from mechscope.patching.specs import Layout, Patch, PatchingError, Site, validate_site

Direction = Literal["denoising", "noising", "zero", "mean"]
DIRECTIONS: tuple[str, ...] = ("denoising", "noising", "zero", "mean")


def check_tokens(clean_tokens: Tensor, corrupt_tokens: Tensor) -> None:
    """Raise PatchingError unless both are [batch, pos] integer tensors of one shape."""
    for name, t in (("clean_tokens", clean_tokens), ("corrupt_tokens", corrupt_tokens)):
        if not isinstance(t, Tensor) or t.ndim != 2 or t.dtype.is_floating_point:
            raise PatchingError(f"{name} must be an integer tensor [batch, pos]")
    if clean_tokens.shape != corrupt_tokens.shape:
        raise PatchingError(
            f"clean tokens {tuple(clean_tokens.shape)} and corrupted tokens "
            f"{tuple(corrupt_tokens.shape)} differ in shape; patching needs prompt pairs of "
            "equal token length, position by position."
        )


@dataclass
class Runs:
    """The base run (the one patched) and the source activations of a direction.

    base_tokens: [batch, pos]; base_cache: every activation of the base run; source_cache:
    every activation of the source run (None for the zero and mean ablations).
    """

    direction: str
    base_tokens: Tensor
    base_cache: dict[str, Tensor]
    source_cache: dict[str, Tensor] | None

    def source(self, hook: str) -> Tensor:
        """Source activation at `hook`, shaped like the base activation [batch, ...]."""
        base = self.base_cache[hook]
        if self.direction == "zero":
            return torch.zeros_like(base)
        if self.direction == "mean":
            return base.mean(0, keepdim=True).expand_as(base)
        assert self.source_cache is not None
        return self.source_cache[hook]


@torch.no_grad()
def make_runs(
    lean: LeanModel, clean_tokens: Tensor, corrupt_tokens: Tensor, direction: str
) -> Runs:
    """Run and cache the base (and source) prompts of `direction`."""
    check_tokens(clean_tokens, corrupt_tokens)
    if direction not in DIRECTIONS:
        raise PatchingError(f"Unknown direction {direction!r}; choose one of {DIRECTIONS}.")
    base, src = (
        (corrupt_tokens, clean_tokens)
        if direction == "denoising"
        else (clean_tokens, corrupt_tokens)
    )
    _, base_cache = lean.run_with_cache(base)
    source_cache = lean.run_with_cache(src)[1] if direction in ("denoising", "noising") else None
    return Runs(direction, base, base_cache, source_cache)


@torch.no_grad()
def baselines(
    lean: LeanModel, clean_tokens: Tensor, corrupt_tokens: Tensor, metric: PatchMetric
) -> tuple[float, float]:
    """Mean metric of the unpatched clean and corrupted runs."""
    out = []
    for tokens in (clean_tokens, corrupt_tokens):
        logits = lean(tokens, logit_pos=metric.positions)
        out.append(float(metric(logits, torch.arange(tokens.shape[0])).mean()))
    return out[0], out[1]


def _pick(n: int, ids: tuple[int, ...] | None) -> Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[list(ids) if ids is not None else slice(None)] = True
    return m


def site_mask(s: Site, layout: Layout, n_heads: int, seq_len: int) -> Tensor:
    """Boolean mask over the activation's axes after batch, without the last one:
    [pos] ("pos"), [pos, head] ("pos_head") or [head, dest, src] ("head_pos")."""
    pos, heads = _pick(seq_len, s.positions), _pick(n_heads, s.heads)
    if layout == "pos":
        return pos
    if layout == "pos_head":
        return pos[:, None] & heads[None, :]
    src = _pick(seq_len, s.src_positions)
    return heads[:, None, None] & pos[None, :, None] & src[None, None, :]


@dataclass
class Replacement:
    """Within one variant, at one hook: act = where(mask, source, act).

    mask: [pos] / [pos, head] / [head, dest, src] as `layout` says (see `site_mask`);
    source: [batch, ...] like the activation.
    """

    mask: Tensor
    source: Tensor
    layout: Layout


Variant = dict[str, Replacement]


def variants_from_patches(lean: LeanModel, runs: Runs, patches: Sequence[Patch]) -> list[Variant]:
    """Check every site and turn each patch into a variant of (mask, source) per hook."""
    names = set(lean.hook_names())
    seq_len = runs.base_tokens.shape[1]
    sources: dict[str, Tensor] = {}
    out: list[Variant] = []
    for patch in patches:
        if not patch:
            raise PatchingError("a patch must name at least one site")
        variant: Variant = {}
        for s in patch:
            n_heads = lean.heads_at(s.hook)
            validate_site(s, lean.n_layers, n_heads, seq_len, names)
            m = site_mask(s, s.layout, n_heads, seq_len)
            if s.hook in variant:
                variant[s.hook].mask = variant[s.hook].mask | m
                continue
            if s.hook not in sources:
                sources[s.hook] = runs.source(s.hook)
            variant[s.hook] = Replacement(m, sources[s.hook], s.layout)
        out.append(variant)
    return out


def _layer(hook: str) -> int:
    return int(hook.split(".")[1])


def _row_bytes(lean: LeanModel, seq_len: int, n_logits: int) -> int:
    """Rough peak bytes one prompt row costs in a layer (per-head copies dominate)."""
    d = lean.W_E.shape[1]
    d_mlp = lean.layers[0].W_in.shape[1] if lean.layers[0].W_in is not None else 0
    per_pos = 5 * lean.n_heads * d + 3 * lean.n_heads * seq_len + 2 * d_mlp + 8 * d
    return 4 * (seq_len * per_pos + n_logits * lean.W_U.shape[1])


def _stack_hook(variants: Sequence[Variant], hook: str) -> Hook:
    """One hook applying every variant's replacement at `hook` to the stacked batch."""
    reps = [v.get(hook) for v in variants]
    first = next(r for r in reps if r is not None)
    mask = torch.stack([r.mask if r else torch.zeros_like(first.mask) for r in reps])
    if all(r is None or r.source is first.source for r in reps):
        source = first.source.unsqueeze(0)  # shared: [1, batch, ...]
    else:
        source = torch.stack([(r or first).source for r in reps])
    n = len(variants)
    # mask [n, ...] -> [n, 1, ..., (1)] against the activation viewed as [n, batch, ...]
    m = mask[:, None] if first.layout == "head_pos" else mask[:, None, ..., None]

    def hook_fn(act: Tensor) -> Tensor:  # on a split model act is on its block's device
        stacked = act.view(n, -1, *act.shape[1:])
        return torch.where(m.to(act.device), source.to(act.device), stacked).view_as(act)

    return hook_fn


def _skip_to(lean: LeanModel, variant: Variant) -> int | None:
    """The next layer, if the variant only changes what one layer adds to the residual stream.

    A patch of z / result / attn_out (attention-only models), mlp_out or resid_post at layer l
    changes blocks.{l+1}.hook_resid_pre by a computable delta (`_add_resid_delta`), so its run can
    start there; layer n_layers means only the final LayerNorm and unembedding remain.
    """
    if len(variant) != 1:
        return None
    hook = next(iter(variant))
    kind = hook.rsplit("hook_", 1)[1]
    # attention writes straight into resid_post when no MLP reads it (attention-only or
    # parallel blocks); per-head z / result add up unless a post-norm rescales their sum
    attn_adds = lean.attn_only or lean.arch.parallel
    heads_add = attn_adds and lean.head_decomposition is None
    if kind in ("mlp_out", "resid_post") or (
        (attn_adds and kind == "attn_out") or (heads_add and kind in ("z", "result"))
    ):
        return _layer(hook) + 1
    return None


def _first_pos(variant: Variant) -> int:
    """The earliest position a skipping variant patches (causal: earlier ones stay as they were)."""
    ((rep,),) = (variant.values(),)
    return int(rep.mask.nonzero()[:, 0].min())


def _add_resid_delta(
    lean: LeanModel, diff: Tensor, hook: str, rep: Replacement, resid: Tensor, start_pos: int
) -> None:
    """Add to resid [batch, pos - start_pos, d_model] (positions start_pos..) the change `rep`
    makes to the next layer's resid_pre.

    diff: source - base activation at `hook` [batch, ...]; only the masked entries are read.
    """
    nz = rep.mask.nonzero()
    pos = nz[:, 0]
    if rep.layout == "pos":
        resid.index_add_(1, (pos - start_pos).to(resid.device), diff[:, pos].to(resid.device))
        return
    heads = nz[:, 1]
    picked = diff[:, pos, heads]  # [batch, k, d_head or d_model]
    if hook.endswith("hook_z"):
        W_O = lean.layers[_layer(hook)].W_O
        picked = torch.einsum("bkd,kdm->bkm", picked.to(W_O.device), W_O[heads.to(W_O.device)])
    # hook_result: per-head outputs add up
    resid.index_add_(1, (pos - start_pos).to(resid.device), picked.to(resid.device))


def _prefix_kv(
    lean: LeanModel, runs: Runs, layer: int, p: int
) -> list[tuple[Tensor, Tensor] | None] | None:
    """Base-run keys and values of positions < p at layers >= `layer` (None when p == 0)."""
    if not p:
        return None
    c = runs.base_cache
    return [
        (c[lean.key_hook(l)][:, :p], c[f"blocks.{l}.attn.hook_v"][:, :p]) if l >= layer else None
        for l in range(lean.n_layers)
    ]


def _rep(kv: tuple[Tensor, Tensor], n: int) -> tuple[Tensor, Tensor]:
    return kv[0].repeat(n, 1, 1, 1), kv[1].repeat(n, 1, 1, 1)


def _start_resid(lean: LeanModel, runs: Runs, layer: int) -> Tensor:
    if layer == lean.n_layers:
        return runs.base_cache[f"blocks.{layer - 1}.hook_resid_post"]
    return runs.base_cache[f"blocks.{layer}.hook_resid_pre"]


@torch.no_grad()
def run_variants(
    lean: LeanModel,
    runs: Runs,
    variants: Sequence[Variant],
    metric: PatchMetric,
    memory_mb: float = 512.0,
) -> Tensor:
    """Mean metric over prompts of each patched run: [n_variants].

    Each variant starts at the earliest layer it can change (after the layer it patches, for
    patches of what a layer adds to the residual stream) and, for those, at the earliest position
    it patches (earlier positions keep their keys and values from the base run). Variants are
    grouped by (layer, position), stacked along the batch and run in chunks whose estimated
    activation memory stays under `memory_mb`.
    """
    batch, seq_len = runs.base_tokens.shape
    n_logits = seq_len if metric.positions is None else len(metric.positions)
    per_variant = batch * _row_bytes(lean, seq_len, n_logits)
    chunk = max(1, int(memory_mb * 2**20 // per_variant))
    first_logit = 0 if metric.positions is None else min(p % seq_len for p in metric.positions)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    skips: list[bool] = []
    for i, v in enumerate(variants):
        skip = _skip_to(lean, v)
        skips.append(skip is not None)
        if skip is None:
            groups[(min(_layer(h) for h in v), 0)].append(i)
        else:
            p = _first_pos(v)
            groups[(skip, p if p <= first_logit and skip < lean.n_layers else 0)].append(i)
    out = torch.empty(len(variants))
    diffs: dict[tuple[str, int], Tensor] = {}  # (hook, id(source)) -> source - base
    for (layer, p), idx in sorted(groups.items()):
        resid0 = _start_resid(lean, runs, layer)[:, p:]
        prefix = _prefix_kv(lean, runs, layer, p)
        for start in range(0, len(idx), chunk):
            ids = idx[start : start + chunk]
            n = len(ids)
            resid = resid0.repeat(n, 1, 1)
            by_variant = resid.view(n, batch, *resid0.shape[1:])
            hooked = [{} if skips[i] else variants[i] for i in ids]
            for j, i in enumerate(ids):
                if skips[i]:
                    ((hook, rep),) = variants[i].items()
                    key = (hook, id(rep.source))
                    if key not in diffs:
                        diffs[key] = rep.source - runs.base_cache[hook]
                    _add_resid_delta(lean, diffs[key], hook, rep, by_variant[j], p)
            hooks = {h: _stack_hook(hooked, h) for h in {h for v in hooked for h in v}}
            logits = lean(
                runs.base_tokens.repeat(n, 1),
                hooks,
                start_layer=layer,
                resid=resid,
                logit_pos=metric.positions,
                start_pos=p,
                prefix_kv=None if prefix is None else [kv and _rep(kv, n) for kv in prefix],
            )
            prompt = torch.arange(n * batch) % batch
            out[ids] = metric(logits, prompt).view(n, batch).mean(1).to(out.device)
    return out


def run_patches(
    model: Any,
    clean_tokens: Tensor,
    corrupt_tokens: Tensor,
    patches: Sequence[Patch],
    metric: PatchMetric,
    direction: str = "denoising",
    memory_mb: float = 512.0,
) -> Tensor:
    """Mean metric of each patched run: [len(patches)].

    Each patch is a tuple of `Site`s replaced together; the base run and sources follow
    `direction` (denoising, noising, zero, mean). model: a TransformerBridge or LeanModel.
    """
    lean = as_lean(model)
    runs = make_runs(lean, clean_tokens, corrupt_tokens, direction)
    return run_variants(lean, runs, variants_from_patches(lean, runs, patches), metric, memory_mb)
