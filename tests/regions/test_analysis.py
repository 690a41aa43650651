"""One-call analysis over checkpoints and sizes; results round-trip; the random-init control."""

from __future__ import annotations

import math

import torch

from mechscope import load_model
from mechscope.regions import boundaries as bd
from mechscope.regions.analysis import (
    SWEEP_MODELS,
    RegionConfig,
    analyse,
    default_revisions,
    final_rows,
    sweep,
    training_step,
)
from mechscope.regions.plot import curves_figure, sweep_figure
from mechscope.regions.result import RegionStats, RegionStatsTable, load_curves, save_curves

TINY = RegionConfig(n_prompts=6, n_steps=7)


def _analyse(name: str, revision: str | None, cfg: RegionConfig):
    """`analyse` of checkpoint `revision` of the zoo model `name`."""
    return analyse(load_model(name, revision), revision, cfg, progress=False, name=name)


def test_training_step_of_revisions():
    assert training_step("code-2l", "step-150") == 150
    assert training_step("EleutherAI/pythia-70m", "step1000") == 1000
    assert training_step("allenai/OLMo-1B-0724-hf", "step5000-tokens10B") == 5000
    assert training_step("code-2l", "main") == training_step("code-2l", None) == 800
    assert training_step("gpt2", None) is None


def test_analyse_one_checkpoint(tmp_path):
    stats, real, iso = _analyse("code-2l", "step-300", TINY)
    assert (stats.model, stats.revision, stats.step) == ("code-2l", "step-300", 300)
    assert stats.n_pairs == 5 and stats.n_steps == 7 and len(stats.median_curve) == 7
    normed, kept = bd.normalise(real.dist)
    assert stats.sharpness == bd.quartiles(bd.sharpness(normed))
    assert stats.n_kept == int(kept.sum())
    assert stats.iso_sharpness == bd.quartiles(bd.sharpness(bd.normalise(iso.dist)[0]))
    # the control steps as far as the real pair, in another direction
    torch.testing.assert_close(iso.input_dist, real.input_dist)
    assert stats.polytope_crossings is not None and stats.polytope_crossings[1] > 0
    assert real.dist.shape == iso.dist.shape == (5, 7)
    assert not math.isnan(stats.output_ratio)
    stats.save(tmp_path / "s.json")
    assert RegionStats.load(tmp_path / "s.json") == stats
    save_curves(real, tmp_path / "c")
    back = load_curves(tmp_path / "c.safetensors")
    assert back.meta == real.meta and back.gate_layers == real.gate_layers
    for k, v in real.tensors().items():
        assert v.equal(getattr(back, k))
    curves_figure(real, stats, iso)


def test_sweep_over_checkpoints_and_sizes(tmp_path):
    result = sweep(["code-2l", "code-4l"], ["step-0", "main"], TINY, progress=False)
    assert [(r.model, r.step) for r in result.rows] == [
        ("code-2l", 0),
        ("code-2l", 800),
        ("code-4l", 0),
        ("code-4l", 800),
    ]
    assert [r.model for r in final_rows(result)] == ["code-2l", "code-4l"]
    # seeded prompts: a row of the sweep is the same analysis run on its own
    alone, _, _ = _analyse("code-4l", "step-0", TINY)
    assert alone.sharpness == result.rows[2].sharpness
    result.save(tmp_path / "sweep.json")
    back = RegionStatsTable.load(tmp_path / "sweep.json")
    assert back.rows == result.rows
    fig = sweep_figure(result)
    assert len(fig.data) == 2 * 2 + 2 * 2 + 1  # curves, sharpness + isotropic per model, size


def test_default_sweep_covers_both_families_checkpoints():
    """code-2l's and code-llama-2l's (and code-4l's) checkpoints, in training order."""
    assert SWEEP_MODELS == ("code-2l", "code-4l", "code-llama-2l")
    steps = ["step-0", "step-25", "step-75", "step-150", "step-300", "step-500", "main"]
    assert all(default_revisions(m) == steps for m in SWEEP_MODELS)


def test_sweep_over_llama_checkpoints():
    result = sweep(["code-llama-2l"], ["step-0", "step-150", "main"], TINY, progress=False)
    assert [(r.model, r.step) for r in result.rows] == [
        ("code-llama-2l", 0),
        ("code-llama-2l", 150),
        ("code-llama-2l", 800),
    ]
    assert all(r.n_pairs == 5 and r.sharpness[1] >= 1.0 for r in result.rows)
    assert result.rows[0].sharpness != result.rows[-1].sharpness  # other weights, other paths
    alone, _, _ = _analyse("code-llama-2l", "step-150", TINY)
    assert alone.sharpness == result.rows[1].sharpness


def test_random_init_has_flatter_paths_than_the_trained_model():
    """The paper's control on the bundled code-4l: step-0 (the initialisation) has no sharp
    boundaries; the trained weights have sharper ones (median over 23 pairs, 21 steps)."""
    cfg = RegionConfig(n_prompts=24, n_steps=21)
    init, _, _ = _analyse("code-4l", "step-0", cfg)
    trained, _, _ = _analyse("code-4l", None, cfg)
    assert init.sharpness[1] < 1.3
    assert trained.sharpness[1] > init.sharpness[1]
    assert init.with_boundary == 0.0
