"""How documents become training sequences, for every token stream in mechscope."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor


def pack(docs: Iterable[list[int]], bos: int, n_ctx: int, batch_size: int) -> Iterator[Tensor]:
    """Batches [batch_size, n_ctx] (int64): the documents joined into one stream, each followed
    by BOS (= EOS, the separator), cut into sequences of BOS + the next n_ctx - 1 tokens. Empty
    documents are skipped; when `docs` ends, the last incomplete sequence and batch are dropped.
    Documents are drawn only as the batches need them."""
    need = n_ctx - 1
    buf: list[int] = []
    rows: list[list[int]] = []
    for ids in docs:
        if not ids:
            continue
        buf += ids
        buf.append(bos)
        cut = 0
        while len(buf) - cut >= need:
            rows.append([bos, *buf[cut : cut + need]])
            cut += need
            if len(rows) == batch_size:
                yield torch.tensor(rows, dtype=torch.long)
                rows = []
        del buf[:cut]
