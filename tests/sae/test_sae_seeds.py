"""`sweep_seeds` / `mechscope sae sweep --seeds`: per-seed SAEs, their aggregate, resume, errors."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

import plotly.io
import pytest
import torch
import typer
from safetensors.torch import load_file
from typer.testing import CliRunner

import mechscope.sae.hparam_grid as sweep_mod
from mechscope.sae import SAEError, TrainConfig
from mechscope.sae.cli import sae_app
from mechscope.sae.hparam_grid import SEED_METRICS, SeedSweep, check_seeds, run_name, sweep_seeds
from mechscope.zoo.specs import SPECS

HOOK = "blocks.0.hook_resid_post"
SEEDS = [0, 1, 2]
COEFFS = [0.1, 1.0]
app = typer.Typer()
app.add_typer(sae_app, name="sae")
runner = CliRunner()


def tiny() -> TrainConfig:
    return TrainConfig(
        model="code-2l", hook_name=HOOK, n_steps=3, batch_size=2, expansion=2, warmup_steps=1
    )


def run(out: Path, model) -> SeedSweep:
    return sweep_seeds(
        tiny(), out, SEEDS, coeffs=COEFFS, model=model, n_eval_batches=1, progress=False
    )


@pytest.fixture(scope="module")
def swept(tmp_path_factory, gpt2_2l) -> tuple[Path, SeedSweep]:
    out = tmp_path_factory.mktemp("seeds")
    return out, run(out, gpt2_2l)


def weights(out: Path, seed: int, name: str) -> dict[str, torch.Tensor]:
    return load_file(out / f"seed-{seed}" / name / "sae_weights.safetensors")


def test_seeds_give_different_saes_on_the_same_eval_tokens(swept) -> None:
    out, result = swept
    name = run_name(tiny())  # coeff 1.0: the base's own
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert not torch.equal(weights(out, a, name)["W_enc"], weights(out, b, name)["W_enc"])
    for seed in SEEDS:
        meta = json.loads((out / f"seed-{seed}" / name / "cfg.json").read_text())["metadata"]
        assert meta["mechscope"]["training"]["seed"] == seed
    # the same held-out tokens for every seed: the unpatched model's CE and token count agree
    for i in range(len(COEFFS)):
        evs = [result.runs[s][i] for s in SEEDS]
        assert len({e.ce_orig for e in evs}) == 1 and len({e.n_tokens for e in evs}) == 1
        assert len({e.mse for e in evs}) == len(SEEDS)


def test_summary_is_mean_std_min_max_of_the_saved_runs(swept) -> None:
    out, result = swept
    saved = json.loads((out / "seeds.json").read_text())
    assert saved == json.loads(json.dumps(result.to_dict()))
    names = [run_name(replace(tiny(), sparsity_coeff=c)) for c in COEFFS]
    assert [s["name"] for s in saved["summary"]] == names
    for summary in saved["summary"]:
        # read each seed's evaluation back from its SAELens folder, independently of seeds.json
        evals = [
            json.loads((out / f"seed-{s}" / summary["name"] / "cfg.json").read_text())["metadata"][
                "evaluation"
            ]
            for s in SEEDS
        ]
        for metric in SEED_METRICS:
            values = [e[metric] for e in evals]
            mean = sum(values) / len(values)
            std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
            got = summary["stats"][metric]
            assert got["mean"] == pytest.approx(mean, rel=1e-12, abs=1e-15)
            assert got["std"] == pytest.approx(std, rel=1e-9, abs=1e-15)
            assert (got["min"], got["max"]) == (min(values), max(values))
        assert summary["seeds"] == SEEDS
    assert statistics.stdev([result.runs[s][0].l0 for s in SEEDS]) > 0


def test_figure_has_std_error_bars(swept) -> None:
    out, result = swept
    html = (out / "pareto_seeds.html").read_text()
    assert "error_x" in html and "error_y" in html
    fig = sweep_mod.seed_pareto_figure(result.summary)
    rows = sorted(result.summary, key=lambda s: s.stats["l0"]["mean"])
    trace = fig.data[0]  # CE recovered of the only hook/loss group
    assert list(trace.x) == [s.stats["l0"]["mean"] for s in rows]
    assert list(trace.error_y.array) == [s.stats["ce_recovered"]["std"] for s in rows]
    assert list(trace.error_x.array) == [s.stats["l0"]["std"] for s in rows]
    plotly.io.to_json(fig)  # serialisable
    for seed in SEEDS:
        assert (out / f"seed-{seed}" / "results.json").exists()


def test_rerun_skips_finished_seeds(swept, gpt2_2l, monkeypatch) -> None:
    out, result = swept

    def no_training(*args, **kwargs):
        raise AssertionError("a finished seed was trained again")

    monkeypatch.setattr(sweep_mod, "train_sae", no_training)
    again = run(out, gpt2_2l)
    assert again.to_dict() == result.to_dict()


def test_rerun_trains_only_the_missing_seed(tmp_path, swept, gpt2_2l, monkeypatch) -> None:
    """A sweep stopped after seeds 0 and 1 trains only seed 2 and gives the same aggregate."""
    _, result = swept
    sweep_seeds(tiny(), tmp_path, [0, 1], coeffs=COEFFS, model=gpt2_2l, n_eval_batches=1,
                progress=False)  # fmt: skip
    trained = []
    real = sweep_mod.train_sae

    def counting(cfg, *args, **kwargs):
        trained.append(cfg.seed)
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(sweep_mod, "train_sae", counting)
    resumed = run(tmp_path, gpt2_2l)
    assert trained == [2, 2]
    assert resumed.to_dict() == result.to_dict()


@pytest.mark.parametrize(
    ("seeds", "message"),
    [([], "at least two seeds"), ([3], "at least two seeds"), ([0, 0, 1], "seeds repeat"),
     ([0, -1], "non-negative integers"), ([0, 1.5], "non-negative integers")],
)  # fmt: skip
def test_bad_seeds(seeds, message) -> None:
    with pytest.raises(SAEError, match=message):
        check_seeds(seeds)


@pytest.mark.parametrize(
    ("arg", "message"),
    [("0,a", "--seeds takes integers"), ("1", "at least two seeds"), ("2,2", "seeds repeat"),
     ("0,-1", "non-negative")],
)  # fmt: skip
def test_cli_bad_seeds(arg, message) -> None:
    result = runner.invoke(app, ["sae", "sweep", "--seeds", arg])
    assert result.exit_code == 2 and message in result.output.replace("\n", "")


def test_cli_seeds_refuse_a_store(tmp_path) -> None:
    result = runner.invoke(app, ["sae", "sweep", "--seeds", "0,1", "--store", str(tmp_path)])
    assert result.exit_code == 2 and "cannot train from --store" in result.output.replace("\n", "")


def test_cli_seeds_end_to_end(tmp_path) -> None:
    args = ["sae", "sweep", "--hooks", HOOK, "--coeffs", "1", "--steps", "2", "--batch-size", "2"]
    args += ["--expansion", "2", "--eval-batches", "1", "--seeds", "0, 1", "--mixture", "model"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "seeds.json").read_text())
    assert saved["seeds"] == [0, 1] and len(saved["summary"]) == 1
    assert "±" in result.output and (tmp_path / "pareto_seeds.html").exists()
    meta = json.loads((tmp_path / "seed-1" / saved["summary"][0]["name"] / "cfg.json").read_text())
    assert meta["metadata"]["mechscope"]["training"]["mixture"] == dict(SPECS["code-2l"].mixture)
