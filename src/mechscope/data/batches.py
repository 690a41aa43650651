"""Token batches for every method: the corpus stream, HF datasets sources and held-out batches.

`token_batches` is the endless deterministic stream of the zoo's training mixture
(`mechscope.data.mixture.TokenStream`); `source_batches` picks a HF datasets source when one is
named; `eval_batches` are the held-out batches SAE evaluation, sensitive directions and feature
evolution measure on (held-out stdlib files, a fixed seed).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from torch import Tensor

from mechscope.data.mixture import TokenStream
from mechscope.errors import DataError

EVAL_SEED = 12345


def token_batches(
    tokenizer: Any,
    batch_size: int,
    n_ctx: int,
    seed: int,
    mixture: Mapping[str, float] | None = None,
    split: str = "train",
) -> Iterator[Tensor]:
    """Endless deterministic token batches [batch_size, n_ctx] from the offline corpus."""
    stream = TokenStream(tokenizer, dict(mixture or {"stdlib": 1.0}), n_ctx, seed, split)
    return stream.batches(batch_size)


def source_batches(
    model: Any,
    batch_size: int,
    seed: int,
    mixture: Mapping[str, float] | None = None,
    dataset: str = "",
    column: str = "text",
) -> Iterator[Tensor]:
    """Training token batches [batch_size, n_ctx] for `model` (a bridge or LeanModel: its
    tokenizer and n_ctx): one pass over the HF datasets source `dataset` (see
    `mechscope.data.streams.hf_token_batches`) when given, else the endless corpus stream of
    `mixture`."""
    n_ctx = int(model.cfg.n_ctx)
    if not dataset:
        return token_batches(model.tokenizer, batch_size, n_ctx, seed, mixture)
    from mechscope.data.streams import hf_token_batches

    if model.tokenizer is None:
        raise DataError(f"the model has no tokenizer to read {dataset!r}; pass token batches")
    return hf_token_batches(dataset, model.tokenizer, n_ctx, batch_size, column=column, seed=seed)


def eval_batches(
    model: Any,
    n_batches: int,
    batch_size: int = 16,
    seed: int = EVAL_SEED,
    mixture: Mapping[str, float] | None = None,
) -> list[Tensor]:
    """Held-out token batches [batch_size, n_ctx] for `model` (a bridge or LeanModel: its
    tokenizer and n_ctx): held-out stdlib files (and, if the mixture has them, synthetic
    documents from another seed than training's)."""
    n_ctx = int(model.cfg.n_ctx)
    it = token_batches(model.tokenizer, batch_size, n_ctx, seed, mixture, split="heldout")
    return [next(it) for _ in range(n_batches)]
