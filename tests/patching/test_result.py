"""PatchResult: save/load round trip, normalisation, plots with token labels, and the CLI."""

from __future__ import annotations

import json

import torch
import typer
from typer.testing import CliRunner

from mechscope.patching import PatchResult, patch_task, path_patch, task_metric
from mechscope.patching.cli import patch_command
from mechscope.patching.plot import plot_result, write_html


def test_save_load_round_trip(attn4, docstring8, tmp_path):
    r = patch_task(attn4, docstring8, "resid_pre", "noising")
    js, st = r.save(tmp_path / "sub" / "resid")
    assert js.exists() and st.exists()
    head = json.loads(js.read_text())
    assert head["axes"] == ["layer", "pos"] and head["direction"] == "noising"
    back = PatchResult.load(st)
    assert torch.equal(back.values, r.values) and back.labels == r.labels
    assert (back.clean, back.corrupted, back.metric) == (r.clean, r.corrupted, r.metric)
    assert back.meta["task"] == "docstring"


def test_plots_have_token_labels_and_every_shape_draws(attn4, docstring8, tmp_path):
    by_pos = patch_task(attn4, docstring8, "resid_pre", "denoising")
    fig = plot_result(by_pos)
    assert list(fig.data[0].x) == by_pos.labels["pos"]
    assert "def" in "".join(by_pos.labels["pos"])  # token text, not just indices
    heads = patch_task(attn4, docstring8, "z", "denoising", positions="all")
    assert list(plot_result(heads).data[0].x) == [str(h) for h in range(8)]
    three = patch_task(attn4, docstring8, "z", "denoising", positions=[0, 1])
    assert len(plot_result(three).data) == attn4.cfg.n_layers
    t = docstring8
    paths = path_patch(attn4, t.clean_tokens, t.corrupt_tokens, task_metric(t), ["0.0"], ["1.0.q"])
    assert plot_result(paths, normalise=False).data[0].y == ("0.0",)
    page = write_html(fig, tmp_path / "fig.html")
    assert "plotly" in page.read_text()[:5000].lower()


def test_cli_writes_results_and_figures(tmp_path):
    app = typer.Typer()
    app.command()(patch_command)
    out = tmp_path / "out"
    args = ["--n", "4", "-c", "attn_out", "-c", "z", "--positions", "all", "--attribution"]
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    for stem in ("attn_out_denoising", "z_denoising", "z_denoising_attribution"):
        for ext in (".json", ".safetensors", ".html"):
            assert (out / f"{stem}{ext}").exists(), stem + ext
    assert "Pearson r" in res.output
    bad = CliRunner().invoke(app, ["--n", "2", "-c", "mlp_out", "--out", str(out)])
    assert bad.exit_code == 2 and "no hook" in bad.output
