"""`run_demo`: every stage of the report in turn, each isolated, the report rewritten after each.

A stage that raises becomes a 'failed: ...' section (with the message on the console) and the
next stage runs; because the HTML and JSON are rewritten after every stage, nothing already
computed is lost if a later stage fails or the run is interrupted.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from mechscope.files import write_text
from mechscope.models.placement import Placement
from mechscope.report import sections as S
from mechscope.report.render import jsonable, report_json, write_report
from mechscope.report.sections import DemoConfig, Section

STAGE_NAMES = tuple(S.STAGES)


@dataclass
class DemoResult:
    """What `run_demo` wrote and found."""

    html: Path
    json: Path
    files: Path
    sections: list[Section]
    seconds: float

    @property
    def failed(self) -> list[Section]:
        return [s for s in self.sections if not s.ok]


def files_dir(out: Path) -> Path:
    """The folder of the report's side files (circuit drawing, evolution page)."""
    return out.with_name(out.stem + "_files")


def _meta(cfg: DemoConfig, only: Sequence[str] | None) -> dict[str, Any]:
    import torch

    from mechscope import __version__

    return {
        "quick": cfg.quick,
        "mechscope": __version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}",
        "stages": list(only or S.STAGES),  # planned; the report says which of them ran
        "config": asdict(cfg),
    }


def run_stage(key: str, cfg: DemoConfig, files: Path) -> Section:
    """Run one stage; an exception becomes a failed section (with title and rerun command)."""
    (skey, title, question), commands, fn = S.STAGES[key]
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        sec = fn(cfg, files)
    except Exception as e:  # one failing stage must not stop the report
        msg = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        sec = Section(skey, title, question, commands(cfg), error=msg)
    sec.seconds = time.perf_counter() - t0
    sec.cpu_seconds = time.process_time() - c0
    return sec


def run_demo(
    out: Path = Path("mechscope-report.html"),
    quick: bool = False,
    only: Sequence[str] | None = None,
    console: Console | None = None,
    placement: Placement | None = None,
) -> DemoResult:
    """Run the stages (all, or `only` those), writing `out` (HTML) and `out`.json after each.

    quick: CI settings (few prompts, checkpoints and batches); placement: where every stage
    loads its transformer (default: CPU, float32). Returns the sections with their timings;
    failed stages are in `DemoResult.failed`.
    """
    from mechscope.cli_common import console as default_console

    console = console or default_console
    keys = list(only) if only else list(S.STAGES)
    unknown = [k for k in keys if k not in S.STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {', '.join(S.STAGES)}")
    cfg = DemoConfig.make(quick, placement)
    out = Path(out)
    json_path = out.with_suffix(".json")
    files = files_dir(out)
    files.mkdir(parents=True, exist_ok=True)
    meta = _meta(cfg, only)
    done: list[Section] = []
    t_start = time.perf_counter()

    def write() -> None:
        total = time.perf_counter() - t_start
        write_report(out, done, meta, total)
        data = report_json(done, meta, total)
        write_text(json_path, json.dumps(data, indent=1, allow_nan=False))

    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} stages"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("mechscope demo", total=len(keys))
        for key in keys:
            progress.update(task, description=f"{key}: {S.STAGES[key][0][1]}")
            sec = run_stage(key, cfg, files)
            done.append(sec)
            if sec.ok:
                progress.console.print(
                    f"[green]done[/] {key} in {sec.seconds:.1f} s (CPU {sec.cpu_seconds:.1f} s)"
                )
            else:
                progress.console.print(
                    f"[bold red]failed[/] {key} after {sec.seconds:.1f} s: {sec.error}\n"
                    f"  (the other stages still run; rerun this one alone: {sec.commands[0]})"
                )
            write()
            progress.advance(task)
    total = time.perf_counter() - t_start
    write()
    return DemoResult(out, json_path, files, done, total)


def load_numbers(path: str | Path) -> dict[str, Any]:
    """The JSON a demo run wrote (`<report>.json`)."""
    return dict(jsonable(json.loads(Path(path).read_text())))
