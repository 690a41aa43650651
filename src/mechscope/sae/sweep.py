"""Families of SAEs: one per (hook, sparsity) pair, trained, saved (SAELens format) and evaluated.

A sweep folder holds one SAELens-format folder per SAE (its evaluation in cfg.json's metadata),
`results.json` (every evaluation) and `pareto.html` (L0 against CE recovered / explained variance).
Checkpoints go to `<out>/_checkpoints/<name>`, so a stopped sweep resumes where it was.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from mechscope.models.lean import as_lean
from mechscope.sae.activations import token_batches
from mechscope.sae.config import TrainConfig
from mechscope.sae.evaluate import SAEEval, evaluate_sae, pareto_figure
from mechscope.sae.saelens_format import CFG_FILE, load_saelens, save_saelens
from mechscope.sae.train import check_store, train_sae

if TYPE_CHECKING:
    from mechscope.sae.store import ActivationStore

EVAL_SEED = 12345


def run_name(cfg: TrainConfig) -> str:
    """Folder name of one run, e.g. `blocks.0.hook_resid_post__local__l1-3`."""
    sparsity = f"k{cfg.k}" if cfg.architecture == "topk" else f"l1-{cfg.sparsity_coeff:g}"
    return f"{cfg.hook_name}__{cfg.loss}__{sparsity}"


def eval_batches(
    model: Any,
    n_batches: int,
    batch_size: int = 16,
    seed: int = EVAL_SEED,
    mixture: dict[str, float] | None = None,
) -> list[Tensor]:
    """Held-out token batches [batch_size, n_ctx]: held-out stdlib files (and, if the mixture
    has them, synthetic documents from another seed than training's)."""
    lean = as_lean(model)
    n_ctx = int(lean.cfg.n_ctx)
    it = token_batches(lean.tokenizer, batch_size, n_ctx, seed, mixture, split="heldout")
    return [next(it) for _ in range(n_batches)]


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
        meta = json.loads((folder / CFG_FILE).read_text())["metadata"]
        training = meta.get("mechscope", {}).get("training")
        if training and TrainConfig.from_dict(training) == cfg and "evaluation" in meta:
            return SAEEval(**meta["evaluation"])
    ckpt = out / "_checkpoints" / name
    result = train_sae(cfg, model, checkpoint_dir=ckpt, progress=progress, store=store)
    save_saelens(result.sae, folder, dtype=dtype)
    saved = load_saelens(folder).to(result.sae.W_dec.device)  # what was written (fp16)
    ev = evaluate_sae(model, saved, eval_tokens, name=name)
    ev_dict = ev.to_dict()
    meta = {"evaluation": ev_dict, "train_seconds": round(result.seconds, 1)}
    meta["final_train_stats"] = result.history[-1]
    save_saelens(saved, folder, dtype=dtype, metadata=meta)
    return ev


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
    if base.architecture == "topk":
        variants = [replace(base, k=k) for k in ks] if ks else [base]
    else:
        variants = [replace(base, sparsity_coeff=c) for c in (coeffs or [base.sparsity_coeff])]
    configs = [replace(v, hook_name=h) for h in (hooks or [base.hook_name]) for v in variants]
    if store is not None:
        for cfg in configs:
            check_store(cfg, store)
    if model is None:
        from mechscope import load_model

        model = load_model(base.model)
    lean = as_lean(model)
    tokens = eval_batches(lean, n_eval_batches, mixture=base.mixture)
    evals = [train_and_save(cfg, lean, out, tokens, progress, dtype, store) for cfg in configs]
    write_results(evals, out)
    return evals


def write_results(
    evals: Sequence[SAEEval], out: str | Path, groups: Sequence[str] | None = None
) -> None:
    """results.json and pareto.html in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([e.to_dict() for e in evals], indent=2))
    groups = groups or ["__".join(e.name.split("__")[:2]) for e in evals]
    pareto_figure(evals, groups).write_html(out / "pareto.html", include_plotlyjs="cdn")
