"""The perturbation engine: x -> x + L * d at one hook, KL(P_orig || P_perturbed) per token.

For n directions and m lengths the engine runs n * m perturbed forwards of a token batch, stacked
along the batch (direction-major: variant v = i * m + j is direction i at length j) in chunks of at
most `max_rows` sequences. At a residual-stream hook (`blocks.L.hook_resid_pre/post`) each chunk
starts at the next block from the perturbed residual (`LeanModel.forward(start_layer=...)`); at any
other [batch, pos, d] hook the whole forward runs with the hook replaced.

Lengths are absolute L2 lengths, optionally times a per-token `scale` (||x|| for lengths relative
to the activation, ||SAE(x) - x|| to match the SAE error). Special positions (BOS, also EOS and
the separator in the bundled tokenizer) are neither perturbed nor counted by default, as in
mechscope's SAE evaluation; the KL is averaged over the counted positions except the last.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.directions.families import unit
from mechscope.errors import DirectionsError, SAEError
from mechscope.metrics import kl_div
from mechscope.models.lean import Hook, LeanModel, as_lean
from mechscope.sae.activations import hook_width, keep_mask, special_ids
from mechscope.sae.model import SparseAutoencoder

#: Lee & Heimersheim's length sweep for GPT-2 small (layer 6, median residual norm ~121)
PAPER_LENGTHS: tuple[float, ...] = tuple(
    float(v) for v in [*range(1, 20, 2), *range(20, 50, 4), *range(51, 101, 10)]
)
PAPER_NORM = 121.0


def default_lengths(median_norm: float) -> list[float]:
    """The paper's sweep scaled to a model: L * median_norm / 121 (23 lengths)."""
    if not median_norm > 0:
        raise DirectionsError(f"median residual norm must be > 0, got {median_norm}")
    return [L * median_norm / PAPER_NORM for L in PAPER_LENGTHS]


def check_lengths(lengths: Sequence[float] | Tensor) -> Tensor:
    """Lengths as a float tensor [m]; DirectionsError when empty or not finite and >= 0."""
    t = torch.as_tensor(lengths, dtype=torch.float32).flatten()
    if t.numel() == 0:
        raise DirectionsError(
            "the length sweep is empty; pass lengths (e.g. perturb.default_lengths(median_norm)) "
            "or leave them out for the default"
        )
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise DirectionsError(f"lengths must be finite and >= 0, got {t.tolist()}")
    return t


def check_hook(lean: LeanModel, hook_name: str) -> int:
    """The width d of a [batch, pos, d] hook; DirectionsError (with suggestions) otherwise."""
    try:
        return hook_width(lean, hook_name)
    except SAEError as e:
        raise DirectionsError(
            f"{e}. Perturb a [batch, pos, d] hook, e.g. blocks.0.hook_resid_post"
        ) from e


def check_sae(lean: LeanModel, sae: SparseAutoencoder, hook_name: str) -> None:
    """DirectionsError unless the SAE's d_in equals the hook's width."""
    width = check_hook(lean, hook_name)
    if sae.d_in != width:
        trained = f" (it was trained on {sae.cfg.hook_name!r})" if sae.cfg.hook_name else ""
        raise DirectionsError(
            f"SAE d_in={sae.d_in} does not match hook {hook_name!r} of width {width}{trained}; "
            "pick the SAE's own hook or an SAE trained at this one"
        )


def resid_start(hook_name: str) -> int | None:
    """The layer a forward can start at from this hook's value (residual-stream hooks only)."""
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", hook_name)
    if m is None:
        return None
    return int(m.group(1)) + (m.group(2) == "post")


@dataclass
class CleanRun:
    """One token batch's unperturbed run: tokens [batch, pos], x [batch, pos, d] at the hook,
    logits [batch, pos, vocab], keep: bool [batch, pos] (non-special positions)."""

    tokens: Tensor
    hook_name: str
    x: Tensor
    logits: Tensor
    keep: Tensor


@torch.no_grad()
def clean_run(model: Any, tokens: Tensor, hook_name: str) -> CleanRun:
    """Run tokens [batch, pos] once, keeping the hook's activation and the logits."""
    lean = as_lean(model)
    check_hook(lean, hook_name)
    if tokens.ndim != 2 or tokens.dtype.is_floating_point:
        raise DirectionsError(f"tokens must be an integer tensor [batch, pos], got {tokens.shape}")
    tokens = tokens.to(lean.W_E.device)
    store: dict[str, Tensor] = {}

    def grab(x: Tensor) -> None:
        store["x"] = x

    logits = lean.forward(tokens, hooks={hook_name: grab})
    return CleanRun(tokens, hook_name, store["x"], logits, keep_mask(tokens, special_ids(lean)))


