"""circuit-tracer's graph JSON (`utils/create_graph_files.py`), the format Neuronpedia and
circuit-tracer's local frontend read: `metadata`, `qParams`, `nodes`, `links`.

Node ids: feature `{layer}_{feature}_{pos}`, error `0_{layer}_{pos}`, token `E_{token_id}_{pos}`,
logit `{L+1}_{vocab_id}_{pos}`; a feature's `feature` field is the Cantor pairing of (layer,
feature id). Links carry weight = adjacency[target, source], signed, for the kept edges between
kept nodes; `influence` is the node's cumulative influence share (absent for logits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mechscope.files import write_json
from mechscope.graphs.attribution import AttributionGraph
from mechscope.graphs.prune import EDGE_THRESHOLD, NODE_THRESHOLD, PruneResult, prune


def cantor(layer: int, feature: int) -> int:
    """circuit-tracer's feature id: the Cantor pairing of (layer, feature)."""
    return (layer + feature) * (layer + feature + 1) // 2 + feature


def _node(node_id: str, feature: int, layer: str, pos: int, kind: str, js: str) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "feature": feature,
        "layer": layer,
        "ctx_idx": pos,
        "feature_type": kind,
        "token_prob": 0.0,
        "is_target_logit": False,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        "jsNodeId": js,
        "clerp": "",
        "influence": None,
        "activation": None,
    }


def node_records(g: AttributionGraph) -> list[dict[str, Any]]:
    """One JSON node per graph node, in node order (features, errors, tokens, logits)."""
    out = []
    for (l, p, f), a in zip(g.active_features.tolist(), g.activation_values.tolist(), strict=True):
        node = _node(
            f"{l}_{f}_{p}", cantor(l, f), str(l), p, "cross layer transcoder", f"{l}_{f}-0"
        )
        out.append(node | {"activation": a})
    for l in range(g.n_layers):
        for p in range(g.n_pos):
            out.append(_node(f"0_{l}_{p}", -1, str(l), p, "mlp reconstruction error", f"{l}_{p}-0"))
    for p, t in enumerate(g.tokens.tolist()):
        out.append(_node(f"E_{t}_{p}", p, "E", p, "embedding", f"E_{t}-{p}"))
    last, top = g.n_pos - 1, g.n_layers + 1
    for i, (t, prob) in enumerate(
        zip(g.logit_tokens.tolist(), g.logit_probs.tolist(), strict=True)
    ):
        node = _node(f"{top}_{t}_{last}", t, str(top), last, "logit", f"L_{t}-{last}")
        text = g.meta.get("logit_strs", [str(t)] * g.n_logits)[i]
        out.append(
            node
            | {
                "token_prob": prob,
                "is_target_logit": i == 0,
                "clerp": f'Output "{text}" (p={prob:.3f})',
            }
        )
    return out


def graph_json(
    g: AttributionGraph,
    slug: str = "graph",
    scan: str = "mechscope",
    node_threshold: float = NODE_THRESHOLD,
    edge_threshold: float = EDGE_THRESHOLD,
    pruned: PruneResult | None = None,
) -> dict[str, Any]:
    """The circuit-tracer graph JSON of `g`, pruned at the thresholds (or by `pruned`)."""
    pr = pruned or prune(
        g.adjacency, g.logit_probs, g.n_features, g.n_pos, node_threshold, edge_threshold
    )
    records = node_records(g)
    n_logit_start = g.adjacency.shape[0] - g.n_logits
    nodes = []
    for i in pr.node_mask.nonzero().flatten().tolist():
        rec = records[i]
        if i < n_logit_start:
            rec["influence"] = float(pr.cumulative_scores[i])
        nodes.append(rec)
    links = [
        {
            "source": records[s]["node_id"],
            "target": records[t]["node_id"],
            "weight": float(g.adjacency[t, s]),
        }
        for t, s in pr.edge_mask.nonzero().tolist()
    ]
    return {
        "metadata": {
            "slug": slug,
            "scan": scan,
            "transcoder_list": [],
            "prompt_tokens": g.token_strs,
            "prompt": g.prompt,
            "node_threshold": node_threshold,
            "schema_version": 1,
        },
        "qParams": {
            "pinnedIds": [],
            "supernodes": [],
            "linkType": "both",
            "clickedId": "",
            "sg_pos": "",
        },
        "nodes": nodes,
        "links": links,
    }


def save_graph_json(g: AttributionGraph, path: str | Path, **kwargs: Any) -> Path:
    """Write `graph_json(g, **kwargs)` to `path`; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, graph_json(g, **kwargs))
    return out
