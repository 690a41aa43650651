"""Families of SAEs: one per (hook, sparsity) pair, trained, saved (SAELens format) and evaluated.

A sweep folder holds one SAELens-format folder per SAE (its evaluation in cfg.json's metadata),
`results.json` (every evaluation) and `pareto.html` (L0 against CE recovered / explained variance).
Checkpoints go to `<out>/_checkpoints/<name>`, so a stopped sweep resumes where it was.

`sweep_seeds` trains every configuration once per seed (SAE init and data order follow the seed,
the held-out evaluation tokens do not) into `<out>/seed-<s>/`, and writes `seeds.json` (every
run and, per configuration, mean, std, min and max over seeds) and `pareto_seeds.html`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from mechscope.data.batches import eval_batches
from mechscope.errors import SAEError
from mechscope.files import read_json, write_figure, write_json
from mechscope.models.lean import as_lean
from mechscope.sae.config import TrainConfig
from mechscope.sae.evaluate import SAEEval, evaluate_sae, group_colour, pareto_figure
from mechscope.sae.saelens_format import CFG_FILE, load_saelens, save_saelens
from mechscope.sae.train import check_store, train_sae

if TYPE_CHECKING:
    from mechscope.sae.store import ActivationStore


def run_name(cfg: TrainConfig) -> str:
    """Folder name of one run, e.g. `blocks.0.hook_resid_post__local__l1-3`."""
    sparsity = f"k{cfg.k}" if cfg.architecture == "topk" else f"l1-{cfg.sparsity_coeff:g}"
    return f"{cfg.hook_name}__{cfg.loss}__{sparsity}"


def train_and_save(
    cfg: TrainConfig,
    model: Any,
    out: str | Path,
    eval_tokens: Sequence[Tensor],
    progress: bool = True,
    dtype: str = "float32",
    store: ActivationStore | None = None,
) -> SAEEval:
    """Train one SAE (resuming from `out/_checkpoints`; from `store` if given), save it, evaluate
    the saved copy."""
    out = Path(out)
    name = run_name(cfg)
    folder = out / name
    if (folder / CFG_FILE).exists():
        remake = f"Delete {folder} to train it again"
        meta = read_json(folder / CFG_FILE, SAEError, remake).get("metadata", {})
        training = meta.get("mechscope", {}).get("training")
        if training and TrainConfig.from_dict(training) == cfg and "evaluation" in meta:
            return SAEEval(**meta["evaluation"])
    ckpt = out / "_checkpoints" / name
    result = train_sae(cfg, model, checkpoint_dir=ckpt, progress=progress, store=store)
    save_saelens(result.sae, folder, dtype=dtype)
    saved = load_saelens(folder, device=result.sae.W_dec.device)  # what was written (fp16)
    ev = evaluate_sae(model, saved, eval_tokens, name=name)
    ev_dict = ev.to_dict()
    meta = {"evaluation": ev_dict, "train_seconds": round(result.seconds, 1)}
    meta["final_train_stats"] = result.history[-1]
    save_saelens(saved, folder, dtype=dtype, metadata=meta)
    return ev


def sweep_configs(
    base: TrainConfig,
    hooks: Sequence[str] | None = None,
    coeffs: Sequence[float] | None = None,
    ks: Sequence[int] | None = None,
) -> list[TrainConfig]:
    """`base` at every hook x sparsity (L1 coeffs, or k for topk), hooks outermost."""
    if base.architecture == "topk":
        variants = [replace(base, k=k) for k in ks] if ks else [base]
    else:
        variants = [replace(base, sparsity_coeff=c) for c in (coeffs or [base.sparsity_coeff])]
    return [replace(v, hook_name=h) for h in (hooks or [base.hook_name]) for v in variants]


def sweep(
    base: TrainConfig,
    out: str | Path,
    hooks: Sequence[str] | None = None,
    coeffs: Sequence[float] | None = None,
    ks: Sequence[int] | None = None,
    model: Any = None,
    n_eval_batches: int = 8,
    progress: bool = True,
    dtype: str = "float32",
    store: ActivationStore | None = None,
) -> list[SAEEval]:
    """Train `base` over every hook x sparsity (L1 coeffs, or k for topk); write results.json.

    store: train every SAE from this activation store (local loss) instead of the live model;
    the model still evaluates them. Every run is checked against the store before any trains.
    """
    configs = sweep_configs(base, hooks, coeffs, ks)
    if store is not None:
        for cfg in configs:
            check_store(cfg, store)
    lean, tokens = _model_and_tokens(base, model, n_eval_batches)
    evals = [train_and_save(cfg, lean, out, tokens, progress, dtype, store) for cfg in configs]
    write_results(evals, out)
    return evals


def _model_and_tokens(base: TrainConfig, model: Any, n_eval_batches: int) -> tuple[Any, list]:
    """The loaded model as a LeanModel, and the held-out batches."""
    if model is None:
        raise SAEError(f"pass the loaded model (mechscope.load_model({base.model!r}))")
    lean = as_lean(model)
    return lean, eval_batches(lean, n_eval_batches, mixture=base.mixture)


def write_results(
    evals: Sequence[SAEEval], out: str | Path, groups: Sequence[str] | None = None
) -> None:
    """results.json and pareto.html in `out` (each written atomically)."""
    out = Path(out)
    write_json(out / "results.json", [e.to_dict() for e in evals], indent=2)
    groups = groups or [_group(e.name) for e in evals]
    write_figure(out / "pareto.html", pareto_figure(evals, groups), "cdn")


def _group(name: str) -> str:
    """A run's family for the figures: its hook and loss (`blocks.0.hook_resid_post__local`)."""
    return "__".join(name.split("__")[:2])


