"""The real kinds, one tiny sweep each, serially: results and artifacts in the trial folders."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from mechscope.circuits import Circuit
from mechscope.regions import RegionStats
from mechscope.sae import load_saelens
from mechscope.sweep import SweepConfig, TrialResult, run_sweep
from mechscope.sweep.kinds import SaeParams


def run(d, out):
    cfg = SweepConfig.from_dict(d)
    quiet = Console(file=io.StringIO())
    report = run_sweep(cfg, out, backend="serial", progress=False, console=quiet)
    assert not report.failed, report.failed
    return [(t, TrialResult.load(out / "trials" / t.key / "result.json")) for t in cfg.trials()]


def test_acdc_trial_saves_its_circuit(tmp_path):
    fixed = {"model": "code-attn4", "task": "ioi", "n": 4, "tau": 0.03}
    [(t, r)] = run({"kind": "acdc", "fixed": fixed}, tmp_path)
    c = Circuit.load(tmp_path / "trials" / t.key / "circuit.json")
    assert r.results["n_edges"] == c.n_edges > 0 and r.results["faithfulness"] > 0.5
    assert c.meta["task"] == "ioi" and c.tau == 0.03
    # found on seed 0's prompts, measured on seed 1's: both kept
    assert c.meta["seed"] == 0 and c.meta["test_seed"] == 1 and c.search is not None
    assert r.results["faithfulness"] == pytest.approx(c.faithfulness)
    assert r.results["search_faithfulness"] == pytest.approx(c.search.faithfulness)


def test_regions_over_checkpoints(tmp_path):
    fixed = {"model": "code-2l", "n_prompts": 6, "n_steps": 5}
    rows = run(
        {"kind": "regions", "fixed": fixed, "grid": {"revision": ["step-0", "main"]}}, tmp_path
    )
    steps = [r.results["step"] for _, r in rows]
    assert steps[0] == 0 and steps[1] > 0
    for t, r in rows:
        stats = RegionStats.load(tmp_path / "trials" / t.key / "stats.json")
        assert stats.revision == t.params["revision"]
        assert r.results["s_median"] == pytest.approx(stats.sharpness[1])


def test_sae_params_take_a_layer_or_a_hook():
    assert SaeParams(model="code-2l", layer=1).hook == "blocks.1.hook_resid_post"
    p = SaeParams(model="code-2l", hook_name="blocks.0.hook_resid_pre")
    assert p.train_config().hook_name == "blocks.0.hook_resid_pre"
    with pytest.raises(ValueError, match="either hook_name or layer"):
        SaeParams(model="code-2l")


@pytest.mark.slow
def test_sae_trial_trains_saves_and_evaluates(tmp_path):
    fixed = {
        "model": "code-2l",
        "layer": 0,
        "n_steps": 4,
        "batch_size": 2,
        "warmup_steps": 1,
        "expansion": 1,
        "n_eval_batches": 1,
        "eval_batch_size": 2,
    }
    [(t, r)] = run({"kind": "sae", "fixed": fixed}, tmp_path)
    sae = load_saelens(tmp_path / "trials" / t.key / "blocks.0.hook_resid_post__local__l1-1")
    assert r.results["d_sae"] == sae.W_dec.shape[0] == 128
    assert 0 < r.results["l0"] <= 128 and "ce_recovered" in r.results
