"""Induction: a random token sequence repeated; the model must continue the repeat.

Clean: BOS, s_1..s_L, s_1..s_{L-1} -> s_L. Corrupted: the first half is a fresh random sequence, so
no earlier occurrence tells the answer. Default metric: log-probability of the answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mechscope.tasks.base import Task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FIRST_ID = 257  # skip BOS and the 256 single-byte tokens: random tokens are merged "words"


def make_induction(
    tokenizer: PreTrainedTokenizerBase, n: int = 50, seed: int = 0, length: int = 20
) -> Task:
    """`n` repeated random sequences of `length` tokens (prompt length 2 * length)."""
    vocab = len(tokenizer)
    if vocab <= FIRST_ID + 2 * length:
        raise ValueError(f"vocabulary of {vocab} tokens is too small for induction prompts")
    g = torch.Generator().manual_seed(seed)
    draw = [
        torch.randperm(vocab - FIRST_ID, generator=g)[: 3 * length] + FIRST_ID for _ in range(n)
    ]
    seqs = torch.stack([d[:length] for d in draw])
    fresh = torch.stack([d[length : 2 * length] for d in draw])
    others = torch.stack([d[2 * length :] for d in draw])
    bos = torch.full((n, 1), tokenizer.bos_token_id or 0)
    clean = torch.cat([bos, seqs, seqs[:, :-1]], dim=1)
    corrupt = torch.cat([bos, fresh, seqs[:, :-1]], dim=1)
    return Task(
        name="induction",
        clean_tokens=clean,
        corrupt_tokens=corrupt,
        answers=seqs[:, -1],
        wrong_answers=others[:, :1],
        metric="logprob",
        clean_prompts=[str(tokenizer.decode(t[1:])) for t in clean],
        corrupt_prompts=[str(tokenizer.decode(t[1:])) for t in corrupt],
    )


def training_ids(g: torch.Generator, vocab: int, max_len: int = 60) -> list[int]:
    """Token ids of one repeated random sequence (for language-model training)."""
    length = int(torch.randint(5, max_len // 2, (1,), generator=g))
    s = (torch.randint(FIRST_ID, vocab, (length,), generator=g)).tolist()
    return s + s
