"""`mechscope acdc` on a bundled tracr model: files written, errors reported."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from mechscope.circuits.cli import acdc_command

app = typer.Typer()
app.command()(acdc_command)


def test_acdc_command_on_tracr(tmp_path):
    out = tmp_path / "rev"
    res = CliRunner().invoke(
        app, ["--tracr", "reverse", "--ablation", "zero", "--tau", "0.001", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "15 of 106 edges" in res.output
    d = json.loads(out.with_suffix(".json").read_text())
    assert d["n_edges"] == 15 and d["meta"]["model"] == "tracr-reverse"
    assert out.with_suffix(".dot").exists() and out.with_suffix(".html").exists()


def test_acdc_command_errors(tmp_path):
    res = CliRunner().invoke(app, ["--tracr", "reverse", "--tau", "-1", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "tau must be" in res.output
    res = CliRunner().invoke(app, ["--tracr", "sort", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "Unknown tracr task" in res.output
