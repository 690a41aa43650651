"""`mechscope directions`: sensitive directions (Lee & Heimersheim 2024).

mechscope directions families                                   # the direction families
mechscope directions sweep --model code-2l --hook blocks.0.hook_resid_post --sae <name or folder>
mechscope directions error --model code-2l                      # finding (a), bundled SAEs
mechscope directions features --model code-2l --hook blocks.0.hook_resid_post   # (b), (c)
mechscope directions paper --model code-2l                      # all three, one figure
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from mechscope import validate as V
from mechscope.cli_common import Device, DeviceMap, Dtype, console, fail, load, option_checks
from mechscope.errors import MechscopeError
from mechscope.files import check_writable_dir, suffixed
from mechscope.models.placement import Placement

if TYPE_CHECKING:
    from mechscope.directions.experiments import DirectionsConfig

directions_app = typer.Typer(
    help="Sensitive directions: KL of perturbations along SAE errors, features and baselines.",
    no_args_is_help=True,
)

Model = Annotated[str, typer.Option(help="zoo name, local HF folder or hub name")]
Hook = Annotated[str, typer.Option(help="hook to perturb, e.g. blocks.0.hook_resid_post")]
Saes = Annotated[
    list[str] | None,
    typer.Option("--sae", help="bundled SAE name or SAELens folder (repeat); default: bundled"),
]
Batches = Annotated[int, typer.Option(help="held-out token batches")]
BatchSize = Annotated[int, typer.Option(help="sequences per batch")]
Lengths = Annotated[
    str | None, typer.Option(help="comma-separated lengths L; default: paper sweep x norm/121")
]
Position = Annotated[int | None, typer.Option(help="perturb only this position (default: all)")]
Seed = Annotated[int, typer.Option(help="seed of every random direction")]
Out = Annotated[Path, typer.Option(help="output folder")]
AbsJitter = Annotated[
    float | None,
    typer.Option(
        help="absolute covariance jitter of the cov families (the paper's 0.01) instead of the "
        "default 1e-4 x the mean variance"
    ),
]
Cdn = Annotated[bool, typer.Option(help="load plotly.js from the web (small HTML files)")]


def check_position(position: int | None, model: Any) -> None:
    """--position indexes the model's held-out n_ctx-token sequences; model: a zoo name or local
    folder (read from its config.json, nothing loaded; other names pass) or a loaded model."""
    dims = V.model_dims(model) if position is not None else None
    if dims is not None:
        with option_checks():
            V.position("--position", position, dims.n_ctx, "held-out sequences (n_ctx)")


def _config(
    batches: int,
    batch_size: int,
    lengths: str | None,
    position: int | None,
    seed: int,
    abs_jitter: float | None,
) -> DirectionsConfig:
    from mechscope.directions.experiments import DirectionsConfig
    from mechscope.directions.stats import COV_JITTER

    with option_checks():
        lens = None if lengths is None else tuple(V.numbers("--lengths", lengths, lo=0))
        if lens is not None and not lens:
            fail("--lengths is empty; give e.g. --lengths 0.5,1,2 or leave it out")
        V.number("--abs-jitter", abs_jitter, lo=0)
        V.integer("--batches", batches, lo=1)
        V.integer("--batch-size", batch_size, lo=1)
        V.seed("--seed", seed)
    return DirectionsConfig(
        n_batches=batches,
        batch_size=batch_size,
        lengths=lens,
        position=position,
        seed=seed,
        cov_jitter=COV_JITTER if abs_jitter is None else abs_jitter,
        cov_jitter_relative=abs_jitter is None,
    )


def load_saes(
    model: str, specs: list[str] | None, hook: str | None = None, device: Any = None
) -> dict[str, Any]:
    """SAEs by `mechscope.sae.resolve` (SAELens folder, bundled run name of a zoo model or
    SAELens release) on `device` (the model's); default: all bundled (at `hook`, if given)."""
    from mechscope.directions.experiments import bundled_saes
    from mechscope.sae.sources import resolve

    if not specs:
        return bundled_saes(Path(model).name, hook, device=device)
    return dict(resolve(s, Path(model).name, device) for s in specs)


@directions_app.command("families")
def families_cmd() -> None:
    """List the direction families."""
    from mechscope.directions.families import FAMILIES

    table = Table("family", "direction", "needs")
    for f in FAMILIES.values():
        needs = "SAE" if f.needs_sae else ("activation statistics" if f.needs_stats else "-")
        table.add_row(f.key, f.description, needs)
    console.print(table)


@directions_app.command("sweep")
def sweep_cmd(
    model: Model = "code-2l",
    hook: Hook = "blocks.0.hook_resid_post",
    family: Annotated[
        list[str] | None, typer.Option("--family", "-f", help="direction family (repeat)")
    ] = None,
    sae: Annotated[str | None, typer.Option(help="SAE for sae_error / feature_*")] = None,
    batches: Batches = 2,
    batch_size: BatchSize = 16,
    lengths: Lengths = None,
    position: Position = None,
    seed: Seed = 0,
    abs_jitter: AbsJitter = None,
    out: Out = Path("out/directions"),
    cdn: Cdn = False,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """KL(P_orig || P_perturbed) against length L for direction families at one hook."""
    check_writable_dir(out)
    from mechscope.directions.experiments import sweep_directions
    from mechscope.directions.families import FAMILIES
    from mechscope.directions.plot import curves_figure, write_figure
    from mechscope.models.lean import as_lean

    cfg = _config(batches, batch_size, lengths, position, seed, abs_jitter)
    check_position(position, model)
    fams = family or ["isotropic", "cov_mixture", "real_mixture", "toward_cov"]
    with option_checks():
        V.choices("--family", fams, FAMILIES)
    if sae is not None and "sae_error" not in fams:
        fams.append("sae_error")
    try:
        lean = as_lean(load(model, None, Placement(device, device_map, dtype)))
        check_position(position, lean)  # a hub model's n_ctx is known once it is loaded
        saes = load_saes(model, [sae], device=lean.device) if sae is not None else {}
        ((name, s),) = saes.items() if saes else (("", None),)
        res = sweep_directions(lean, hook, fams, sae=s, sae_name=name, cfg=cfg)
    except MechscopeError as e:
        fail(e)
    stem = out / f"sweep_{Path(model).name}_{hook}"
    res.save(suffixed(stem, ".json"))
    write_figure(curves_figure(res), suffixed(stem, ".html"), cdn)
    console.print(res.table())
    console.print(f"results: {stem}.json, figure: {stem}.html")


@directions_app.command("error")
def error_cmd(
    model: Model = "code-2l",
    sae: Saes = None,
    batches: Batches = 2,
    batch_size: BatchSize = 16,
    position: Position = None,
    seed: Seed = 0,
    abs_jitter: AbsJitter = None,
    out: Out = Path("out/directions"),
    cdn: Cdn = False,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Finding (a): KL of SAE(x) vs x + eps * (isotropic, cov-mixture, real-mixture), eps =
    |SAE(x) - x|, per SAE at its own hook."""
    check_writable_dir(out)
    from mechscope.directions.experiments import error_vs_baselines
    from mechscope.directions.plot import substitution_figure, write_figure
    from mechscope.models.lean import as_lean

    cfg = _config(batches, batch_size, None, position, seed, abs_jitter)
    check_position(position, model)
    try:
        lean = as_lean(load(model, None, Placement(device, device_map, dtype)))
        check_position(position, lean)  # a hub model's n_ctx is known once it is loaded
        res = error_vs_baselines(lean, load_saes(model, sae, device=lean.device), cfg=cfg)
    except MechscopeError as e:
        fail(e)
    stem = out / f"substitution_{Path(model).name}"
    res.save(suffixed(stem, ".json"))
    write_figure(substitution_figure(res), suffixed(stem, ".html"), cdn)
    console.print(res.table())
    console.print(f"results: {stem}.json, figure: {stem}.html")


@directions_app.command("features")
def features_cmd(
    model: Model = "code-2l",
    hook: Hook = "blocks.0.hook_resid_post",
    sae: Saes = None,
    pool: Annotated[
        list[str] | None, typer.Option(help="feature pool: active, inactive, dead (repeat)")
    ] = None,
    batches: Batches = 2,
    batch_size: BatchSize = 16,
    lengths: Lengths = None,
    seed: Seed = 0,
    abs_jitter: AbsJitter = None,
    out: Out = Path("out/directions"),
    cdn: Cdn = False,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Findings (b), (c): feature directions of several SAEs at one hook, at equal L."""
    check_writable_dir(out)
    from mechscope.directions.experiments import FEATURE_POOLS, compare_features
    from mechscope.directions.plot import curves_figure, write_figure
    from mechscope.models.lean import as_lean

    cfg = _config(batches, batch_size, lengths, None, seed, abs_jitter)
    with option_checks():
        V.choices("--pool", pool, FEATURE_POOLS)
    try:
        lean = as_lean(load(model, None, Placement(device, device_map, dtype)))
        saes = load_saes(model, sae, hook, lean.device)
        res = compare_features(lean, saes, pools=pool or ["active"], cfg=cfg)
    except MechscopeError as e:
        fail(e)
    stem = out / f"features_{Path(model).name}_{res.hook_name}"
    res.save(suffixed(stem, ".json"))
    write_figure(curves_figure(res), suffixed(stem, ".html"), cdn)
    console.print(res.table())
    if res.meta.get("skipped"):
        console.print(f"empty pools skipped: {', '.join(res.meta['skipped'])}")
    console.print(f"results: {stem}.json, figure: {stem}.html")


@directions_app.command("paper")
def paper_cmd(
    model: Model = "code-2l",
    batches: Batches = 2,
    batch_size: BatchSize = 16,
    lengths: Lengths = None,
    seed: Seed = 0,
    abs_jitter: AbsJitter = None,
    out: Out = Path("out/directions"),
    cdn: Cdn = False,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """All three findings on a zoo model's bundled SAEs: results/*.json and paper.html."""
    check_writable_dir(out)
    from mechscope.directions.experiments import paper_comparisons
    from mechscope.directions.plot import paper_figure, write_figure

    cfg = _config(batches, batch_size, lengths, None, seed, abs_jitter)
    try:
        res = paper_comparisons(load(model, None, Placement(device, device_map, dtype)), cfg)
    except MechscopeError as e:
        fail(e)
    res.save(out)
    fig = paper_figure(res.substitution, list(res.baselines.values()), list(res.features.values()))
    write_figure(fig, out / "paper.html", cdn)
    console.print(res.substitution.table())
    for r in res.features.values():
        console.print(r.table())
    console.print(f"results: {out}/*.json, figure: {out}/paper.html")
