"""The components `LeanModel` is built from, each written once.

A model is declared (`declare.Arch`) as a choice per component: a normalisation (LayerNorm,
RMSNorm, Gemma's (1 + w) RMSNorm, none), positions (learned, rotary in the GPT-NeoX half-split or
GPT-J interleaved layout, none), attention (multi-head, grouped-query, multi-query; optional
q/k norm, sliding window, logit softcap), an MLP (plain or gated) and the block wiring
(sequential or parallel; optional post-attention / post-MLP norms). The full forward, the
last-layer path, the per-head pieces of the circuits delta forward and the hook names all call
these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

ACTS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}

NormParams = tuple[Tensor, Tensor | None] | None  # (weight, bias); None = no affine parameters


@dataclass(frozen=True)
class Norm:
    """A normalisation: kind "LN" (LayerNorm), "RMS" (RMSNorm) or None (identity); `offset` 1.0
    for Gemma's RMSNorm, which scales by (1 + w)."""

    kind: str | None
    eps: float = 1e-5
    offset: float = 0.0

    def __call__(self, x: Tensor, p: NormParams) -> Tensor:
        """x [..., d] normalised over its last dimension, then scaled (and shifted) by p."""
        return self.affine(self.normalize(x), p)

    def normalize(self, x: Tensor) -> Tensor:
        """The normalisation alone (TransformerLens's `hook_normalized`), in float32 inside."""
        if self.kind is None:
            return x
        dtype, x = x.dtype, x.float()
        if self.kind == "LN":
            x = x - x.mean(-1, keepdim=True)
        return (x / (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()).to(dtype)

    def affine(self, x: Tensor, p: NormParams) -> Tensor:
        """x * (weight + offset) + bias (x itself without parameters)."""
        if self.kind is None or p is None:
            return x
        x = x * (p[0] + self.offset).to(x.dtype)
        return x if p[1] is None else x + p[1].to(x.dtype)


@dataclass(frozen=True)
class Rotary:
    """Rotary position embedding over the first `dim` dimensions of each query and key head.

    inv_freq [dim / 2] (rope scaling already applied, as the HF model computes it);
    scaling multiplies cos and sin (HF's `attention_scaling`); interleaved: GPT-J's layout
    (pairs 2i, 2i+1) instead of GPT-NeoX / Llama's half split (i, i + dim / 2).
    """

    inv_freq: Tensor
    scaling: float = 1.0
    interleaved: bool = False

    @property
    def dim(self) -> int:
        return 2 * self.inv_freq.numel()

    def tables(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin [pos, dim / 2] (float32) at integer positions [pos]."""
        freqs = positions.float()[:, None] * self.inv_freq.float().to(positions.device)[None]
        return freqs.cos() * self.scaling, freqs.sin() * self.scaling

    def __call__(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """x [batch, pos, head, d_head] rotated at the positions of cos, sin [pos, dim / 2]."""
        d = self.dim
        rot, rest = x[..., :d].float(), x[..., d:]
        c, s = cos[None, :, None].to(x.device), sin[None, :, None].to(x.device)
        if self.interleaved:
            a, b = rot[..., 0::2], rot[..., 1::2]
            out = torch.stack([a * c - b * s, b * c + a * s], -1).flatten(-2)
        else:
            a, b = rot[..., : d // 2], rot[..., d // 2 :]
            out = torch.cat([a * c - b * s, b * c + a * s], -1)
        return torch.cat([out.to(x.dtype), rest], -1)


def softcap(x: Tensor, cap: float | None) -> Tensor:
    """cap * tanh(x / cap) (Gemma-2's attention and final logit softcap); x when cap is None."""
    return x if cap is None else cap * torch.tanh(x / cap)


def attention_mask(q_positions: Tensor, n_keys: int, causal: bool, window: int | None) -> Tensor:
    """True where a query at absolute position q_positions[i] may NOT read key j (keys at
    positions 0..n_keys-1): [n_q, n_keys].

    Causal: keys after the query; sliding window w (Mistral, Gemma-2/3 local layers): keys at
    distance >= w as well (HF's `kv_idx > q_idx - w`)."""
    q = q_positions[:, None]
    k = torch.arange(n_keys, device=q_positions.device)[None]
    masked = (k > q) if causal else torch.zeros_like(k > q)
    if window is not None:
        masked = masked | (((q - k) if causal else (q - k).abs()) >= window)
    return masked
