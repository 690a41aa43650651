"""`mechscope sae ...`: train, sweep, evaluate and bundle sparse autoencoders.

mechscope sae train --model code-2l --hook blocks.0.hook_resid_post --coeff 3 --out runs/sae
mechscope sae store --model code-2l --hooks all --n-tokens 1000000 --out runs/acts
mechscope sae train --hook blocks.0.hook_resid_post --store runs/acts --out runs/sae
mechscope sae sweep --model code-2l --hooks all --coeffs 1,3,10 --out runs/sweep
mechscope sae sweep --model code-2l --hooks all --coeffs 1,2,4 --seeds 0,1,2 --out runs/seeds
mechscope sae eval runs/sae/blocks.0.hook_resid_post__local__l1-3 --model code-2l
mechscope sae build-bundled --model code-2l
mechscope sae build-transcoders --model code-2l
mechscope sae list
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mechscope import validate as V
from mechscope.cli_common import (
    Device,
    DeviceMap,
    Dtype,
    check_hooks,
    console,
    fail,
    load,
    option_checks,
)
from mechscope.errors import OptionError, SAEError
from mechscope.files import check_writable_dir
from mechscope.models.placement import Placement

if TYPE_CHECKING:
    from mechscope.sae.config import TrainConfig

sae_app = typer.Typer(help="Sparse autoencoders: train, sweep, evaluate, bundled SAEs.")

Model = Annotated[str, typer.Option(help="zoo name, local HF folder or hub name")]
Loss = Annotated[str, typer.Option(help="local, e2e or e2e_ds")]
Arch = Annotated[str, typer.Option(help="standard (ReLU + L1) or topk")]
Out = Annotated[Path, typer.Option(help="output folder")]
Dataset = Annotated[
    str,
    typer.Option(
        help="HF datasets source instead of the stdlib corpus: data file or glob "
        "(.txt/.jsonl/.parquet/.arrow/.csv), save_to_disk folder or hub name; read once"
    ),
]
Column = Annotated[str, typer.Option(help="the dataset's text (or token ids) column")]
StoreDir = Annotated[
    Path | None,
    typer.Option(help="train from this activation store (`sae store`; local loss only)"),
]


def _check_training(
    model: str,
    loss: str,
    arch: str,
    ks: list[int],
    expansion: int,
    steps: int,
    batch_size: int,
    eval_batches: int,
) -> None:
    """The training options shared by `sae train` and `sae sweep`, and the memory they need."""
    from mechscope.sae.config import LOSS_KINDS

    V.choice("--loss", loss, LOSS_KINDS)
    V.choice("--arch", arch, ("standard", "topk"))
    V.integer("--expansion", expansion, lo=1)
    V.integer("--steps", steps, lo=1)
    V.integer("--batch-size", batch_size, lo=1)
    V.integer("--eval-batches", eval_batches, lo=1)
    dims = V.model_dims(model)
    for k in ks:
        V.integer("--k", k, 1, expansion * dims.d_model if dims else None)
    if arch == "topk" and not ks:
        raise OptionError("--arch topk needs --k (the number of latents kept per token)")
    if dims:
        need = V.sae_bytes(dims, batch_size, expansion)
        V.check_memory("SAE training", need, "--batch-size or --expansion")


def _hooks(spec: str, n_layers: int) -> list[str]:
    if spec in ("all", "resid_post"):
        return [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]
    if spec == "resid_pre":
        return [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)]
    return [h.strip() for h in spec.split(",") if h.strip()]


@sae_app.command("train")
def train_cmd(
    hook: Annotated[
        str,
        typer.Option(
            help="hook name, e.g. blocks.0.hook_resid_post (--kind transcoder: "
            "blocks.L.ln2.hook_normalized, or 'all' for every layer)"
        ),
    ],
    kind: Annotated[
        str, typer.Option(help="sae, or transcoder (MLP input -> MLP output, local loss)")
    ] = "sae",
    skip: Annotated[bool, typer.Option(help="transcoders: add the linear skip term")] = False,
    model: Model = "code-2l",
    loss: Loss = "local",
    arch: Arch = "standard",
    k: Annotated[int | None, typer.Option(help="k of a topk SAE")] = None,
    coeff: Annotated[float, typer.Option(help="sparsity coefficient lambda")] = 3.0,
    expansion: Annotated[int, typer.Option(help="d_sae / d_model")] = 8,
    steps: Annotated[int, typer.Option(help="optimiser steps")] = 1500,
    batch_size: Annotated[int, typer.Option(help="sequences per step")] = 32,
    lr: Annotated[float, typer.Option(help="peak learning rate")] = 2e-3,
    seed: Annotated[int, typer.Option(help="seed (init and data order)")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="steps between checkpoints")] = 200,
    eval_batches: Annotated[int, typer.Option(help="held-out batches of 16 to evaluate")] = 8,
    dataset: Dataset = "",
    column: Column = "text",
    store: StoreDir = None,
    out: Out = Path("runs/sae"),
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Train one SAE (resumes from OUT/_checkpoints), save it in SAELens format, evaluate it."""
    check_writable_dir(out)
    from mechscope.sae.config import TrainConfig
    from mechscope.sae.evaluate import eval_table
    from mechscope.sae.hparam_grid import sweep
    from mechscope.sae.store import ActivationStore

    with option_checks():
        _check_training(
            model, loss, arch, [k] if k else [], expansion, steps, batch_size, eval_batches
        )
        V.number("--coeff", coeff, lo=0)
        V.number("--lr", lr, lo=0, lo_open=True)
        V.seed("--seed", seed)
        V.integer("--checkpoint-every", checkpoint_every, lo=0)
    try:
        cfg = TrainConfig(
            model=model,
            hook_name=hook,
            loss=loss,  # type: ignore[arg-type]
            architecture=arch,  # type: ignore[arg-type]
            k=k,
            expansion=expansion,
            sparsity_coeff=coeff,
            n_steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            checkpoint_every=checkpoint_every,
            dataset=dataset,
            dataset_column=column,
        )
        if kind not in ("sae", "transcoder"):
            raise SAEError(f"--kind must be sae or transcoder, got {kind!r}")
        bridge = load(model, None, Placement(device, device_map, dtype))
        if kind == "transcoder":
            _train_transcoders(cfg, bridge, hook, skip, out, eval_batches)
            return
        check_hooks(bridge, [hook])
        acts = ActivationStore(store) if store is not None else None
        evals = sweep(cfg, out, model=bridge, n_eval_batches=eval_batches, store=acts)
    except (SAEError, ValueError) as e:
        fail(str(e))
    console.print(eval_table(evals))
    console.print(f"saved under {out}")


