"""Activations for SAEs: hook checks, collection and splicing (token batches: `data.batches`).

All forwards run on the shared `LeanModel` (the bridge's weights, HookedTransformer hook names).
Positions holding a special token (BOS, which is also EOS and the document separator) are left out
of training and evaluation, and keep their original activation when an SAE is spliced in, as
SAELens's evaluation does with `exclude_special_tokens`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

from mechscope.errors import SAEError
from mechscope.models.lean import Hook, LeanModel
from mechscope.sae.model import SparseAutoencoder, check_finite


def special_ids(lean: LeanModel) -> list[int]:
    """Token ids treated as special (left out of SAE training and metrics)."""
    tok = lean.tokenizer
    return sorted(set(tok.all_special_ids)) if tok is not None else []


def keep_mask(tokens: Tensor, specials: list[int]) -> Tensor:
    """Bool [batch, pos]: True where the token is not special."""
    if not specials:
        return torch.ones_like(tokens, dtype=torch.bool)
    return ~torch.isin(tokens, torch.tensor(specials, device=tokens.device))


def hook_width(lean: LeanModel, hook_name: str) -> int:
    """Last-dimension width of a hook's activation; SAEError for an unknown or per-head hook."""
    if hook_name not in lean.hook_names():
        close = [n for n in lean.hook_names() if n.split(".")[-1] == hook_name.split(".")[-1]]
        raise SAEError(
            f"unknown hook {hook_name!r} on this {lean.n_layers}-layer model"
            + (f"; did you mean one of {close[:4]}?" if close else "; see LeanModel.hook_names()")
        )
    probe = torch.zeros(1, 2, dtype=torch.long, device=lean.W_E.device)
    acts = collect(lean, probe, hook_name, check=False)
    if acts.ndim != 3:
        raise SAEError(
            f"hook {hook_name!r} has shape {tuple(acts.shape)}; SAEs here read [batch, pos, d] "
            "hooks (residual stream, attn_out, mlp_out, mlp.hook_post, ...)"
        )
    return int(acts.shape[-1])


def check_sae_fits(lean: LeanModel, sae: SparseAutoencoder, hook_name: str) -> None:
    """SAEError unless `hook_name` exists and its width equals the SAE's d_in."""
    width = hook_width(lean, hook_name)
    if width != sae.d_in:
        raise SAEError(
            f"SAE d_in={sae.d_in} does not match hook {hook_name!r} of width {width}"
            + (f" (the SAE was trained on {sae.cfg.hook_name!r})" if sae.cfg.hook_name else "")
        )


def collect_many(
    lean: LeanModel, tokens: Tensor, hook_names: Sequence[str], check: bool = True
) -> dict[str, Tensor]:
    """Activations [batch, pos, d] at each of `hook_names`, in one forward stopped after the last
    of them (no grad), on the model's main device (`lean.device`, also for a split model)."""
    with torch.no_grad():
        _, acts = lean.run_with_cache(tokens, names=hook_names)
    out = {name: acts[name].to(lean.device) for name in hook_names}
    if check:
        for name, x in out.items():
            check_finite(x, name)
    return out


def collect(lean: LeanModel, tokens: Tensor, hook_name: str, check: bool = True) -> Tensor:
    """Activations [batch, pos, d] at `hook_name`, stopping the forward there (no grad)."""
    return collect_many(lean, tokens, [hook_name], check)[hook_name]


def splice_hook(
    sae: SparseAutoencoder, keep: Tensor, codes_out: list[Tensor] | None = None
) -> Hook:
    """A hook replacing activations [batch, pos, d_in] by the SAE's reconstruction where `keep`.

    keep: bool [batch, pos]. codes_out, if given, receives the codes [n_kept, d_sae] of the kept
    positions (with gradient), for the sparsity penalty.
    """

    def hook(x: Tensor) -> Tensor:  # the SAE runs where it is; a split model's x comes to it
        check_finite(x, sae.cfg.hook_name or "the spliced hook")
        dev = sae.W_dec.device
        x_hat, codes = sae.forward_with_codes(x.to(dev))
        if codes_out is not None:
            codes_out.append(codes[keep.to(dev)])
        return torch.where(keep.to(x.device)[..., None], x_hat.to(x), x)

    return hook


def downstream_hooks(lean: LeanModel, hook_name: str) -> list[str]:
    """Residual-stream hooks after `hook_name`: `blocks.{j}.hook_resid_post` for each later block.

    For an SAE at `blocks.L.hook_resid_post` these are blocks L+1 .. n_layers-1; for any other hook
    inside block L (resid_pre, attn_out, mlp_out, ...) they are blocks L .. n_layers-1.
    """
    m = re.match(r"blocks\.(\d+)\.(.+)$", hook_name)
    if m is None:
        first = 0 if hook_name in ("hook_embed", "hook_pos_embed") else lean.n_layers
    else:
        layer = int(m.group(1))
        first = layer + 1 if m.group(2) == "hook_resid_post" else layer
    return [f"blocks.{j}.hook_resid_post" for j in range(first, lean.n_layers)]
