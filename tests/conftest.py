"""Shared fixtures: the bundled tokenizer and models, loaded once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tokenizer():
    from mechscope.data import load_tokenizer
    from mechscope.zoo.paths import TOKENIZER_DIR

    return load_tokenizer(TOKENIZER_DIR)


@pytest.fixture(scope="session")
def attn4():
    import mechscope

    return mechscope.load_model("code-attn4")


@pytest.fixture(scope="session")
def gpt2_2l():
    import mechscope

    return mechscope.load_model("code-2l")
