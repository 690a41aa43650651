"""`mechscope sweep CONFIG`: a grid of method calls (ACDC, SAE training, stable regions) as Ray
tasks, or serially without Ray; resumable, with a merged table and a summary figure.

mechscope sweep examples/sweeps/acdc.yaml                      # embedded Ray on this machine
mechscope sweep examples/sweeps/acdc.yaml --address HOST:6379  # an existing Ray cluster
mechscope sweep examples/sweeps/sae.toml --backend serial --out runs/sae-sweep
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mechscope import validate as V
from mechscope.cli_common import Device, DeviceMap, Dtype, console, fail, option_checks
from mechscope.files import check_writable_dir
from mechscope.models.placement import Placement

if TYPE_CHECKING:
    import pandas as pd


def sweep_command(
    config: Annotated[Path, typer.Argument(help="sweep config: .yaml, .yml or .toml")],
    out: Annotated[
        Path | None, typer.Option(help="output folder (default: the config's `out`)")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="attach to this Ray cluster (host:port, or 'auto')")
    ] = None,
    backend: Annotated[
        str, typer.Option(help="auto (Ray if installed, else serial), ray or serial")
    ] = "auto",
    workers: Annotated[
        int | None, typer.Option(help="trials at once on Ray (default: CPUs // threads)")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch threads per trial (default: the config's, 1)")
    ] = None,
    retries: Annotated[
        int | None, typer.Option(help="Ray reruns of a trial whose worker died (default 0)")
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar over the trials")] = True,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Run every trial of a sweep config not finished yet in the output folder; merge results.
    Every trial loads its model with --device / --device-map / --dtype (given any of
    them; else the config's `placement`)."""
    if out is not None:
        check_writable_dir(out)
    from mechscope.errors import ModelLoadError
    from mechscope.sweep.config import SweepError, load_config
    from mechscope.sweep.kinds import KINDS
    from mechscope.sweep.results import results_table
    from mechscope.sweep.runner import BACKENDS, run_sweep

    with option_checks():
        V.choice("--backend", backend, BACKENDS)
        V.integer("--workers", workers, lo=1)
        V.integer("--threads", threads, lo=1)
        V.integer("--retries", retries, lo=0)
    try:
        cfg = load_config(config)
        placement = Placement(device, device_map, dtype)  # a bad --device-map fails here
        if placement == Placement():  # no option given: the config's
            placement = cfg.placement
        report = run_sweep(
            cfg, out, backend, address, workers, threads, retries, progress, console, placement
        )
    except (SweepError, ModelLoadError) as e:
        fail(e)
    table = Table("ran", "skipped (finished earlier)", "failed", "backend", "seconds")
    table.add_row(
        str(len(report.ran)),
        str(len(report.skipped)),
        str(len(report.failed)),
        f"{report.backend} ({report.workers} at once)",
        f"{report.seconds:.1f}",
    )
    console.print(table)
    _print_results(results_table(cfg, report.out), KINDS[cfg.kind].metrics, list(cfg.grid))
    for key, error in report.failed.items():
        console.print(f"[red]failed[/] {escape(key)}: {escape(error)}")
    console.print(
        f"results: {', '.join(str(p) for p in report.outputs)}; "
        f"trials: {report.out / 'trials'}/<key>/"
    )
    if report.failed:
        console.print(f"[bold red]{len(report.failed)} trials failed; rerun to retry[/]")
        raise typer.Exit(code=1)


def _print_results(
    df: pd.DataFrame, metrics: tuple[str, ...], grid: list[str], limit: int = 30
) -> None:
    """The first `limit` rows of the merged table: grid parameters and headline metrics."""
    if df.empty:
        return
    cols = ["status", *grid, *[m for m in metrics if m in df.columns]]
    table = Table(*cols)
    for _, row in df.head(limit).iterrows():
        table.add_row(*(escape(_fmt(row[c])) for c in cols))
    console.print(table)
    if len(df) > limit:
        console.print(f"... {len(df) - limit} more rows in results.csv")


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
