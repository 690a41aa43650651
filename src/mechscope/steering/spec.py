"""What an intervention changes: SAE features, added directions and ablated directions at a hook.

Every intervention acts on one hook whose activations are [batch, pos, d] (the residual stream,
attention and MLP outputs, MLP neurons) at chosen positions:
    positions "all"      every position (prompt and generated tokens)
    positions "new"      only generated tokens (positions >= the prompt's length)
    positions (3, 7)     these absolute positions

    FeatureEdit      feature f of an SAE trained at the hook set to `value` ("clamp"), multiplied
                     by `value` ("scale") or set to 0 ("zero"), applied as a delta in activation
                     space: x + (new_code - code) * W_dec[f], so the SAE's reconstruction error
                     stays in the activations.
    AddDirection     x + scale * direction (activation addition).
    AblateDirection  x - (x . u) u with u = direction / |direction| (projected out).

`hooks_for(interventions, start, prompt_len)` turns a list into LeanModel hooks for a forward of
positions start.. (a KV-cached generation step runs only the newest position).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from mechscope.errors import SteeringError
from mechscope.models.lean import Hook, LeanModel
from mechscope.sae.model import SparseAutoencoder

Positions = Literal["all", "new"] | tuple[int, ...]


def _mask(positions: Positions, start: int, n: int, prompt_len: int) -> Tensor:
    """Which of the absolute positions start..start+n-1 are edited [n] (bool)."""
    at = torch.arange(start, start + n)
    if positions == "all":
        return torch.ones(n, dtype=torch.bool)
    if positions == "new":
        return at >= prompt_len
    return torch.isin(at, torch.tensor(list(positions), dtype=torch.long))


@dataclass
class FeatureEdit:
    """Clamp, scale or zero feature `feature` of `sae` at `hook` (see the module docstring)."""

    hook: str
    sae: SparseAutoencoder
    feature: int
    op: Literal["clamp", "scale", "zero"] = "clamp"
    value: float = 0.0
    positions: Positions = "all"

    def describe(self) -> str:
        what = {"clamp": f"= {self.value:g}", "scale": f"x {self.value:g}", "zero": "= 0"}
        return f"feature {self.feature} {what[self.op]} @ {self.hook}"

    def delta(self, x: Tensor) -> Tensor:
        """The change [batch, pos, d] this edit makes to activations x [batch, pos, d]."""
        # a split model's block may sit on another device than the SAE
        code = self.sae.encode(x.to(self.sae.W_enc.device))[..., self.feature]
        if self.op == "clamp":
            new = torch.full_like(code, self.value)
        elif self.op == "scale":
            new = code * self.value
        else:
            new = torch.zeros_like(code)
        delta = (new - code).unsqueeze(-1) * self.sae.W_dec[self.feature]
        return delta.to(x.device, x.dtype)


@dataclass
class AddDirection:
    """Add `scale * direction` [d] to the activations at `hook` (activation addition)."""

    hook: str
    direction: Tensor
    scale: float = 1.0
    positions: Positions = "all"

    def describe(self) -> str:
        norm = float(self.direction.norm())
        return f"add {self.scale:g} x direction (norm {norm:.3g}) @ {self.hook}"

    def delta(self, x: Tensor) -> Tensor:
        return (self.scale * self.direction).to(x.device, x.dtype).expand_as(x)


@dataclass
class AblateDirection:
    """Project `direction` [d] out of the activations at `hook`."""

    hook: str
    direction: Tensor
    positions: Positions = "all"

    def describe(self) -> str:
        return f"ablate direction @ {self.hook}"

    def delta(self, x: Tensor) -> Tensor:
        u = self.direction.to(x.device, x.dtype)
        u = u / u.norm().clamp_min(1e-12)
        return -(x @ u).unsqueeze(-1) * u


Intervention = FeatureEdit | AddDirection | AblateDirection


def hook_shapes(lean: LeanModel) -> dict[str, tuple[int, ...]]:
    """Hook name -> activation shape of a one-token forward (batch and pos are 1)."""
    one = torch.zeros(1, 1, dtype=torch.long, device=lean.device)
    with torch.no_grad():
        _, cache = lean.run_with_cache(one)
    return {k: tuple(v.shape) for k, v in cache.items()}


def check_interventions(
    lean: LeanModel, interventions: Sequence[Intervention], n_ctx: int | None = None
) -> None:
    """SteeringError unless every intervention fits the model: a hook it fires with activations
    [batch, pos, d], an SAE or direction of width d (an SAE trained at that hook), a feature
    index below d_sae, explicit positions in [0, n_ctx)."""
    shapes = hook_shapes(lean)
    for iv in interventions:
        if iv.hook not in shapes:
            raise SteeringError(
                f"{iv.describe()}: the model has no hook {iv.hook!r}; its hooks are like "
                f"{list(shapes)[:4]} ... (LeanModel.hook_names(), {len(shapes)} in all)"
            )
        shape = shapes[iv.hook]
        if len(shape) != 3:
            raise SteeringError(
                f"{iv.describe()}: hook {iv.hook!r} has activations of shape [batch, pos, ...] "
                f"{list(shape)}; interventions act on [batch, pos, d] hooks (resid_pre/mid/post, "
                "attn_out, mlp_out, mlp.hook_post, ...)"
            )
        d = shape[-1]
        if isinstance(iv, FeatureEdit):
            trained = iv.sae.cfg.hook_name
            if trained and trained != iv.hook:
                raise SteeringError(
                    f"{iv.describe()}: the SAE was trained at {trained!r}, not at {iv.hook!r}"
                )
            if iv.sae.d_in != d:
                raise SteeringError(
                    f"{iv.describe()}: the SAE's d_in is {iv.sae.d_in} but {iv.hook!r} has "
                    f"width {d}: the SAE does not belong to this model"
                )
            if not 0 <= iv.feature < iv.sae.d_sae:
                raise SteeringError(
                    f"feature index {iv.feature} out of range: the SAE has d_sae={iv.sae.d_sae} "
                    f"features (0..{iv.sae.d_sae - 1})"
                )
        elif iv.direction.shape != (d,):
            raise SteeringError(
                f"{iv.describe()}: the direction has shape {list(iv.direction.shape)} but "
                f"{iv.hook!r} has width {d}: give a vector of {d} numbers"
            )
        if isinstance(iv.positions, tuple):
            bad = [p for p in iv.positions if p < 0 or (n_ctx is not None and p >= n_ctx)]
            if bad:
                raise SteeringError(
                    f"{iv.describe()}: positions {bad} lie outside the context [0, {n_ctx})"
                )
        elif iv.positions not in ("all", "new"):
            raise SteeringError(
                f"positions must be 'all', 'new' or a tuple of positions, got {iv.positions!r}"
            )


def hooks_for(
    interventions: Sequence[Intervention], start: int, prompt_len: int
) -> dict[str, Hook]:
    """LeanModel hooks applying `interventions` (in order, at each hook) to a forward of the
    absolute positions start.. of a sequence whose prompt has `prompt_len` tokens."""
    by_hook: dict[str, list[Intervention]] = {}
    for iv in interventions:
        by_hook.setdefault(iv.hook, []).append(iv)

    def make(ivs: list[Intervention]) -> Hook:
        def hook(x: Tensor) -> Tensor:
            for iv in ivs:
                mask = _mask(iv.positions, start, x.shape[1], prompt_len).to(x.device)
                if bool(mask.any()):
                    x = x + iv.delta(x) * mask[:, None].to(x.dtype)
            return x

        return hook

    return {name: make(ivs) for name, ivs in by_hook.items()}


def on_device(interventions: Sequence[Intervention], device: Any) -> list[Intervention]:
    """The interventions with their SAEs and directions moved to `device` (SAEs in place)."""
    out: list[Intervention] = []
    for iv in interventions:
        if isinstance(iv, FeatureEdit):
            iv.sae.to(device)
            out.append(iv)
        elif isinstance(iv, AddDirection):
            out.append(AddDirection(iv.hook, iv.direction.to(device), iv.scale, iv.positions))
        else:
            out.append(AblateDirection(iv.hook, iv.direction.to(device), iv.positions))
    return out
