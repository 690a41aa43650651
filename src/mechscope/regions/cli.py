"""`mechscope regions`: stable regions in the residual stream (Janiak et al. 2024).

mechscope regions run --model code-4l --revision step-150      -> out/regions/<model>@<rev>.*
mechscope regions sweep -m code-2l -m code-4l                  -> out/regions/sweep.{json,html}
mechscope regions semantic --model code-4l                     -> out/regions/semantic_<model>.*
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mechscope import validate as V
from mechscope.cli_common import Device, DeviceMap, Dtype, console, fail, load, option_checks
from mechscope.errors import MechscopeError
from mechscope.files import check_writable_dir, suffixed
from mechscope.models.placement import Placement

regions_app = typer.Typer(
    help="Stable regions in the residual stream: interpolate between prompts' activations.",
    no_args_is_help=True,
)

Model = Annotated[str, typer.Option(help="zoo name, local HF folder or hub name")]
Prompts = Annotated[int, typer.Option(help="random prompt windows (pairs: consecutive ones)")]
Steps = Annotated[int, typer.Option(help="points per interpolation path")]
Layer = Annotated[int, typer.Option(help="write after this block (-1: the embeddings)")]
Threshold = Annotated[float, typer.Option(help="slope d'(alpha)/d(1) that counts as a boundary")]
Out = Annotated[Path, typer.Option(help="output folder")]
Cdn = Annotated[bool, typer.Option(help="load plotly.js from the web (small HTML files)")]


def _check(
    models: list[str], n_prompts: int, n_steps: int, layer: int, threshold: float, seed: int
) -> None:
    """The options every regions command shares, and the memory of the interpolation (pairs of
    consecutive prompts) per model."""
    from mechscope.regions.analysis import RegionConfig

    V.integer("--n-prompts", n_prompts, lo=2)
    V.integer("--n-steps", n_steps, lo=2)
    V.number("--threshold", threshold, lo=0, lo_open=True)
    V.seed("--seed", seed)
    cfg = RegionConfig()
    for m in models:
        if dims := V.model_dims(m):
            V.integer("--layer", layer, -1, dims.n_layers - 1)
            need = V.regions_bytes(dims, n_prompts - 1, n_steps, cfg.seq_len, cfg.batch_size)
            V.check_memory(f"interpolating on {m}", need, "--n-steps or --n-prompts")
        else:
            V.integer("--layer", layer, lo=-1)


def _table(rows: list[dict]) -> Table:
    """Sharpness table: median s [IQR], isotropic control, boundaries, polytopes."""
    table = Table("model", "rev", "s median [q25, q75]", "isotropic s", "bound.", "out ratio")
    table.add_column("MLP bits flipped")
    for r in rows:
        poly = r["polytope_crossings_median"]
        table.add_row(
            r["model"],
            r["revision"],
            f"{r['s_median']:.2f} [{r['s_q25']:.2f}, {r['s_q75']:.2f}]",
            f"{r['iso_s_median']:.2f}",
            f"{r['with_boundary']:.0%}",
            f"{r['output_ratio']:.2f}",
            "-" if poly is None else f"{poly:.0f}",
        )
    return table


@regions_app.command("run")
def run_cmd(
    model: Model = "code-4l",
    revision: Annotated[str | None, typer.Option(help="checkpoint, e.g. step-150")] = None,
    n_prompts: Prompts = 64,
    n_steps: Steps = 31,
    layer: Layer = 0,
    path: Annotated[str, typer.Option(help="linear, arc or slerp")] = "linear",
    read: Annotated[str, typer.Option(help="normalized (final norm) or logits")] = "normalized",
    threshold: Threshold = 3.0,
    seed: Annotated[int, typer.Option(help="prompt and direction seed")] = 0,
    out: Out = Path("out/regions"),
    cdn: Cdn = False,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Interpolate between consecutive random prompts of one model; write curves and figures."""
    check_writable_dir(out)
    from mechscope.regions.analysis import RegionConfig, analyse
    from mechscope.regions.interpolate import PATHS
    from mechscope.regions.plot import curves_figure, write_figure
    from mechscope.regions.result import save_curves

    with option_checks():
        _check([model], n_prompts, n_steps, layer, threshold, seed)
        V.choice("--path", path, PATHS)
        V.choice("--read", read, ("normalized", "logits"))
    cfg = RegionConfig(
        n_prompts=n_prompts,
        n_steps=n_steps,
        layer=layer,
        path=path,
        read=read,
        threshold=threshold,
        seed=seed,
    )
    try:
        bridge = load(model, revision, Placement(device, device_map, dtype))
        stats, real, iso = analyse(bridge, revision, cfg, name=model)
    except MechscopeError as e:
        fail(e)
    stem = out / f"{Path(model).name}@{revision or 'main'}"
    stats.save(suffixed(stem, ".json"))
    save_curves(real, stem.parent / f"{stem.name}_curves")
    save_curves(iso, stem.parent / f"{stem.name}_isotropic")
    write_figure(curves_figure(real, stats, iso), suffixed(stem, ".html"), cdn)
    from mechscope.regions.result import RegionStatsTable

    console.print(_table(RegionStatsTable([stats]).table()))
    console.print(f"results: {stem}.json, {stem.name}_curves.*, figure: {stem}.html")


