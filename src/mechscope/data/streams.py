"""Token batches from Hugging Face `datasets`: local files, saved datasets and the hub, streamed.

`hf_token_batches` packs documents as the zoo's `TokenStream` does: the documents are joined into
one token stream, each followed by BOS (= EOS, the separator), and every sequence is BOS followed
by the next n_ctx - 1 tokens of that stream. A column holds text (tokenized in chunks of rows with
one tokenizer call each) or token ids (a pre-tokenized `input_ids` column).

The stream ends with the data: `epochs` passes over the dataset (default 1), then it stops, the
last incomplete sequence and batch dropped. `epochs=None` cycles endlessly; each pass is
reshuffled (datasets' `set_epoch`). The same source, seed and arguments give the same batches.
"""

from __future__ import annotations

import glob
import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
from torch import Tensor

from mechscope.data.packing import pack
from mechscope.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

BUILDERS = {
    ".txt": "text",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".csv": "csv",
}
_SAVED_MARKERS = ("state.json", "dataset_dict.json")  # written by save_to_disk


def _from_files(pattern: str, split: str, streaming: bool) -> Any:
    files = sorted(glob.glob(str(Path(pattern).expanduser())))
    files = [f for f in files if Path(f).is_file()]
    if not files:
        raise DataError(f"no files match {pattern!r}")
    suffixes = sorted({Path(f).suffix.lower() for f in files})
    if len(suffixes) > 1 or suffixes[0] not in BUILDERS:
        raise DataError(
            f"{pattern!r} matches files of type {suffixes}; use one of {sorted(BUILDERS)} "
            "(one type per source)"
        )
    return datasets.load_dataset(
        BUILDERS[suffixes[0]], data_files=files, split=split, streaming=streaming
    )


def _from_disk(folder: Path, split: str) -> datasets.Dataset:
    ds = datasets.load_from_disk(str(folder))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{folder} has splits {sorted(ds)}, not {split!r}; pass split=...")
        ds = ds[split]
    return ds


def load_source(
    source: str | Path,
    *,
    split: str = "train",
    streaming: bool = True,
    data_files: str | Sequence[str] | None = None,
    revision: str | None = None,
    subset: str | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """The rows of `source`, one split.

    source: a data file or glob (.txt, .json/.jsonl, .parquet, .arrow, .csv; one type), a folder
        written by `save_to_disk`, a folder of data files, or a hub dataset name (`subset` is its
        configuration, `revision` a branch, tag or commit). Files and the hub are streamed unless
        streaming=False (which builds datasets' arrow cache first).
    data_files: which files of a folder or hub dataset to read (datasets' `data_files`).
    """
    name = str(source)
    path = Path(name).expanduser()
    try:
        if any(c in name for c in "*?[") or (path.suffix.lower() in BUILDERS and not path.is_dir()):
            return _from_files(name, split, streaming)
        if path.is_dir() and any((path / m).exists() for m in _SAVED_MARKERS):
            return _from_disk(path, split)
        if path.is_dir():
            return datasets.load_dataset(
                str(path), data_files=data_files, split=split, streaming=streaming
            )
        if name.startswith((".", "/", "~")):
            raise DataError(f"no file or folder at {name!r}")
        return datasets.load_dataset(
            name, subset, data_files=data_files, split=split, streaming=streaming, revision=revision
        )
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"cannot load {name!r} (split {split!r}): {e}") from e


def _encode(values: list[Any], tokenizer: PreTrainedTokenizerBase, column: str) -> list[list[int]]:
    """Token ids of each value: text is tokenized (one call for the chunk), ids pass through."""
    texts = [v for v in values if isinstance(v, str)]
    encoded = iter(tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
    out: list[list[int]] = []
    for v in values:
        if isinstance(v, str):
            out.append(list(next(encoded)))
        elif isinstance(v, list | tuple) and all(isinstance(t, int) for t in v[:1]):
            out.append(list(v))
        elif v is not None:
            raise DataError(
                f"column {column!r} holds {type(v).__name__} values; it must hold text or "
                "token ids (a list of ints, e.g. `input_ids`)"
            )
    return out


def _documents(
    ds: datasets.IterableDataset,
    tokenizer: PreTrainedTokenizerBase,
    column: str,
    epochs: int | None,
    chunk_rows: int,
    what: str,
) -> Iterator[list[int]]:
    """Token ids of each document, `epochs` passes (None: endless)."""
    for epoch in range(epochs) if epochs is not None else itertools.count():
        ds.set_epoch(epoch)
        rows, n_tokens = iter(ds), 0
        while chunk := list(itertools.islice(rows, chunk_rows)):
            if column not in chunk[0]:
                raise DataError(f"{what} has no column {column!r}; its columns: {sorted(chunk[0])}")
            for ids in _encode([row[column] for row in chunk], tokenizer, column):
                n_tokens += len(ids)
                yield ids
        if n_tokens == 0:
            raise DataError(f"{what} holds no tokens: no rows, or only empty {column!r} values")


def _pack(
    docs: Iterable[list[int]], bos: int, n_ctx: int, batch_size: int, what: str
) -> Iterator[Tensor]:
    """`pack`, with an error when the documents hold less than one batch."""
    n_tokens = 0

    def counted() -> Iterator[list[int]]:
        nonlocal n_tokens
        for ids in docs:
            n_tokens += len(ids)
            yield ids

    n_batches = 0
    for batch in pack(counted(), bos, n_ctx, batch_size):
        n_batches += 1
        yield batch
    if n_batches == 0:
        raise DataError(
            f"{what} holds {n_tokens} tokens, fewer than one batch of {batch_size} x {n_ctx} "
            "needs; add data or lower batch_size / n_ctx"
        )


def hf_token_batches(
    source: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    n_ctx: int,
    batch_size: int,
    *,
    column: str = "text",
    split: str = "train",
    streaming: bool = True,
    seed: int = 0,
    shuffle_buffer: int = 10_000,
    epochs: int | None = 1,
    data_files: str | Sequence[str] | None = None,
    revision: str | None = None,
    subset: str | None = None,
    chunk_rows: int = 256,
) -> Iterator[Tensor]:
    """Deterministic token batches [batch_size, n_ctx] (int64) of a `datasets` source.

    source, split, streaming, data_files, revision, subset: see `load_source`.
    column: text (tokenized without special tokens) or token ids per row.
    seed, shuffle_buffer: datasets' buffer shuffle of the rows (0: the stored order).
    epochs: passes over the data before the stream ends (None: endless).
    Raises DataError at once for a missing source or column (on the first batch if the source
    does not declare its columns), and on iteration for a dataset with no tokens or too few for
    one batch.
    """
    if n_ctx < 2 or batch_size < 1:
        raise ValueError(f"need n_ctx >= 2 and batch_size >= 1, got {n_ctx}, {batch_size}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be >= 1 or None (endless), got {epochs}")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise DataError("the tokenizer has no BOS or EOS token to start and separate documents")
    what = f"{str(source)!r} (split {split!r})"
    ds = load_source(
        source,
        split=split,
        streaming=streaming,
        data_files=data_files,
        revision=revision,
        subset=subset,
    )
    if ds.column_names is not None:
        if column not in ds.column_names:
            raise DataError(f"{what} has no column {column!r}; its columns: {ds.column_names}")
        ds = ds.select_columns([column])
    if isinstance(ds, datasets.Dataset):
        ds = ds.to_iterable_dataset()
    if shuffle_buffer > 0:
        ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
    docs = _documents(ds, tokenizer, column, epochs, chunk_rows, what)
    return _pack(docs, int(bos), n_ctx, batch_size, what)
