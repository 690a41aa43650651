"""`mechscope directions` writes results and fails with clear messages."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mechscope.directions.cli import directions_app

runner = CliRunner()


def test_families_lists_every_family():
    res = runner.invoke(directions_app, ["families"])
    assert res.exit_code == 0, res.output
    assert "cov_mixture" in res.output and "toward_real" in res.output


@pytest.mark.slow
def test_error_command_writes_the_substitution_and_checks_hooks(tmp_path):
    sae = "blocks.1.hook_resid_post__local__l1-4"
    args = ["error", "--sae", sae, "--batches", "1", "--batch-size", "2", "--out", str(tmp_path)]
    res = runner.invoke(directions_app, [*args, "--cdn"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "substitution_code-2l.json").read_text())
    assert data["ratios"][0]["sae"] == sae and data["ratios"][0]["ratio_cov_mixture"] > 0
    assert "plotly" in (tmp_path / "substitution_code-2l.html").read_text()
    res = runner.invoke(
        directions_app, ["sweep", "--hook", "blocks.9.hook_resid_post", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "unknown hook" in res.output


def test_bad_inputs_exit_2_with_a_message(tmp_path):
    res = runner.invoke(directions_app, ["error", "--sae", "nope", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "is neither a SAELens folder" in res.output
    res = runner.invoke(directions_app, ["sweep", "--lengths", "a,b", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "comma-separated numbers" in res.output
