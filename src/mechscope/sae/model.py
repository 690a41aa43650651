"""`SparseAutoencoder`: ReLU ("standard"), TopK and JumpReLU SAEs behind one interface.

Layout and names follow SAELens so weights move between the two unchanged:
    W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in], threshold [d_sae].
    codes = act((x - b_dec) @ W_enc + b_enc)        (pre-encoder bias: b_dec is subtracted)
    x_hat = codes @ W_dec + b_dec
Initialised and trained as SAELens's standard SAE (Anthropic's April 2024 recipe): decoder rows in
random directions with norm 0.1, the encoder their transpose, zero biases; decoder norms are free
during training (the L1 penalty is weighted by them) and a trained ReLU SAE folds them into the
encoder (`fold_decoder_norms_`), so its decoder rows are unit feature directions. The model also
counts, per latent, the training tokens since it last fired (dead-latent tracking).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mechscope.errors import SAEError
from mechscope.sae.config import SAEConfig

DECODER_INIT_NORM = 0.1  # SAELens's `decoder_init_norm` default


class SparseAutoencoder(nn.Module):
    """A sparse autoencoder over activations [..., d_in] with d_sae latents."""

    tokens_since_fired: Tensor

    def __init__(self, cfg: SAEConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        W_dec = torch.empty(cfg.d_sae, cfg.d_in)
        nn.init.kaiming_uniform_(W_dec, generator=g)
        W_dec *= DECODER_INIT_NORM / W_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.T.contiguous())  # encoder = decoder transpose
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        if cfg.architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(cfg.d_sae))
        self.register_buffer("tokens_since_fired", torch.zeros(cfg.d_sae, dtype=torch.long))

    # -- the interface --------------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def _check(self, x: Tensor) -> None:
        if x.shape[-1] != self.cfg.d_in:
            raise SAEError(
                f"activations have width {x.shape[-1]} but the SAE expects d_in={self.cfg.d_in}"
                + (f" (trained on {self.cfg.hook_name})" if self.cfg.hook_name else "")
            )

    def encode(self, x: Tensor) -> Tensor:
        """Codes [..., d_sae] of activations x [..., d_in]."""
        self._check(x)
        x = x.to(self.W_enc.dtype)
        # (x - b_dec) @ W_enc + b_enc, with b_dec moved into the bias: the gradient of b_dec is
        # then a vector-matrix product, not a [n, d_sae] x [d_sae, d_in] matmul
        bias = self.b_enc - self.b_dec @ self.W_enc if self.cfg.apply_b_dec_to_input else self.b_enc
        pre = torch.addmm(bias, x.reshape(-1, self.d_in), self.W_enc)
        arch = self.cfg.architecture
        if arch == "standard":  # in place on the fresh [n, d_sae] product: no second such tensor
            return pre.relu_().view(*x.shape[:-1], -1)
        pre = pre.view(*x.shape[:-1], -1)
        if arch == "topk":
            assert self.cfg.k is not None
            vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)

    def decode(self, codes: Tensor) -> Tensor:
        """Reconstruction [..., d_in] of codes [..., d_sae]."""
        flat = codes.reshape(-1, self.d_sae)
        return torch.addmm(self.b_dec, flat, self.W_dec).view(*codes.shape[:-1], -1)

    def forward_with_codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(reconstruction [..., d_in], codes [..., d_sae]) of x [..., d_in].

        A ReLU SAE with gradients runs as one autograd function (`_ReluSAE`): the same arithmetic
        as `decode(encode(x))` and the same gradients bit for bit, with one [n, d_sae] gradient
        tensor in the backward instead of three."""
        if not (
            self.cfg.architecture == "standard"
            and self.cfg.apply_b_dec_to_input
            and torch.is_grad_enabled()
        ):
            codes = self.encode(x)
            return self.decode(codes), codes
        self._check(x)
        x = x.to(self.W_enc.dtype)
        bias = self.b_enc - self.b_dec @ self.W_enc
        flat = x.reshape(-1, self.d_in)
        x_hat, codes = _ReluSAE.apply(flat, self.W_enc, bias, self.W_dec, self.b_dec)
        return x_hat.view(*x.shape[:-1], -1), codes.view(*x.shape[:-1], -1)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction [..., d_in] of x [..., d_in] (as SAELens's `SAE.forward`)."""
        return self.forward_with_codes(x)[0]

    @property
    def feature_directions(self) -> Tensor:
        """Unit-norm decoder directions [d_sae, d_in] (detached)."""
        W = self.W_dec.detach()
        return W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    # -- training support -----------------------------------------------------------------------
    @torch.no_grad()
    def fold_decoder_norms_(self) -> None:
        """Scale decoder rows to unit norm and the latents' encoder columns and biases by the old
        norms: the same function for a ReLU SAE (and JumpReLU, whose threshold scales too), codes
        multiplied by the norms. Not for TopK, whose selection the scaling would change."""
        if self.cfg.architecture == "topk":
            raise SAEError("folding decoder norms changes a TopK SAE's selection")
        n = self.W_dec.norm(dim=-1).clamp_min(1e-12)
        self.W_dec.div_(n[:, None])
        self.W_enc.mul_(n)
        self.b_enc.mul_(n)
        if self.cfg.architecture == "jumprelu":
            self.threshold.mul_(n)

    @torch.no_grad()
    def update_firing_(self, codes: Tensor, sums: Tensor | None = None) -> None:
        """Count tokens since each latent fired, from a training batch's codes [n, d_sae].

        Codes are non-negative in every architecture, so a latent fired where its maximum, or
        equally its sum, is > 0. sums: the codes summed over tokens [d_sae] when the caller has
        them (the training loss does), which saves a pass over the codes."""
        codes = codes.reshape(-1, self.cfg.d_sae)
        fired = codes.amax(0) if sums is None else sums
        self.tokens_since_fired.add_(codes.shape[0]).masked_fill_(fired > 0, 0)

    def dead_mask(self, window: int) -> Tensor:
        """Latents [d_sae] (bool) that have not fired in the last `window` training tokens."""
        return self.tokens_since_fired >= window

    def extra_repr(self) -> str:
        c = self.cfg
        k = f", k={c.k}" if c.architecture == "topk" else ""
        return f"{c.architecture}, d_in={c.d_in}, d_sae={c.d_sae}{k}, hook={c.hook_name!r}"


class _ReluSAE(torch.autograd.Function):
    """(x_hat, codes) = (relu(x @ W_enc + bias) @ W_dec + b_dec, relu(x @ W_enc + bias)) for
    x [n, d_in], with autograd's own backward formulas for `addmm` and `relu` (same calls, same
    layouts: bit-identical gradients), but the codes' gradient [n, d_sae] summed and masked in
    place in the one tensor the backward allocates (autograd allocates three: the decoder's
    product, its sum with the codes' own gradient, the ReLU mask's output). The incoming
    gradients are not modified."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, W_enc: Tensor, bias: Tensor, W_dec: Tensor, b_dec: Tensor
    ) -> tuple[Tensor, Tensor]:
        codes = torch.addmm(bias, x, W_enc).relu_()
        ctx.save_for_backward(x, W_enc, W_dec, codes)
        ctx.set_materialize_grads(False)  # an output the loss does not use: None, not zeros
        return torch.addmm(b_dec, codes, W_dec), codes

    @staticmethod
    def backward(
        ctx: Any, g_hat: Tensor | None, g_codes: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x, W_enc, W_dec, codes = ctx.saved_tensors
        need_x, need_W_enc, need_bias, need_W_dec, need_b_dec = ctx.needs_input_grad
        W_dec_grad = b_dec_grad = None
        if g_hat is not None:
            W_dec_grad = _mat2_grad(g_hat, codes, W_dec) if need_W_dec else None
            b_dec_grad = g_hat.sum(0, keepdim=True).view(-1) if need_b_dec else None
            g = _mat1_grad(g_hat, W_dec, codes)  # a fresh tensor: summed and masked in place
            if g_codes is not None:
                g.add_(g_codes)
        elif g_codes is not None:
            g = g_codes.clone(memory_format=torch.contiguous_format)
        else:
            return None, None, None, None, None
        torch.ops.aten.threshold_backward.grad_input(g, codes, 0, grad_input=g)
        x_grad = _mat1_grad(g, W_enc, x) if need_x else None
        W_enc_grad = _mat2_grad(g, x, W_enc) if need_W_enc else None
        bias_grad = g.sum(0, keepdim=True).view(-1) if need_bias else None
        return x_grad, W_enc_grad, bias_grad, W_dec_grad, b_dec_grad


def _column_major(t: Tensor) -> bool:
    return t.stride(0) == 1 and t.stride(1) == t.shape[0]


def _mat1_grad(grad: Tensor, mat2: Tensor, mat1: Tensor) -> Tensor:
    """Gradient of mat1 in mat1 @ mat2 as autograd computes it (`mm_mat1_backward`)."""
    if _column_major(mat1):
        return mat2.mm(grad.t()).t()
    return grad.mm(mat2.t())


def _mat2_grad(grad: Tensor, mat1: Tensor, mat2: Tensor) -> Tensor:
    """Gradient of mat2 in mat1 @ mat2 as autograd computes it (`mm_mat2_backward`)."""
    if _column_major(mat2):
        return grad.t().mm(mat1).t()
    return mat1.t().mm(grad)


def check_finite(x: Tensor, where: str) -> None:
    """Raise SAEError if activations x contain NaN or inf."""
    if not bool(torch.isfinite(x).all()):
        n = int((~torch.isfinite(x)).sum())
        raise SAEError(f"{n} non-finite values (NaN/inf) in the activations at {where}")
