"""`mechscope sweep` on every declared family's toy model, given as its folder: one sae trial and
one regions trial run serially, and each trial's results equal the direct API call's."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from rich.console import Console

from mechscope.data.batches import eval_batches
from mechscope.models.declare import FAMILIES
from mechscope.models.lean import as_lean
from mechscope.regions import RegionConfig, RegionStatsTable, analyse
from mechscope.sae import TrainConfig
from mechscope.sae.activations import hook_width
from mechscope.sae.hparam_grid import train_and_save
from mechscope.sweep import SweepConfig, TrialResult, run_sweep

SAE = {"n_steps": 2, "batch_size": 2, "warmup_steps": 1, "expansion": 2, "sparsity_coeff": 0.1}
EVAL = {"n_eval_batches": 1, "eval_batch_size": 2}
REGIONS = {"n_prompts": 5, "seq_len": 10, "n_steps": 5}


def run_one(kind: str, fixed: dict, out) -> TrialResult:
    cfg = SweepConfig.from_dict({"kind": kind, "fixed": fixed})
    report = run_sweep(
        cfg, out, backend="serial", progress=False, console=Console(file=io.StringIO())
    )
    assert not report.failed, report.failed
    [trial] = cfg.trials()
    return TrialResult.load(out / "trials" / trial.key / "result.json")


def assert_same_results(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        if not isinstance(v, float):
            assert got[k] == v, k
        elif math.isnan(v):
            assert math.isnan(got[k]), k
        else:
            assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-7), k


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sae_trial_equals_train_and_save(
    family, toy_dir, toy_model, tmp_path, datasets_cache
) -> None:
    """Trained on a small jsonl dataset (the corpus stream would tokenize the whole standard
    library once per distinct tokenizer), evaluated on held-out corpus batches."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "\n".join(
            json.dumps({"text": f"def f{i}(x):\n    return x * {i}\n" * 6}) for i in range(40)
        )
    )
    model = str(toy_dir(family))
    # the residual stream: some toys' MLP activations are ~0.01 in norm, where two Adam steps of
    # lr 2e-3 on b_enc silence every latent (no activation normalisation yet: docs/sae.md)
    train = {"hook_name": "blocks.1.hook_resid_post", "dataset": str(docs), **SAE}
    got = run_one("sae", {"model": model, **train, **EVAL}, tmp_path / "sweep").results
    cfg = TrainConfig(model=model, **train)  # type: ignore[arg-type]
    bridge = toy_model(family)
    tokens = eval_batches(bridge, EVAL["n_eval_batches"], EVAL["eval_batch_size"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trial runs: float32 sums then agree to rounding
    try:
        want = train_and_save(cfg, bridge, tmp_path / "direct", tokens, progress=False).to_dict()
    finally:
        torch.set_num_threads(threads)
    want.pop("name")
    assert_same_results(got, want)
    assert got["d_sae"] == 2 * hook_width(as_lean(bridge), cfg.hook_name) and got["l0"] > 0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_regions_trial_equals_analyse(family, toy_dir, toy_model, tmp_path) -> None:
    model = str(toy_dir(family))
    got = run_one("regions", {"model": model, **REGIONS}, tmp_path).results
    stats, _, _ = analyse(
        toy_model(family), "main", RegionConfig(**REGIONS), progress=False, name=model
    )
    want = {
        k: v
        for k, v in RegionStatsTable([stats]).table()[0].items()
        if k not in ("model", "revision")
    }
    assert_same_results(got, want)
    assert stats.n_pairs == 4 and got["polytope_crossings_median"] is not None  # MLP gates read
