"""The bundled zoo: cards, task performance measured live, determinism of the build."""

import json

import pytest
import torch

from mechscope import zoo
from mechscope.artefacts import ARTEFACT_DIRS, TOKENIZER_DIR, WEIGHTS_DIR, shipped
from mechscope.tasks import make_task, run_task

CARD_FIELDS = {
    "architecture",
    "data",
    "training",
    "metrics",
    "command",
    "python_version",
    "n_params",
}


@pytest.mark.parametrize("name", ["code-attn4", "code-2l", "code-4l", "code-llama-2l"])
def test_cards_say_how_to_remake(name):
    card = zoo.card(name)
    assert set(card) >= CARD_FIELDS
    assert card["command"].startswith(f"mechscope zoo build {name}")
    device = card["training"].get("device", "cpu")
    assert card["command"].endswith(name if device == "cpu" else "--device cuda")
    assert card["training"]["seed"] == 0 and card["training"]["steps"] > 0
    assert name in zoo.list_models()


def test_checkpointed_models_have_six_intermediate_revisions():
    for name in ("code-2l", "code-4l", "code-llama-2l"):
        card = zoo.card(name)
        assert len(card["checkpoints"]) >= 6
        assert zoo.revisions(name)[: len(card["checkpoints"])] == [
            c["revision"] for c in card["checkpoints"]
        ]


def test_llama_is_the_asked_architecture_at_code_2l_size():
    from mechscope.artefacts import model_dir

    cfg = json.loads((model_dir("code-llama-2l") / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["hidden_act"] == "silu"
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (4, 2)
    assert (cfg["hidden_size"], cfg["num_hidden_layers"]) == (128, 2)
    assert (cfg["vocab_size"], cfg["max_position_embeddings"]) == (4096, 96)
    assert cfg["rope_parameters"]["rope_type"] == "default" and cfg["tie_word_embeddings"]
    llama, gpt2 = zoo.card("code-llama-2l"), zoo.card("code-2l")
    assert abs(llama["n_params"] / gpt2["n_params"] - 1) < 0.01
    assert llama["training"]["steps"] == gpt2["training"]["steps"]
    assert llama["architecture"]["mixture"] == gpt2["architecture"]["mixture"]


def test_attn4_solves_docstring_on_unseen_prompts(attn4):
    # seed 2024 prompts are generated here, never in training (training text has another format)
    task = make_task("docstring", attn4.tokenizer, n=200, seed=2024)
    result = run_task(attn4, task)
    assert result.clean > 2.0, result
    assert result.top1_accuracy > 0.7, result
    assert result.corrupt < result.clean - 2.0, result  # the corruption destroys the answer


def test_weights_fit_the_budget():
    # zoo, bundled SAEs and transcoders, basis models: every shipped weight
    total = sum(f.stat().st_size for d in ARTEFACT_DIRS for f in d.rglob("*.safetensors"))
    assert total < 64 * 2**20, f"{total / 2**20:.1f} MiB of bundled weights"


def test_one_registry_lists_what_ships():
    """`artefacts.shipped()` agrees with what the zoo, the bundled SAEs' cards and the basis
    package each list, transcoders ship for the two 2-layer models with MLPs, and every shipped
    weight lies under one of its folders."""
    from mechscope.basis import pretrained
    from mechscope.circuits.tracr import TASKS
    from mechscope.sae.bundled import list_bundled

    found = shipped()
    assert (
        found["models"]
        == zoo.list_models()
        == ["code-2l", "code-4l", "code-attn4", "code-llama-2l"]
    )
    cards = sorted(f"{m}/{e['name']}" for m in found["models"] for e in list_bundled(m))
    assert found["saes"] == cards and len(cards) >= 9
    assert found["transcoders"] == ["code-2l", "code-llama-2l"]
    assert found["basis"] == pretrained.list_bundled()
    assert found["tracr"] == sorted(TASKS)
    package = WEIGHTS_DIR.parents[1]
    weights = set(package.rglob("*.safetensors"))
    assert weights == {f for d in ARTEFACT_DIRS for f in d.rglob("*.safetensors")}


@pytest.mark.slow
def test_tokenizer_build_is_deterministic(tmp_path):
    from mechscope.zoo.training import build_tokenizer

    build_tokenizer(tmp_path)
    a = json.loads((tmp_path / "tokenizer.json").read_text())
    b = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text())
    assert a["model"] == b["model"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["code-2l", "code-llama-2l"])
def test_model_build_is_deterministic_and_writes_a_card(tmp_path, name):
    from safetensors.torch import load_file

    from mechscope.zoo.training import build_model

    a = build_model(name, out=tmp_path / "a", steps=3)
    b = build_model(name, out=tmp_path / "b", steps=3)
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    card = json.loads((a / "card.json").read_text())
    assert card["training"]["steps"] == 3 and "docstring_logit_diff" in card["metrics"]


def test_unknown_zoo_names():
    from mechscope.models import ModelLoadError

    with pytest.raises(ModelLoadError, match="Available: tokenizer, code-attn4"):
        zoo.card("gpt7")
    with pytest.raises(ModelLoadError, match="Buildable"):
        zoo.build("gpt7")
