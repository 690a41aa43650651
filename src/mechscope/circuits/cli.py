"""`mechscope acdc`: find a circuit on a task with ACDC (or EAP) and write JSON, DOT and HTML.

mechscope acdc --model code-attn4 --task docstring --tau 0.01 --n 16 --out out/acdc
mechscope acdc --tracr reverse --ablation zero --tau 1e-4       # a bundled tracr model
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mechscope.cli_common import console, fail, load


def acdc_command(
    model: Annotated[str, typer.Option(help="zoo name, local HF folder or hub name")] = (
        "code-attn4"
    ),
    task: Annotated[str, typer.Option(help="docstring, induction or ioi")] = "docstring",
    tracr: Annotated[
        str | None, typer.Option(help="run on a bundled tracr model: reverse or proportion")
    ] = None,
    tau: Annotated[float, typer.Option(help="ACDC threshold")] = 0.01,
    metric: Annotated[str, typer.Option(help="kl, logit_diff or logprob")] = "kl",
    ablation: Annotated[str, typer.Option(help="resample (corrupted prompts) or zero")] = (
        "resample"
    ),
    method: Annotated[str, typer.Option(help="acdc, acdc-reference, eap or eap-ig")] = "acdc",
    k: Annotated[int, typer.Option(help="edges to keep (eap, eap-ig)")] = 100,
    n: Annotated[int, typer.Option(help="number of prompts")] = 16,
    seed: Annotated[int, typer.Option(help="prompt seed")] = 0,
    batch_size: Annotated[int, typer.Option(help="tentative removals evaluated together")] = 8,
    out: Annotated[Path, typer.Option(help="output stem: writes .json .dot .html")] = Path(
        "out/acdc"
    ),
) -> None:
    """Find a circuit with ACDC (edges visited / kept shown live) or EAP; save and render it."""
    from mechscope.circuits.acdc import acdc, acdc_reference
    from mechscope.circuits.eap import eap
    from mechscope.circuits.metric import kl_metric, task_circuit_metric
    from mechscope.circuits.render import write
    from mechscope.errors import CircuitError, ModelLoadError
    from mechscope.tasks import TaskError

    try:
        if tracr is not None:
            from mechscope.circuits.tracr import load_tracr

            tt = load_tracr(tracr)
            lean, graph, clean, corrupt = tt.model, tt.graph, tt.tokens, None
            m = tt.metric
            if ablation == "resample":
                corrupt = clean.roll(1, 0)  # another prompt of the task
            name = f"tracr-{tracr}"
        else:
            from mechscope.circuits.graph import Graph
            from mechscope.models.lean import LeanModel
            from mechscope.tasks import make_task

            bridge = load(model)
            lean = LeanModel(bridge)
            graph = Graph.from_model(lean)
            t = make_task(task, bridge.tokenizer, n=n, seed=seed)
            clean, corrupt = t.clean_tokens, t.corrupt_tokens
            if metric == "kl":
                m = kl_metric(lean(clean, logit_pos=(-1,)))
            else:
                m = task_circuit_metric(t, metric)
            name = model
        console.print(f"{name}: {graph.summary()}")
        abl_corrupt = corrupt if ablation == "resample" else None
        if method in ("eap", "eap-ig"):
            c = eap(
                lean,
                clean,
                abl_corrupt,
                m,
                k,
                ablation,
                graph,
                ig_steps=5 if method == "eap-ig" else 1,
            )
        elif method in ("acdc", "acdc-reference"):
            if method == "acdc":
                c = acdc(
                    lean,
                    clean,
                    abl_corrupt,
                    tau,
                    m,
                    ablation,
                    graph,
                    batch_size=batch_size,
                    progress=True,
                )
            else:
                c = acdc_reference(lean, clean, abl_corrupt, tau, m, ablation, graph, progress=True)
        else:
            raise CircuitError(
                f"Unknown method {method!r}; choose acdc, acdc-reference, eap, eap-ig"
            )
        c.meta.update(model=name, task=tracr or task, seed=seed)
    except (CircuitError, ModelLoadError, TaskError) as e:
        fail(e)
    console.print(c.summary())
    console.print(f"heads: {', '.join(c.heads) or 'none'}")
    paths = write(c, out)
    console.print("wrote " + ", ".join(str(p) for p in paths))