# -- seeds -----------------------------------------------------------------------------------

SEED_METRICS = ("l0", "explained_variance", "ce_recovered", "kl_sae", "dead_frac")


@dataclass
class SeedSummary:
    """One configuration over seeds: per metric of SEED_METRICS, its mean, std (sample, n - 1),
    min and max over the seeds' evaluations."""

    name: str
    seeds: list[int]
    stats: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SeedSweep:
    """A sweep repeated over seeds: `runs[seed]` the evaluations in config order, `summary` one
    `SeedSummary` per configuration (same order)."""

    seeds: list[int]
    runs: dict[int, list[SAEEval]]
    summary: list[SeedSummary]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seeds": self.seeds,
            "metrics": list(SEED_METRICS),
            "summary": [s.to_dict() for s in self.summary],
            "runs": {str(s): [e.to_dict() for e in evs] for s, evs in self.runs.items()},
        }


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """The seeds as a list; at least two distinct non-negative integers (a spread needs two)."""
    seeds = list(seeds)
    if len(seeds) < 2:
        raise SAEError(f"give at least two seeds to measure a spread over seeds, got {seeds}")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise SAEError(f"seeds must be non-negative integers, got {seeds}")
    if len(set(seeds)) != len(seeds):
        raise SAEError(f"seeds repeat: {seeds}; give each seed once")
    return seeds


def seed_summary(evals: Sequence[SAEEval], seeds: Sequence[int]) -> SeedSummary:
    """Mean, std (n - 1), min and max over one configuration's per-seed evaluations."""
    stats = {}
    for metric in SEED_METRICS:
        values = [float(getattr(e, metric)) for e in evals]
        stats[metric] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values),
            "min": min(values),
            "max": max(values),
        }
    return SeedSummary(name=evals[0].name, seeds=list(seeds), stats=stats)


def sweep_seeds(
    base: TrainConfig,
    out: str | Path,
    seeds: Sequence[int],
    hooks: Sequence[str] | None = None,
    coeffs: Sequence[float] | None = None,
    ks: Sequence[int] | None = None,
    model: Any = None,
    n_eval_batches: int = 8,
    progress: bool = True,
    dtype: str = "float32",
) -> SeedSweep:
    """`sweep` once per seed into `out/seed-<s>/` (base.seed replaced), on the same held-out
    evaluation tokens; finished runs are skipped, so a stopped sweep resumes. Writes
    `out/seeds.json` (`SeedSweep.to_dict`) and `out/pareto_seeds.html` (means with std bars)."""
    seeds = check_seeds(seeds)
    configs = sweep_configs(base, hooks, coeffs, ks)
    lean, tokens = _model_and_tokens(base, model, n_eval_batches)
    out = Path(out)
    runs: dict[int, list[SAEEval]] = {}
    for seed in seeds:
        folder = out / f"seed-{seed}"
        runs[seed] = [
            train_and_save(replace(c, seed=seed), lean, folder, tokens, progress, dtype)
            for c in configs
        ]
        write_results(runs[seed], folder)
    summary = [seed_summary([runs[s][i] for s in seeds], seeds) for i in range(len(configs))]
    result = SeedSweep(seeds=seeds, runs=runs, summary=summary)
    write_json(out / "seeds.json", result.to_dict(), indent=2)
    write_figure(out / "pareto_seeds.html", seed_pareto_figure(summary), "cdn")
    return result


def seed_table(summary: Sequence[SeedSummary]) -> Any:
    """A rich Table: per configuration, each metric as mean ± std [min, max] over seeds."""
    from rich.table import Table

    table = Table("name", "seeds", *SEED_METRICS)
    for s in summary:
        cells = []
        for metric in SEED_METRICS:
            st = s.stats[metric]
            fmt = "{:.1f}" if metric == "l0" else "{:.1%}" if metric == "dead_frac" else "{:.3f}"
            mean, std, lo, hi = (fmt.format(st[k]) for k in ("mean", "std", "min", "max"))
            cells.append(f"{mean} ± {std} [{lo}, {hi}]")
        table.add_row(s.name, str(len(s.seeds)), *cells)
    return table


def seed_pareto_figure(summary: Sequence[SeedSummary]) -> Any:
    """Plotly figure: mean CE recovered and explained variance against mean L0, one trace per
    hook and loss, with std error bars on both axes."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("CE loss recovered", "explained variance"))
    groups = [_group(s.name) for s in summary]
    for i, label in enumerate(dict.fromkeys(groups)):
        rows = sorted(
            (s for s, g in zip(summary, groups, strict=True) if g == label),
            key=lambda s: s.stats["l0"]["mean"],
        )
        l0 = [s.stats["l0"] for s in rows]
        for col, metric in ((1, "ce_recovered"), (2, "explained_variance")):
            ys = [s.stats[metric] for s in rows]
            fig.add_trace(
                go.Scatter(
                    x=[v["mean"] for v in l0],
                    y=[v["mean"] for v in ys],
                    error_x={"type": "data", "array": [v["std"] for v in l0]},
                    error_y={"type": "data", "array": [v["std"] for v in ys]},
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=col == 1,
                    line={"color": group_colour(i)},
                    marker={"color": group_colour(i)},
                    text=[f"{s.name} ({len(s.seeds)} seeds)" for s in rows],
                ),
                row=1,
                col=col,
            )
    n = max((len(s.seeds) for s in summary), default=0)
    fig.update_xaxes(title_text="L0 (active latents per token)", type="log")
    fig.update_layout(
        title=f"SAE sparsity vs faithfulness, mean ± std over {n} seeds", template="plotly_white"
    )
    return fig
