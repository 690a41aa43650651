"""The bundled SAEs of code-2l and code-llama-2l: present, loadable, described by their card
(which the recipe and its command remake), and still faithful."""

from __future__ import annotations

import json
import shlex

import pytest
import torch

from mechscope.artefacts import sae_dir
from mechscope.data.corpus import is_heldout, stdlib_files
from mechscope.sae import SAEError, evaluate_sae
from mechscope.sae.bundled import bundled_configs, list_bundled, load_bundled
from mechscope.sae.config import TrainConfig

# model -> (fixture of the loaded model, losses of its bundled SAEs)
MODELS = {"code-2l": ("gpt2_2l", {"local", "e2e"}), "code-llama-2l": ("llama_2l", {"local"})}


def _card(model: str) -> dict:
    return json.loads((sae_dir(model) / "card.json").read_text())


@pytest.fixture(scope="module")
def heldout_tokens(tokenizer) -> list[torch.Tensor]:
    """Two [4, 96] batches of a held-out stdlib file, BOS first."""
    path = next(p for p in stdlib_files() if is_heldout(p) and p.stat().st_size > 20_000)
    ids = tokenizer.encode(path.read_text(), add_special_tokens=False)[: 8 * 95]
    rows = torch.tensor(ids).view(8, 95)
    toks = torch.cat([torch.full((8, 1), tokenizer.bos_token_id), rows], 1)
    return [toks[:4], toks[4:]]


@pytest.mark.parametrize("model", MODELS)
def test_card_lists_every_folder(model) -> None:
    card = _card(model)
    names = {s["name"] for s in card["saes"]}
    folders = {p.name for p in (sae_dir(model)).iterdir() if (p / "cfg.json").exists()}
    assert card["model"] == model
    assert names == folders and len(names) >= 6
    assert card["command"].startswith(f"mechscope sae build-bundled --model {model}")
    layers = {s["training"]["hook_name"] for s in card["saes"] if s["training"]["loss"] == "local"}
    assert layers == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    assert {s["training"]["loss"] for s in card["saes"]} == MODELS[model][1]


@pytest.mark.parametrize("model", MODELS)
def test_card_command_remakes_the_recipe(model) -> None:
    """The card's command, parsed, gives exactly the training configs the card lists."""
    args = shlex.split(_card(model)["command"])
    steps = int(args[args.index("--steps") + 1])
    cfgs = bundled_configs(model, steps, e2e="--no-e2e" not in args)
    # from_dict: fields added to TrainConfig since the build take their defaults
    assert cfgs == [TrainConfig.from_dict(s["training"]) for s in _card(model)["saes"]]


@pytest.mark.parametrize("model", MODELS)
def test_bundle_is_small(model) -> None:
    size = sum(p.stat().st_size for p in (sae_dir(model)).rglob("*") if p.is_file())
    assert size < 8 * 2**20


@pytest.mark.parametrize("model", MODELS)
def test_bundled_sae_reconstructs(model, heldout_tokens, request) -> None:
    bridge = request.getfixturevalue(MODELS[model][0])
    for entry in list_bundled(model):
        if entry["training"]["loss"] != "local" or entry["training"]["sparsity_coeff"] != 2.0:
            continue
        sae = load_bundled(model, entry["name"])
        assert sae.d_in == 128 and sae.d_sae == 1024
        ev = evaluate_sae(bridge, sae, heldout_tokens)
        assert ev.explained_variance > 0.6 and ev.ce_recovered > 0.6, entry["name"]
        # the card's held-out numbers describe these weights
        card = entry["evaluation"]
        assert abs(ev.l0 - card["l0"]) < 0.5 * card["l0"], (ev.l0, card["l0"])


def test_unknown_bundled_name() -> None:
    with pytest.raises(SAEError, match="no bundled SAE 'nope'"):
        load_bundled("code-2l", "nope")
    with pytest.raises(SAEError, match=r"Available: blocks\.0\.hook_resid_post__local__l1-1"):
        load_bundled("code-llama-2l", "nope")


def test_resolve_folder_then_bundled_then_release(tmp_path, monkeypatch) -> None:
    """`resolve`: an existing folder wins over a bundled SAE of the same name, a bundled name
    loads the bundled SAE, `release:sae_id` reads the SAELens directory; else one error."""
    from mechscope.sae import resolve, save_saelens, sources

    name = "blocks.0.hook_resid_post__local__l1-2"
    bundled = load_bundled("code-2l", name)
    got_name, got = resolve(name, "code-2l")
    assert got_name == name and torch.equal(got.W_dec, bundled.W_dec)
    mine = load_bundled("code-2l", name)
    with torch.no_grad():
        mine.W_dec.mul_(-1)
    save_saelens(mine, tmp_path / name)
    monkeypatch.chdir(tmp_path)  # the bare name is now also a folder: the folder wins
    got_name, got = resolve(name, "code-2l")
    assert got_name == name and torch.allclose(got.W_dec, -bundled.W_dec)
    calls = []
    monkeypatch.setattr(sources, "load_saelens_from_hub", lambda *a: calls.append(a) or mine)
    spec = "gpt2-small-res-jb:blocks.6.hook_resid_pre"
    assert resolve(spec, "code-2l") == (spec, mine)
    assert calls == [("jbloom/GPT2-Small-SAEs-Reformatted", "blocks.6.hook_resid_pre")]
    with pytest.raises(SAEError, match="no SAE 'nope' in SAELens release"):
        resolve("gpt2-small-res-jb:nope", "code-2l")
    with pytest.raises(SAEError, match=r"neither a SAELens folder, nor a bundled SAE.*l1-2"):
        resolve("nope", "code-2l")