def _train_transcoders(
    cfg: TrainConfig, bridge: object, hook: str, skip: bool, out: Path, n_eval: int
) -> None:
    """`sae train --kind transcoder`: one transcoder per layer of --hook, evaluated together."""
    from mechscope.data.batches import eval_batches
    from mechscope.models.lean import as_lean
    from mechscope.sae.transcoder import layer_of, train_transcoder_set

    n_layers = as_lean(bridge).n_layers
    layers = list(range(n_layers)) if hook == "all" else [layer_of(h) for h in hook.split(",")]
    ev = train_transcoder_set(
        cfg,
        bridge,
        layers,
        out,
        skip=skip,
        eval_tokens=eval_batches(bridge, n_eval),
    )
    assert ev is not None
    for row in ev.layers:
        console.print(
            f"layer {row['layer']}: L0 {row['l0']:.1f}  explained variance "
            f"{row['explained_variance']:.3f}  dead {row['dead_frac']:.1%}"
        )
    console.print(
        f"every MLP replaced: CE {ev.ce_replaced:.4f} (model {ev.ce_orig:.4f}, MLPs zeroed "
        f"{ev.ce_zero_abl:.4f}), CE recovered {ev.ce_recovered:.3f}, KL {ev.kl_replaced:.4f}"
    )
    console.print(f"saved under {out}")


