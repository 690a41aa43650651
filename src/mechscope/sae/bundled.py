"""SAEs bundled with mechscope for the zoo models, and the deterministic script that builds them.

Files: `mechscope/sae/pretrained/<model>/<run name>/` (SAELens format, fp16 weights) and
`pretrained/<model>/card.json` (how they were trained, the command to remake them, and each SAE's
evaluation on held-out stdlib files); `pareto.html` is the card's figure.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from mechscope.artefacts import sae_dir
from mechscope.data.batches import eval_batches
from mechscope.errors import SAEError
from mechscope.files import write_json
from mechscope.sae.config import TrainConfig
from mechscope.sae.hparam_grid import run_name, train_and_save, write_results
from mechscope.sae.model import SparseAutoencoder
from mechscope.sae.saelens_format import CFG_FILE, load_saelens
from mechscope.zoo.specs import SPECS

N_EVAL_BATCHES = 16


def bundled_configs(
    model: str = "code-2l", steps: int = 1200, e2e: bool = True
) -> list[TrainConfig]:
    """The recipe: local SAEs at every layer's resid_post (3 sparsities), e2e at layer 0 (2;
    left out with `e2e=False`)."""
    mixture = dict(SPECS[model].mixture)  # the model's own training distribution
    base = TrainConfig(
        model=model, hook_name="", n_steps=steps, batch_size=16, expansion=8, mixture=mixture
    )
    n_layers = SPECS[model].n_layers
    local = [
        replace(base, hook_name=f"blocks.{layer}.hook_resid_post", sparsity_coeff=c)
        for layer in range(n_layers)
        for c in (1.0, 2.0, 4.0)
    ]
    e2e_saes = [
        replace(base, hook_name="blocks.0.hook_resid_post", loss="e2e", sparsity_coeff=c)
        for c in (3.0, 10.0)
    ]
    return local + e2e_saes if e2e else local


def build_bundled(
    bridge: Any,
    model: str = "code-2l",
    out: str | Path | None = None,
    steps: int = 1200,
    progress: bool = True,
    e2e: bool = True,
) -> Path:
    """Train, save and evaluate the bundled SAEs of the zoo model `model`, loaded as `bridge`
    (`bundled_configs`), write card.json; returns the folder."""
    folder = Path(out) if out is not None else sae_dir(model)
    cfgs = bundled_configs(model, steps, e2e)
    tokens = eval_batches(bridge, N_EVAL_BATCHES, mixture=cfgs[0].mixture)
    t0 = time.time()
    evals = [train_and_save(c, bridge, folder, tokens, progress, dtype="float16") for c in cfgs]
    groups = [f"{c.hook_name.split('.')[1]}:{c.loss}" for c in cfgs]
    write_results(evals, folder, groups=[f"layer {g}" for g in groups])
    card = {
        "model": model,
        "description": "ReLU SAEs (d_sae = 8 x d_model) on the residual stream: local (MSE + "
        "lambda*L1/d_in) at every layer"
        + (", end-to-end (KL + lambda*L1/d_in) at layer 0." if e2e else "."),
        "command": f"mechscope sae build-bundled --model {model} --steps {steps}"
        + ("" if e2e else " --no-e2e"),
        "eval": {
            "tokens": "the model's training mixture with held-out stdlib files and synthetic "
            "documents of another seed; BOS positions excluded",
            "n_batches": N_EVAL_BATCHES,
            "batch_size": 16,
            "definitions": "SAELens evals: explained_variance, ce_recovered (zero ablation), kl",
        },
        "build_seconds": round(time.time() - t0, 1),
        "machine": f"{platform.machine()}, torch CPU",
        "figure": "pareto.html",
        "saes": [
            {"name": run_name(c), "training": c.to_dict(), "evaluation": e.to_dict()}
            for c, e in zip(cfgs, evals, strict=True)
        ],
    }
    write_json(folder / "card.json", card, indent=2)
    shutil.rmtree(folder / "_checkpoints", ignore_errors=True)  # optimiser states: not bundled
    return folder


def list_bundled(model: str = "code-2l") -> list[dict[str, Any]]:
    """The bundled SAEs of `model` as card entries (name, training config, evaluation)."""
    card = sae_dir(model) / "card.json"
    if not card.exists():
        return []
    return list(json.loads(card.read_text())["saes"])


def load_bundled(model: str, name: str, device: Any = None) -> SparseAutoencoder:
    """A bundled SAE by model and run name (see `list_bundled`), e.g.
    `load_bundled("code-2l", "blocks.0.hook_resid_post__local__l1-2")`, on `device` (default
    CPU; pass the model's)."""
    folder = sae_dir(model) / name
    if not (folder / CFG_FILE).exists():
        names = [s["name"] for s in list_bundled(model)]
        raise SAEError(
            f"no bundled SAE {name!r} for {model!r}. Available: {', '.join(names) or 'none'} "
            "(build with `mechscope sae build-bundled`)"
        )
    return load_saelens(folder, device=device)
