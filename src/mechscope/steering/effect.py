"""The effect of interventions on the next-token prediction: clean vs intervened logits at the
last position of a prompt, in the real model through its hooks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import SteeringError
from mechscope.models.lean import as_lean
from mechscope.steering.generate import check_request, context_length
from mechscope.steering.spec import Intervention, check_interventions, hooks_for, on_device


@dataclass
class InterventionEffect:
    """Last-position logits [batch, vocab] of the clean and the intervened run."""

    clean_logits: Tensor
    logits: Tensor

    @property
    def logprob_change(self) -> Tensor:
        """Intervened minus clean log-probabilities [batch, vocab]."""
        return self.logits.float().log_softmax(-1) - self.clean_logits.float().log_softmax(-1)

    @property
    def kl(self) -> Tensor:
        """KL(clean || intervened) of the next-token distributions [batch] (nats; float
        rounding below 0 read as 0)."""
        clean = self.clean_logits.float().log_softmax(-1)
        new = self.logits.float().log_softmax(-1)
        return (clean.exp() * (clean - new)).sum(-1).clamp_min(0)

    def top_changes(self, k: int = 10, row: int = 0) -> list[tuple[int, float, float]]:
        """(token, clean log-prob, intervened log-prob) of the k tokens of prompt `row` whose
        log-probability moved most among the clean and the intervened top-k tokens."""
        clean = self.clean_logits[row].float().log_softmax(-1)
        new = self.logits[row].float().log_softmax(-1)
        pool = torch.cat([clean.topk(k).indices, new.topk(k).indices]).unique()
        moved = (new[pool] - clean[pool]).abs().argsort(descending=True)[:k]
        return [(int(t), float(clean[t]), float(new[t])) for t in pool[moved]]

    def to_dict(self, tokenizer: Any = None, k: int = 10) -> dict[str, Any]:
        """KL per prompt and each prompt's top changes (tokens decoded with `tokenizer`)."""
        name = (lambda t: tokenizer.decode([t])) if tokenizer is not None else str
        return {
            "kl": self.kl.tolist(),
            "top_changes": [
                [
                    {"token": t, "text": name(t), "clean_logprob": c, "logprob": n}
                    for t, c, n in self.top_changes(k, row)
                ]
                for row in range(self.logits.shape[0])
            ],
        }


@torch.no_grad()
def intervene(
    model: Any, tokens: Tensor, interventions: Sequence[Intervention]
) -> InterventionEffect:
    """Clean and intervened last-position logits of tokens [batch, pos] (or [pos]), the
    interventions applied at their positions ("new" selects no prompt position: refused)."""
    lean = as_lean(model)
    tokens = (tokens if tokens.ndim == 2 else tokens.unsqueeze(0)).to(lean.device)
    check_request(lean, tokens.shape[1], 0)
    check_interventions(lean, interventions, context_length(lean))
    if any(iv.positions == "new" for iv in interventions):
        raise SteeringError(
            "positions='new' edits generated tokens only, and a prompt has none: use 'all' or "
            "a tuple of positions (or generate())"
        )
    ivs = on_device(interventions, lean.device)
    clean = lean(tokens, logit_pos=[-1])[:, -1]
    steered = lean(tokens, hooks_for(ivs, 0, tokens.shape[1], lean), logit_pos=[-1])[:, -1]
    return InterventionEffect(clean.cpu(), steered.cpu())
