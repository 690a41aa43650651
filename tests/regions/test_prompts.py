"""Prompt windows and token categories."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import RegionsError
from mechscope.regions.prompts import consecutive_pairs, sample_prompts, token_category

TEXTS = ["def add(a, b):\n    return a + b\n" * 20, "x = [i * 2 for i in range(10)]\n" * 20]


def test_windows_are_seeded_bos_first_and_free_of_other_specials(tokenizer):
    t = sample_prompts(tokenizer, 12, seq_len=8, seed=3, texts=TEXTS)
    assert t.shape == (12, 8)
    assert (t[:, 0] == tokenizer.bos_token_id).all()
    assert not torch.isin(t[:, 1:], torch.tensor(tokenizer.all_special_ids)).any()
    assert torch.equal(t, sample_prompts(tokenizer, 12, seq_len=8, seed=3, texts=TEXTS))
    assert not torch.equal(t, sample_prompts(tokenizer, 12, seq_len=8, seed=4, texts=TEXTS))
    no_bos = sample_prompts(tokenizer, 4, seq_len=8, seed=3, texts=TEXTS, prepend_bos=False)
    assert no_bos.shape == (4, 8) and (no_bos[:, 0] != tokenizer.bos_token_id).all()


def test_windows_are_text_from_the_sources(tokenizer):
    t = sample_prompts(tokenizer, 6, seq_len=6, seed=0, texts=TEXTS)
    for row in t.tolist():
        assert tokenizer.decode(row[2:]) in "".join(TEXTS)  # row[1] may be a cut word


def test_too_long_windows_are_a_clear_error(tokenizer):
    with pytest.raises(RegionsError, match="shorter prompts"):
        sample_prompts(tokenizer, 3, seq_len=500, texts=["a b c"])


def test_pairs_and_categories():
    first, second = consecutive_pairs(4)
    assert first.tolist() == [0, 1, 2] and second.tolist() == [1, 2, 3]
    cases = {"\n    ": "newline", "  ": "space", "):": "punct", " return": "keyword"}
    cases |= {"42": "number", " self": "name", "_x": "name"}
    assert {k: token_category(k) for k in cases} == cases
