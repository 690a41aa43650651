"""Steering during generation: feature clamping, activation addition and directional ablation
applied at every position (prompt and generated tokens), with a key/value cache.

    AddDirection(hook, direction [d], scale)   x + scale * direction
    AblateDirection(hook, direction [d])       x - (x . u) u,  u = direction / |direction|
    ClampFeature(sae, feature, value)          x + (value - a) W_dec[f], a = the feature's
        activation on x (an SAE at its hook; a transcoder at its layer's MLP output, a read
        from the MLP input)

`generate` runs the prompt once, then one position per new token, reusing each layer's keys and
values (`LeanModel.key_hook`, `attn.hook_v`); the steering hooks see the new positions only, which
gives the same tokens as re-running the whole sequence with the hooks each step (tested).
Greedy (temperature 0) or sampled with a seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import GraphError
from mechscope.models.lean import Hook, LeanModel, as_lean
from mechscope.sae.model import SparseAutoencoder
from mechscope.sae.transcoder import Transcoder, mlp_input


@dataclass
class AddDirection:
    """Add scale * direction [d] to the activations at `hook`."""

    hook: str
    direction: Tensor
    scale: float = 1.0


@dataclass
class AblateDirection:
    """Project the direction [d] out of the activations at `hook`."""

    hook: str
    direction: Tensor


@dataclass
class ClampFeature:
    """Hold feature `feature` of an SAE (at its hook) or transcoder (at its MLP output) at
    `value`."""

    sae: SparseAutoencoder
    feature: int
    value: float


Steer = AddDirection | AblateDirection | ClampFeature


def steering_hooks(lean: LeanModel, steers: Sequence[Steer]) -> dict[str, list[Hook]]:
    """Per hook name, the functions to apply in order (each returns the new activation);
    GraphError for a hook the model lacks, a direction of the wrong width or a feature index
    out of range."""
    names = set(lean.hook_names()) - {"ln_final.hook_normalized"}
    out: dict[str, list[Hook]] = {}

    def add(name: str, fn: Hook) -> None:
        if name not in names:
            raise GraphError(
                f"the model has no steerable hook {name!r}; hooks are like "
                f"{sorted(names)[:3]} (LeanModel.hook_names())"
            )
        out.setdefault(name, []).append(fn)

    for s in steers:
        if isinstance(s, ClampFeature):
            if not 0 <= s.feature < s.sae.d_sae:
                raise GraphError(f"feature {s.feature} out of range (d_sae = {s.sae.d_sae})")
            _clamp(lean, s, add)
            continue
        u = s.direction.to(lean.device, lean.W_E.dtype).flatten()
        width = _width(lean, s.hook)
        if width is not None and u.shape[0] != width:
            raise GraphError(f"direction of width {u.shape[0]} for {s.hook} (width {width})")
        add(s.hook, _adder(u, s.scale) if isinstance(s, AddDirection) else _ablator(u))
    return out


def _width(lean: LeanModel, hook: str) -> int | None:
    """Last-dimension width of `hook` (None for a hook the model lacks)."""
    cache: dict[str, Tensor] = {}
    with torch.no_grad():
        lean.forward(torch.zeros(1, 1, dtype=torch.long, device=lean.device), cache=cache)
    return int(cache[hook].shape[-1]) if hook in cache else None


def _adder(u: Tensor, scale: float) -> Hook:
    def hook(x: Tensor) -> Tensor:
        return x + scale * u.to(x)

    return hook


def _ablator(direction: Tensor) -> Hook:
    unit = direction / direction.norm().clamp_min(1e-12)

    def hook(x: Tensor) -> Tensor:
        v = unit.to(x)
        return x - (x @ v)[..., None] * v

    return hook


def _clamp(lean: LeanModel, s: ClampFeature, add: Callable[[str, Hook], None]) -> None:
    sae, f, v = s.sae, s.feature, s.value
    if isinstance(sae, Transcoder):
        seen: dict[str, Tensor] = {}

        def grab(x: Tensor) -> Tensor:
            seen["x"] = x
            return x

        def set_tc(y: Tensor) -> Tensor:
            a = sae.encode(mlp_input(lean, sae.layer, seen["x"]))[..., f]
            return y + (v - a)[..., None].to(y) * sae.W_dec[f].to(y)

        add(f"blocks.{sae.layer}.hook_mlp_in", grab)
        add(sae.output_hook, set_tc)
        return

    def set_sae(x: Tensor) -> Tensor:
        a = sae.encode(x)[..., f]
        return x + (v - a)[..., None].to(x) * sae.W_dec[f].to(x)

    add(sae.cfg.hook_name, set_sae)


def _step(
    lean: LeanModel,
    tokens: Tensor,
    start_pos: int,
    prefix_kv: list[tuple[Tensor, Tensor]] | None,
    hooks: dict[str, list[Hook]],
) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """(last-position logits [batch, vocab], every layer's keys and values [batch, pos, K,
    d_head] up to here) of new tokens [batch, m] at positions start_pos.. given the earlier
    keys and values."""
    new_kv: dict[str, Tensor] = {}
    kv_names = {lean.key_hook(l) for l in range(lean.n_layers)}
    kv_names |= {f"blocks.{l}.attn.hook_v" for l in range(lean.n_layers)}

    def h(name: str, x: Tensor) -> Tensor:
        for fn in hooks.get(name, ()):
            r = fn(x)
            x = x if r is None else r
        if name in kv_names:
            new_kv[name] = x
        return x

    m = tokens.shape[1]
    resid = h("hook_embed", lean.W_E[tokens] * lean.arch.embed_scale)
    if lean.W_pos is not None:
        pos = lean.W_pos[start_pos : start_pos + m].expand_as(resid)
        resid = resid + h("hook_pos_embed", pos)
    wanted: dict[str, Hook] = {name: fns[0] for name, fns in hooks.items()}  # names only
    for l in range(lean.n_layers):
        resid = lean._block(l, resid, h, wanted, None, start_pos, prefix_kv, None)
    kv = []
    for l in range(lean.n_layers):
        k, v = new_kv[lean.key_hook(l)], new_kv[f"blocks.{l}.attn.hook_v"]
        if prefix_kv is not None:
            k, v = torch.cat([prefix_kv[l][0], k], 1), torch.cat([prefix_kv[l][1], v], 1)
        kv.append((k, v))
    return lean.unembed(resid[:, -1]), kv


@torch.no_grad()
def generate(
    model: Any,
    tokens: Tensor,
    n_new: int,
    steers: Sequence[Steer] = (),
    temperature: float = 0.0,
    seed: int = 0,
) -> Tensor:
    """tokens [pos] followed by n_new generated tokens: [pos + n_new], with `steers` applied at
    every position; greedy at temperature 0, else sampled (seeded)."""
    lean = as_lean(model)
    n_ctx = int(getattr(lean.cfg, "n_ctx", 10**9))
    if tokens.ndim != 1 or tokens.shape[0] + n_new > n_ctx:
        raise GraphError(
            f"prompt of {tokens.shape[-1]} tokens + {n_new} new exceeds the context of {n_ctx}"
        )
    hooks = steering_hooks(lean, steers)
    g = torch.Generator(device=lean.device).manual_seed(seed)
    seq = tokens.to(lean.device)[None]
    logits, kv = _step(lean, seq, 0, None, hooks)
    for _ in range(n_new):
        if temperature > 0:
            probs = (logits.float() / temperature).softmax(-1)
            nxt = torch.multinomial(probs, 1, generator=g)
        else:
            nxt = logits.argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
        if seq.shape[1] == tokens.shape[0] + n_new:
            break
        logits, kv = _step(lean, nxt, seq.shape[1] - 1, kv, hooks)
    return seq[0].cpu()
