"""`mechscope acdc`: find a circuit on a task with ACDC (or EAP) and write JSON, DOT and HTML.

mechscope acdc --model code-attn4 --task docstring --tau 0.01 --n 16 --out out/acdc
mechscope acdc --tracr reverse --ablation zero --tau 1e-4       # a bundled tracr model

The circuit is found on `n` prompts of seed `seed` and measured on `n_test` held-out prompts of
seed `test_seed` (default seed + 1); the JSON keeps both (`search`, `test_metrics`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mechscope import validate as V
from mechscope.cli_common import Device, DeviceMap, Dtype, console, fail, load, option_checks
from mechscope.files import check_writable_file, suffixed
from mechscope.models.placement import Placement

if TYPE_CHECKING:
    from mechscope.circuits.result import Circuit


def acdc_command(
    model: Annotated[str, typer.Option(help="zoo name, local HF folder or hub name")] = (
        "code-attn4"
    ),
    task: Annotated[str, typer.Option(help="docstring, induction or ioi")] = "docstring",
    tracr: Annotated[
        str | None, typer.Option(help="run on a bundled tracr model: reverse or proportion")
    ] = None,
    tau: Annotated[float, typer.Option(help="ACDC threshold")] = 0.01,
    metric: Annotated[str, typer.Option(help="kl, logit_diff, logprob or prob")] = "kl",
    ablation: Annotated[str, typer.Option(help="resample (corrupted prompts) or zero")] = (
        "resample"
    ),
    method: Annotated[str, typer.Option(help="acdc, acdc-reference, eap or eap-ig")] = "acdc",
    k: Annotated[int, typer.Option(help="edges to keep (eap, eap-ig)")] = 100,
    n: Annotated[int, typer.Option(help="number of search prompts")] = 16,
    seed: Annotated[int, typer.Option(help="seed of the search prompts")] = 0,
    n_test: Annotated[
        int | None, typer.Option(help="number of held-out test prompts [default: n]")
    ] = None,
    test_seed: Annotated[
        int | None, typer.Option(help="seed of the test prompts [default: seed + 1]")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="tentative removals evaluated together")] = 8,
    out: Annotated[Path, typer.Option(help="output stem: writes .json .dot .html")] = Path(
        "out/acdc"
    ),
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Find a circuit with ACDC (edges visited / kept shown live) or EAP on the search prompts,
    measure it on held-out test prompts (tracr: on all inputs); save and render it."""
    check_writable_file(suffixed(out, ".json"))
    from mechscope.circuits.patched import ABLATIONS
    from mechscope.circuits.render import write
    from mechscope.errors import MechscopeError
    from mechscope.metrics import NAMES
    from mechscope.tasks import TASKS

    with option_checks():
        V.choice("--method", method, ("acdc", "acdc-reference", "eap", "eap-ig"))
        V.choice("--task", task, TASKS)
        V.choice("--metric", metric, NAMES)
        V.choice("--ablation", ablation, ABLATIONS)
        V.number("--tau", tau, lo=0)
        V.integer("--k", k, lo=1)
        V.integer("--n", n, lo=1)
        V.integer("--n-test", n_test, lo=1)
        V.seed("--seed", seed)
        V.seed("--test-seed", test_seed)
        V.integer("--batch-size", batch_size, lo=1)
    try:
        if tracr is not None:
            c = _on_tracr(tracr, tau, ablation, method, k, batch_size)
            c.meta.update(model=f"tracr-{tracr}", task=tracr, seed=seed)
        else:
            c = _on_task(
                load(model, None, Placement(device, device_map, dtype)),
                model,
                task,
                tau,
                metric,
                ablation,
                method,
                k,
                n,
                seed,
                n_test,
                test_seed,
                batch_size,
            )
    except MechscopeError as e:
        fail(e)
    console.print(c.summary())
    console.print(f"heads: {', '.join(c.heads) or 'none'}")
    paths = write(c, out)
    console.print("wrote " + ", ".join(str(p) for p in paths))


def _on_tracr(
    name: str, tau: float, ablation: str, method: str, k: int, batch_size: int
) -> Circuit:
    """`method` on a bundled tracr model, on all its inputs (no held-out set: the truth, not
    faithfulness, is what a tracr circuit is judged by)."""
    from mechscope.circuits.acdc import acdc, acdc_reference
    from mechscope.circuits.eap import eap
    from mechscope.circuits.tracr import load_tracr

    tt = load_tracr(name)
    console.print(f"tracr-{name}: {tt.graph.summary()}")
    corrupt = tt.tokens.roll(1, 0) if ablation == "resample" else None  # another input
    if method in ("eap", "eap-ig"):
        ig_steps = 5 if method == "eap-ig" else 1
        return eap(tt.model, tt.tokens, corrupt, tt.metric, k, ablation, tt.graph, ig_steps)
    args = (tt.model, tt.tokens, corrupt, tau, tt.metric, ablation, tt.graph)
    if method == "acdc":
        return acdc(*args, batch_size=batch_size, progress=True)
    return acdc_reference(*args, progress=True)


def _on_task(
    bridge: Any,
    model: str,
    task: str,
    tau: float,
    metric: str,
    ablation: str,
    method: str,
    k: int,
    n: int,
    seed: int,
    n_test: int | None,
    test_seed: int | None,
    batch_size: int,
) -> Circuit:
    """The circuit of `method` on `n` prompts of `task` of the loaded `bridge` (named `model`),
    measured on the held-out ones."""
    from mechscope.circuits.graph import Graph
    from mechscope.circuits.heldout import acdc_task, eap_task
    from mechscope.models.lean import as_lean
    from mechscope.tasks import make_split

    lean = as_lean(bridge)
    graph = Graph.from_model(lean)
    console.print(f"{model}: {graph.summary()}")
    search, test = make_split(task, bridge.tokenizer, n, seed, n_test, test_seed)
    if method in ("eap", "eap-ig"):
        ig_steps = 5 if method == "eap-ig" else 1
        c = eap_task(lean, search, test, k, metric, ablation, graph, ig_steps)
    else:
        reference = method == "acdc-reference"
        c = acdc_task(
            lean, search, test, tau, metric, ablation, graph, reference, batch_size, progress=True
        )
    test_seed = seed + 1 if test_seed is None else test_seed
    c.meta.update(model=model, seed=seed, test_seed=test_seed)
    return c
