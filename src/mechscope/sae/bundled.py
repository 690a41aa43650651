"""SAEs bundled with mechscope for the zoo models, and the deterministic script that builds them.

Files: `mechscope/sae/pretrained/<model>/<run name>/` (SAELens format, fp16 weights) and
`pretrained/<model>/card.json` (how they were trained, the command to remake them, and each SAE's
evaluation on held-out stdlib files); `pareto.html` is the card's figure.

Transcoders (one per layer, `build_transcoders`): `mechscope/sae/transcoders/<model>/` holds a
SAELens transcoder folder per layer (fp16), `circuit-tracer/` (the same weights as circuit-tracer's
set) and card.json (recipe, command, evaluation on held-out tokens).
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from mechscope.artefacts import sae_dir, transcoder_dir
from mechscope.data.batches import eval_batches
from mechscope.errors import SAEError
from mechscope.files import read_json, write_json
from mechscope.sae.config import TrainConfig
from mechscope.sae.hparam_grid import run_name, train_and_save, write_results
from mechscope.sae.model import SparseAutoencoder
from mechscope.sae.saelens_format import CFG_FILE, load_saelens
from mechscope.sae.transcoder import (
    INPUT_HOOK,
    Transcoder,
    load_transcoder_set,
    train_transcoder_set,
)
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
        # this command's wall time: SAEs already in `folder` are skipped, so each SAE's own
        # training time (`train_seconds`, kept in its cfg.json) is listed with it
        "build_seconds": round(time.time() - t0, 1),
        "machine": f"{platform.machine()}, torch CPU",
        "figure": "pareto.html",
        "saes": [
            {
                "name": run_name(c),
                "training": c.to_dict(),
                "train_seconds": _train_seconds(folder / run_name(c)),
                "evaluation": e.to_dict(),
            }
            for c, e in zip(cfgs, evals, strict=True)
        ],
    }
    write_json(folder / "card.json", card, indent=2)
    shutil.rmtree(folder / "_checkpoints", ignore_errors=True)  # optimiser states: not bundled
    return folder


def _train_seconds(run: Path) -> float | None:
    """The training wall time recorded in the SAELens folder `run` by `train_and_save`."""
    meta = read_json(run / CFG_FILE, SAEError, "rerun `mechscope sae build-bundled`")["metadata"]
    return meta.get("train_seconds")


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


# -- transcoders ----------------------------------------------------------------------------------
TC_STEPS = 1500


def transcoder_config(model: str = "code-2l", steps: int = TC_STEPS, seed: int = 0) -> TrainConfig:
    """The bundled transcoders' recipe: ReLU, d_tc = 4 x d_model, lambda 0.5, `steps` steps of
    16 sequences of the model's own training mixture, seed `seed` (hook_name set per layer)."""
    if model not in SPECS:
        raise SAEError(f"bundled transcoders are for the zoo models {sorted(SPECS)}, not {model!r}")
    return TrainConfig(
        model=model,
        hook_name=INPUT_HOOK.format(layer=0),
        n_steps=steps,
        batch_size=16,
        expansion=4,
        sparsity_coeff=0.5,
        seed=seed,
        mixture=dict(SPECS[model].mixture),
    )


def build_transcoders(
    bridge: Any,
    model: str = "code-2l",
    out: str | Path | None = None,
    steps: int = TC_STEPS,
    layers: list[int] | None = None,
    progress: bool = True,
    seed: int = 0,
) -> Path:
    """Train (`transcoder_config`; the bundled set is seed 0), save (SAELens fp16 and
    circuit-tracer) and evaluate one transcoder per layer of zoo model `model`, loaded as
    `bridge`; write card.json with the evaluation (every MLP replaced at once) on held-out
    tokens. Returns the folder.

    layers: default every layer (the circuit-tracer set is written only then)."""
    folder = Path(out) if out is not None else transcoder_dir(model)
    cfg = transcoder_config(model, steps, seed)
    layers = list(range(SPECS[model].n_layers)) if layers is None else layers
    tokens = eval_batches(bridge, N_EVAL_BATCHES, mixture=cfg.mixture)
    t0 = time.time()
    ev = train_transcoder_set(
        cfg, bridge, layers, folder, eval_tokens=tokens, progress=progress, dtype="float16"
    )
    assert ev is not None
    card = {
        "model": model,
        "description": "ReLU transcoders (d_tc = 4 x d_model), one per layer: MLP input "
        "(blocks.L.ln2.hook_normalized) -> MLP output (blocks.L.hook_mlp_out), local loss "
        "MSE + lambda * decoder-norm-weighted L1 / d_in (trained as SAEs are: lambda warm-up, clip "
        "grad_clip / d_in, decoder norms folded in at the end); weights rounded to float16 "
        "before evaluation and saving",
        "command": f"mechscope sae build-transcoders --model {model} --steps {steps}"
        + (f" --seed {seed}" if seed else ""),
        "training": cfg.to_dict() | {"hook_name": "blocks.L.ln2.hook_normalized"},
        "layers": layers,
        "files": "<input hook>__transcoder/ (SAELens transcoder, float16), circuit-tracer/ "
        "(config.yaml + layer_L.safetensors, float32 copies of the same values)",
        "eval": {
            "tokens": "the model's training mixture with held-out stdlib files and synthetic "
            "documents of another seed; BOS positions excluded",
            "n_batches": N_EVAL_BATCHES,
            "batch_size": 16,
            "definitions": "explained variance of the MLP output; CE, CE recovered (against "
            "zeroing the MLP outputs) and KL(orig || replaced) with every MLP replaced at once",
            "seeds": [cfg.seed],
            "result": ev.to_dict(),
        },
        "build_seconds": round(time.time() - t0, 1),
        "machine": f"{platform.machine()}, torch CPU",
    }
    write_json(folder / "card.json", card, indent=2)
    (folder / "eval.json").unlink(missing_ok=True)  # in the card
    return folder


def load_bundled_transcoders(model: str = "code-2l", device: Any = None) -> list[Transcoder]:
    """The bundled transcoders of zoo model `model`, layers 0..L-1 (float32, on `device`,
    default CPU); SAEError naming how to train a set when there is none."""
    folder = transcoder_dir(model)
    if not (folder / "card.json").exists():
        raise SAEError(
            f"no bundled transcoders for {model!r}; train a set with `mechscope sae train --kind "
            f"transcoder --model {model} --hook all --out runs/tc` and pass --transcoders "
            "runs/tc (Python: `load_transcoder_set('runs/tc')`)"
        )
    return [tc.to(device) for tc in load_transcoder_set(folder)]
