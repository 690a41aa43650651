"""The feature graph, seeded communities and their export."""

from __future__ import annotations

import json

import networkx as nx
import pytest
import torch

from mechscope.errors import EvolutionError
from mechscope.evolution.graph import (
    ALGORITHMS,
    build_graph,
    communities,
    community_stats,
    listed,
    write_graph,
)
from mechscope.evolution.stats import sparsify


def _blocks() -> list:
    """Three layers of 12 features; layer l feature f links to layer l+1 feature f (and a weak
    cross-link): four chains of three blocks of 3 make clean communities."""
    sims = []
    for _ in range(2):
        m = torch.zeros(12, 12)
        for b in range(4):
            m[3 * b : 3 * b + 3, 3 * b : 3 * b + 3] = 0.8
        m[0, 11] = 0.15
        sims.append(sparsify(m, 0.1))
    return sims


def test_graph_nodes_and_edges() -> None:
    g = build_graph(_blocks(), [12, 12, 12], threshold=0.1)
    assert g.number_of_nodes() == 36 and "2_11" in g
    assert g.edges["0_0", "1_11"]["weight"] == pytest.approx(0.15)
    assert build_graph(_blocks(), [12, 12, 12], threshold=0.5).number_of_edges() == 2 * 4 * 9
    top1 = build_graph(_blocks(), [12, 12, 12], threshold=0.1, top_k=1)
    assert all(d <= 4 for _, d in top1.degree())
    alive = [torch.ones(12, dtype=torch.bool)] * 3
    alive[1] = torch.arange(12) > 0
    assert "1_0" not in build_graph(_blocks(), [12, 12, 12], alive=alive)


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_communities_seeded_and_found(algo: str) -> None:
    g = build_graph(_blocks(), [12, 12, 12], threshold=0.5)
    a = communities(g, algo, seed=42)
    assert a == communities(g, algo, seed=42)
    assert sorted(len(p) for p in a) == [9, 9, 9, 9]
    assert {"0_0", "1_1", "2_2"} <= set(a[0])
    stats = community_stats(a, min_size=5)
    assert stats["n_listed"] == 4 and stats["multi_layer"] == 4
    assert stats["mean_layers_spanned"] == 3.0
    assert listed(a, 10, 200) == []


def test_export_json_and_graphml(tmp_path) -> None:
    g = build_graph(_blocks(), [12, 12, 12])
    parts = {"louvain": communities(g)}
    doc = json.loads(write_graph(g, tmp_path / "g.json", parts).read_text())
    assert len(doc["nodes"]) == 36 and doc["nodes"][0]["community_louvain"] is not None
    h = nx.read_graphml(write_graph(g, tmp_path / "g.graphml", parts))
    assert h.number_of_edges() == g.number_of_edges() and "community_louvain" in h.nodes["0_0"]
    with pytest.raises(EvolutionError, match="graphml"):
        write_graph(g, tmp_path / "g.txt")


def test_errors() -> None:
    with pytest.raises(EvolutionError, match="layer pairs"):
        build_graph(_blocks(), [12, 12])
    with pytest.raises(EvolutionError, match="unknown community"):
        communities(nx.Graph(), "girvan")
