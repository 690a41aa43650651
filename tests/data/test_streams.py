"""Token streams from HF `datasets` sources: packing, sources, determinism, epochs, errors."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch

from mechscope.data.streams import hf_token_batches
from mechscope.errors import DataError

pytestmark = pytest.mark.usefixtures("datasets_cache")

N_CTX, BATCH = 16, 3


def docs(n: int = 40) -> list[str]:
    """Short Python-like documents of varied length."""
    return [f"def f{i}(x):\n    return x + {i}\n" * (i % 4 + 1) for i in range(n)]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    return path


def take_all(it) -> torch.Tensor:
    return torch.cat(list(it))


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "docs.jsonl", docs())


def test_packing_in_stored_order(jsonl: Path, tokenizer) -> None:
    out = take_all(hf_token_batches(jsonl, tokenizer, N_CTX, BATCH, shuffle_buffer=0))
    bos = tokenizer.bos_token_id
    stream = [t for d in docs() for t in [*tokenizer.encode(d, add_special_tokens=False), bos]]
    n_seq = len(stream) // (N_CTX - 1) // BATCH * BATCH  # one pass; partial batch dropped
    assert out.shape == (n_seq, N_CTX) and out.dtype == torch.long
    assert (out[:, 0] == bos).all()
    assert out[:, 1:].flatten().tolist() == stream[: n_seq * (N_CTX - 1)]


def test_every_source_kind_gives_the_same_batches(tmp_path: Path, jsonl: Path, tokenizer) -> None:
    ds = datasets.Dataset.from_dict({"text": docs()})
    ds.to_parquet(str(tmp_path / "docs.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "dict"))
    (tmp_path / "parts").mkdir()
    write_jsonl(tmp_path / "parts" / "a.jsonl", docs()[:20])
    write_jsonl(tmp_path / "parts" / "b.jsonl", docs()[20:])
    ref = take_all(hf_token_batches(jsonl, tokenizer, N_CTX, BATCH, shuffle_buffer=0))
    sources = {
        tmp_path / "docs.parquet": "train",
        tmp_path / "saved": "train",
        next((tmp_path / "saved").glob("*.arrow")): "train",
        tmp_path / "dict": "validation",
        str(tmp_path / "parts" / "*.jsonl"): "train",
        tmp_path / "parts": "train",
    }
    for source, split in sources.items():
        it = hf_token_batches(source, tokenizer, N_CTX, BATCH, split=split, shuffle_buffer=0)
        assert torch.equal(take_all(it), ref), source


def test_pretokenized_column(tmp_path: Path, jsonl: Path, tokenizer) -> None:
    ids = [tokenizer.encode(d, add_special_tokens=False) for d in docs()]
    datasets.Dataset.from_dict({"input_ids": ids}).save_to_disk(str(tmp_path / "ids"))
    got = hf_token_batches(tmp_path / "ids", tokenizer, N_CTX, BATCH, column="input_ids")
    ref = hf_token_batches(jsonl, tokenizer, N_CTX, BATCH)
    assert torch.equal(take_all(got), take_all(ref))


def test_seeded_shuffle_is_deterministic(jsonl: Path, tokenizer) -> None:
    def run(seed: int) -> torch.Tensor:
        return take_all(hf_token_batches(jsonl, tokenizer, N_CTX, BATCH, seed=seed))

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = take_all(hf_token_batches(jsonl, tokenizer, N_CTX, BATCH, shuffle_buffer=0))
    assert a.shape == plain.shape and not torch.equal(a, plain)


def test_epochs_end_or_cycle(jsonl: Path, tokenizer) -> None:
    one = take_all(hf_token_batches(jsonl, tokenizer, N_CTX, BATCH, shuffle_buffer=0))
    two = take_all(hf_token_batches(jsonl, tokenizer, N_CTX, BATCH, shuffle_buffer=0, epochs=2))
    assert 2 * one.shape[0] <= two.shape[0] <= 2 * one.shape[0] + BATCH
    assert torch.equal(two[: one.shape[0]], one)
    endless = hf_token_batches(jsonl, tokenizer, N_CTX, BATCH, epochs=None)
    n = 3 * one.shape[0] // BATCH
    assert len([next(endless) for _ in range(n)]) == n


def test_missing_column_lists_columns(jsonl: Path, tokenizer) -> None:
    with pytest.raises(DataError, match=r"no column 'content'.*\['text', 'id'\]"):
        hf_token_batches(jsonl, tokenizer, N_CTX, BATCH, column="content")


def test_no_files_match(tmp_path: Path, tokenizer) -> None:
    with pytest.raises(DataError, match="no files match"):
        hf_token_batches(str(tmp_path / "*.parquet"), tokenizer, N_CTX, BATCH)
    with pytest.raises(DataError, match="no files match"):
        hf_token_batches(tmp_path / "missing.jsonl", tokenizer, N_CTX, BATCH)


def test_missing_split(tmp_path: Path, tokenizer) -> None:
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"text": ["a"]})}).save_to_disk(
        str(tmp_path / "dict")
    )
    with pytest.raises(DataError, match=r"splits \['validation'\], not 'train'"):
        hf_token_batches(tmp_path / "dict", tokenizer, N_CTX, BATCH)


def test_empty_and_too_small_datasets(tmp_path: Path, tokenizer) -> None:
    empty = write_jsonl(tmp_path / "empty.jsonl", ["", ""])
    with pytest.raises(DataError, match="holds no tokens"):
        next(hf_token_batches(empty, tokenizer, N_CTX, BATCH, epochs=None))
    small = write_jsonl(tmp_path / "small.jsonl", ["x = 1"])
    with pytest.raises(DataError, match=r"fewer than one batch of 3 x 16"):
        next(hf_token_batches(small, tokenizer, N_CTX, BATCH))


def test_wrong_column_type(tmp_path: Path, tokenizer) -> None:
    datasets.Dataset.from_dict({"text": [1.5, 2.5]}).save_to_disk(str(tmp_path / "floats"))
    with pytest.raises(DataError, match="holds float values"):
        next(hf_token_batches(tmp_path / "floats", tokenizer, N_CTX, BATCH))
