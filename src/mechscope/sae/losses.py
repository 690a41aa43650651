"""Training losses of Braun et al. 2024 (ApolloResearch/e2e_sae), on the kept (non-special) tokens.

    sparsity = mean over tokens of sum_i codes_i * ||W_dec[i]|| / d_in
    local    = MSE(x_hat, x) + lambda * sparsity
    e2e      = KL(orig || spliced) + lambda * sparsity
    e2e_ds   = kl_coeff * KL + sum_h (ds_coeff / n_h) * MSE(resid_h spliced, resid_h orig)
               + lambda * sparsity
MSE is the mean over tokens and dimensions (`F.mse_loss`); KL is per token from log-softmax,
averaged over tokens. TopK SAEs fix sparsity by k: their lambda term is reported but not added.
The L1 norm weights each latent by its decoder row's norm (as SAELens's standard SAE does), so a
latent cannot buy sparsity by growing its decoder row; for unit-norm rows it is the plain L1 norm.
Codes are non-negative in every architecture, so their L1 norm is their sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mechscope.metrics import kl_div


@dataclass
class LossParts:
    """A loss, its terms (detached 0-dim tensors on the loss's device: reading one is a host
    synchronisation, which the trainer does once every `log_every` steps) and the codes summed
    over tokens [d_sae] (detached; > 0 where a latent fired: the trainer's firing record)."""

    total: Tensor
    terms: dict[str, Tensor]
    code_sums: Tensor


def sparsity_l1(codes: Tensor, W_dec: Tensor) -> tuple[Tensor, Tensor]:
    """(mean over tokens of the decoder-norm-weighted L1 norm of non-negative codes
    [n_tokens, d_sae], divided by d_in: a scalar; the codes summed over tokens [d_sae], which it
    is computed from). W_dec [d_sae, d_in]: the decoder (gradients flow into its row norms)."""
    sums = codes.sum(0)
    return sums @ W_dec.norm(dim=-1) / (codes.shape[0] * W_dec.shape[1]), sums


def kl_per_token(orig_logits: Tensor, new_logits: Tensor, keep: Tensor) -> Tensor:
    """KL(orig || new) at the kept positions: [n_kept]. Logits [batch, pos, vocab]."""
    return kl_div(orig_logits, new_logits, pos=None)[keep]


def local_loss(
    x: Tensor, x_hat: Tensor, codes: Tensor, W_dec: Tensor, coeff: float, use_l1: bool
) -> LossParts:
    """MSE + coeff * sparsity. x, x_hat [n, d_in]; codes [n, d_sae]; W_dec [d_sae, d_in]."""
    mse = F.mse_loss(x_hat, x)
    sp, sums = sparsity_l1(codes, W_dec)
    total = mse + coeff * sp if use_l1 else mse
    return LossParts(total, {"mse": mse.detach(), "sparsity": sp.detach()}, sums.detach())


def e2e_loss(
    orig_logits: Tensor,
    new_logits: Tensor,
    keep: Tensor,
    codes: Tensor,
    W_dec: Tensor,
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
    sp, sums = sparsity_l1(codes, W_dec)
    total = kl_coeff * kl + (coeff * sp if use_l1 else 0.0)
    terms = {"kl": kl.detach(), "sparsity": sp.detach()}
    if downstream:
        ds = torch.stack([F.mse_loss(new[keep], old[keep]) for new, old in downstream])
        total = total + ds_coeff / len(downstream) * ds.sum()
        terms["downstream_mse"] = ds.detach().mean()
    return LossParts(total, terms, sums.detach())
