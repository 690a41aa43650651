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

from mechscope import validate as V
from mechscope.cli_common import Device, DeviceMap, Dtype, console, fail, load, option_checks
from mechscope.files import check_writable_dir, suffixed
from mechscope.models.placement import Placement


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
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Activation patching sweeps on a task: writes JSON + safetensors results and HTML heatmaps."""
    check_writable_dir(out)
    from rich.progress import track

    from mechscope.errors import MechscopeError
    from mechscope.metrics import NAMES
    from mechscope.models.lean import as_lean
    from mechscope.patching.attribution import attribution_task
    from mechscope.patching.engine import DIRECTIONS
    from mechscope.patching.grid import patch_task
    from mechscope.patching.plot import plot_result, write_html
    from mechscope.patching.result import pearson
    from mechscope.patching.specs import COMPONENTS
    from mechscope.tasks import TASKS, make_task

    components = component or ["resid_pre", "z"]
    with option_checks():
        V.choice("--task", task, TASKS)
        V.choices("--component", components, COMPONENTS)
        V.choice("--direction", direction, DIRECTIONS)
        V.choice("--metric", metric, NAMES)
        V.choice("--positions", positions, ("each", "all"))
        V.integer("--n", n, lo=1)
        V.seed("--seed", seed)
        V.number("--memory-mb", memory_mb, lo=0, lo_open=True)
    table = Table("component", "direction", "axes", "clean", "corrupted", "largest effect")
    try:
        bridge = load(model, None, Placement(device, device_map, dtype))
        with option_checks():  # prompt length from one prompt, before making n of them
            seq_len = int(make_task(task, bridge.tokenizer, n=1, seed=seed).clean_tokens.shape[1])
            if dims := V.model_dims(bridge):
                need = max(
                    V.patch_bytes(dims, n, seq_len, c, direction, memory_mb) for c in components
                )
                V.check_memory(f"patching {n} prompt pairs", need, "--n or --memory-mb")
        t = make_task(task, bridge.tokenizer, n=n, seed=seed)
        lean = as_lean(bridge)
        estimates = {}
        if attribution:
            estimates = attribution_task(lean, t, components, direction, metric, positions)
        bar = track(components, f"patching ({direction})", console=console, transient=True)
        for c in bar:
            r = patch_task(lean, t, c, direction, metric, positions, memory_mb=memory_mb)
            r.meta.update(model=model, seed=seed)
            stem = out / f"{c}_{direction}"
            r.save(stem)
            write_html(plot_result(r), suffixed(stem, ".html"))
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
                write_html(plot_result(est), out / f"{c}_{direction}_attribution.html")
                r_val = pearson(est.values, r.values)
                console.print(f"{c}: attribution vs exact Pearson r = {r_val:.3f}")
    except MechscopeError as e:
        fail(e)
    console.print(table)
    console.print(f"results and figures: {out}/<component>_{direction}.{{json,safetensors,html}}")


def _unravel(index: int, shape: tuple[int, ...]) -> list[int]:
    out = []
    for size in reversed(shape):
        out.append(index % size)
        index //= size
    return out[::-1]
