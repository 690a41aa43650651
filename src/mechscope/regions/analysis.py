"""The stable-regions analysis of one model, and sweeps over checkpoints and model sizes.

`analyse` runs the paper's experiment on one model (one checkpoint): random prompt windows,
consecutive pairs, S-step paths between their write-site activations, and the same paths' lengths
in isotropic random directions as a control. `sweep` repeats it over checkpoints (training
dynamics; step-0 is the random-init control) and over models (size), on identical settings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor

from mechscope.errors import RegionsError
from mechscope.models.placement import Placement
from mechscope.progress import progress_bar
from mechscope.regions import boundaries as bd
from mechscope.regions.interpolate import (
    PathCurves,
    PathRunner,
    interpolate,
    interpolate_pairs,
)
from mechscope.regions.polytopes import crossings_per_layer, polytope_counts
from mechscope.regions.prompts import consecutive_pairs, sample_prompts
from mechscope.regions.result import RegionStats, RegionStatsTable


@dataclass
class RegionConfig:
    """Settings of one analysis (defaults: the paper's protocol at a small scale).

    n_prompts: random windows (pairs are consecutive windows: n_prompts - 1 paths);
    seq_len: tokens per window (BOS included when prepend_bos); n_steps: points per path (S);
    layer: write after this block (0 = after the first, as in the paper); path: "linear", "arc"
    or "slerp"; read: "normalized" (final-norm output) or "logits"; threshold: slope that counts
    as a boundary; min_end: pairs with d(1) <= min_end are dropped; backend: "auto", "lean" or
    "bridge".
    """

    n_prompts: int = 64
    seq_len: int = 10
    n_steps: int = 31
    layer: int = 0
    path: str = "linear"
    read: str = "normalized"
    threshold: float = 3.0
    min_end: float = 0.01
    seed: int = 0
    prepend_bos: bool = True
    batch_size: int = 2048
    backend: str = "auto"


def training_step(name: str, revision: str | None) -> int | None:
    """Training step of a revision: "step-500" / "step1000-tokens4B" -> the number; a bundled
    model's final weights ("main" or None) -> its card's step count; otherwise None."""
    if revision not in (None, "main"):
        m = re.match(r"step-?(\d+)", str(revision))
        return int(m.group(1)) if m else None
    from mechscope import zoo

    if name in zoo.list_models():
        return int(zoo.card(name)["training"]["steps"])
    return None


def parameter_count(name: str, model: Any) -> int | None:
    """Parameters of a bundled model (its card), else the config's count when it has one."""
    from mechscope import zoo

    if name in zoo.list_models():
        return int(zoo.card(name)["n_params"])
    n = getattr(model.cfg, "n_params", None)
    return int(n) if n else None


def summarise(
    real: PathCurves,
    iso: PathCurves,
    threshold: float = 3.0,
    min_end: float = 0.01,
    **info: Any,
) -> RegionStats:
    """`RegionStats` from real-pair curves and their isotropic control (info: model, revision,
    step, n_params)."""
    normed, kept = bd.normalise(real.dist, min_end)
    kl_normed, _ = bd.normalise(real.kl, min_end=1e-6)
    iso_normed, _ = bd.normalise(iso.dist, min_end)
    n_bound = bd.count_boundaries(bd.boundary_mask(normed, threshold))[kept]
    iso_bound = bd.count_boundaries(bd.boundary_mask(iso_normed, threshold))
    ratio = real.dist[:, -1] / iso.dist[:, -1].clamp_min(1e-12)
    poly_q, poly_mis, per_layer = None, None, {}
    if real.flips is not None:
        counts = polytope_counts(real, threshold, min_end)
        poly_q = bd.quartiles(counts.crossings.float())
        poly_mis = bd.quartiles(counts.mismatch.float())[1]
        per_layer = {
            str(l): bd.quartiles(c.float())[1] for l, c in crossings_per_layer(real).items()
        }
    return RegionStats(
        model=str(info.get("model", "model")),
        revision=info.get("revision"),
        step=info.get("step"),
        n_params=info.get("n_params"),
        n_pairs=int(kept.numel()),
        n_kept=int(kept.sum()),
        n_steps=real.n_steps,
        layer=int(real.meta["layer"]),
        path=str(real.meta["path"]),
        read=str(real.meta["read"]),
        threshold=threshold,
        sharpness=bd.quartiles(bd.sharpness(normed)),
        sharpness_kl=bd.quartiles(bd.sharpness(kl_normed)),
        median_curve=bd.median_curve(normed[kept]).tolist(),
        boundaries_mean=float(n_bound.float().mean()) if n_bound.numel() else float("nan"),
        with_boundary=float((n_bound > 0).float().mean()) if n_bound.numel() else float("nan"),
        top1_changes_mean=float(bd.top1_changes(real.top1).float().mean()),
        iso_sharpness=bd.quartiles(bd.sharpness(iso_normed)),
        iso_median_curve=bd.median_curve(iso_normed).tolist(),
        iso_with_boundary=float((iso_bound > 0).float().mean()),
        output_ratio=bd.quartiles(ratio)[1],
        polytope_crossings=poly_q,
        polytope_mismatch=poly_mis,
        meta={"polytope_crossings_per_layer": per_layer} if per_layer else {},
    )


def analyse(
    model: Any,
    revision: str | None = None,
    config: RegionConfig | None = None,
    tokens: Tensor | None = None,
    progress: bool = True,
    name: str | None = None,
) -> tuple[RegionStats, PathCurves, PathCurves]:
    """Stable-region analysis of one model: (stats, real-pair curves, isotropic-control curves).

    model: a loaded TransformerBridge, checkpoint `revision` of the model `name` (default: its
        cfg.model_name). tokens: prompts [n, T] (default: `sample_prompts` of config).
    """
    cfg = config or RegionConfig()
    name = name or str(getattr(model.cfg, "model_name", "model"))
    if tokens is None:
        tokens = sample_prompts(
            model.tokenizer, cfg.n_prompts, cfg.seq_len, cfg.seed, prepend_bos=cfg.prepend_bos
        )
    runner = PathRunner(model, tokens, cfg.layer, cfg.read, cfg.backend)  # type: ignore[arg-type]
    first, second = consecutive_pairs(tokens.shape[0])
    real = interpolate_pairs(
        runner, first, second, cfg.n_steps, cfg.path, cfg.batch_size, progress=progress
    )
    a = runner.clean_write[first]
    far = bd.isotropic_targets(a, runner.clean_write[second], seed=cfg.seed)
    mu = runner.clean_write.mean(0) if cfg.path == "arc" else None
    iso = interpolate(
        runner, first, a, far, cfg.n_steps, cfg.path, mu, None, cfg.batch_size, progress
    )
    meta = {"config": asdict(cfg), "backend": runner.backend}
    for c in (real, iso):
        c.meta.update(model=name, revision=revision, **meta)
    stats = summarise(
        real,
        iso,
        cfg.threshold,
        cfg.min_end,
        model=name,
        revision=revision,
        step=training_step(name, revision),
        n_params=parameter_count(name, model),
    )
    stats.meta.update(meta)
    return stats, real, iso


# the default sweep: two sizes of the GPT-2 family and the Llama family at code-2l's size, all
# with checkpoints at steps 0, 25, 75, 150, 300, 500 and the final weights (800)
SWEEP_MODELS = ("code-2l", "code-4l", "code-llama-2l")


def default_revisions(name: str) -> list[str]:
    """Every checkpoint of a bundled model (training order, then "main"); ["main"] otherwise."""
    from mechscope import zoo

    return zoo.revisions(name) if name in zoo.list_models() else ["main"]


def sweep(
    models: Sequence[str] = SWEEP_MODELS,
    revisions: Sequence[str] | None = None,
    config: RegionConfig | None = None,
    progress: bool = True,
    placement: Placement | None = None,
) -> RegionStatsTable:
    """`analyse` every model (default `SWEEP_MODELS`) at every revision (default: all bundled
    checkpoints), same settings; each loaded with `placement` (default: CPU, float32).

    Models sharing a tokenizer get identical prompts (the sampling is seeded). Revisions are the
    same list for every model when given; hub users pass e.g. Pythia's ["step0", "step1000"].
    """
    if not models:
        raise RegionsError("no models to sweep; pass e.g. models=['code-2l', 'code-4l']")
    cfg = config or RegionConfig()
    placement = placement or Placement()
    plan = [(m, r) for m in models for r in (revisions or default_revisions(m))]
    rows: list[RegionStats] = []
    prompts: dict[str, Tensor] = {}
    with progress_bar(progress) as bar:
        task = bar.add_task("stable regions", total=len(plan))
        for name, rev in plan:
            bar.update(task, description=f"{name}@{rev}")
            model = placement.load(name, rev)
            if name not in prompts:
                prompts[name] = sample_prompts(
                    model.tokenizer,
                    cfg.n_prompts,
                    cfg.seq_len,
                    cfg.seed,
                    "heldout",
                    cfg.prepend_bos,
                )
            stats, _, _ = analyse(model, rev, cfg, prompts[name], progress=False, name=name)
            rows.append(stats)
            bar.advance(task)
    return RegionStatsTable(rows, {"config": asdict(cfg), "models": list(models)})


def final_rows(result: RegionStatsTable) -> list[RegionStats]:
    """Each model's last checkpoint ("main" where present), ordered by parameter count."""
    last = [result.of(m)[-1] for m in result.models()]
    return sorted(last, key=lambda r: r.n_params or 0)


__all__ = [
    "SWEEP_MODELS",
    "RegionConfig",
    "analyse",
    "default_revisions",
    "final_rows",
    "parameter_count",
    "summarise",
    "sweep",
    "training_step",
]
