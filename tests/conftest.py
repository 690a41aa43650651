"""Shared fixtures: the bundled tokenizer and models, loaded once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tokenizer():
    from mechscope.artefacts import TOKENIZER_DIR
    from mechscope.data import load_tokenizer

    return load_tokenizer(TOKENIZER_DIR)


@pytest.fixture(scope="session")
def attn4():
    import mechscope

    return mechscope.load_model("code-attn4")


@pytest.fixture(scope="session")
def gpt2_2l():
    import mechscope

    return mechscope.load_model("code-2l")


@pytest.fixture(scope="session")
def llama_2l():
    import mechscope

    return mechscope.load_model("code-llama-2l")


def browser_unavailable(reason: str) -> None:
    """Skip a browser test with `reason`, or fail it where the environment sets CI (.ci/run
    installs chromium and playwright, so a skip there would hide a broken set-up)."""
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI is set, so browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium():
    """(path of Debian's chromium, playwright's sync_playwright) for the browser tests; skips
    with the reason when either is missing, fails instead when CI is set."""
    import shutil
    from pathlib import Path

    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).exists():
        browser_unavailable("chromium not found: install it with `apt-get install chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_unavailable("playwright missing: pip install playwright (uses system chromium)")
    return exe, sync_playwright


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    """The `datasets` cache (lock files of streamed sources) in the test's tmp_path."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    """family -> folder of a tiny random HF model of that family (saved once per session)."""
    from mechscope.models.toy import save_toy

    folders: dict[str, object] = {}

    def get(family: str):
        if family not in folders:
            folders[family] = save_toy(family, tmp_path_factory.mktemp(family))
        return folders[family]

    return get


@pytest.fixture(scope="session")
def toy_model(toy_dir):
    """family -> the TransformerBridge of that family's toy model (loaded once per session)."""
    import mechscope

    models: dict[str, object] = {}

    def get(family: str):
        if family not in models:
            models[family] = mechscope.load_model(toy_dir(family))
        return models[family]

    return get
