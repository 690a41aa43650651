"""Prompts for the stable-regions experiments: short random windows of held-out text.

Janiak et al. sample 10-token windows of text and pair consecutive samples. Here the text is the
offline corpus (held-out Python standard library files). The bundled models were trained on
sequences that start with BOS, so by default a window is BOS + `seq_len - 1` text tokens; pass
`prepend_bos=False` for the paper's BOS-free windows.
"""

from __future__ import annotations

import functools
import keyword
import random
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import RegionsError

CATEGORIES = ("newline", "space", "punct", "keyword", "number", "name")


@functools.cache
def _corpus(split: str) -> tuple[str, ...]:
    """The offline corpus's texts of one split, read once per process."""
    from mechscope.data.corpus import stdlib_texts

    return tuple(stdlib_texts(split))


def sample_prompts(
    tokenizer: Any,
    n_prompts: int,
    seq_len: int = 10,
    seed: int = 0,
    split: str = "heldout",
    prepend_bos: bool = True,
    texts: list[str] | None = None,
) -> Tensor:
    """Random contiguous token windows [n_prompts, seq_len] of corpus text, deterministic in seed.

    texts: source documents (default: `stdlib_texts(split)`). A window never crosses a document
    boundary and never contains a special token other than the leading BOS.
    """
    if n_prompts < 2 or seq_len < 2:
        raise RegionsError(f"need n_prompts >= 2 and seq_len >= 2, got {n_prompts}, {seq_len}")
    if texts is None:
        texts = list(_corpus(split))
    bos = tokenizer.bos_token_id
    if prepend_bos and bos is None:
        raise RegionsError("the tokenizer has no BOS token; pass prepend_bos=False")
    need = seq_len - 1 if prepend_bos else seq_len
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    weights = [len(t) for t in texts]
    if not texts or sum(weights) == 0:
        raise RegionsError("no text to sample prompts from; pass non-empty texts")
    rng = random.Random(seed)
    out: list[list[int]] = []
    for _ in range(100 * n_prompts):
        if len(out) == n_prompts:
            break
        text = rng.choices(texts, weights)[0]
        start = rng.randrange(0, max(1, len(text) - 8 * need))
        ids = tokenizer.encode(text[start : start + 12 * need + 64], add_special_tokens=False)
        window = ids[1 : 1 + need]  # the first token may be cut mid-word
        if len(window) == need and not specials.intersection(window):
            out.append([bos, *window] if prepend_bos else window)
    if len(out) < n_prompts:
        raise RegionsError(
            f"found only {len(out)} of {n_prompts} windows of {seq_len} tokens; use shorter "
            "prompts or a larger corpus"
        )
    return torch.tensor(out)


def consecutive_pairs(n_prompts: int) -> tuple[Tensor, Tensor]:
    """The paper's pairs (i, i+1), i = 0 .. n-2: indices (first [n-1], second [n-1])."""
    first = torch.arange(n_prompts - 1)
    return first, first + 1


def token_category(text: str) -> str:
    """A coarse category of a code token's text: one of `CATEGORIES`."""
    if "\n" in text:
        return "newline"
    word = text.strip()
    if not word:
        return "space"
    if not any(c.isalnum() or c == "_" for c in word):
        return "punct"
    if keyword.iskeyword(word):
        return "keyword"
    if word.replace(".", "", 1).isdigit():
        return "number"
    return "name"