@sae_app.command("sweep")
def sweep_cmd(
    model: Model = "code-2l",
    hooks: Annotated[str, typer.Option(help="'all' (resid_post), 'resid_pre' or names,")] = "all",
    coeffs: Annotated[str, typer.Option(help="sparsity coefficients, comma-separated")] = "1,3,10",
    ks: Annotated[str, typer.Option(help="k values for --arch topk, comma-separated")] = "",
    loss: Loss = "local",
    arch: Arch = "standard",
    expansion: Annotated[int, typer.Option(help="d_sae / d_model")] = 8,
    steps: Annotated[int, typer.Option(help="optimiser steps per SAE")] = 1500,
    batch_size: Annotated[int, typer.Option(help="sequences per step")] = 32,
    mixture: Annotated[
        str, typer.Option(help="training mixture: 'stdlib', or 'model' (the zoo model's own)")
    ] = "stdlib",
    seed: Annotated[int, typer.Option(help="seed")] = 0,
    seeds: Annotated[
        str,
        typer.Option(
            help="train every configuration once per seed, e.g. 0,1,2 (overrides --seed); "
            "reports mean, std, min and max over seeds"
        ),
    ] = "",
    eval_batches: Annotated[int, typer.Option(help="held-out batches of 16 to evaluate")] = 8,
    dataset: Dataset = "",
    column: Column = "text",
    store: StoreDir = None,
    out: Out = Path("runs/sae-sweep"),
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Train a family: every hook x sparsity; writes results.json and pareto.html in OUT
    (with --seeds: one folder per seed, seeds.json and pareto_seeds.html)."""
    check_writable_dir(out)
    from mechscope.sae.config import TrainConfig
    from mechscope.sae.evaluate import eval_table
    from mechscope.sae.hparam_grid import seed_table, sweep, sweep_seeds
    from mechscope.sae.store import ActivationStore

    with option_checks():
        k_values = [int(k) for k in V.numbers("--ks", ks, lo=1, integers=True)]
        _check_training(model, loss, arch, k_values, expansion, steps, batch_size, eval_batches)
        V.numbers("--coeffs", coeffs, lo=0)
        V.choice("--mixture", mixture, ("stdlib", "model"))
        V.seed("--seed", seed)
    try:
        seed_list = _seeds(seeds) if seeds else None
        if seed_list is not None and store is not None:
            raise SAEError(
                "--seeds cannot train from --store: a store's sequence order is fixed, so the "
                "seed would change only the SAE's init. Train live (drop --store) for seeds."
            )
        bridge = load(model, None, Placement(device, device_map, dtype))
        check_hooks(bridge, _hooks(hooks, int(bridge.cfg.n_layers)))
        k_list = [int(x) for x in ks.split(",") if x.strip()]
        cfg = TrainConfig(
            model=model,
            hook_name="",
            loss=loss,  # type: ignore[arg-type]
            architecture=arch,  # type: ignore[arg-type]
            k=k_list[0] if k_list else None,
            expansion=expansion,
            n_steps=steps,
            batch_size=batch_size,
            seed=seed,
            checkpoint_every=200,
            dataset=dataset,
            dataset_column=column,
            mixture=_mixture(mixture, model),
        )
        family = {
            "hooks": _hooks(hooks, int(bridge.cfg.n_layers)),
            "coeffs": [float(x) for x in coeffs.split(",") if x.strip()],
            "ks": k_list or None,
            "model": bridge,
            "n_eval_batches": eval_batches,
        }
        if seed_list is not None:
            result = sweep_seeds(cfg, out, seed_list, **family)
        else:
            acts = ActivationStore(store) if store is not None else None
            evals = sweep(cfg, out, store=acts, **family)
    except (SAEError, ValueError) as e:
        fail(str(e))
    if seed_list is not None:
        console.print(seed_table(result.summary))
        console.print(f"results in {out / 'seeds.json'}, figure {out / 'pareto_seeds.html'}")
        return
    console.print(eval_table(evals))
    console.print(f"results in {out / 'results.json'}, figure {out / 'pareto.html'}")


def _seeds(spec: str) -> list[int]:
    """Seeds from '0,1,2' (or '0 1 2'); checked by `sweep.check_seeds`."""
    from mechscope.sae.hparam_grid import check_seeds

    parts = spec.replace(",", " ").split()
    try:
        values = [int(p) for p in parts]
    except ValueError:
        msg = f"--seeds takes integers separated by commas, e.g. 0,1,2; got {spec!r}"
        raise SAEError(msg) from None
    return check_seeds(values)


def _mixture(spec: str, model: str) -> dict[str, float]:
    """'stdlib' or 'model' (the zoo model's own training mixture) as mixture weights."""
    if spec == "stdlib":
        return {"stdlib": 1.0}
    from mechscope.zoo.specs import SPECS

    if spec == "model" and model in SPECS:
        return dict(SPECS[model].mixture)
    raise SAEError(
        f"--mixture {spec!r}: use 'stdlib', or 'model' with a zoo model ({', '.join(SPECS)})"
    )


@sae_app.command("store")
def store_cmd(
    hooks: Annotated[str, typer.Option(help="'all' (resid_post), 'resid_pre' or names,")],
    n_tokens: Annotated[int, typer.Option(help="tokens to store (rounded up to whole batches)")],
    out: Annotated[Path, typer.Option(help="store folder (new or empty)")],
    model: Model = "code-2l",
    dataset: Dataset = "",
    column: Column = "text",
    batch_size: Annotated[
        int, typer.Option(help="sequences per forward; train with the same for identical SAEs")
    ] = 32,
    seed: Annotated[int, typer.Option(help="seed of the data order")] = 0,
    store_dtype: Annotated[
        str, typer.Option(help="dtype of the stored activations: float32, float16 or bfloat16")
    ] = "float32",
    shard_tokens: Annotated[int, typer.Option(help="tokens per shard file")] = 65_536,
    overwrite: Annotated[bool, typer.Option(help="replace a store already in OUT")] = False,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Run the model once over N tokens, storing the hooks' activations for many SAE runs."""
    check_writable_dir(out)
    from mechscope.data.batches import source_batches
    from mechscope.models.lean import as_lean
    from mechscope.sae.store import write_store

    with option_checks():
        V.integer("--n-tokens", n_tokens, lo=1)
        V.integer("--batch-size", batch_size, lo=1)
        V.seed("--seed", seed)
        V.choice("--dtype", dtype, ("float32", "float16", "bfloat16"))
        V.integer("--shard-tokens", shard_tokens, lo=1)
    try:
        lean = as_lean(load(model, None, Placement(device, device_map, dtype)))
        source = {"dataset": dataset, "column": column} if dataset else {"mixture": {"stdlib": 1.0}}
        acts = write_store(
            lean,
            _hooks(hooks, lean.n_layers),
            source_batches(lean, batch_size, seed, None, dataset, column),
            out,
            n_tokens=n_tokens,
            dtype=store_dtype,
            shard_tokens=shard_tokens,
            model_name=model,
            source=source | {"seed": seed, "batch_size": batch_size},
            overwrite=overwrite,
        )
    except (SAEError, ValueError) as e:
        fail(str(e))
    shards = len(acts.manifest["shards"])
    console.print(
        f"[green]stored[/] {acts.n_tokens} tokens x {len(acts.hooks)} hook(s), {shards} shard(s) "
        f"-> {out}"
    )


@sae_app.command("eval")
def eval_cmd(
    path: Annotated[Path, typer.Argument(help="a SAELens-format folder")],
    model: Model = "code-2l",
    hook: Annotated[str | None, typer.Option(help="hook (default: the SAE's own)")] = None,
    eval_batches: Annotated[int, typer.Option(help="held-out batches of 16")] = 8,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Evaluate a saved SAE (mechscope- or SAELens-written) on held-out tokens."""
    from mechscope.data.batches import eval_batches as batches
    from mechscope.models.lean import as_lean
    from mechscope.sae.activations import check_sae_fits
    from mechscope.sae.evaluate import eval_table, evaluate_sae
    from mechscope.sae.saelens_format import load_saelens

    with option_checks():
        V.integer("--eval-batches", eval_batches, lo=1)
    try:
        lean = as_lean(load(model, None, Placement(device, device_map, dtype)))
        sae = load_saelens(path, device=lean.device)
        check_sae_fits(lean, sae, hook or sae.cfg.hook_name)
        ev = evaluate_sae(lean, sae, batches(lean, eval_batches), hook, name=path.name)
    except (SAEError, ValueError) as e:
        fail(str(e))
    console.print(eval_table([ev]))


@sae_app.command("build-bundled")
def build_bundled_cmd(
    model: Model = "code-2l",
    steps: Annotated[int, typer.Option(help="optimiser steps per SAE")] = 1200,
    out: Annotated[Path | None, typer.Option(help="output (default: the package)")] = None,
    e2e: Annotated[bool, typer.Option(help="also the two e2e SAEs at layer 0")] = True,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Rebuild the bundled SAEs of a zoo model (deterministic) and their card."""
    if out is not None:
        check_writable_dir(out)
    from mechscope.errors import ModelLoadError
    from mechscope.sae.bundled import build_bundled

    with option_checks():
        V.integer("--steps", steps, lo=1)
    try:
        bridge = load(model, None, Placement(device, device_map, dtype))
    except ModelLoadError as e:
        fail(e)
    folder = build_bundled(bridge, model, out, steps, e2e=e2e)
    console.print(f"[green]built[/] bundled SAEs -> {folder}")


@sae_app.command("build-transcoders")
def build_transcoders_cmd(
    model: Model = "code-2l",
    steps: Annotated[int, typer.Option(help="optimiser steps per layer")] = 1500,
    seed: Annotated[int, typer.Option(help="training seed (the bundled set: 0)")] = 0,
    out: Annotated[Path | None, typer.Option(help="output (default: the package)")] = None,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Rebuild the bundled transcoders of a zoo model (one per layer, deterministic) and their
    card."""
    if out is not None:
        check_writable_dir(out)
    from mechscope.errors import ModelLoadError
    from mechscope.sae.bundled import build_transcoders

    with option_checks():
        V.integer("--steps", steps, lo=1)
        V.seed("--seed", seed)
    try:
        bridge = load(model, None, Placement(device, device_map, dtype))
    except ModelLoadError as e:
        fail(e)
    folder = build_transcoders(bridge, model, out, steps, seed=seed)
    console.print(f"[green]built[/] bundled transcoders -> {folder}")


@sae_app.command("list")
def list_cmd(model: Model = "code-2l") -> None:
    """List the bundled SAEs of a model with their evaluation."""
    from mechscope.sae.bundled import list_bundled
    from mechscope.sae.evaluate import SAEEval, eval_table

    entries = list_bundled(model)
    if not entries:
        fail(f"no bundled SAEs for {model!r}")
    console.print(eval_table([SAEEval(**e["evaluation"]) for e in entries]))
