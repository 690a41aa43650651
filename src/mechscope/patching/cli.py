"""`mechscope patch`: run patching sweeps on a task and write results and figures.

mechscope patch --model code-attn4 --task docstring -c resid_pre -c z --direction denoising
    -> out/patch/{component}_{direction}.json / .safetensors / .html
       (with --attribution also {component}_{direction}_attribution.* and the Pearson r)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mechscope.cli_common import console, fail, load


def patch_command(
    model: Annotated[
        str, typer.Option(help="zoo name, local HF folder or hub name")
    ] = "code-attn4",
    task: Annotated[str, typer.Option(help="docstring, induction or ioi")] = "docstring",
    component: Annotated[
        list[str] | None,
        typer.Option("--component", "-c", help="resid_pre, attn_out, z, pattern, ... (repeat)"),
    ] = None,
    direction: Annotated[str, typer.Option(help="denoising, noising, zero or mean")] = "denoising",
    metric: Annotated[str | None, typer.Option(help="logit_diff, logprob, prob or kl")] = None,
    positions: Annotated[str, typer.Option(help="'each' position or 'all' at once")] = "each",
    n: Annotated[int, typer.Option(help="number of prompts")] = 20,
    seed: Annotated[int, typer.Option(help="prompt seed")] = 0,
    attribution: Annotated[
        bool, typer.Option(help="also write the attribution-patching estimate")
    ] = False,
    memory_mb: Annotated[float, typer.Option(help="activation memory budget per chunk")] = 512.0,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("out/patch"),
) -> None:
    """Activation patching sweeps on a task: writes JSON + safetensors results and HTML heatmaps."""
    from mechscope.errors import MetricError
    from mechscope.models import ModelLoadError
    from mechscope.models.lean import as_lean
    from mechscope.patching.attribution import attribution_patch
    from mechscope.patching.grid import patch_task
    from mechscope.patching.metric import task_metric
    from mechscope.patching.plot import write_html
    from mechscope.patching.result import pearson
    from mechscope.patching.specs import PatchingError
    from mechscope.tasks import TaskError, make_task

    components = component or ["resid_pre", "z"]
    table = Table("component", "direction", "axes", "clean", "corrupted", "largest effect")
    try:
        bridge = load(model)
        t = make_task(task, bridge.tokenizer, n=n, seed=seed)
        lean = as_lean(bridge)
        estimates = {}
        if attribution:
            clean_logits = lean(t.clean_tokens, logit_pos=(-1,)) if metric == "kl" else None
            m = task_metric(t, metric, clean_logits)
            estimates = attribution_patch(
                lean, t.clean_tokens, t.corrupt_tokens, m, components, direction, positions
            )
        for c in components:
            r = patch_task(lean, t, c, direction, metric, positions, memory_mb=memory_mb)
            r.meta.update(model=model, seed=seed)
            stem = out / f"{c}_{direction}"
            r.save(stem)
            write_html(r.plot(), stem.with_suffix(".html"))
            eff = r.effect().abs().flatten()
            top = int(eff.argmax())
            at = zip(r.axes, _unravel(top, tuple(r.values.shape)), strict=True)
            where = " ".join(f"{a}={r.labels[a][i] if a in r.labels else i}" for a, i in at)
            table.add_row(
                c,
                direction,
                " x ".join(f"{a}[{n}]" for a, n in zip(r.axes, r.values.shape, strict=True)),
                f"{r.clean:.3f}",
                f"{r.corrupted:.3f}",
                f"{where}: {r.values.flatten()[top]:.3f}",
            )
            if c in estimates:
                est = estimates[c]
                est.meta.update(model=model, task=task, seed=seed)
                est.save(out / f"{c}_{direction}_attribution")
                write_html(est.plot(), out / f"{c}_{direction}_attribution.html")
                r_val = pearson(est.values, r.values)
                console.print(f"{c}: attribution vs exact Pearson r = {r_val:.3f}")
    except (ModelLoadError, TaskError, PatchingError, MetricError) as e:
        fail(e)
    console.print(table)
    console.print(f"results and figures: {out}/<component>_{direction}.{{json,safetensors,html}}")


def _unravel(index: int, shape: tuple[int, ...]) -> list[int]:
    out = []
    for size in reversed(shape):
        out.append(index % size)
        index //= size
    return out[::-1]
