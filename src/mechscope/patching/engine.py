"""The patching engine: run many patched forwards in batches on the shared lean forward.

A *variant* is one patched run: for some hooks, replace the activation where a boolean mask is set
by a source value. Variants are stacked along the batch (variant-major: row v*B + b is prompt b of
variant v) and chunked to a memory budget. A variant of one component at one layer recomputes only
what it can change: that layer from its first patched position on (the patch applied to the stacked
batch as a tensor operation), then the later layers from that position on, reading earlier
positions' keys and values from the base run (attention is causal). Only the logit positions the
metric reads are unembedded.

Directions (Heimersheim & Nanda 2024):
    denoising: run the corrupted prompts, patch in clean activations (is it sufficient?)
    noising:   run the clean prompts, patch in corrupted activations (is it necessary?)
    zero:      run the clean prompts, patch in zeros
    mean:      run the clean prompts, patch in the mean over the clean prompts (per position)
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from mechscope.models.lean import Hook, LeanModel, as_lean
from mechscope.patching.metric import PatchMetric
from mechscope.patching.specs import (
    COMPONENTS,
    Layout,
    Patch,
    PatchingError,
    Site,
    check_component,
    validate_site,
)
from mechscope.validate import Dims, patch_row_bytes

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
    lean: LeanModel,
    clean_tokens: Tensor,
    corrupt_tokens: Tensor,
    direction: str,
    hooks: Collection[str] | None = None,
) -> Runs:
    """Run and cache the base (and source) prompts of `direction`; hooks: cache only these
    activations (`sweep_hooks` lists what a sweep reads), None: every one."""
    check_tokens(clean_tokens, corrupt_tokens)
    if direction not in DIRECTIONS:
        raise PatchingError(f"Unknown direction {direction!r}; choose one of {DIRECTIONS}.")
    base, src = (
        (corrupt_tokens, clean_tokens)
        if direction == "denoising"
        else (clean_tokens, corrupt_tokens)
    )

    def cached(tokens: Tensor) -> dict[str, Tensor]:
        if hooks is None:
            return lean.run_with_cache(tokens)[1]
        cache: dict[str, Tensor] = {}

        def keep(name: str) -> Hook:
            return lambda x: cache.__setitem__(name, x)

        lean(tokens, {h: keep(h) for h in hooks}, logit_pos=(-1,))  # logits unused
        return cache

    source_cache = cached(src) if direction in ("denoising", "noising") else None
    return Runs(direction, base, cached(base), source_cache)


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


_TEMPLATES = {template: c for c, (template, _) in COMPONENTS.items()}
# activations every tensor sweep may read; views of tensors the forward makes anyway
_CHEAP = (
    "hook_resid_pre",
    "hook_resid_mid",
    "hook_attn_out",
    "hook_mlp_out",
    "hook_resid_post",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_rot_q",
    "attn.hook_rot_k",
    "attn.hook_z",
    "attn.hook_pattern",
)


def _component(hook: str) -> str | None:
    """The component of a hook ("z" for blocks.3.attn.hook_z); None for other hooks."""
    return _TEMPLATES.get(re.sub(r"^blocks\.\d+\.", "blocks.{l}.", hook))


def sweep_hooks(lean: LeanModel, component: str, layers: Sequence[int] | None = None) -> list[str]:
    """The activations a sweep of `component` at `layers` (None: every layer) reads from the
    base and source runs (give them to `make_runs`): the component's hook at those layers and
    what the forward makes anyway (residual stream, queries, keys, values, patterns)."""
    template, _ = check_component(component)
    names = set(lean.hook_names())
    every = [f"blocks.{l}.{x}" for l in range(lean.n_layers) for x in _CHEAP]
    own = [template.format(l=l) for l in (range(lean.n_layers) if layers is None else layers)]
    return [h for h in dict.fromkeys(every + own) if h in names]


def row_bytes(lean: LeanModel, n_pos: int, seq_len: int, n_logits: int) -> int:
    """Rough peak bytes of one prompt row running positions seq_len - n_pos.. of every layer
    (`validate.patch_row_bytes` of the model's sizes)."""
    W_in = lean.layers[0].W_in
    dims = Dims(
        n_layers=lean.n_layers,
        d_model=lean.W_E.shape[1],
        d_mlp=0 if W_in is None else W_in.shape[1],
        d_vocab=lean.W_U.shape[1],
        n_ctx=seq_len,
        n_heads=lean.n_heads,
        n_kv_heads=lean.n_kv_heads,
        d_head=lean.d_head,
    )
    return patch_row_bytes(dims, n_pos, seq_len, n_logits)


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


def _first_pos(rep: Replacement) -> int:
    """The earliest (destination) position a replacement patches."""
    return int(rep.mask.nonzero()[:, 1 if rep.layout == "head_pos" else 0].min())


def _changes(runs: Runs, hook: str, rep: Replacement, memo: dict[tuple[str, int], Tensor]) -> bool:
    """Whether `rep` changes anything: a source equal to the base run wherever the mask is set
    (clean and corrupted prompts agree up to their first differing token) changes nothing."""
    key = (hook, id(rep.source))
    if key not in memo:
        differs = (rep.source != runs.base_cache[hook]).any(0)
        memo[key] = differs if rep.layout == "head_pos" else differs.any(-1)
    return bool((memo[key] & rep.mask.to(memo[key].device)).any())


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


@dataclass
class _Chunk:
    """Variants patching one component at one layer, none before position `start`.

    reps: one replacement each (of hook_q / hook_k / hook_v for the q/k/v inputs, their sources
    projected); sel: the query positions layer `layer` runs (absolute, [P]).
    """

    lean: LeanModel
    runs: Runs
    component: str
    layer: int
    start: int
    reps: list[Replacement]
    sel: Tensor

    def patched(self, hook: str, sel: Tensor | None = None) -> Tensor:
        """where(mask, source, base) at `hook` for every variant at positions `sel` (default:
        self.sel): [n, batch, ...] like the activation at those positions."""
        sel = self.sel if sel is None else sel
        layout = self.reps[0].layout
        axis = 1 if layout == "head_pos" else 0  # the (destination) position axis of a mask
        dev = self.lean.layers[self.layer].device
        mask = torch.stack([r.mask for r in self.reps]).to(dev).index_select(axis + 1, sel)
        mask = mask[:, None] if layout == "head_pos" else mask[:, None, ..., None]
        first = self.reps[0].source
        if all(r.source is first for r in self.reps):
            source = first.to(dev).index_select(axis + 1, sel)[None]
        else:
            source = torch.stack([r.source.to(dev).index_select(axis + 1, sel) for r in self.reps])
        base = self.runs.base_cache[hook].to(dev).index_select(axis + 1, sel)
        return torch.where(mask, source, base[None])

    def base(self, name: str, sel: Tensor | None = None) -> Tensor:
        """The base run's `blocks.{layer}.{name}` at positions `sel` (default self.sel)."""
        dev = self.lean.layers[self.layer].device
        x = self.runs.base_cache[f"blocks.{self.layer}.{name}"].to(dev)
        return x.index_select(1, self.sel if sel is None else sel)

    def finish(self, x: Tensor, letter: int, positions: Tensor) -> Tensor:
        """Queries / keys [n, batch, pos, k, d_head] as attention reads them, flattened to
        [n * batch, ...]."""
        x = x.flatten(0, 1)
        w = self.lean.layers[self.layer]
        if self.lean.rotary or w.q_norm is not None:
            x = self.lean.finish_qk(self.layer, x, letter, positions)
        return x

    def attention(self) -> Tensor:
        """Head outputs z [n, batch, P, H, d_head] with the patched queries, keys or values."""
        lean, l, n = self.lean, self.layer, len(self.reps)
        dev = lean.layers[l].device
        T = self.runs.base_tokens.shape[1]
        after = torch.arange(self.start, T, device=dev)
        letter = "qkv".index(self.component)
        hook = f"blocks.{l}.attn.hook_{self.component}"
        if letter == 0:
            q = self.finish(self.patched(hook), 0, self.sel)
        elif lean.rotary:
            q = self.base("attn.hook_rot_q").repeat(n, 1, 1, 1)
        else:
            q = self.finish(self.base("attn.hook_q")[None], 0, self.sel).repeat(n, 1, 1, 1)
        k = self.base(lean.key_hook(l).split(".", 2)[2], torch.arange(T, device=dev))
        v = self.base("attn.hook_v", torch.arange(T, device=dev))
        if letter == 1:
            new = self.finish(self.patched(hook, after), 1, after)
            k = torch.cat([k[:, : self.start].repeat(n, 1, 1, 1), new], 1)
        else:
            k = k.repeat(n, 1, 1, 1)
        if letter == 2:
            new = self.patched(hook, after).flatten(0, 1)
            v = torch.cat([v[:, : self.start].repeat(n, 1, 1, 1), new], 1)
        else:
            v = v.repeat(n, 1, 1, 1)
        z = lean.attend(l, q, k, v, self.sel)
        return z.view(n, -1, *z.shape[1:])

    def pattern(self) -> Tensor:
        """z [n, batch, P, H, d_head] from the patched attention pattern and the base values."""
        T = self.runs.base_tokens.shape[1]
        pattern = self.patched(f"blocks.{self.layer}.attn.hook_pattern")  # [n, b, H, P, T]
        v = self.base("attn.hook_v", torch.arange(T, device=pattern.device))
        v = v.repeat_interleave(self.lean.n_heads // v.shape[2], 2)
        return torch.einsum("nbhqk,bkhd->nbqhd", pattern, v)

    def resid(self) -> tuple[Tensor, int]:
        """(residual stream [n * batch, P, d_model] at the start of a layer, that layer): the
        patched layer's own input for resid_pre, else its output from the patch on."""
        lean, l, c = self.lean, self.layer, self.component
        w = lean.layers[l]
        hook = COMPONENTS[c][0].format(l=l)
        if c in ("resid_pre", "resid_post"):
            return self.patched(hook).flatten(0, 1), l + (c == "resid_post")
        pre = self.base("hook_resid_pre")
        z = self.attention() if c in ("q", "k", "v") else None
        z = self.pattern() if c == "pattern" else self.patched(hook) if c == "z" else z
        attn = self.patched(hook).sum(-2) + w.b_O if c == "result" else None
        if z is not None:
            attn = z.flatten(-2) @ w.W_O.flatten(0, 1) + w.b_O
        attn_out = self.patched(hook) if c == "attn_out" else None
        if attn is not None:
            attn_out = lean.post_norm(w.ln1_post, attn)
        mid = self.patched(hook) if c == "resid_mid" else None
        if c == "mlp_out":
            if lean.arch.parallel:  # pre + attn_out + mlp_out
                post = pre + self.base("hook_attn_out") + self.patched(hook)
            else:
                post = self.base("hook_resid_mid") + self.patched(hook)
        elif attn_out is not None and (lean.attn_only or lean.arch.parallel):
            post = pre + attn_out if lean.attn_only else pre + attn_out + self.base("hook_mlp_out")
        else:
            mid = pre + attn_out if attn_out is not None else mid
            assert mid is not None
            post = mid + lean.mlp_out(l, mid)
        return post.flatten(0, 1), l + 1

    def logits(self, logit_pos: list[int]) -> Tensor:
        """Logits [n * batch, len(logit_pos), vocab] of the patched runs at absolute positions."""
        resid, layer = self.resid()
        n, lean = len(self.reps), self.lean
        if layer == lean.n_layers:
            rows = [self.sel.tolist().index(p) for p in logit_pos]
            return lean.unembed(resid[:, rows]).to(lean.device)
        prefix = _prefix_kv(lean, self.runs, layer, self.start)
        return lean(
            self.runs.base_tokens.repeat(n, 1),
            start_layer=layer,
            resid=resid,
            logit_pos=logit_pos,
            start_pos=self.start,
            prefix_kv=None if prefix is None else [kv and _rep(kv, n) for kv in prefix],
        )


def _projected(
    lean: LeanModel, hook: str, rep: Replacement, memo: dict[tuple[str, int], Tensor]
) -> tuple[str, Replacement]:
    """A replacement of a per-head query / key / value input as one of the projection it feeds
    (hook_q / hook_k / hook_v): the source projected by that head's weights."""
    layer, x = _layer(hook), hook.rsplit("hook_", 1)[1][0]
    key = (hook, id(rep.source))
    if key not in memo:
        heads = torch.arange(rep.source.shape[2])
        memo[key] = lean.head_qkv(layer, rep.source, "qkv".index(x), heads)
    return f"blocks.{layer}.attn.hook_{x}", Replacement(rep.mask, memo[key], rep.layout)


@torch.no_grad()
def run_variants(
    lean: LeanModel,
    runs: Runs,
    variants: Sequence[Variant],
    metric: PatchMetric,
    memory_mb: float = 512.0,
) -> Tensor:
    """Mean metric over prompts of each patched run: [n_variants].

    A variant patching one component at one layer recomputes only what it can change: that
    layer from its first patched position on, with the patch applied to the stacked batch as a
    tensor operation, then the later layers from that position on (earlier positions keep the
    base run's keys and values; attention is causal). Those variants are grouped by (layer,
    first position, component), stacked along the batch (row v*B + b is prompt b of variant v)
    and run in chunks whose estimated activation memory stays under `memory_mb`. A variant whose
    source equals the base run wherever it patches, or that patches only positions after every
    logit the metric reads, changes nothing and gets the base run's metric. Other variants (several
    hooks, or hooks outside `COMPONENTS`) run hooked from their first layer.
    """
    batch, seq_len = runs.base_tokens.shape
    every = range(seq_len) if metric.positions is None else metric.positions
    logit_pos = [p % seq_len for p in every]
    prompt = torch.arange(batch)
    out = torch.empty(len(variants))
    fast: dict[tuple[int, int, str], list[int]] = defaultdict(list)
    hooked: dict[int, list[int]] = defaultdict(list)
    unchanged: list[int] = []
    differs: dict[tuple[str, int], Tensor] = {}
    for i, v in enumerate(variants):
        ((hook, rep),) = v.items() if len(v) == 1 else ((None, None),)
        component = None if hook is None else _component(hook)
        if component is None:
            hooked[min(_layer(h) for h in v)].append(i)
            continue
        assert rep is not None and hook is not None
        p = _first_pos(rep)
        if p > max(logit_pos) or not _changes(runs, hook, rep, differs):
            unchanged.append(i)
        else:
            fast[(_layer(hook), min(p, min(logit_pos)), component)].append(i)
    if unchanged:
        base = metric(lean(runs.base_tokens, logit_pos=metric.positions), prompt)
        out[unchanged] = base.mean().to(out.device)
    projections: dict[tuple[str, int], Tensor] = {}
    for (layer, start, component), idx in sorted(fast.items()):
        reps = []
        for i in idx:
            ((hook, rep),) = variants[i].items()
            if component.endswith("_input"):
                hook, rep = _projected(lean, hook, rep, projections)
            reps.append(rep)
        component = component.removesuffix("_input")
        dev = lean.layers[layer].device
        last = layer == lean.n_layers - 1 and component != "resid_pre"
        sel = torch.tensor(logit_pos if last else range(start, seq_len), device=dev)
        per_variant = batch * row_bytes(lean, seq_len - start, seq_len, len(logit_pos))
        chunk = max(1, int(memory_mb * 2**20 // per_variant))
        for at in range(0, len(idx), chunk):
            part = _Chunk(lean, runs, component, layer, start, reps[at : at + chunk], sel)
            logits = part.logits(logit_pos)
            values = metric(logits, prompt.repeat(len(part.reps)))
            out[idx[at : at + chunk]] = values.view(-1, batch).mean(1).to(out.device)
    for layer, idx in sorted(hooked.items()):
        per_variant = batch * row_bytes(lean, seq_len, seq_len, len(logit_pos))
        chunk = max(1, int(memory_mb * 2**20 // per_variant))
        resid0 = runs.base_cache[f"blocks.{layer}.hook_resid_pre"]
        for at in range(0, len(idx), chunk):
            ids = idx[at : at + chunk]
            part_v = [variants[i] for i in ids]
            hooks = {h: _stack_hook(part_v, h) for h in {h for v in part_v for h in v}}
            n = len(ids)
            logits = lean(
                runs.base_tokens.repeat(n, 1),
                hooks,
                start_layer=layer,
                resid=resid0.repeat(n, 1, 1),
                logit_pos=metric.positions,
            )
            values = metric(logits, prompt.repeat(n))
            out[ids] = values.view(n, batch).mean(1).to(out.device)
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
