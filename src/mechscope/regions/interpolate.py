"""Interpolation between residual-stream activations, and the model's output along the path.

The experiment of Janiak et al. (2024), as their code runs it:
1. Run prompts A and B; read their residuals `a`, `b` at the write site (default: after the first
   block, `blocks.0.hook_resid_post`) at the last position.
2. For alpha_k = k / (S - 1), k = 0 .. S-1, run A's context with the last position's residual at
   the write site replaced by x(alpha_k) (a linear path, or the arc / slerp variants below), every
   other position keeping A's own activations.
3. Record the output along the path: d(alpha) = ||y(alpha) - y_A||_2, y = the final-norm output
   (`ln_final.hook_normalized`) at the last position and y_A its value in A's clean run; also
   KL(P_A || P_alpha) of the next-token distribution, the KL between neighbouring steps, the top-1
   token, and the MLP activation patterns (sign of `blocks.{l}.mlp.hook_pre`) of every later block.

Runs go through `LeanModel` (the shared fast forward, started at the block after the write site) for
architectures it covers, and through the TransformerBridge's hooks otherwise (hub models such as
Pythia or OLMo); tests hold the two equal on the bundled models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from mechscope.errors import RegionsError
from mechscope.models.lean import LeanModel, as_lean, lean_supports
from mechscope.progress import progress_bar

PathKind = Literal["linear", "arc", "slerp"]
Read = Literal["normalized", "logits"]
Backend = Literal["auto", "lean", "bridge"]
PATHS: tuple[str, ...] = ("linear", "arc", "slerp")


# -- paths ---------------------------------------------------------------------------------------
def linear_path(a: Tensor, b: Tensor, alphas: Tensor) -> Tensor:
    """x(alpha) = (1 - alpha) a + alpha b: points [m, S, d] from a, b [m, d] and alphas [S]."""
    al = alphas.to(a.dtype).view(1, -1, 1)
    return (1 - al) * a.unsqueeze(1) + al * b.unsqueeze(1)


def arc_path(a: Tensor, b: Tensor, alphas: Tensor, mu: Tensor) -> Tensor:
    """The linear path pushed out to a's distance from mu [d] (the authors' `arc` control).

    p(alpha) = mu + (x(alpha) - mu) ||a - mu|| / ||x(alpha) - mu||: [m, S, d]. Its far end is b's
    direction from mu at a's distance, so it equals b only when ||b - mu|| = ||a - mu||.
    """
    x = linear_path(a, b, alphas) - mu
    radius = (a - mu).norm(dim=-1).view(-1, 1, 1)
    return mu + x * radius / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def slerp_path(a: Tensor, b: Tensor, alphas: Tensor) -> Tensor:
    """Spherical interpolation of the direction with a linearly interpolated norm: [m, S, d].

    As Shinkle & Heimersheim's `slerp_rescale`: the angle moves uniformly in alpha and the norm
    goes from ||a|| to ||b|| linearly. Parallel endpoints fall back to the linear path.
    """
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    omega = (ua * ub).sum(-1).clamp(-1.0, 1.0).acos().view(-1, 1, 1)  # [m, 1, 1]
    al = alphas.to(a.dtype).view(1, -1, 1)
    sin = omega.sin()
    safe = sin.abs() > 1e-6
    wa = torch.where(safe, ((1 - al) * omega).sin() / sin.where(safe, 1.0), 1 - al)
    wb = torch.where(safe, (al * omega).sin() / sin.where(safe, 1.0), al)
    direction = wa * ua.unsqueeze(1) + wb * ub.unsqueeze(1)
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    norm = (1 - al) * na.unsqueeze(1) + al * nb.unsqueeze(1)
    return direction * norm


def path_points(
    kind: str, a: Tensor, b: Tensor, alphas: Tensor, mu: Tensor | None = None
) -> Tensor:
    """Points [m, S, d] of path `kind` ("linear", "arc" or "slerp") from a to b [m, d]."""
    if a.shape != b.shape or a.ndim != 2:
        raise RegionsError(
            f"a and b must both be [m, d_model], got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if kind == "linear":
        return linear_path(a, b, alphas)
    if kind == "arc":
        if mu is None:
            raise RegionsError("the arc path needs mu, the mean activation at the write site [d]")
        return arc_path(a, b, alphas, mu)
    if kind == "slerp":
        return slerp_path(a, b, alphas)
    raise RegionsError(f"unknown path {kind!r}; use one of {', '.join(PATHS)}")


# -- running the rest of the model ---------------------------------------------------------------
@dataclass
class StepOutput:
    """The model's output at a batch of path points (B rows)."""

    read: Tensor  # [B, d_read]: final-norm output (or logits) at the last position
    logprobs: Tensor  # [B, vocab]: next-token log-probabilities at the last position
    patterns: Tensor | None  # [B, n_gate_layers, d_mlp] bool: mlp.hook_pre > 0, or None