def counted_positions(
    run: CleanRun, position: int | None = None, later: bool = True, include_special: bool = False
) -> Tensor:
    """Bool [batch, pos]: the tokens whose KL is averaged. Never the last position (it predicts
    nothing in the data); with a single perturbed `position`, it and (if `later`) the positions
    after it; special positions only with include_special."""
    batch, n_pos = run.tokens.shape
    idx = torch.arange(n_pos, device=run.tokens.device)
    mask = (idx < n_pos - 1).expand(batch, n_pos).clone()
    if position is not None:
        p = position % n_pos
        mask &= (idx >= p) if later else (idx == p)
    if not include_special:
        mask &= run.keep
    return mask


def perturbed_positions(
    run: CleanRun, position: int | None = None, include_special: bool = False
) -> Tensor:
    """Bool [batch, pos]: where the perturbation is applied (all positions, or one)."""
    batch, n_pos = run.tokens.shape
    mask = torch.ones(batch, n_pos, dtype=torch.bool, device=run.tokens.device)
    if position is not None:
        if not -n_pos <= position < n_pos:
            raise DirectionsError(f"position {position} outside the {n_pos}-token sequences")
        mask = torch.zeros_like(mask)
        mask[:, position % n_pos] = True
    return mask if include_special else mask & run.keep


def _directions(directions: Tensor, run: CleanRun) -> Tensor:
    """Unit directions [n, batch, pos, d] from [n, d] (one per direction) or [n, batch, pos, d]."""
    shape = tuple(run.x.shape)
    if directions.ndim == 2 and directions.shape[1] == shape[-1]:
        directions = directions[:, None, None, :].expand(-1, *shape)
    if directions.ndim != 4 or tuple(directions.shape[1:]) != shape:
        raise DirectionsError(
            f"directions {tuple(directions.shape)} must be [n, d] or [n, batch, pos, d] with "
            f"[batch, pos, d] = {shape} (the activations at {run.hook_name})"
        )
    return unit(directions.to(run.x))


def _replace_by(value: Tensor) -> Hook:
    """A hook that returns `value` in place of the activation."""

    def hook(_act: Tensor) -> Tensor:
        return value

    return hook


@torch.no_grad()
def perturbed_kl(
    model: Any,
    run: CleanRun,
    directions: Tensor,
    lengths: Sequence[float] | Tensor,
    *,
    scale: Tensor | None = None,
    where: Tensor | None = None,
    max_rows: int = 32,
    on_chunk: Callable[[int], None] | None = None,
) -> Tensor:
    """KL(P_orig || P_perturbed) per token [n, m, batch, pos] for run's batch perturbed as
    x + lengths[j] * scale * directions[i] / |directions[i]|.

    directions: [n, d] or [n, batch, pos, d]; lengths: [m] (absolute); scale: [batch, pos] per-token
    factor (default 1); where: bool [batch, pos], the perturbed positions (default run.keep);
    on_chunk(k) is called after each chunk of k variants (progress bars).
    """
    lean = as_lean(model)
    unit_dirs = _directions(directions, run)
    lens = check_lengths(lengths).to(run.x)
    n, m = unit_dirs.shape[0], lens.shape[0]
    batch, n_pos, _ = run.x.shape
    factor = torch.ones(batch, n_pos).to(run.x) if scale is None else scale.to(run.x)
    if factor.shape != (batch, n_pos):
        raise DirectionsError(
            f"scale {tuple(factor.shape)} must be [batch, pos] = {(batch, n_pos)}"
        )
    at = run.keep if where is None else where.to(run.keep.device)
    factor = factor * at
    start = resid_start(run.hook_name)
    per_chunk = max(1, max_rows // batch)
    out = torch.empty(n * m, batch, n_pos)
    for c in range(0, n * m, per_chunk):
        ids = torch.arange(c, min(n * m, c + per_chunk))
        k = ids.numel()
        delta = lens[ids % m, None, None, None] * factor[..., None] * unit_dirs[ids // m]
        pert = (run.x + delta).flatten(0, 1)  # [k * batch, pos, d]
        toks = run.tokens.repeat(k, 1)
        if start is not None:
            logits = lean.forward(toks, start_layer=start, resid=pert)
        else:
            logits = lean.forward(toks, hooks={run.hook_name: _replace_by(pert)})
        ref = run.logits.unsqueeze(0).expand(k, *run.logits.shape)  # no copy
        out[c : c + k] = kl_div(ref, logits.view(ref.shape), pos=None).cpu()
        if on_chunk is not None:
            on_chunk(k)
    return out.view(n, m, batch, n_pos)
