"""`mechscope demo`: run every method on the bundled models and write one HTML report.

mechscope demo                          # full run -> mechscope-report.html (+ .json, _files/)
mechscope demo --quick --out r.html     # CI settings, < 2 min on 2 CPU cores
mechscope demo --only circuits --only basis
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mechscope.cli_common import Device, DeviceMap, Dtype, console, fail
from mechscope.files import check_writable_file


def demo_command(
    quick: Annotated[
        bool, typer.Option(help="CI settings: few prompts, checkpoints and batches")
    ] = False,
    out: Annotated[Path, typer.Option(help="the HTML report (JSON of all numbers beside it)")] = (
        Path("mechscope-report.html")
    ),
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="run only this stage (repeat): patching, circuits, saes, directions, "
            "evolution, regions, basis"
        ),
    ] = None,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Run mechscope's methods on the bundled models; write one self-contained HTML report.
    Every stage loads its transformer with --device / --device-map / --dtype."""
    check_writable_file(out)
    from mechscope.errors import ModelLoadError
    from mechscope.models.placement import Placement
    from mechscope.report.demo import STAGE_NAMES, run_demo

    bad = [s for s in only or [] if s not in STAGE_NAMES]
    if bad:
        fail(f"unknown stage(s) {', '.join(bad)}; choose from {', '.join(STAGE_NAMES)}")
    try:
        placement = Placement(device, device_map, dtype)
    except ModelLoadError as e:
        fail(e)
    console.rule("mechscope demo" + (" (quick)" if quick else ""))
    result = run_demo(out, quick=quick, only=only, console=console, placement=placement)
    table = Table("stage", "status", "wall s", "CPU s")
    for s in result.sections:
        status = "[green]ok[/]" if s.ok else f"[red]failed[/]: {s.error}"
        table.add_row(s.key, status, f"{s.seconds:.1f}", f"{s.cpu_seconds:.1f}")
    cpu = sum(s.cpu_seconds for s in result.sections)
    table.add_row("[bold]total", "", f"[bold]{result.seconds:.1f}", f"[bold]{cpu:.1f}")
    console.print(table)
    console.print(f"report: {result.html}  numbers: {result.json}  side files: {result.files}/")
    if result.failed:
        console.print(
            f"[bold red]{len(result.failed)} stage(s) failed[/]; the report holds the others."
        )
        raise typer.Exit(code=1)