class PathRunner:
    """Runs a model from a residual written at one site, for a fixed set of context prompts.

    model: a TransformerBridge (from `mechscope.load_model`) or a `LeanModel`.
    tokens: the context prompts [n, T]; their clean runs are computed once here.
    layer: write after block `layer` (`blocks.{layer}.hook_resid_post`); -1 writes the embedding
        output (`blocks.0.hook_resid_pre`).
    read: "normalized" (the paper's output: `ln_final.hook_normalized`; compatibility mode folds
        the final norm's gain into the unembedding) or "logits".
    backend: "lean" (fast, GPT-2-style models), "bridge" (any model the bridge loads) or "auto".
    """

    def __init__(
        self,
        model: Any,
        tokens: Tensor,
        layer: int = 0,
        read: Read = "normalized",
        backend: Backend = "auto",
    ) -> None:
        cfg = model.cfg
        self.n_layers = int(cfg.n_layers)
        if not -1 <= layer < self.n_layers:
            raise RegionsError(
                f"layer {layer} is outside the model's blocks: use -1 (embedding output) to "
                f"{self.n_layers - 1} (after the last block); the paper's default is 0"
            )
        if read not in ("normalized", "logits"):
            raise RegionsError(f"read must be 'normalized' or 'logits', not {read!r}")
        if tokens.ndim != 2:
            raise RegionsError(f"tokens must be [n_prompts, pos], got {tuple(tokens.shape)}")
        if backend == "auto":
            backend = "lean" if lean_supports(model) else "bridge"
        if backend == "bridge" and isinstance(model, LeanModel):
            raise RegionsError("backend 'bridge' needs a TransformerBridge, not a LeanModel")
        if backend not in ("lean", "bridge"):
            raise RegionsError(f"backend must be 'auto', 'lean' or 'bridge', not {backend!r}")
        self.backend = backend
        self.layer, self.read, self.tokens = layer, read, tokens
        self.model = model
        self.lean: LeanModel | None = None
        if backend == "lean":
            self.lean = as_lean(model)
        attn_only = bool(getattr(cfg, "attn_only", False))
        self.gate_layers: list[int] = [] if attn_only else list(range(layer + 1, self.n_layers))
        self.site = "blocks.0.hook_resid_pre" if layer < 0 else f"blocks.{layer}.hook_resid_post"
        with torch.no_grad():
            self.context, self.clean_write, clean = self._clean(tokens)
        self.clean = clean

    # clean runs -------------------------------------------------------------------------------
    def _clean(self, tokens: Tensor) -> tuple[Tensor | None, Tensor, StepOutput]:
        """(start-site residual [n, T, d] (lean backend), write-site value [n, d], outputs)."""
        if self.lean is not None:
            cache: dict[str, Tensor] = {}
            self.lean.forward(tokens, cache=cache)
            start = self.layer + 1
            name = (
                f"blocks.{start}.hook_resid_pre"
                if start < self.n_layers
                else f"blocks.{self.n_layers - 1}.hook_resid_post"
            )
            context = cache[name]
            return context, context[:, -1].clone(), self._lean_outputs(tokens, context)
        store: dict[str, Tensor] = {}

        def keep(x: Tensor, hook: Any = None) -> None:
            store["write"] = x[:, -1].detach().clone()

        out = self._bridge_outputs(tokens, [(self.site, keep)])
        return None, store["write"], out

    # outputs at path points -------------------------------------------------------------------
    def _capture(self) -> tuple[dict[str, Tensor], dict[str, Callable[..., None]]]:
        store: dict[str, Tensor] = {}

        def grab(name: str) -> Callable[..., None]:
            def f(x: Tensor, hook: Any = None) -> None:
                store[name] = x[:, -1]

            return f

        names = [f"blocks.{l}.mlp.hook_pre" for l in self.gate_layers]
        if self.read == "normalized":
            names.append("ln_final.hook_normalized")
        return store, {n: grab(n) for n in names}

    def _assemble(self, store: dict[str, Tensor], logits: Tensor) -> StepOutput:
        patterns = None
        if self.gate_layers:
            pre = [store[f"blocks.{l}.mlp.hook_pre"] for l in self.gate_layers]
            patterns = torch.stack(pre, 1) > 0
        read = store["ln_final.hook_normalized"] if self.read == "normalized" else logits
        return StepOutput(read.float(), logits.float().log_softmax(-1), patterns)

    def _lean_outputs(self, tokens: Tensor, resid: Tensor) -> StepOutput:
        assert self.lean is not None
        store, hooks = self._capture()
        logits = self.lean.forward(
            tokens, hooks, start_layer=self.layer + 1, resid=resid, logit_pos=(-1,)
        )[:, -1]
        return self._assemble(store, logits)

    def _bridge_outputs(self, tokens: Tensor, extra: list[tuple[str, Any]]) -> StepOutput:
        store, hooks = self._capture()
        missing = [n for n in [*hooks, self.site] if n not in self.model.hook_dict]
        if missing:
            raise RegionsError(
                f"the model has no hooks {missing}; use read='logits' for models without "
                "ln_final.hook_normalized, or a layer whose write site exists"
            )
        logits = self.model.run_with_hooks(tokens, fwd_hooks=[*extra, *hooks.items()])[:, -1]
        return self._assemble(store, logits)

    def run(self, ctx: Tensor, points: Tensor) -> StepOutput:
        """Outputs for context prompts ctx [B] (indices into tokens) with points [B, d] written."""
        tokens = self.tokens[ctx]
        points = points.to(self.clean_write.dtype)
        with torch.no_grad():
            if self.lean is not None:
                assert self.context is not None
                resid = self.context[ctx].clone()
                resid[:, -1] = points
                return self._lean_outputs(tokens, resid)

            def write(x: Tensor, hook: Any = None) -> Tensor:
                x = x.clone()
                x[:, -1] = points
                return x

            return self._bridge_outputs(tokens, [(self.site, write)])


