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


def test_acdc_command_on_a_task_reports_held_out_prompts(tmp_path):
    out = tmp_path / "ioi"
    args = ["--model", "code-attn4", "--task", "ioi", "--n", "4", "--tau", "0.03"]
    res = CliRunner().invoke(app, [*args, "--n-test", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "held-out kl" in res.output and "on the search prompts" in res.output
    d = json.loads(out.with_suffix(".json").read_text())
    assert d["meta"]["seed"] == 0 and d["meta"]["test_seed"] == 1
    assert d["meta"]["n_prompts"] == 4 and d["meta"]["n_test_prompts"] == 3
    assert d["faithfulness"] == d["test_metrics"]["kl"]["faithfulness"]
    assert d["search"]["faithfulness"] != d["faithfulness"]
    res = CliRunner().invoke(app, [*args, "--metric", "acc", "--out", str(out)])
    assert res.exit_code == 2 and "choose one of logit_diff, logprob, prob, kl" in res.output
