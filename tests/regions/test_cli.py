"""The `mechscope regions` commands write their results and fail with clear messages."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mechscope.regions.cli import regions_app

runner = CliRunner()


def test_run_writes_stats_curves_and_figure(tmp_path):
    args = ["run", "--model", "code-2l", "--revision", "step-75", "--n-prompts", "5"]
    res = runner.invoke(regions_app, [*args, "--n-steps", "5", "--out", str(tmp_path), "--cdn"])
    assert res.exit_code == 0, res.output
    stem = tmp_path / "code-2l@step-75"
    stats = json.loads(stem.with_suffix(".json").read_text())
    assert stats["step"] == 75 and stats["n_pairs"] == 4
    for f in ("code-2l@step-75_curves.safetensors", "code-2l@step-75_isotropic.json"):
        assert (tmp_path / f).exists()
    assert "plotly" in stem.with_suffix(".html").read_text()


def test_sweep_and_semantic_commands(tmp_path):
    args = ["sweep", "-m", "code-2l", "-r", "step-0", "-r", "step-500", "--n-prompts", "4"]
    res = runner.invoke(regions_app, [*args, "--n-steps", "5", "--out", str(tmp_path), "--cdn"])
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "sweep.json").read_text())["rows"]
    assert [r["step"] for r in rows] == [0, 500]
    args = ["semantic", "--model", "code-2l", "--n-prompts", "4", "--n-steps", "5"]
    res = runner.invoke(regions_app, [*args, "--out", str(tmp_path), "--cdn"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "semantic_code-2l@main.html").exists()


def test_bad_layer_is_a_clear_error(tmp_path):
    res = runner.invoke(
        regions_app, ["run", "--model", "code-2l", "--layer", "5", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2
    assert "--layer must be an integer in [-1, 1], got 5" in res.output