# -- the interpolation experiment ---------------------------------------------------------------
@dataclass
class PathCurves:
    """The output along m interpolation paths of S steps each.

    alphas [S]; dist [m, S]: ||y(alpha) - y(0)||_2 at the read site (the paper's d(alpha): y(0)
    is A's clean output y_A); kl [m, S]: KL(P_0 || P_alpha) of the next token;
    step_kl [m, S-1]: KL(P_alpha_k || P_alpha_k+1) between neighbouring steps;
    top1 [m, S]: the argmax next token;
    flips [m, S-1, L]: MLP activation-pattern bits (sign of `mlp.hook_pre`) that change between
    neighbouring steps, per later block (`gate_layers`); mismatch [m, L]: pattern bits that differ
    between the path's two ends; input_dist [m]: ||x(1) - x(0)||; ctx [m]: the context prompt of
    each path; target [m]: the prompt whose activation is the far end (-1 if none).
    """

    alphas: Tensor
    dist: Tensor
    kl: Tensor
    step_kl: Tensor
    top1: Tensor
    input_dist: Tensor
    ctx: Tensor
    target: Tensor
    flips: Tensor | None = None
    mismatch: Tensor | None = None
    gate_layers: list[int] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return int(self.alphas.numel())

    def tensors(self) -> dict[str, Tensor]:
        """The tensors by name (for safetensors)."""
        out = {
            k: getattr(self, k)
            for k in ("alphas", "dist", "kl", "step_kl", "top1", "input_dist", "ctx", "target")
        }
        if self.flips is not None and self.mismatch is not None:
            out.update(flips=self.flips, mismatch=self.mismatch)
        return out


