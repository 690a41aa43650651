"""`mechscope sae ...`: the sub-app's commands and their error messages."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from mechscope.sae import SAEConfig, SparseAutoencoder, save_saelens
from mechscope.sae.cli import sae_app

app = typer.Typer()
app.add_typer(sae_app, name="sae")
runner = CliRunner()


def test_help_lists_commands() -> None:
    out = runner.invoke(app, ["sae", "--help"]).output
    for cmd in ("train", "sweep", "store", "eval", "build-bundled", "list"):
        assert cmd in out


def test_list_unknown_model() -> None:
    result = runner.invoke(app, ["sae", "list", "--model", "no-such-model"])
    assert result.exit_code == 2 and "no bundled SAEs" in result.output


def test_eval_width_mismatch(tmp_path, gpt2_2l) -> None:
    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=128, hook_name="blocks.0.hook_resid_post"))
    save_saelens(sae, tmp_path / "sae")
    result = runner.invoke(app, ["sae", "eval", str(tmp_path / "sae"), "--model", "code-2l"])
    assert result.exit_code == 2 and "does not match hook" in result.output


def test_train_bad_loss() -> None:
    args = ["sae", "train", "--hook", "blocks.0.hook_resid_post", "--loss", "mse"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--loss 'mse' is unknown" in result.output


@pytest.mark.slow
def test_train_end_to_end(tmp_path) -> None:
    args = ["sae", "train", "--model", "code-2l", "--hook", "blocks.0.hook_resid_post"]
    args += ["--steps", "3", "--batch-size", "4", "--expansion", "2", "--eval-batches", "1"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "blocks.0.hook_resid_post__local__l1-3"
    meta = json.loads((folder / "cfg.json").read_text())["metadata"]
    assert meta["evaluation"]["d_sae"] == 256 and meta["mechscope"]["training"]["n_steps"] == 3
    assert (tmp_path / "results.json").exists() and (tmp_path / "pareto.html").exists()
