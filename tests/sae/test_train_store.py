"""SAE training from an activation store and from HF datasets sources (Python and CLI).

The store is written from the same token batches, batch size and dtype (float32) as the live run,
so training from it gives the same SAE bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import load_file
from typer.testing import CliRunner

from mechscope.data.streams import hf_token_batches
from mechscope.models.lean import LeanModel
from mechscope.sae import SAEError, TrainConfig, train_sae
from mechscope.sae.cli import sae_app
from mechscope.sae.store import ActivationStore, write_store

pytestmark = pytest.mark.usefixtures("datasets_cache")

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
app = typer.Typer()
app.add_typer(sae_app, name="sae")
runner = CliRunner()


def batches(n: int, batch: int = 4, pos: int = 24) -> Iterator[torch.Tensor]:
    """Random token batches [batch, pos] with BOS (0) first."""
    g = torch.Generator().manual_seed(0)
    for _ in range(n):
        t = torch.randint(1, 4096, (batch, pos), generator=g)
        t[:, 0] = 0
        yield t


def tiny(**kw) -> TrainConfig:
    base = {"n_steps": 6, "batch_size": 4, "expansion": 2, "warmup_steps": 2, "lr": 3e-3}
    base |= {"model": "code-2l", "hook_name": HOOKS[0], "sparsity_coeff": 0.1}
    return TrainConfig(**(base | kw))


def text(result) -> str:
    """The CLI's output without the line breaks rich inserts in long lines."""
    return result.output.replace("\n", "")


def assert_same_sae(a, b) -> None:
    for name, p in a.sae.state_dict().items():
        assert torch.equal(p, b.sae.state_dict()[name]), name
    assert a.history == b.history


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")


@pytest.fixture(scope="module")
def lean(gpt2_2l) -> LeanModel:
    return LeanModel(gpt2_2l)


@pytest.fixture(scope="module")
def store(lean: LeanModel, tmp_path_factory) -> ActivationStore:
    """8 batches of 4 sequences at both hooks, in shards of 5 sequences (cut across batches)."""
    out = tmp_path_factory.mktemp("store")
    return write_store(
        lean, HOOKS, batches(8), out, shard_tokens=5 * 24, model_name="code-2l", progress=False
    )


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A jsonl dataset of 28 batches of 2 x 96 tokens (shuffled or not)."""
    lines = [json.dumps({"text": f"def f{i}(x):\n    return x * {i}\n" * 4}) for i in range(100)]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines))
    return tmp_path / "docs.jsonl"


@pytest.mark.parametrize("hook", HOOKS)
def test_store_training_equals_live(lean: LeanModel, store: ActivationStore, hook: str) -> None:
    cfg = tiny(hook_name=hook)
    live = train_sae(cfg, lean, batches(6), progress=False)
    stored = train_sae(cfg, store=ActivationStore(store.path), progress=False)
    assert_same_sae(live, stored)


def test_store_training_resumes(store: ActivationStore, tmp_path: Path) -> None:
    cfg = tiny(checkpoint_every=2)
    full = train_sae(cfg, store=store, progress=False)
    train_sae(cfg, store=store, checkpoint_dir=tmp_path, stop_at=3, progress=False)
    resumed = train_sae(cfg, store=store, checkpoint_dir=tmp_path, progress=False)
    assert_same_sae(full, resumed)


def test_store_refusals(store: ActivationStore) -> None:
    with pytest.raises(SAEError, match="serves only the local loss"):
        train_sae(tiny(loss="e2e"), store=store)
    with pytest.raises(SAEError, match=r"'blocks.0.hook_mlp_out' is not in the store.*holds \["):
        train_sae(tiny(hook_name="blocks.0.hook_mlp_out"), store=store)
    with pytest.raises(SAEError, match=r"holds 32 sequences \(768 tokens\).*need 40 \(960 tokens"):
        train_sae(tiny(n_steps=10), store=store)
    with pytest.raises(SAEError, match="activations of model 'code-2l', not 'code-attn4'"):
        train_sae(tiny(model="code-attn4"), store=store)
    with pytest.raises(SAEError, match="at most one of tokens, store and activations"):
        train_sae(tiny(), tokens=batches(6), store=store)


def test_train_from_dataset(lean: LeanModel, corpus: Path, tokenizer) -> None:
    cfg = tiny(dataset=str(corpus), batch_size=2, n_steps=3)
    from_cfg = train_sae(cfg, lean, progress=False)
    explicit = hf_token_batches(corpus, tokenizer, 96, 2, seed=0)
    assert_same_sae(from_cfg, train_sae(cfg, lean, explicit, progress=False))
    with pytest.raises(SAEError, match=r"ran out after 28 of 40 steps"):
        train_sae(tiny(dataset=str(corpus), batch_size=2, n_steps=40), lean, progress=False)


def test_cli_store_then_train_equals_dataset_training(corpus: Path, tmp_path: Path) -> None:
    data = ["--dataset", str(corpus), "--batch-size", "2"]
    store = ["sae", "store", "--hooks", HOOKS[0], "--n-tokens", "500", "--out", str(tmp_path / "s")]
    result = runner.invoke(app, [*store, *data])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["n_seq"] == 6 and manifest["source"]["dataset"] == str(corpus)
    again = runner.invoke(app, [*store, *data])
    assert again.exit_code == 2 and "already holds an activation store" in text(again)

    train = ["sae", "train", "--hook", HOOKS[0], "--steps", "3", "--expansion", "2"]
    train += ["--eval-batches", "1", "--batch-size", "2"]
    a, b = tmp_path / "a", tmp_path / "b"
    from_store = runner.invoke(app, [*train, "--store", str(tmp_path / "s"), "--out", str(a)])
    from_data = runner.invoke(app, [*train, "--dataset", str(corpus), "--out", str(b)])
    assert from_store.exit_code == 0 and from_data.exit_code == 0, from_store.output
    name = f"{HOOKS[0]}__local__l1-3/sae_weights.safetensors"
    weights_a, weights_b = load_file(a / name), load_file(b / name)
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_cli_store_errors(store: ActivationStore, tmp_path: Path) -> None:
    train = ["sae", "train", "--hook", HOOKS[0], "--store", str(store.path), "--out", str(tmp_path)]
    result = runner.invoke(app, [*train, "--loss", "e2e"])
    assert result.exit_code == 2 and "only the local loss" in text(result)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in store.path.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    shard = broken / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:1000])
    result = runner.invoke(app, [*train[:4], "--store", str(broken), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "broken/shard-00001.safetensors has 1000 bytes" in text(result)
