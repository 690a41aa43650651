"""`mechscope evolution`: feature evolution across layers (Balcells et al. 2024).

mechscope evolution run --model code-2l --html runs/evolution/code-2l.html    # bundled SAEs
mechscope evolution run --model code-4l --sae runs/saes/blocks.0... --sae ... --serve
mechscope evolution page runs/evolution/code-2l --serve                       # a saved result
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mechscope import validate as V
from mechscope.cli_common import Device, DeviceMap, Dtype, console, fail, load, option_checks
from mechscope.errors import EvolutionError, MechscopeError
from mechscope.files import check_writable_dir, check_writable_file, write_text
from mechscope.models.placement import Placement

evolution_app = typer.Typer(
    help="Feature evolution across layers: cross-layer SAE feature statistics, graph, page.",
    no_args_is_help=True,
)

Html = Annotated[Path | None, typer.Option(help="write the self-contained page here")]
Serve = Annotated[bool, typer.Option(help="serve the page on http://127.0.0.1:PORT/")]
Port = Annotated[int, typer.Option(help="port for --serve (bound to 127.0.0.1 only)")]


def counts_table(result: object) -> Table:
    """Per-layer counts (pass-through / disappearing / kept / appearing / AND / OR / new)."""
    floor = result.config["min_support"]  # type: ignore[attr-defined]
    title = f"AND / OR features need >= {floor} active tokens" if floor else "no AND / OR floor"
    table = Table("layer", "features", "dead", "pass-through", "disappearing", "kept", title=title)
    for c in ("appearing", "AND", "OR", "new (other)"):
        table.add_column(c)
    for r in result.counts():  # type: ignore[attr-defined]
        cells = [r["pass_through"], r["disappearing"], r["kept"], r["appearing"]]
        cells += [r["and"], r["or"], r["new_other"]]
        table.add_row(
            str(r["layer"]), str(r["features"]), str(r["dead"]),
            *["-" if v is None else str(v) for v in cells],
        )  # fmt: skip
    return table


def communities_table(result: object) -> Table:
    table = Table("algorithm", "communities", "singletons", "largest", "5-200 nodes", "in them")
    table.add_column("multi-layer")
    for algo, s in result.community_stats().items():  # type: ignore[attr-defined]
        table.add_row(
            algo, str(s["n_communities"]), str(s["n_singletons"]), str(s["largest"]),
            str(s["n_listed"]), str(s["listed_nodes"]), str(s["multi_layer"]),
        )  # fmt: skip
    return table


def _load_saes(
    model: str, specs: list[str], coeff: float, n_layers: int, device: Any
) -> tuple[list, list[str]]:
    """The per-layer SAEs (bundled at `coeff`, or `specs`) on `device` (the model's)."""
    from mechscope.sae.bundled import list_bundled, load_bundled
    from mechscope.sae.sources import resolve

    if not specs:
        names = [f"blocks.{l}.hook_resid_post__local__l1-{coeff:g}" for l in range(n_layers)]
        have = {e["name"] for e in list_bundled(model)}
        if not set(names) <= have:
            raise EvolutionError(
                f"no bundled SAEs at every layer of {model!r} (lambda {coeff:g}); pass one --sae "
                "per layer (SAELens folders, e.g. from `mechscope sae sweep`)"
            )
        return [load_bundled(model, n, device) for n in names], names
    named = [resolve(s, model, device) for s in specs]
    return [sae for _, sae in named], [name for name, _ in named]


@evolution_app.command("run")
def run_cmd(
    model: Annotated[str, typer.Option(help="zoo name, local HF folder or hub name")] = "code-2l",
    sae: Annotated[
        list[str] | None,
        typer.Option(help="SAE per layer, in order: SAELens folder or bundled name (repeat)"),
    ] = None,
    coeff: Annotated[float, typer.Option(help="lambda of the bundled SAEs (no --sae)")] = 1.0,
    batches: Annotated[int, typer.Option(help="held-out batches of token sequences")] = 64,
    batch_size: Annotated[int, typer.Option(help="sequences per batch")] = 16,
    dataset: Annotated[
        str | None,
        typer.Option(help="token source instead of held-out stdlib: files, a saved or hub dataset"),
    ] = None,
    column: Annotated[str, typer.Option(help="the dataset's text or token-id column")] = "text",
    tau: Annotated[float, typer.Option(help="pass-through threshold on Pearson r")] = 0.95,
    rel_threshold: Annotated[float, typer.Option(help="active: act > this x max")] = 0.2,
    min_support: Annotated[
        int, typer.Option(help="active tokens each AND / OR parent and child needs (0: no floor)")
    ] = 50,
    measure: Annotated[str, typer.Option(help="the graph's measure")] = "pearson",
    threshold: Annotated[float, typer.Option(help="the graph's edge threshold")] = 0.1,
    neuronpedia: Annotated[
        str | None, typer.Option(help="SAELens release or Neuronpedia source with {layer}")
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="folder for the resumable state: rerun the same command to go on; a finished "
            "state re-finalises (e.g. another --min-support) without streaming"
        ),
    ] = None,
    checkpoint_every: Annotated[int, typer.Option(help="batches between checkpoints")] = 50,
    out: Annotated[Path, typer.Option(help="result folder")] = Path("runs/evolution/result"),
    graph: Annotated[bool, typer.Option(help="also write graph.json and graph.graphml")] = True,
    html: Html = None,
    serve: Serve = False,
    port: Port = 8765,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Compute feature evolution over per-layer SAEs; save it, then write or serve the page."""
    check_outputs(out, html, checkpoint)
    from mechscope.data.batches import eval_batches
    from mechscope.data.streams import hf_token_batches
    from mechscope.evolution.compute import EvolutionConfig, compute_evolution
    from mechscope.evolution.graph import write_graph
    from mechscope.evolution.page import HOST
    from mechscope.evolution.stats import MEASURES
    from mechscope.models.lean import as_lean

    with option_checks():
        V.number("--coeff", coeff, lo=0, lo_open=True)
        V.integer("--batches", batches, lo=1)
        V.integer("--batch-size", batch_size, lo=1)
        V.number("--tau", tau, lo=-1, hi=1)
        V.number("--rel-threshold", rel_threshold, lo=0, hi=1)
        V.integer("--min-support", min_support, lo=0)
        V.choice("--measure", measure, MEASURES)
        V.number("--threshold", threshold, lo=0)
        V.device("--device", device)
        V.integer("--checkpoint-every", checkpoint_every, lo=1)
        if serve:
            V.port("--port", port, HOST)
    try:
        cfg = EvolutionConfig(
            tau=tau,
            rel_threshold=rel_threshold,
            min_support=min_support,
            graph_measure=measure,
            graph_threshold=threshold,
        )
        bridge = load(model, None, Placement(device, device_map, dtype))
        home = as_lean(bridge).device  # the SAEs (and the statistics) live with the model
        saes, names = _load_saes(model, list(sae or []), coeff, int(bridge.cfg.n_layers), home)
        if dataset:
            stream = hf_token_batches(
                dataset, bridge.tokenizer, int(bridge.cfg.n_ctx), batch_size, column=column
            )
            tokens = list(itertools.islice(stream, batches))
        else:
            tokens = eval_batches(bridge, batches, batch_size=batch_size)
        result = compute_evolution(
            bridge,
            saes,
            tokens,
            cfg,
            names=names,
            model_name=model,
            neuronpedia=neuronpedia,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            progress=True,
        )
    except MechscopeError as e:
        fail(str(e))
    result.save(out)
    if graph:
        g = result.graph()
        for suffix in ("json", "graphml"):
            write_graph(g, out / f"graph.{suffix}", result.communities)
    console.print(counts_table(result))
    console.print(communities_table(result))
    console.print(f"result in {out} ({result.n_tokens:,} tokens, {result.meta['seconds']} s)")
    _page(result, html, serve, port)


@evolution_app.command("page")
def page_cmd(
    result_dir: Annotated[Path, typer.Argument(help="a folder written by `evolution run`")],
    html: Html = None,
    serve: Serve = False,
    port: Port = 8765,
) -> None:
    """Write (--html) or serve (--serve) the interactive page of a saved result."""
    check_outputs(None, html)
    from mechscope.evolution.page import HOST
    from mechscope.evolution.result import EvolutionResult

    with option_checks():
        if serve:
            V.port("--port", port, HOST)
    try:
        result = EvolutionResult.load(result_dir)
    except EvolutionError as e:
        fail(str(e))
    if html is None and not serve:
        fail("nothing to do: give --html PATH and/or --serve")
    _page(result, html, serve, port)


def check_outputs(out: Path | None, html: Path | None, checkpoint: Path | None = None) -> None:
    """Fail before the work on an --out, --checkpoint or --html that cannot be written (the
    --port is checked with the other options)."""
    if out is not None:
        check_writable_dir(out)
    if checkpoint is not None:
        check_writable_dir(checkpoint, "--checkpoint")
    if html is not None:
        check_writable_file(html, "--html")


def _page(result: object, html: Path | None, serve: bool, port: int) -> None:
    from mechscope.evolution.page import HOST, page_html
    from mechscope.evolution.page import serve as serve_page

    text = page_html(result)  # type: ignore[arg-type]
    if html is not None:
        write_text(html, text)
        console.print(f"page: {html}")
    if serve:
        console.print(f"serving on http://{HOST}:{port}/ (Ctrl-C stops)")
        serve_page(text, port)
