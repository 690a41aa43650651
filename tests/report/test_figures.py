"""The report's figures and header: colour scales centred where intended, one colour per legend
entry across panels, figures that fit the page, rerun commands that paste into a shell, and a
header that says when a run stopped early."""

from __future__ import annotations

import json
import re
import shlex
import subprocess

import click
import pytest
import torch
import typer

from mechscope.cli import app
from mechscope.patching.plot import plot_result
from mechscope.patching.result import PatchResult
from mechscope.report import demo as D
from mechscope.report import sections as S
from mechscope.report.render import PAGE_WIDTH, figure_div, run_state
from mechscope.report.sections import DemoConfig, Section
from mechscope.sae.evaluate import SAEEval, pareto_figure


def _result(values: torch.Tensor, axes: tuple[str, ...], clean: float, corrupted: float):
    labels = {a: [str(i) for i in range(n)] for a, n in zip(axes, values.shape, strict=True)}
    return PatchResult(values, axes, labels, clean, corrupted, "logit_diff", "denoising", "z")


@pytest.mark.parametrize("axes", [("layer", "pos"), ("layer", "pos", "head")])
def test_heatmap_colour_scale_is_centred_on_zero(axes) -> None:
    """Values from -0.2 to 1.5 (normalised): the scale must run [-1.5, 1.5] so that 0 is its
    centre (white), which zmid cannot do once zmin / zmax are set."""
    g = torch.Generator().manual_seed(0)
    shape = (2, 3) if len(axes) == 2 else (2, 3, 4)
    norm = torch.rand(shape, generator=g) * 1.7 - 0.2
    norm.view(-1)[0], norm.view(-1)[1] = -0.2, 1.5
    clean, corrupted = 2.0, 1.0  # values = corrupted + norm * (clean - corrupted)
    fig = plot_result(_result(corrupted + norm * (clean - corrupted), axes, clean, corrupted))
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert heatmaps
    for t in heatmaps:
        assert t.zmid is None
        assert t.zmin == pytest.approx(-1.5, abs=1e-5) and t.zmax == pytest.approx(1.5, abs=1e-5)
    raw = plot_result(_result(torch.tensor([[3.0, 1.0], [1.0, 1.0]]), ("layer", "pos"), 1.0, 1.0))
    (t,) = raw.data  # clean == corrupted: raw values, centred on the base run's metric (1)
    assert (t.zmin, t.zmax) == (-1.0, 3.0)


def _eval(name: str, l0: float, ce: float, ev: float) -> SAEEval:
    fields: dict = {f: 0.0 for f in SAEEval.__dataclass_fields__ if f != "feature_density"}
    fields.update(name=name, hook_name=name, architecture="standard", d_sae=8, n_tokens=16)
    fields.update(l0=l0, ce_recovered=ce, explained_variance=ev)
    return SAEEval(**fields)


def test_pareto_legend_colour_is_each_groups_colour_in_both_panels() -> None:
    evals = [_eval(f"s{i}", 1 + i, 0.9, 0.8) for i in range(6)]
    groups = ["local", "local", "e2e", "e2e", "e2e_ds", "e2e_ds"]
    fig = pareto_figure(evals, groups)
    by_group: dict[str, set[str]] = {}
    for t in fig.data:
        by_group.setdefault(t.legendgroup, set()).update({t.line.color, t.marker.color})
    assert all(len(c) == 1 for c in by_group.values()), by_group
    assert len(set.union(*by_group.values())) == 3  # the groups differ
    assert sum(t.showlegend for t in fig.data) == 3  # one legend entry per group


def test_figures_wider_than_the_page_are_refitted() -> None:
    import plotly.graph_objects as go

    wide = go.Figure(go.Scatter(y=[1, 2])).update_layout(width=1680)
    assert '"width":1680' not in figure_div(wide, "w").replace(" ", "")
    assert wide.layout.width == 1680  # the caller's figure is left as it was
    narrow = go.Figure(go.Scatter(y=[1, 2])).update_layout(width=PAGE_WIDTH - 100)
    assert f'"width":{PAGE_WIDTH - 100}' in figure_div(narrow, "n").replace(" ", "")


def _parse(args: list[str]) -> dict:
    """Parse a command line with the CLI's own parser (no command runs)."""
    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("mechscope", args)
    while isinstance(cmd, click.Group):
        name, sub, rest = cmd.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        assert sub is not None, args
        cmd = sub
        ctx = cmd.make_context(name, rest, parent=ctx)
    return ctx.params


@pytest.mark.parametrize("quick", [False, True])
def test_rerun_commands_paste_into_a_shell(quick: bool) -> None:
    """Each command is valid bash and every mechscope call in it (a `for` loop's body once per
    value) parses with the CLI's options: no placeholders."""
    cfg = DemoConfig.make(quick)
    for _, commands, _ in S.STAGES.values():
        for line in commands(cfg):
            subprocess.run(["bash", "-n", "-c", line], check=True)
            loop = re.fullmatch(r"for (\w+) in ([^;]+); do (.+); done", line)
            calls = [line] if loop is None else [
                loop[3].replace(f"${loop[1]}", v) for v in loop[2].split()
            ]  # fmt: skip
            for call in calls:
                assert "$" not in call and "<" not in call and "TAU" not in call, call
                words = shlex.split(call)
                assert words[0] == "mechscope", call
                _parse(words[1:])


def _fake_stages(monkeypatch, interrupt_at: str) -> None:
    def stage(key: str):
        def run(cfg, files) -> Section:
            if key == interrupt_at:
                raise KeyboardInterrupt  # Ctrl-C (SIGINT) midway
            return Section(key, key.title(), f"{key}?", [f"mechscope {key}"], finding="ok")

        return ((key, key.title(), f"{key}?"), lambda cfg: [f"mechscope {key}"], run)

    monkeypatch.setattr(S, "STAGES", {k: stage(k) for k in ("a", "b", "c")})


def test_a_demo_stopped_midway_says_so(monkeypatch, tmp_path) -> None:
    _fake_stages(monkeypatch, interrupt_at="b")
    with pytest.raises(KeyboardInterrupt):
        D.run_demo(tmp_path / "r.html", quick=True)
    page = (tmp_path / "r.html").read_text()
    assert "stages: all" not in page
    assert '<p class="incomplete" id="run-state">Incomplete: 1 of 3 stages ran (a)' in page
    assert "Incomplete: 1 of 3 stages ran (a); not run: b, c. The run was interrupted" in page
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["complete"] is False and data["meta"]["stages"] == ["a", "b", "c"]

    _fake_stages(monkeypatch, interrupt_at="")
    D.run_demo(tmp_path / "r.html", quick=True, only=["c", "a"])
    page = (tmp_path / "r.html").read_text()
    assert "stages: c, a (all 2 planned stages ran)" in page
    assert 'id="run-state">Incomplete' not in page
    assert json.loads((tmp_path / "r.json").read_text())["complete"] is True


def test_run_state_without_a_plan_counts_what_ran() -> None:
    secs = [Section("x", "X", "x?", ["mechscope x"])]
    assert run_state(secs, {}) == (True, "stages: x (all 1 planned stages ran)")
    done, text = run_state(secs, {"stages": ["x", "y"]})
    assert not done and text.startswith("Incomplete: 1 of 2 stages ran (x); not run: y.")
