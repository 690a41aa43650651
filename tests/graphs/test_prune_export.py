"""Pruning on circuit-tracer's 12-node example (known influences and kept set), a literal
influence sum, and the graph JSON (ids, link weights = adjacency entries)."""

from __future__ import annotations

import json

import pytest
import torch

from mechscope.errors import GraphError
from mechscope.graphs import attribute, prune, save_graph_json
from mechscope.graphs.export import cantor
from mechscope.graphs.handbuilt import exact_model
from mechscope.graphs.prune import influence, normalize_rows


def _twelve() -> torch.Tensor:
    """L=2, pos=2, one logit: nodes 0-4 features, 5-8 errors, 9-10 tokens, 11 logit."""
    A = torch.zeros(12, 12)
    for t, sources in {11: (1, 3, 6, 8), 3: (0, 1, 6), 1: (9, 10), 0: (9,)}.items():
        A[t, list(sources)] = 10.0
    return A


def test_twelve_node_example() -> None:
    A, w = _twelve(), torch.zeros(12)
    w[11] = 1.0
    infl = influence(normalize_rows(A), w)
    want = torch.tensor([1 / 12, 1 / 3, 0, 1 / 4, 0, 0, 1 / 3, 0, 1 / 4, 1 / 4, 1 / 6, 0])
    torch.testing.assert_close(infl, want)
    pr = prune(A, torch.tensor([1.0]), n_features=5, n_tokens=2)
    assert pr.node_mask.nonzero().flatten().tolist() == [1, 3, 6, 8, 9, 10, 11]
    kept = sorted(map(tuple, pr.edge_mask.nonzero().tolist()))
    assert kept == [(1, 9), (1, 10), (3, 1), (3, 6), (11, 1), (11, 3), (11, 6), (11, 8)]


def test_influence_is_the_matrix_series() -> None:
    """w (A + A^2 + ...) = w ((I - A)^-1 - I) on a random acyclic graph."""
    g = torch.Generator().manual_seed(0)
    A = torch.rand(9, 9, generator=g, dtype=torch.float64).tril(-1)
    A_hat = normalize_rows(A)
    w = torch.rand(9, generator=g, dtype=torch.float64)
    want = w @ (torch.linalg.inv(torch.eye(9, dtype=A.dtype) - A_hat) - torch.eye(9, dtype=A.dtype))
    torch.testing.assert_close(influence(A_hat, w), want)


def test_bad_thresholds() -> None:
    with pytest.raises(GraphError, match="thresholds"):
        prune(_twelve(), torch.tensor([1.0]), 5, 2, node_threshold=1.5)


def test_graph_json(tmp_path) -> None:
    lean, tcs = exact_model(seed=1)
    g = attribute(lean, tcs, torch.tensor([0, 3, 5, 7, 2, 9, 4]))
    path = save_graph_json(g, tmp_path / "g.json", slug="toy", node_threshold=0.8)
    data = json.loads(path.read_text())
    assert data["metadata"]["slug"] == "toy" and data["metadata"]["schema_version"] == 1
    assert set(data) == {"metadata", "qParams", "nodes", "links"}
    # circuit-tracer's ids: an error id 0_{layer}_{pos} can equal a layer-0 feature's id
    index: dict[str, list[int]] = {}
    for i, (l, p, f) in enumerate(g.active_features.tolist()):
        index.setdefault(f"{l}_{f}_{p}", []).append(i)
    for l in range(g.n_layers):
        for p in range(g.n_pos):
            index.setdefault(f"0_{l}_{p}", []).append(g.error_index(l, p))
    for p, t in enumerate(g.tokens.tolist()):
        index[f"E_{t}_{p}"] = [g.token_index(p)]
    for i, t in enumerate(g.logit_tokens.tolist()):
        index[f"{g.n_layers + 1}_{t}_{g.n_pos - 1}"] = [g.logit_index(i)]
    ids = {n["node_id"] for n in data["nodes"]}
    # tokens and logits are always kept
    assert all(f"E_{t}_{p}" in ids for p, t in enumerate(g.tokens.tolist()))
    assert sum(n["feature_type"] == "logit" for n in data["nodes"]) == g.n_logits
    assert data["links"]
    for link in data["links"]:
        assert link["source"] in ids and link["target"] in ids
        ws = [
            float(g.adjacency[t, s]) for t in index[link["target"]] for s in index[link["source"]]
        ]
        assert any(link["weight"] == pytest.approx(w) for w in ws)
    feat = next(n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder")
    l, f = int(feat["layer"]), int(feat["node_id"].split("_")[1])
    assert feat["feature"] == cantor(l, f) and feat["activation"] > 0
    assert cantor(0, 0) == 0 and cantor(1, 0) == 1 and cantor(0, 1) == 2
