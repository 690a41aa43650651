"""Truncated, corrupt or incomplete files of every kind mechscope reads back: SAE folders,
training checkpoints, evolution results and their resumable state, model and basis weights,
saved results. Each is refused with the area's error naming the file, what is wrong and how to
remake it; weights holding NaN or inf are refused at load, not turned into NaN metrics."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mechscope.errors import (
    BasisError,
    CircuitError,
    DirectionsError,
    EvolutionError,
    PatchingError,
    RegionsError,
    SAEError,
)
from mechscope.sae import SAEConfig, SparseAutoencoder, save_saelens


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(max(64, path.stat().st_size // 4)))


def empty(path: Path) -> None:
    path.write_bytes(b"")


DAMAGE = [truncate, garbage, empty]


@pytest.fixture
def sae_dir(tmp_path: Path) -> Path:
    sae = SparseAutoencoder(
        SAEConfig(d_in=128, d_sae=256, hook_name="blocks.0.hook_resid_post", model_name="code-2l")
    )
    return save_saelens(sae, tmp_path / "sae")


@pytest.mark.parametrize("damage", DAMAGE)
def test_sae_weights_damaged(damage, sae_dir, mechscope_cli, failed_cleanly) -> None:
    damage(sae_dir / "sae_weights.safetensors")
    result = mechscope_cli(["sae", "eval", sae_dir])
    failed_cleanly(
        result,
        f"{sae_dir / 'sae_weights.safetensors'}: is truncated or not a safetensors file",
        "Retrain it (`mechscope sae train --out`)",
    )


@pytest.mark.parametrize("damage", DAMAGE)
def test_sae_cfg_damaged(damage, sae_dir, mechscope_cli, failed_cleanly) -> None:
    damage(sae_dir / "cfg.json")
    result = mechscope_cli(["sae", "eval", sae_dir])
    failed_cleanly(result, f"{sae_dir / 'cfg.json'}: is truncated or not valid JSON")


@pytest.mark.parametrize(("cfg", "missing"), [("{}", "d_in, d_sae"), ('{"d_in": 128}', "d_sae")])
def test_sae_cfg_missing_keys(cfg, missing, sae_dir, mechscope_cli, failed_cleanly) -> None:
    (sae_dir / "cfg.json").write_text(cfg)
    result = mechscope_cli(["sae", "eval", sae_dir])
    failed_cleanly(result, f"{sae_dir / 'cfg.json'} lacks {missing}: not a SAELens cfg.json")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_sae_weights_not_finite(value, sae_dir, mechscope_cli, failed_cleanly) -> None:
    file = sae_dir / "sae_weights.safetensors"
    weights = load_file(str(file))
    weights["W_dec"][3, 5] = value
    save_file(weights, str(file))
    result = mechscope_cli(["sae", "eval", sae_dir])
    failed_cleanly(result, f"{file}: W_dec hold NaN or inf values")


@pytest.mark.parametrize("damage", DAMAGE)
def test_sae_checkpoint_damaged(damage, tmp_path, gpt2_2l) -> None:
    """A resumable training checkpoint cut short (e.g. copied while written by another tool)."""
    from mechscope.sae.config import TrainConfig
    from mechscope.sae.train import CHECKPOINT, train_sae

    file = tmp_path / CHECKPOINT
    torch.save({"step": 3, "sae": {"W_enc": torch.randn(128, 256)}}, file)
    damage(file)
    cfg = TrainConfig(
        model="code-2l", hook_name="blocks.0.hook_resid_post", n_steps=2, batch_size=2
    )
    with pytest.raises(SAEError, match=f"{file}: is truncated or corrupt.*Delete it"):
        train_sae(cfg, gpt2_2l, checkpoint_dir=tmp_path, progress=False)


@pytest.fixture(scope="module")
def evolution_result(tmp_path_factory) -> Path:
    """A small real `evolution run` result (code-2l's bundled SAEs, 2 x 2 sequences)."""
    from typer.testing import CliRunner

    from mechscope.cli import app

    out = tmp_path_factory.mktemp("evolution") / "result"
    args = ["evolution", "run", "--batches", "2", "--batch-size", "2", "--no-graph"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("file", ["evolution.json", "tensors.safetensors"])
@pytest.mark.parametrize("damage", DAMAGE)
def test_evolution_result_damaged(
    file, damage, evolution_result, tmp_path, mechscope_cli, failed_cleanly
) -> None:
    folder = tmp_path / "result"
    shutil.copytree(evolution_result, folder)
    damage(folder / file)
    result = mechscope_cli(["evolution", "page", folder, "--html", tmp_path / "page.html"])
    failed_cleanly(
        result, f"{folder / file}: is truncated", "Rerun `mechscope evolution run --out`"
    )
    assert not (tmp_path / "page.html").exists()


def test_evolution_result_files_of_two_runs(
    evolution_result, tmp_path, mechscope_cli, failed_cleanly
) -> None:
    """evolution.json of one run beside the tensors of another (a copy gone wrong)."""
    folder = tmp_path / "result"
    shutil.copytree(evolution_result, folder)
    tensors = load_file(str(folder / "tensors.safetensors"))
    save_file(
        {k: v for k, v in tensors.items() if not k.startswith("pair0.")},
        str(folder / "tensors.safetensors"),
    )
    result = mechscope_cli(["evolution", "page", folder, "--html", tmp_path / "page.html"])
    failed_cleanly(result, "evolution.json and tensors.safetensors do not fit together")


@pytest.mark.parametrize("damage", DAMAGE)
def test_evolution_checkpoint_damaged(damage, tmp_path) -> None:
    from mechscope.evolution.checkpoint import STATE_FILE, StreamState, load_state, save_state

    save_state(tmp_path, "fp", StreamState("features", 1, 10, {"x": torch.ones(3)}))
    damage(tmp_path / STATE_FILE)
    with pytest.raises(EvolutionError, match=f"{tmp_path / STATE_FILE}: is truncated .*Remove"):
        load_state(tmp_path, "fp")


@pytest.fixture
def toy_model_dir(tmp_path) -> Path:
    from mechscope.models.toy import save_toy

    return save_toy("gpt2", tmp_path / "toy")


@pytest.mark.parametrize("damage", DAMAGE)
def test_model_weights_damaged(damage, toy_model_dir, mechscope_cli, failed_cleanly) -> None:
    damage(toy_model_dir / "model.safetensors")
    result = mechscope_cli(["run-task", "--model", toy_model_dir, "--n", "2"])
    failed_cleanly(result, f"{toy_model_dir}: cannot read its weights", "save the model again")


def test_model_config_damaged(toy_model_dir, mechscope_cli, failed_cleanly) -> None:
    truncate(toy_model_dir / "config.json")
    result = mechscope_cli(["run-task", "--model", toy_model_dir, "--n", "2"])
    failed_cleanly(result, f"{toy_model_dir / 'config.json'}: is truncated or not valid JSON")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_model_weights_not_finite(value, toy_model_dir, mechscope_cli, failed_cleanly) -> None:
    file = toy_model_dir / "model.safetensors"
    weights = load_file(str(file))
    weights["transformer.h.0.attn.c_proj.weight"][0, 0] = value
    save_file(weights, str(file), metadata={"format": "pt"})
    result = mechscope_cli(["run-task", "--model", toy_model_dir, "--n", "2"])
    failed_cleanly(result, f"{toy_model_dir}: ", "hold NaN or inf values")


@pytest.mark.parametrize("damage", DAMAGE)
def test_basis_weights_damaged(damage, tmp_path, mechscope_cli, failed_cleanly) -> None:
    from mechscope.artefacts import BASIS_DIR

    folder = tmp_path / "modadd"
    shutil.copytree(BASIS_DIR / "modadd-1l", folder)
    damage(folder / "model.safetensors")
    result = mechscope_cli(
        ["basis", "analyse", "modadd-1l", "--weights", folder, "--out", tmp_path]
    )
    failed_cleanly(result, f"{folder / 'model.safetensors'}: is truncated", "mechscope basis build")


def _patch_result(tmp: Path) -> tuple[Path, Callable[[Path], object]]:
    from mechscope.patching.result import PatchResult

    r = PatchResult(
        torch.randn(2, 3), ("layer", "pos"), {}, 1.0, 0.0, "logit_diff", "denoising", "resid_pre"
    )
    return r.save(tmp / "resid_pre_denoising")[1], PatchResult.load


def _circuit(tmp: Path) -> tuple[Path, Callable[[Path], object]]:
    from mechscope.circuits.result import Circuit

    return tmp / "c.json", Circuit.load


def _regions(tmp: Path) -> tuple[Path, Callable[[Path], object]]:
    from mechscope.regions.result import RegionStatsTable

    path = RegionStatsTable([], {}).save(tmp / "sweep.json")
    return path, RegionStatsTable.load


def _directions(tmp: Path) -> tuple[Path, Callable[[Path], object]]:
    from mechscope.directions.result import SubstitutionResult

    path = SubstitutionResult(model="code-2l", rows=[]).save(tmp / "substitution.json")
    return path, SubstitutionResult.load


def _basis(tmp: Path) -> tuple[Path, Callable[[Path], object]]:
    from mechscope.basis.result import BasisAnalysis

    return tmp / "analysis.json", lambda p: BasisAnalysis.load(p.parent)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (_patch_result, PatchingError),
        (_circuit, CircuitError),
        (_regions, RegionsError),
        (_directions, DirectionsError),
        (_basis, BasisError),
    ],
)
def test_saved_results_damaged(make, error, tmp_path) -> None:
    path, load = make(tmp_path)
    if not path.exists():
        path.write_text('{"graph": {"n_layers": 2}, "edges": [')
    truncate(path)
    with pytest.raises(error, match=f"{path}"):
        load(path)
