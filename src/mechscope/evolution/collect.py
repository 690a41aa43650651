"""One forward pass with every layer's SAE hooked, streamed over token batches.

`layer_codes` runs the shared `LeanModel` once per batch, encodes each hook's activation with its
SAE and stops after the last hook; nothing is kept between batches but running sums (`PairStats`),
per-feature maxima and firing counts, and each feature's top activations (`TopActivations`).
Positions holding a special token (BOS/EOS) are left out, as in SAE training and evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import EvolutionError, SAEError
from mechscope.models.lean import LeanModel
from mechscope.sae.activations import check_sae_fits, keep_mask, special_ids
from mechscope.sae.model import SparseAutoencoder


def check_layers(lean: LeanModel, hooks: Sequence[str], saes: Sequence[SparseAutoencoder]) -> None:
    """EvolutionError unless there are >= 2 SAEs on distinct hooks in forward order that fit."""
    if len(saes) < 2 or len(hooks) != len(saes):
        raise EvolutionError(
            f"feature evolution needs SAEs at two or more hooks (one per layer), got {len(saes)}"
        )
    order = lean.hook_names()
    try:
        for h, sae in zip(hooks, saes, strict=True):
            check_sae_fits(lean, sae, h)
    except SAEError as e:
        raise EvolutionError(str(e)) from e
    pos = [order.index(h) for h in hooks]
    if pos != sorted(pos) or len(set(pos)) != len(pos):
        raise EvolutionError(
            "the SAEs' hooks must be distinct and in forward order (layer l, then l+1), "
            f"got {hooks}"
        )


@torch.no_grad()
def layer_codes(
    lean: LeanModel, hooks: Sequence[str], saes: Sequence[SparseAutoencoder], tokens: Tensor
) -> list[Tensor]:
    """Codes [batch, pos, d_sae] of each SAE at its hook, from one forward (stopped at the last).

    Each SAE encodes on its own device (activations of a split model move to it); the codes
    come back on the first SAE's device."""
    _, acts = lean.run_with_cache(tokens.to(lean.device), names=hooks)
    home = saes[0].W_dec.device
    return [
        sae.encode(acts[h].to(sae.W_dec.device)).to(home)
        for h, sae in zip(hooks, saes, strict=True)
    ]


def stream_codes(
    lean: LeanModel,
    hooks: Sequence[str],
    saes: Sequence[SparseAutoencoder],
    batches: Sequence[Tensor],
    start: int = 0,
) -> Iterator[tuple[int, Tensor, list[Tensor]]]:
    """(batch index, flat ids [n] of the kept positions, codes [n, d_sae] per layer) per batch,
    from batch `start` on.

    A position's flat id is batch_index * batch_size * n_ctx + row * n_ctx + pos (the batches must
    share one shape); `context` turns it back into text.
    """
    specials = special_ids(lean)
    for b in range(start, len(batches)):
        tokens = batches[b]
        keep = keep_mask(tokens, specials).flatten()
        ids = torch.arange(tokens.numel())[keep] + b * tokens.numel()
        codes = layer_codes(lean, hooks, saes, tokens)
        dev = codes[0].device
        yield b, ids, [c.flatten(0, 1)[keep.to(dev)] for c in codes]


@dataclass
class TopActivations:
    """Each feature's k largest activations and where they were (flat position ids), streamed."""

    n_features: int
    k: int = 8
    values: Tensor = field(init=False)
    ids: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.values = torch.full((self.n_features, self.k), float("-inf"))
        self.ids = torch.full((self.n_features, self.k), -1, dtype=torch.long)

    @torch.no_grad()
    def update(self, codes: Tensor, ids: Tensor) -> None:
        """codes [n, F] at flat position ids [n]."""
        if codes.shape[0] == 0:
            return
        kk = min(self.k, codes.shape[0])
        v, i = codes.float().topk(kk, dim=0)  # [kk, F]
        v, i = v.T.cpu(), ids[i.T.cpu()]
        allv = torch.cat([self.values, v], 1)
        alli = torch.cat([self.ids, i], 1)
        top, pos = allv.topk(self.k, dim=1)
        self.values, self.ids = top, alli.gather(1, pos)


def context(
    tokenizer: Any, batches: Sequence[Tensor], flat_id: int, before: int = 10, after: int = 3
) -> tuple[str, str, str]:
    """(text before, the token, text after) around a flat position id of `stream_codes`."""
    b_size = batches[0].numel()
    n_ctx = batches[0].shape[-1]
    b, rest = divmod(flat_id, b_size)
    row, pos = divmod(rest, n_ctx)
    seq = batches[b].reshape(-1, n_ctx)[row].tolist()
    if tokenizer is None:
        return (
            " ".join(map(str, seq[max(0, pos - before) : pos])),
            str(seq[pos]),
            " ".join(map(str, seq[pos + 1 : pos + 1 + after])),
        )
    dec = tokenizer.decode
    return (
        dec(seq[max(0, pos - before) : pos]),
        dec([seq[pos]]),
        dec(seq[pos + 1 : pos + 1 + after]),
    )
