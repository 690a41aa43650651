"""Training losses of Braun et al. 2024 (ApolloResearch/e2e_sae), on the kept (non-special) tokens.

    sparsity = mean over tokens of ||codes||_1 / d_in
    local    = MSE(x_hat, x) + lambda * sparsity
    e2e      = KL(orig || spliced) + lambda * sparsity
    e2e_ds   = kl_coeff * KL + sum_h (ds_coeff / n_h) * MSE(resid_h spliced, resid_h orig)
               + lambda * sparsity
MSE is the mean over tokens and dimensions (`F.mse_loss`); KL is per token from log-softmax,
averaged over tokens. TopK SAEs fix sparsity by k: their lambda term is reported but not added.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mechscope.metrics import kl_div


@dataclass
class LossParts:
    """A loss and its terms (terms as floats, for logging)."""

    total: Tensor
    terms: dict[str, float]


def sparsity_l1(codes: Tensor, d_in: int) -> Tensor:
    """Mean L1 norm of codes [n_tokens, d_sae], divided by d_in: a scalar."""
    return codes.abs().sum(-1).mean() / d_in


def kl_per_token(orig_logits: Tensor, new_logits: Tensor, keep: Tensor) -> Tensor:
    """KL(orig || new) at the kept positions: [n_kept]. Logits [batch, pos, vocab]."""
    return kl_div(orig_logits, new_logits, pos=None)[keep]


def local_loss(x: Tensor, x_hat: Tensor, codes: Tensor, coeff: float, use_l1: bool) -> LossParts:
    """MSE + coeff * sparsity. x, x_hat [n, d_in]; codes [n, d_sae]."""
    mse = F.mse_loss(x_hat, x)
    sp = sparsity_l1(codes, x.shape[-1])
    total = mse + coeff * sp if use_l1 else mse
    return LossParts(total, {"mse": float(mse.detach()), "sparsity": float(sp.detach())})


def e2e_loss(
    orig_logits: Tensor,
    new_logits: Tensor,
    keep: Tensor,
    codes: Tensor,
    d_in: int,
    coeff: float,
    use_l1: bool,
    kl_coeff: float = 1.0,
    downstream: list[tuple[Tensor, Tensor]] | None = None,
    ds_coeff: float = 0.0,
) -> LossParts:
    """kl_coeff * KL(orig || new) [+ downstream MSE] + coeff * sparsity.

    downstream: (spliced, original) residual pairs [batch, pos, d_model]; their MSE at the kept
    positions is weighted ds_coeff / len(downstream) each.
    """
    kl = kl_per_token(orig_logits, new_logits, keep).mean()
    sp = sparsity_l1(codes, d_in)
    total = kl_coeff * kl + (coeff * sp if use_l1 else 0.0)
    terms = {"kl": float(kl.detach()), "sparsity": float(sp.detach())}
    if downstream:
        ds = torch.stack([F.mse_loss(new[keep], old[keep]) for new, old in downstream])
        total = total + ds_coeff / len(downstream) * ds.sum()
        terms["downstream_mse"] = float(ds.detach().mean())
    return LossParts(total, terms)