def interpolate(
    runner: PathRunner,
    ctx: Tensor,
    a: Tensor,
    b: Tensor,
    n_steps: int = 31,
    path: str = "linear",
    mu: Tensor | None = None,
    target: Tensor | None = None,
    batch_size: int = 2048,
    progress: bool = False,
) -> PathCurves:
    """Run the model along paths from a [m, d] to b [m, d] in contexts ctx [m]; see `PathCurves`.

    The reference output y_A is the output at alpha = 0, which is the context prompt's clean run
    when a is its own activation (as in `interpolate_pairs`). Batched: rows of `batch_size` path
    points (whole paths, at least one per batch) run at once.
    """
    if n_steps < 2:
        raise RegionsError(f"n_steps must be at least 2 (the two ends), got {n_steps}")
    m = int(ctx.numel())
    if a.shape != (m, runner.clean_write.shape[-1]) or b.shape != a.shape:
        raise RegionsError(
            f"a {tuple(a.shape)} and b {tuple(b.shape)} must be [m={m}, d_model="
            f"{runner.clean_write.shape[-1]}], one row per context prompt"
        )
    alphas = torch.linspace(0, 1, n_steps)
    points = path_points(path, a, b, alphas, mu)  # [m, S, d]
    per = max(1, batch_size // n_steps)
    dist, kl, step_kl, top1, flips, mismatch = [], [], [], [], [], []
    with progress_bar(progress) as bar:
        task = bar.add_task(f"interpolating ({path})", total=m)
        for lo in range(0, m, per):
            idx = torch.arange(lo, min(m, lo + per))
            k = int(idx.numel())
            rows = ctx[idx].repeat_interleave(n_steps)
            out = runner.run(rows, points[idx].reshape(k * n_steps, -1))
            y = out.read.view(k, n_steps, -1)
            lp = out.logprobs.view(k, n_steps, -1)
            ref_lp = lp[:, :1]
            dist.append((y - y[:, :1]).norm(dim=-1))
            kl.append((ref_lp.exp() * (ref_lp - lp)).sum(-1))
            step_kl.append((lp[:, :-1].exp() * (lp[:, :-1] - lp[:, 1:])).sum(-1))
            top1.append(lp.argmax(-1))
            if out.patterns is not None:
                pat = out.patterns.view(k, n_steps, *out.patterns.shape[1:])
                flips.append((pat[:, 1:] != pat[:, :-1]).sum(-1))
                mismatch.append((pat[:, -1] != pat[:, 0]).sum(-1))
            bar.advance(task, k)
    return PathCurves(
        alphas=alphas,
        dist=torch.cat(dist),
        kl=torch.cat(kl).clamp_min(0.0),
        step_kl=torch.cat(step_kl).clamp_min(0.0),
        top1=torch.cat(top1),
        input_dist=(b - a).norm(dim=-1).float(),
        ctx=ctx.clone(),
        target=target.clone() if target is not None else torch.full((m,), -1),
        flips=torch.cat(flips) if flips else None,
        mismatch=torch.cat(mismatch) if mismatch else None,
        gate_layers=list(runner.gate_layers),
        meta={"path": path, "layer": runner.layer, "read": runner.read, "site": runner.site},
    )


def interpolate_pairs(
    runner: PathRunner,
    first: Tensor,
    second: Tensor,
    n_steps: int = 31,
    path: str = "linear",
    batch_size: int = 2048,
    progress: bool = False,
) -> PathCurves:
    """Paths from prompt first[i]'s write-site activation to prompt second[i]'s, in first[i]'s
    context (indices [m] into the runner's prompts). For "arc", mu is the mean over all prompts."""
    mu = runner.clean_write.mean(0) if path == "arc" else None
    w = runner.clean_write
    return interpolate(
        runner, first, w[first], w[second], n_steps, path, mu, second, batch_size, progress
    )
