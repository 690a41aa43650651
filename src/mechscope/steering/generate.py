"""Generation with interventions applied at every new token, on an incremental KV cache.

The prompt runs once with the interventions' hooks, keeping every layer's keys (as attention
reads them: `LeanModel.key_hook`) and values; each new token then runs alone
(`LeanModel.forward(start_pos=..., prefix_kv=...)`) with the same hooks at its absolute
position, and its keys and values are appended. Causal attention makes this the same computation
as re-running the whole sequence each step (`kv_cache=False`, the literal reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import SteeringError
from mechscope.models.lean import Hook, LeanModel, as_lean
from mechscope.progress import progress_bar
from mechscope.steering.spec import (
    Intervention,
    check_interventions,
    hooks_for,
    on_device,
    recording,
)


@dataclass
class Generation:
    """Prompt and generated tokens [batch, prompt_len + new]."""

    tokens: Tensor
    prompt_len: int

    @property
    def new_tokens(self) -> Tensor:
        """The generated tokens [batch, new]."""
        return self.tokens[:, self.prompt_len :]

    def texts(self, tokenizer: Any) -> list[str]:
        """The generated text of each row (prompt left out)."""
        return [tokenizer.decode(row.tolist()) for row in self.new_tokens]

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens.tolist(), "prompt_len": self.prompt_len}


def context_length(lean: LeanModel) -> int | None:
    """The longest sequence the model takes (cfg.n_ctx, or its learned positions), or None."""
    n_ctx = getattr(lean.cfg, "n_ctx", None)
    if n_ctx is None and lean.W_pos is not None:
        n_ctx = lean.W_pos.shape[0]
    return None if n_ctx is None else int(n_ctx)


def check_request(lean: LeanModel, prompt_len: int, max_new_tokens: int) -> None:
    """SteeringError unless the prompt plus `max_new_tokens` fit the model's context."""
    n_ctx = context_length(lean)
    if prompt_len < 1:
        raise SteeringError("the prompt is empty: give at least one token")
    if max_new_tokens < 0:
        raise SteeringError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if n_ctx is not None and prompt_len + max_new_tokens > n_ctx:
        raise SteeringError(
            f"the prompt ({prompt_len} tokens) plus max_new_tokens ({max_new_tokens}) exceeds "
            f"the model's context of {n_ctx} tokens: shorten the prompt or generate fewer tokens"
        )


def next_token(
    logits: Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Next tokens [batch] from last-position logits [batch, vocab]: the argmax when
    temperature is 0, else a sample of softmax(logits / temperature) restricted to the top_k
    tokens and to the smallest set of most likely tokens whose mass reaches top_p (drawn on the
    CPU with `generator`, so a seed gives the same tokens on every device)."""
    if temperature == 0:
        return logits.argmax(-1)
    z = logits.detach().float().cpu() / temperature
    if top_k is not None:
        kth = z.topk(min(top_k, z.shape[-1]), dim=-1).values[:, -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ordered, idx = z.sort(-1, descending=True)
        p = ordered.softmax(-1)
        drop = p.cumsum(-1) - p >= top_p  # the mass before this token already reaches top_p
        z = z.scatter(-1, idx, ordered.masked_fill(drop, float("-inf")))
    picked = torch.multinomial(z.softmax(-1), 1, generator=generator)[:, 0]
    return picked.to(logits.device)


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """SteeringError unless temperature >= 0, top_k >= 1 and top_p in (0, 1]."""
    if temperature < 0:
        raise SteeringError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise SteeringError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise SteeringError(f"top_p must lie in (0, 1], got {top_p}")


def _with_kv(lean: LeanModel, hooks: dict[str, Hook], kv: dict[str, Tensor]) -> dict[str, Hook]:
    """`hooks` plus recorders of every layer's keys (as attention reads them) and values."""
    names = [n for l in range(lean.n_layers) for n in (lean.key_hook(l), f"blocks.{l}.attn.hook_v")]
    return recording(hooks, names, kv)


def _cat(old: tuple[Tensor, Tensor], new: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return torch.cat([old[0], new[0]], 1), torch.cat([old[1], new[1]], 1)


@torch.no_grad()
def generate(
    model: Any,
    prompt_tokens: Tensor,
    interventions: Sequence[Intervention] = (),
    max_new_tokens: int = 20,
    *,
    temperature: float = 0.0,
    seed: int = 0,
    top_k: int | None = None,
    top_p: float | None = None,
    kv_cache: bool = True,
    progress: bool = False,
) -> Generation:
    """Generate `max_new_tokens` tokens after prompt_tokens [batch, pos] (or [pos]) with
    `interventions` applied at their positions in every forward (`spec.hooks_for`).

    temperature 0 is greedy; above 0 tokens are sampled (top_k / top_p optional) from a
    generator seeded with `seed`. kv_cache=False recomputes the whole sequence each step (the
    reference the cache is held equal to).
    """
    lean = as_lean(model)
    tokens = prompt_tokens if prompt_tokens.ndim == 2 else prompt_tokens.unsqueeze(0)
    prompt_len = tokens.shape[1]
    check_request(lean, prompt_len, max_new_tokens)
    check_sampling(temperature, top_k, top_p)
    check_interventions(lean, interventions, context_length(lean))
    ivs = on_device(interventions, lean.device)
    gen = torch.Generator().manual_seed(seed)
    tokens = tokens.to(lean.device)
    kv: dict[str, Tensor] = {}
    prefix: list[tuple[Tensor, Tensor]] = []
    layers = range(lean.n_layers)
    with progress_bar(progress) as bar:
        task = bar.add_task("generate", total=max_new_tokens)
        for step in range(max_new_tokens):
            start = tokens.shape[1] - 1 if kv_cache and step else 0
            hooks = hooks_for(ivs, start, prompt_len, lean)
            if kv_cache:
                hooks = _with_kv(lean, hooks, kv)
            logits = lean(
                tokens, hooks, logit_pos=[-1], start_pos=start, prefix_kv=prefix if start else None
            )
            if kv_cache:
                new = [(kv[lean.key_hook(l)], kv[f"blocks.{l}.attn.hook_v"]) for l in layers]
                prefix = (
                    new if step == 0 else [_cat(a, b) for a, b in zip(prefix, new, strict=True)]
                )
            nxt = next_token(logits[:, -1], temperature, top_k, top_p, gen)
            tokens = torch.cat([tokens, nxt[:, None].to(tokens.device)], 1)
            bar.advance(task)
    return Generation(tokens.cpu(), prompt_len)
