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
        """(reconstruction [..., d_in], codes [..., d_sae]) of x [..., d_in]."""
        codes = self.encode(x)
        return self.decode(codes), codes

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


def check_finite(x: Tensor, where: str) -> None:
    """Raise SAEError if activations x contain NaN or inf."""
    if not bool(torch.isfinite(x).all()):
        n = int((~torch.isfinite(x)).sum())
        raise SAEError(f"{n} non-finite values (NaN/inf) in the activations at {where}")
