"""`mechscope graph`: the attribution graph of one prompt, written as circuit-tracer's JSON.

mechscope graph --model code-2l --transcoders runs/tc --prompt "def f(x):\n    return x" \\
    --out out/graph.json --edit 1:12:345=0
mechscope steer --model code-2l --transcoders runs/tc --prompt "def f(x):" --add 1:380*8
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mechscope.cli_common import console, fail, load

if TYPE_CHECKING:
    from mechscope.graphs.steer import Steer
    from mechscope.sae.model import SparseAutoencoder


def graph_command(
    prompt: Annotated[str, typer.Option(help="the prompt (BOS is prepended)")],
    transcoders: Annotated[
        Path,
        typer.Option(
            help="folder of per-layer transcoders: `sae train --kind transcoder` output or a "
            "circuit-tracer set (config.yaml + layer_L.safetensors)"
        ),
    ],
    model: Annotated[str, typer.Option(help="zoo name, local HF folder or hub name")] = "code-2l",
    node_threshold: Annotated[float, typer.Option(help="cumulative node influence kept")] = 0.8,
    edge_threshold: Annotated[float, typer.Option(help="cumulative edge influence kept")] = 0.98,
    max_logits: Annotated[int, typer.Option(help="at most this many logit nodes")] = 10,
    logit_prob: Annotated[float, typer.Option(help="logit nodes up to this probability")] = 0.95,
    batch_size: Annotated[int, typer.Option(help="target rows per backward pass")] = 256,
    max_gb: Annotated[float, typer.Option(help="refuse graphs whose matrices need more")] = 8.0,
    max_feature_nodes: Annotated[
        int | None,
        typer.Option(help="keep at most this many features, the most influential (all if unset)"),
    ] = None,
    slug: Annotated[str, typer.Option(help="the graph's slug in the JSON")] = "graph",
    edit: Annotated[
        list[str] | None,
        typer.Option(
            help="set a feature, 'layer:pos:feature=value' (repeatable): prints the logit "
            "targets' changes in the frozen and the real model and the graph's prediction"
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="output JSON")] = Path("out/graph.json"),
) -> None:
    """Compute the prompt's attribution graph over the transcoders, prune it by influence and
    write circuit-tracer's graph JSON (readable by its frontend and Neuronpedia) and an offline
    page beside it (OUT with .html)."""
    from mechscope.errors import GraphError, ModelLoadError, SAEError
    from mechscope.files import write_json
    from mechscope.graphs import attribute, graph_json, prune
    from mechscope.graphs.attribution import prompt_tokens
    from mechscope.graphs.intervene import FeatureEdit, intervene
    from mechscope.graphs.page import write_page
    from mechscope.models.lean import as_lean
    from mechscope.sae.transcoder import load_transcoder_set

    try:
        lean = as_lean(load(model))
        tcs = [
            tc.to(device=lean.device, dtype=lean.W_E.dtype)
            for tc in load_transcoder_set(transcoders)
        ]
        tokens = prompt_tokens(lean, prompt)
        edits = [FeatureEdit.parse(e) for e in edit or []]
        t0 = time.perf_counter()
        g = attribute(
            lean,
            tcs,
            tokens,
            prompt=prompt,
            batch_size=batch_size,
            max_n_logits=max_logits,
            desired_logit_prob=logit_prob,
            max_bytes=int(max_gb * 2**30),
            max_feature_nodes=max_feature_nodes,
        )
        pr = prune(
            g.adjacency, g.logit_probs, g.n_features, g.n_pos, node_threshold, edge_threshold
        )
        seconds = time.perf_counter() - t0
        data = graph_json(g, slug=slug, node_threshold=node_threshold, pruned=pr)
        write_json(out, data)
        page = write_page(data, g.n_layers, out.with_suffix(".html"))
        res = intervene(lean, tcs, g, edits) if edits else None
    except (GraphError, SAEError, ModelLoadError) as e:
        fail(str(e))
    kept = int(pr.node_mask.sum())
    console.print(
        f"{g.n_pos} tokens, {g.meta['n_active']} active features ({g.n_features} kept), "
        f"{g.n_logits} logits "
        f"(top: {g.meta['logit_strs'][0]!r} p={float(g.logit_probs[0]):.3f}); "
        f"{int((g.adjacency != 0).sum())} edges; kept {kept} nodes and "
        f"{int(pr.edge_mask.sum())} edges ({seconds:.2f} s)"
    )
    console.print(f"wrote {out} and the page {page}")
    if res is not None:
        table = Table(title="change of the demeaned logits under " + ", ".join(edit or []))
        for col in ("token", "frozen model", "graph predicts", "real model"):
            table.add_column(col)
        for i, text in enumerate(res.logit_strs):
            row = (res.frozen[i], res.predicted[i], res.real[i])
            table.add_row(repr(text), *(f"{x:+.4f}" for x in row))
        console.print(table)


def _steers(
    dictionary: list[SparseAutoencoder], clamp: list[str], add: list[str], ablate: list[str]
) -> list[Steer]:
    """Steers from CLI specs [layer:]feature=value (clamp), [layer:]feature*scale (add),
    [layer:]feature (ablate); the layer names a transcoder, and is absent for one SAE."""
    from mechscope.errors import GraphError
    from mechscope.graphs.steer import AblateDirection, AddDirection, ClampFeature
    from mechscope.sae.transcoder import Transcoder

    per_layer = isinstance(dictionary[0], Transcoder)

    def pick(where: str) -> tuple[SparseAutoencoder, int]:
        parts = [int(x) for x in where.split(":")]
        if len(parts) != (2 if per_layer else 1):
            raise GraphError(f"{where!r}: name features {'layer:' if per_layer else ''}feature")
        if per_layer and not 0 <= parts[0] < len(dictionary):
            raise GraphError(f"{where!r}: no transcoder of layer {parts[0]}")
        d = dictionary[parts[0] if per_layer else 0]
        if not 0 <= parts[-1] < d.d_sae:
            raise GraphError(f"{where!r}: feature out of range (d_sae = {d.d_sae})")
        return d, parts[-1]

    out: list[Steer] = []
    try:
        for spec in clamp:
            where, value = spec.split("=")
            d, f = pick(where)
            out.append(ClampFeature(d, f, float(value)))
        for spec in [*add, *ablate]:
            where, _, scale = spec.partition("*")
            d, f = pick(where)
            hook = d.output_hook if isinstance(d, Transcoder) else d.cfg.hook_name
            direction = d.W_dec[f].detach()
            if spec in add:
                out.append(AddDirection(hook, direction, float(scale or 1.0)))
            else:
                out.append(AblateDirection(hook, direction))
    except GraphError:
        raise
    except ValueError as e:
        raise GraphError(
            "steering specs are [layer:]feature=value (--clamp), [layer:]feature*scale (--add), "
            f"[layer:]feature (--ablate): {e}"
        ) from e
    return out


def steer_command(
    prompt: Annotated[str, typer.Option(help="the prompt (BOS is prepended)")],
    model: Annotated[str, typer.Option(help="zoo name, local HF folder or hub name")] = "code-2l",
    transcoders: Annotated[
        Path | None, typer.Option(help="steer with these transcoders' features (layer:feature)")
    ] = None,
    sae: Annotated[
        Path | None, typer.Option(help="steer with this SAE's features (SAELens folder)")
    ] = None,
    clamp: Annotated[
        list[str] | None, typer.Option(help="hold a feature: [layer:]feature=value")
    ] = None,
    add: Annotated[
        list[str] | None,
        typer.Option(help="add a feature's decoder direction: [layer:]feature*scale"),
    ] = None,
    ablate: Annotated[
        list[str] | None, typer.Option(help="project out a feature's direction: [layer:]feature")
    ] = None,
    n_new: Annotated[int, typer.Option(help="tokens to generate")] = 30,
    temperature: Annotated[float, typer.Option(help="0: greedy; else sampled")] = 0.0,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
) -> None:
    """Generate with and without steering (applied at every position, KV cache), side by side."""
    from mechscope.errors import GraphError, ModelLoadError, SAEError
    from mechscope.graphs.attribution import prompt_tokens
    from mechscope.graphs.steer import generate
    from mechscope.models.lean import as_lean
    from mechscope.sae.saelens_format import load_saelens
    from mechscope.sae.transcoder import load_transcoder_set

    try:
        if (transcoders is None) == (sae is None):
            raise GraphError("give exactly one of --transcoders and --sae")
        lean = as_lean(load(model))
        dev, dt = lean.device, lean.W_E.dtype
        if transcoders is not None:
            dictionary: list = [
                t.to(device=dev, dtype=dt) for t in load_transcoder_set(transcoders)
            ]
        else:
            assert sae is not None
            dictionary = [load_saelens(sae).to(device=dev, dtype=dt)]
        steers = _steers(dictionary, clamp or [], add or [], ablate or [])
        if not steers:
            raise GraphError("nothing to steer: give --clamp, --add or --ablate")
        tokens = prompt_tokens(lean, prompt)
        plain = generate(lean, tokens, n_new, temperature=temperature, seed=seed)
        steered = generate(lean, tokens, n_new, steers, temperature=temperature, seed=seed)
    except (GraphError, SAEError, ModelLoadError) as e:
        fail(str(e))
    tok, n = lean.tokenizer, len(tokens)
    assert tok is not None  # prompt_tokens needed it
    table = Table(title=f"{prompt!r} + {n_new} tokens")
    table.add_column("unsteered")
    table.add_column("steered")
    table.add_row(repr(tok.decode(plain[n:].tolist())), repr(tok.decode(steered[n:].tolist())))
    console.print(table)
