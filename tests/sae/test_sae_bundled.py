"""The bundled SAEs of code-2l: present, loadable, described by their card, and still faithful."""

from __future__ import annotations

import json

import pytest
import torch

from mechscope.data.corpus import is_heldout, stdlib_files
from mechscope.sae import SAEError, evaluate_sae
from mechscope.sae.bundled import PRETRAINED_DIR, list_bundled, load_bundled

CARD = PRETRAINED_DIR / "code-2l" / "card.json"


@pytest.fixture(scope="module")
def heldout_tokens(tokenizer) -> list[torch.Tensor]:
    """Two [4, 96] batches of a held-out stdlib file, BOS first."""
    path = next(p for p in stdlib_files() if is_heldout(p) and p.stat().st_size > 20_000)
    ids = tokenizer.encode(path.read_text(), add_special_tokens=False)[: 8 * 95]
    rows = torch.tensor(ids).view(8, 95)
    toks = torch.cat([torch.full((8, 1), tokenizer.bos_token_id), rows], 1)
    return [toks[:4], toks[4:]]


def test_card_lists_every_folder() -> None:
    card = json.loads(CARD.read_text())
    names = {s["name"] for s in card["saes"]}
    folders = {p.name for p in CARD.parent.iterdir() if (p / "cfg.json").exists()}
    assert names == folders and len(names) >= 8
    assert card["command"].startswith("mechscope sae build-bundled")
    layers = {s["training"]["hook_name"] for s in card["saes"] if s["training"]["loss"] == "local"}
    assert layers == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    assert {s["training"]["loss"] for s in card["saes"]} == {"local", "e2e"}


def test_bundle_is_small() -> None:
    size = sum(p.stat().st_size for p in CARD.parent.rglob("*") if p.is_file())
    assert size < 8 * 2**20


def test_bundled_sae_reconstructs(gpt2_2l, heldout_tokens) -> None:
    entry = next(s for s in list_bundled("code-2l") if s["training"]["loss"] == "local")
    sae = load_bundled("code-2l", entry["name"])
    assert sae.d_in == 128 and sae.d_sae == 1024
    ev = evaluate_sae(gpt2_2l, sae, heldout_tokens)
    assert ev.explained_variance > 0.6 and ev.ce_recovered > 0.6


def test_unknown_bundled_name() -> None:
    with pytest.raises(SAEError, match="no bundled SAE 'nope'"):
        load_bundled("code-2l", "nope")
