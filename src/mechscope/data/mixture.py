"""The training stream of the bundled models: stdlib source mixed with synthetic task text.

Every sequence is BOS followed by `n_ctx - 1` tokens cut from a deterministic stream of documents
separated by BOS (= EOS). Sources are drawn by the spec's mixture weights from a seeded generator.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from mechscope.data.corpus import encoded_stdlib
from mechscope.data.packing import pack
from mechscope.tasks import docstring, induction, ioi
from mechscope.tasks.words import (
    DESC_WORDS,
    FUNCTION_NAMES,
    OBJECTS,
    PARAM_NAMES,
    PERSON_NAMES,
    PLACES,
    single_token_words,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def synthetic_texts(rng: random.Random, n: int, tokenizer: PreTrainedTokenizerBase | None = None):
    """`n` synthetic docstring and IOI documents (all pool words when no tokenizer filters them)."""

    def pool(words: list[str]) -> list[str]:
        return single_token_words(tokenizer, words) if tokenizer is not None else sorted(set(words))

    names, words, fns = pool(PARAM_NAMES), pool(DESC_WORDS), pool(FUNCTION_NAMES)
    people, places, objs = pool(PERSON_NAMES), pool(PLACES), pool(OBJECTS)
    out = []
    for i in range(n):
        if i % 3:
            out.append(docstring.training_text(rng, names, words, fns))
        else:
            out.append(ioi.training_text(rng, people, places, objs))
    return out


class TokenStream:
    """Endless deterministic stream of [batch, n_ctx] training batches."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        mixture: dict[str, float],
        n_ctx: int,
        seed: int,
        split: str = "train",
    ) -> None:
        self.tok = tokenizer
        self.bos = int(tokenizer.bos_token_id or 0)
        self.n_ctx = n_ctx
        self.rng = random.Random(seed)
        self.g = torch.Generator().manual_seed(seed)
        self.names = list(mixture)
        self.weights = [mixture[k] for k in self.names]
        self.stdlib = encoded_stdlib(tokenizer, split)
        self.stdlib_order: list[int] = []
        self.pools = {
            "docstring": (
                single_token_words(tokenizer, PARAM_NAMES),
                single_token_words(tokenizer, DESC_WORDS),
                single_token_words(tokenizer, FUNCTION_NAMES),
            ),
            "ioi": (
                single_token_words(tokenizer, PERSON_NAMES),
                single_token_words(tokenizer, PLACES),
                single_token_words(tokenizer, OBJECTS),
            ),
        }

    def _stdlib_doc(self) -> list[int]:
        if not self.stdlib_order:
            self.stdlib_order = list(range(len(self.stdlib)))
            self.rng.shuffle(self.stdlib_order)
        ids = self.stdlib[self.stdlib_order.pop()]
        # a random window of a long file keeps documents varied
        if len(ids) > 4 * self.n_ctx:
            start = self.rng.randrange(0, len(ids) - 4 * self.n_ctx)
            ids = ids[start : start + 4 * self.n_ctx]
        return ids

    def _doc(self) -> list[int]:
        src = self.rng.choices(self.names, self.weights)[0]
        if src == "stdlib":
            return self._stdlib_doc()
        if src == "docstring":
            names, words, fns = self.pools["docstring"]
            text = "".join(docstring.training_text(self.rng, names, words, fns) for _ in range(2))
        elif src == "ioi":
            people, places, objs = self.pools["ioi"]
            text = ioi.training_text(self.rng, people, places, objs)
        elif src == "induction":
            return induction.training_ids(self.g, len(self.tok))
        else:
            raise ValueError(f"unknown mixture source {src!r}")
        return self.tok.encode(text, add_special_tokens=False)

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Endless batches [batch_size, n_ctx] (`mechscope.data.packing.pack` of the documents).
        Call once per stream: the documents are drawn as the batches need them."""
        return pack(iter(self._doc, None), self.bos, self.n_ctx, batch_size)
