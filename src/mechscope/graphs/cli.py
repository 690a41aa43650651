"""`mechscope graph`: the attribution graph of one prompt, written as circuit-tracer's JSON.

mechscope graph --model code-2l --prompt "def f(x):\n    return x" --out out/graph.json \\
    --edit 1:12:345=0 --edit '0:all:17*2'  # bundled transcoders; --transcoders runs/tc for others
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mechscope.cli_common import Device, DeviceMap, Dtype, console, fail, load
from mechscope.models.placement import Placement


def graph_command(
    prompt: Annotated[str, typer.Option(help="the prompt (BOS is prepended)")],
    transcoders: Annotated[
        Path | None,
        typer.Option(
            help="folder of per-layer transcoders: `sae train --kind transcoder` output or a "
            "circuit-tracer set (config.yaml + layer_L.safetensors); default: the model's "
            "bundled set"
        ),
    ] = None,
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
    card_tokens: Annotated[
        int,
        typer.Option(
            help="held-out tokens read for the kept features' cards (top activations, density) "
            "on the page and in features/ beside OUT; 0: no cards"
        ),
    ] = 32768,
    edit: Annotated[
        list[str] | None,
        typer.Option(
            help="edit a transcoder feature: 'LAYER:POS:FEATURE=VALUE' (clamp), "
            "'LAYER:POS:FEATURE*FACTOR' (scale), 'LAYER:POS:FEATURE=0' (zero); POS a position, "
            "a list 3,5,-1 or 'all' (repeatable): prints the logit targets' changes in the "
            "frozen and the real model and the graph's prediction"
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="output JSON")] = Path("out/graph.json"),
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Compute the prompt's attribution graph over the transcoders, prune it by influence and
    write circuit-tracer's graph JSON (readable by its frontend and Neuronpedia) and an offline
    page beside it (OUT with .html)."""
    from mechscope.errors import MechscopeError
    from mechscope.files import write_json
    from mechscope.graphs import attribute, graph_json, prune
    from mechscope.graphs.attribution import prompt_tokens
    from mechscope.graphs.cards import card_batches, feature_cards, write_feature_files
    from mechscope.graphs.intervene import check_edits, intervene, parse_edits
    from mechscope.graphs.page import write_page
    from mechscope.models.lean import as_lean
    from mechscope.sae.bundled import load_bundled_transcoders
    from mechscope.sae.transcoder import load_transcoder_set

    try:
        lean = as_lean(load(model, None, Placement(device, device_map, dtype)))
        tc_set = (
            load_bundled_transcoders(model)
            if transcoders is None
            else load_transcoder_set(transcoders)
        )
        tcs = [tc.to(device=lean.device, dtype=lean.W_E.dtype) for tc in tc_set]
        tokens = prompt_tokens(lean, prompt)
        edits = [e for spec in edit or [] for e in parse_edits(spec, len(tokens))]
        check_edits(tcs, len(tokens), edits)
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
        cards = None
        if card_tokens:
            kept_features = g.active_features[pr.node_mask[: g.n_features]][:, [0, 2]]
            batches = card_batches(lean, card_tokens)
            cards = feature_cards(lean, tcs, kept_features, batches, progress=True)
            write_feature_files(cards, out.parent, data["metadata"]["scan"])
        page = write_page(data, g.n_layers, out.with_suffix(".html"), cards)
        res = intervene(lean, tcs, g, edits) if edits else None
    except MechscopeError as e:
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
    if cards is not None:
        console.print(
            f"cards of {len(cards.cards)} features over {cards.n_tokens:,} held-out tokens "
            f"({cards.meta['seconds']} s), also in {out.parent / 'features'}"
        )
    if res is not None:
        table = Table(title="change of the demeaned logits under " + ", ".join(edit or []))
        for col in ("token", "frozen model", "graph predicts", "real model"):
            table.add_column(col)
        for i, text in enumerate(res.logit_strs):
            predicted = "n/a" if res.predicted is None else f"{res.predicted[i]:+.4f}"
            table.add_row(repr(text), f"{res.frozen[i]:+.4f}", predicted, f"{res.real[i]:+.4f}")
        console.print(table)
        moved = [
            f"{e.layer}:{e.pos % g.n_pos}:{e.feature} {a:.3g} -> {new:.3g}"
            for e, (a, new) in zip(res.edits, res.moves, strict=True)
        ]
        console.print("activations (real run -> edited): " + ", ".join(moved))
        if res.predicted is None:
            console.print(
                "the graph predicts nothing here: an edit moves a feature that has no node "
                "(inactive, at the first position, or left out by --max-feature-nodes)"
            )
