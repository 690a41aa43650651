"""What an intervention changes: SAE and transcoder features, added and ablated directions.

Every intervention acts on one hook whose activations are [batch, pos, d] (the residual stream,
attention and MLP outputs, MLP neurons) at chosen positions:
    positions "all"      every position (prompt and generated tokens)
    positions "new"      only generated tokens (positions >= the prompt's length)
    positions (3, 7)     these absolute positions

    FeatureEdit      feature f of an SAE trained at the hook set to `value` ("clamp"), multiplied
                     by `value` ("scale") or set to 0 ("zero"), applied as a delta in activation
                     space: x + (new_code - code) * W_dec[f], so the SAE's reconstruction error
                     stays in the activations.
    TranscoderEdit   feature f of layer l's transcoder, edited the same three ways at the MLP's
                     output (blocks.l.hook_mlp_out): y + (new_code - code) * W_dec[f], the code
                     read from the MLP's input in this run (circuit-tracer's
                     `feature_intervention`), so the transcoder's error and its other features
                     stay in the MLP output.
    AddDirection     x + scale * direction (activation addition).
    AblateDirection  x - (x . u) u with u = direction / |direction| (projected out).

`hooks_for(interventions, start, prompt_len, lean)` turns a list into LeanModel hooks for a forward
of positions start.. (a KV-cached generation step runs only the newest position).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from mechscope.errors import SteeringError
from mechscope.models.lean import Hook, LeanModel
from mechscope.sae.model import SparseAutoencoder
from mechscope.sae.transcoder import Transcoder, check_transcoder_fits, mlp_input

Positions = Literal["all", "new"] | tuple[int, ...]
Op = Literal["clamp", "scale", "zero"]
_SHOWN = {"clamp": "= {v:g}", "scale": "x {v:g}", "zero": "= 0"}


def new_code(code: Tensor, op: Op, value: float) -> Tensor:
    """A feature's edited code [...] from its code [...]: `value` (clamp), code * value
    (scale) or 0 (zero)."""
    if op == "clamp":
        return torch.full_like(code, value)
    if op == "scale":
        return code * value
    return torch.zeros_like(code)


def parse_feature_op(spec: str) -> tuple[int, Op, float]:
    """(feature, op, value) of 'F=V' (clamp to V; 'F=0' zeroes) or 'F*S' (scale by S);
    ValueError else."""
    if "=" in spec:
        f, _, v = spec.partition("=")
        return int(f), "clamp", float(v)
    f, found, v = spec.partition("*")
    if not found:
        raise ValueError(f"{spec!r} is neither FEATURE=VALUE nor FEATURE*FACTOR")
    return int(f), "scale", float(v)


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
    op: Op = "clamp"
    value: float = 0.0
    positions: Positions = "all"

    def describe(self) -> str:
        return f"feature {self.feature} {_SHOWN[self.op].format(v=self.value)} @ {self.hook}"

    def delta(self, x: Tensor) -> Tensor:
        """The change [batch, pos, d] this edit makes to activations x [batch, pos, d]."""
        return _decoder_delta(self.sae, self.feature, self.op, self.value, x, x)


@dataclass
class TranscoderEdit:
    """Clamp, scale or zero feature `feature` of `transcoder` at its MLP's output (see the
    module docstring); `hook` is that output, `reads` the MLP input the code is read from."""

    transcoder: Transcoder
    feature: int
    op: Op = "clamp"
    value: float = 0.0
    positions: Positions = "all"

    @property
    def layer(self) -> int:
        return self.transcoder.layer

    @property
    def hook(self) -> str:
        return self.transcoder.output_hook

    @property
    def reads(self) -> str:
        return f"blocks.{self.layer}.hook_mlp_in"

    def describe(self) -> str:
        what = _SHOWN[self.op].format(v=self.value)
        return f"transcoder feature {self.feature} of layer {self.layer} {what} @ {self.hook}"

    def delta(self, y: Tensor, x: Tensor) -> Tensor:
        """The change [batch, pos, d] to MLP outputs y [batch, pos, d] of MLP inputs x
        [batch, pos, d] (what the transcoder reads: the norm applied to hook_mlp_in)."""
        return _decoder_delta(self.transcoder, self.feature, self.op, self.value, x, y)


def _decoder_delta(
    sae: SparseAutoencoder, feature: int, op: Op, value: float, x: Tensor, out: Tensor
) -> Tensor:
    """(new_code - code) * W_dec[feature] [batch, pos, d], the code read from x, on out's
    device and dtype (a split model's block may sit on another device than the SAE)."""
    code = sae.encode(x.to(sae.W_enc.device))[..., feature]
    delta = (new_code(code, op, value) - code).unsqueeze(-1) * sae.W_dec[feature]
    return delta.to(out.device, out.dtype)


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


Intervention = FeatureEdit | TranscoderEdit | AddDirection | AblateDirection


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
    [batch, pos, d], an SAE or direction of width d (an SAE trained at that hook, a transcoder
    of one of the model's MLPs), a feature index below d_sae, explicit positions in
    [0, n_ctx)."""
    shapes = hook_shapes(lean)
    for iv in interventions:
        if isinstance(iv, TranscoderEdit):
            try:  # the layer exists and has an MLP of the transcoder's width
                check_transcoder_fits(lean, iv.transcoder)
            except ValueError as e:
                raise SteeringError(f"{iv.describe()}: {e}") from None
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
        if isinstance(iv, TranscoderEdit):
            _check_feature(iv.feature, iv.transcoder.d_sae, "transcoder")
        elif isinstance(iv, FeatureEdit):
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
            _check_feature(iv.feature, iv.sae.d_sae, "SAE")
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


def _check_feature(feature: int, d_sae: int, what: str) -> None:
    if not 0 <= feature < d_sae:
        raise SteeringError(
            f"feature index {feature} out of range: the {what} has d_sae={d_sae} features "
            f"(0..{d_sae - 1})"
        )


def hooks_for(
    interventions: Sequence[Intervention],
    start: int,
    prompt_len: int,
    lean: LeanModel | None = None,
) -> dict[str, Hook]:
    """LeanModel hooks applying `interventions` (in order, at each hook) to a forward of the
    absolute positions start.. of a sequence whose prompt has `prompt_len` tokens. Transcoder
    edits need `lean` (its norms give the MLP input they read; recorded at hook_mlp_in after
    any edit there)."""
    by_hook: dict[str, list[Intervention]] = {}
    for iv in interventions:
        by_hook.setdefault(iv.hook, []).append(iv)
    reads = {iv.reads: iv.layer for iv in interventions if isinstance(iv, TranscoderEdit)}
    if reads and lean is None:
        raise SteeringError("transcoder edits need the model: hooks_for(..., lean=model)")
    seen: dict[str, Tensor] = {}

    def make(ivs: list[Intervention]) -> Hook:
        def hook(x: Tensor) -> Tensor:
            for iv in ivs:
                mask = _mask(iv.positions, start, x.shape[1], prompt_len).to(x.device)
                if not bool(mask.any()):
                    continue
                if isinstance(iv, TranscoderEdit):
                    assert lean is not None
                    delta = iv.delta(x, mlp_input(lean, iv.layer, seen[iv.reads]))
                else:
                    delta = iv.delta(x)
                x = x + delta * mask[:, None].to(x.dtype)
            return x

        return hook

    return recording({name: make(ivs) for name, ivs in by_hook.items()}, reads, seen)


def recording(
    hooks: dict[str, Hook], names: Iterable[str], store: dict[str, Tensor]
) -> dict[str, Hook]:
    """`hooks` with each of `names` also recording into `store` what the hook passes on (the
    hook's output where it has one there, else its input)."""
    out = dict(hooks)
    for name in names:
        inner = hooks.get(name)

        def record(x: Tensor, name: str = name, inner: Hook | None = inner) -> Tensor:
            r = inner(x) if inner is not None else None
            store[name] = x if r is None else r
            return store[name]

        out[name] = record
    return out


def on_device(interventions: Sequence[Intervention], device: Any) -> list[Intervention]:
    """The interventions with their SAEs, transcoders and directions moved to `device` (SAEs
    and transcoders in place)."""
    out: list[Intervention] = []
    for iv in interventions:
        if isinstance(iv, FeatureEdit):
            iv.sae.to(device)
            out.append(iv)
        elif isinstance(iv, TranscoderEdit):
            iv.transcoder.to(device)
            out.append(iv)
        elif isinstance(iv, AddDirection):
            out.append(AddDirection(iv.hook, iv.direction.to(device), iv.scale, iv.positions))
        else:
            out.append(AblateDirection(iv.hook, iv.direction.to(device), iv.positions))
    return out