@regions_app.command("sweep")
def sweep_cmd(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model", "-m", help="models (repeat); default code-2l, code-4l, code-llama-2l"
        ),
    ] = None,
    revision: Annotated[
        list[str] | None,
        typer.Option("--revision", "-r", help="revisions (repeat); default every checkpoint"),
    ] = None,
    n_prompts: Prompts = 64,
    n_steps: Steps = 31,
    layer: Layer = 0,
    threshold: Threshold = 3.0,
    seed: Annotated[int, typer.Option(help="prompt and direction seed")] = 0,
    out: Out = Path("out/regions"),
    cdn: Cdn = False,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Sharpness over training checkpoints and model sizes (step-0 = the random-init control)."""
    check_writable_dir(out)
    from mechscope.regions.analysis import SWEEP_MODELS, RegionConfig, sweep
    from mechscope.regions.plot import sweep_figure, write_figure

    with option_checks():
        _check(model or list(SWEEP_MODELS), n_prompts, n_steps, layer, threshold, seed)
    cfg = RegionConfig(
        n_prompts=n_prompts, n_steps=n_steps, layer=layer, threshold=threshold, seed=seed
    )
    try:
        placement = Placement(device, device_map, dtype)
        result = sweep(model or list(SWEEP_MODELS), revision, cfg, placement=placement)
    except MechscopeError as e:
        fail(e)
    result.save(out / "sweep.json")
    write_figure(sweep_figure(result), out / "sweep.html", cdn)
    console.print(_table(result.table()))
    console.print(f"results: {out}/sweep.json, figure: {out}/sweep.html")


@regions_app.command("semantic")
def semantic_cmd(
    model: Model = "code-4l",
    revision: Annotated[str | None, typer.Option(help="checkpoint, e.g. step-150")] = None,
    n_prompts: Prompts = 24,
    n_steps: Steps = 21,
    layer: Layer = 0,
    threshold: Threshold = 3.0,
    seed: Annotated[int, typer.Option(help="prompt seed")] = 0,
    out: Out = Path("out/regions"),
    cdn: Cdn = False,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Cluster prompts by stable region and relate the clusters to their predictions."""
    check_writable_dir(out)
    from mechscope.regions.plot import semantic_figure, write_figure
    from mechscope.regions.semantic import semantic_alignment

    with option_checks():  # every pair of prompts: n (n - 1) paths
        _check([model], n_prompts, n_steps, layer, threshold, seed)
        if dims := V.model_dims(model):
            need = V.regions_bytes(dims, n_prompts * (n_prompts - 1), n_steps, 10, 2048)
            V.check_memory(f"interpolating on {model}", need, "--n-steps or --n-prompts")
    try:
        res = semantic_alignment(
            load(model, revision, Placement(device, device_map, dtype)),
            revision,
            n_prompts,
            n_steps=n_steps,
            layer=layer,
            threshold=threshold,
            seed=seed,
            name=model,
        )
    except MechscopeError as e:
        fail(e)
    stem = out / f"semantic_{Path(model).name}@{revision or 'main'}"
    res.save(suffixed(stem, ".json"))
    write_figure(semantic_figure(res), suffixed(stem, ".html"), cdn)
    table = Table("quantity", "value")
    table.add_row("clusters", str(len(set(res.labels))))
    for k, v in res.rates.items():
        table.add_row(k, f"{v:.3f}")
    console.print(table)
    console.print(f"results: {stem}.json, figure: {stem}.html")
