"""The `mechscope` command line: a thin layer over the Python API.

mechscope zoo list                      # bundled models
mechscope zoo info code-attn4           # a model card
mechscope zoo build code-attn4          # retrain a bundled model from scratch
mechscope run-task --model code-attn4 --task docstring
mechscope acdc --model code-attn4 --task docstring --tau 0.01   # a circuit, JSON/DOT/HTML
mechscope regions sweep -m code-2l -m code-4l   # stable regions over checkpoints and sizes
mechscope demo                          # the whole programme on the bundled models
mechscope sweep examples/sweeps/acdc.yaml   # a grid of method calls on Ray (resumable)
mechscope patch --model facebook/opt-6.7b --device-map auto --dtype bfloat16 ...  # big models
mechscope acdc --model code-attn4 --device cuda        # any model-loading command: one GPU
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mechscope import validate as V
from mechscope.basis.cli import basis_app
from mechscope.circuits.cli import acdc_command
from mechscope.cli_common import (
    Device,
    DeviceMap,
    Dtype,
    ErrorsAsMessages,
    console,
    fail,
    load,
    option_checks,
)
from mechscope.directions.cli import directions_app
from mechscope.evolution.cli import evolution_app
from mechscope.files import check_writable_dir, check_writable_file, write_json
from mechscope.graphs.cli import graph_command
from mechscope.models.placement import Placement
from mechscope.patching.cli import patch_command
from mechscope.regions.cli import regions_app
from mechscope.report.cli import demo_command
from mechscope.sae.cli import sae_app
from mechscope.steering.cli import steer_command
from mechscope.sweep.cli import sweep_command

app = typer.Typer(
    help="mechscope: find out what computation a transformer performs, and where.",
    no_args_is_help=True,
    add_completion=False,
    cls=ErrorsAsMessages,
)


@app.callback()
def main() -> None:
    """mechscope: find out what computation a transformer performs, and where."""


zoo_app = typer.Typer(help="The bundled model zoo: list, inspect and rebuild models.")
app.add_typer(zoo_app, name="zoo")
app.add_typer(sae_app, name="sae")
app.add_typer(regions_app, name="regions")
app.add_typer(basis_app, name="basis")
app.add_typer(evolution_app, name="evolution")
app.add_typer(directions_app, name="directions")
app.command("patch")(patch_command)
app.command("acdc")(acdc_command)
app.command("demo")(demo_command)
app.command("sweep")(sweep_command)
app.command("graph")(graph_command)
app.command("steer")(steer_command)


@zoo_app.command("list")
def zoo_list() -> None:
    """List the bundled models with their size and headline metrics."""
    from mechscope import zoo

    table = Table("name", "params", "layers", "revisions", "description")
    for name in zoo.list_models():
        card = zoo.card(name)
        arch = card["architecture"]
        revs = zoo.revisions(name)
        table.add_row(
            name,
            f"{card['n_params']:,}",
            str(arch["n_layers"]),
            ", ".join(revs) if len(revs) > 1 else "main",
            card["description"],
        )
    console.print(table)


@zoo_app.command("info")
def zoo_info(name: Annotated[str, typer.Argument(help="model name, or 'tokenizer'")]) -> None:
    """Print a model card: how it was trained, the command to remake it, its metrics."""
    from mechscope import zoo
    from mechscope.models import ModelLoadError

    try:
        console.print_json(json.dumps(zoo.card(name)))
    except ModelLoadError as e:
        fail(str(e))


@zoo_app.command("build")
def zoo_build(
    name: Annotated[str, typer.Argument(help="'tokenizer' or a zoo model (`mechscope zoo list`)")],
    out: Annotated[Path | None, typer.Option(help="output folder (default: the package)")] = None,
    steps: Annotated[int | None, typer.Option(help="override the number of steps")] = None,
    device: Annotated[str, typer.Option(help="train on cpu or cuda")] = "cpu",
) -> None:
    """Retrain a bundled model (deterministic, minutes on 2 CPU cores); the tokenizer first."""
    if out is not None:
        check_writable_dir(out)
    from mechscope import zoo
    from mechscope.models import ModelLoadError

    with option_checks():
        V.choice("NAME", name, zoo.BUILDABLE)
        V.integer("--steps", steps, lo=1)
        V.device("--device", device)
    kwargs: dict = {}
    if out is not None:
        kwargs["out"] = out
    if steps is not None and name != "tokenizer":
        kwargs["steps"] = steps
    if device != "cpu" and name != "tokenizer":
        kwargs["device"] = device
    try:
        folder = zoo.build(name, **kwargs)
    except (ModelLoadError, ValueError) as e:
        fail(str(e))
    console.print(f"[green]built[/] {name} -> {folder}")


@app.command("run-task")
def run_task_cmd(
    model: Annotated[
        str, typer.Option(help="zoo name, local HF folder or hub name")
    ] = "code-attn4",
    task: Annotated[str, typer.Option(help="docstring, induction or ioi")] = "docstring",
    n: Annotated[int, typer.Option(help="number of prompts")] = 100,
    seed: Annotated[int, typer.Option(help="prompt seed")] = 0,
    metric: Annotated[str | None, typer.Option(help="logit_diff, logprob, prob or kl")] = None,
    revision: Annotated[str | None, typer.Option(help="checkpoint, e.g. step-500")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result here")] = None,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Run a task on a model and print its clean and corrupted baselines."""
    from mechscope.errors import MechscopeError
    from mechscope.metrics import NAMES
    from mechscope.tasks import TASKS, make_task, run_task

    with option_checks():
        V.choice("--task", task, TASKS)
        V.integer("--n", n, lo=1)
        V.seed("--seed", seed)
        V.choice("--metric", metric, NAMES)
        V.model_tokenizer("--model", model)
    if json_out is not None:
        check_writable_file(json_out, "--json")
    try:
        m = load(model, revision, Placement(device, device_map, dtype))
        t = make_task(task, m.tokenizer, n=n, seed=seed)
        result = run_task(m, t, metric=metric)
    except MechscopeError as e:
        fail(str(e))
    table = Table("model", "task", "metric", "clean", "corrupted", "top-1 acc", "prompts")
    table.add_row(
        model,
        result.task,
        result.metric,
        f"{result.clean:.3f}",
        f"{result.corrupt:.3f}",
        f"{result.top1_accuracy:.1%}",
        str(result.n_prompts),
    )
    console.print(table)
    if json_out:
        write_json(json_out, result.to_dict(), indent=2)


if __name__ == "__main__":
    app()
