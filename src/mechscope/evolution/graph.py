"""The feature graph across layers and its communities.

Nodes are `"{layer}_{feature}"` (layer = position in the SAE list); an edge joins a layer l
feature to a layer l+1 feature whose similarity is >= a threshold (0.1 by default), weighted by it,
optionally only the top-k next-layer neighbours of each feature. Communities: Louvain
(`networkx.community.louvain_communities`) or Leiden (`leidenalg`, modularity or CPM), seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import networkx as nx
import torch

from mechscope.errors import EvolutionError
from mechscope.evolution.stats import SparseSimilarity
from mechscope.files import atomic_write, write_json

Algorithm = Literal["louvain", "leiden", "leiden-cpm"]
ALGORITHMS: tuple[str, ...] = ("louvain", "leiden", "leiden-cpm")
SEED = 42
MIN_SIZE, MAX_SIZE = 5, 200  # communities listed (the paper's browser export)


def node_name(layer: int, feature: int) -> str:
    return f"{layer}_{feature}"


def parse_node(name: str) -> tuple[int, int]:
    """(layer, feature) of a node name "l_f"."""
    try:
        l, f = name.split("_")
        return int(l), int(f)
    except ValueError as e:
        raise EvolutionError(f"not a feature node name 'layer_feature': {name!r}") from e


def build_graph(
    sims: Sequence[SparseSimilarity],
    sizes: Sequence[int],
    threshold: float = 0.1,
    top_k: int | None = None,
    alive: Sequence[torch.Tensor] | None = None,
) -> nx.Graph:
    """Undirected weighted graph: sims[l] relates layer l to layer l + 1 ([sizes[l], sizes[l+1]]).

    threshold: keep edges with similarity >= threshold (negative correlations never make edges).
    top_k: keep only each layer l feature's k most similar next-layer features.
    alive: bool [F] per layer; dead features are left out (all features are nodes otherwise).
    """
    if len(sims) != len(sizes) - 1:
        raise EvolutionError(f"need {len(sizes) - 1} layer pairs for {len(sizes)} layers")
    if threshold <= 0:
        raise EvolutionError(
            f"the edge threshold must be > 0 (weights are similarities), got {threshold}"
        )
    g = nx.Graph()
    for l, size in enumerate(sizes):
        keep = alive[l].tolist() if alive is not None else [True] * size
        g.add_nodes_from(
            (node_name(l, f), {"layer": l, "feature": f}) for f in range(size) if keep[f]
        )
    for l, s in enumerate(sims):
        if s.shape != (sizes[l], sizes[l + 1]):
            raise EvolutionError(
                f"pair {l}: similarity shape {s.shape} != {(sizes[l], sizes[l + 1])}"
            )
        ok = s.values >= threshold
        r, c, v = s.rows[ok].tolist(), s.cols[ok].tolist(), s.values[ok].tolist()
        if top_k is not None:
            by_row: dict[int, list[tuple[float, int]]] = {}
            for i, j, w in zip(r, c, v, strict=True):
                by_row.setdefault(i, []).append((w, j))
            edges = [
                (i, j, w) for i, lst in by_row.items() for w, j in sorted(lst, reverse=True)[:top_k]
            ]
        else:
            edges = list(zip(r, c, v, strict=True))
        for i, j, w in edges:
            a, b = node_name(l, i), node_name(l + 1, j)
            if a in g and b in g:
                g.add_edge(a, b, weight=float(w))
    return g


def communities(
    g: nx.Graph, algorithm: str = "louvain", seed: int = SEED, resolution: float | None = None
) -> list[list[str]]:
    """Communities (lists of node names, each sorted by layer then feature), largest first.

    louvain: networkx, resolution 1 by default; leiden: leidenalg's modularity partition;
    leiden-cpm: the constant Potts model, resolution 0.1 by default (as the paper's).
    """
    if algorithm not in ALGORITHMS:
        raise EvolutionError(f"unknown community algorithm {algorithm!r}; choose from {ALGORITHMS}")
    if g.number_of_nodes() == 0:
        return []
    if algorithm == "louvain":
        found = nx.community.louvain_communities(
            g, weight="weight", resolution=1.0 if resolution is None else resolution, seed=seed
        )
        parts = [list(c) for c in found]
    else:
        try:
            import igraph as ig
            import leidenalg
        except ImportError as e:
            raise EvolutionError(
                "Leiden communities need leidenalg (pip install leidenalg; it brings igraph)"
            ) from e
        names = list(g.nodes)
        index = {n: i for i, n in enumerate(names)}
        ig_g = ig.Graph(n=len(names), edges=[(index[a], index[b]) for a, b in g.edges])
        ig_g.es["weight"] = [float(w) for _, _, w in g.edges(data="weight")]
        if algorithm == "leiden":
            part = leidenalg.find_partition(
                ig_g, leidenalg.ModularityVertexPartition, weights="weight", seed=seed
            )
        else:
            part = leidenalg.find_partition(
                ig_g,
                leidenalg.CPMVertexPartition,
                weights="weight",
                resolution_parameter=0.1 if resolution is None else resolution,
                seed=seed,
            )
        parts = [[names[i] for i in c] for c in part]
    key = lambda n: parse_node(n)  # noqa: E731
    parts = [sorted(p, key=key) for p in parts]
    return sorted(parts, key=lambda p: (-len(p), key(p[0])))


def community_stats(
    parts: Sequence[Sequence[str]], min_size: int = MIN_SIZE, max_size: int = MAX_SIZE
) -> dict[str, Any]:
    """Sizes and layer spans of a partition; `listed`: communities of min_size..max_size nodes."""
    sizes = [len(p) for p in parts]
    spans = [len({parse_node(n)[0] for n in p}) for p in parts]
    listed = [i for i, s in enumerate(sizes) if min_size <= s <= max_size]
    multi = [i for i, s in enumerate(sizes) if s > 1]
    return {
        "n_communities": len(parts),
        "n_singletons": sum(s == 1 for s in sizes),
        "largest": max(sizes, default=0),
        "n_listed": len(listed),
        "listed_range": [min_size, max_size],
        "listed_nodes": sum(sizes[i] for i in listed),
        "listed_mean_size": (sum(sizes[i] for i in listed) / len(listed)) if listed else 0.0,
        "multi_layer": sum(spans[i] > 1 for i in multi),
        "mean_layers_spanned": (sum(spans[i] for i in multi) / len(multi)) if multi else 0.0,
    }


def listed(
    parts: Sequence[Sequence[str]], min_size: int = MIN_SIZE, max_size: int = MAX_SIZE
) -> list[list[str]]:
    """The communities of min_size..max_size nodes (too small: noise; too large: no theme)."""
    return [list(p) for p in parts if min_size <= len(p) <= max_size]


def graph_json(g: nx.Graph, parts: dict[str, list[list[str]]] | None = None) -> dict[str, Any]:
    """Node-link JSON: nodes (id, layer, feature, community per algorithm), weighted links."""
    member = {
        algo: {n: i for i, p in enumerate(ps) for n in p} for algo, ps in (parts or {}).items()
    }
    nodes = []
    for n, d in g.nodes(data=True):
        entry = {"id": n, "layer": d["layer"], "feature": d["feature"]}
        entry.update({f"community_{a}": m.get(n) for a, m in member.items()})
        nodes.append(entry)
    links = [{"source": a, "target": b, "weight": w} for a, b, w in g.edges(data="weight")]
    return {"directed": False, "nodes": nodes, "links": links}


def write_graph(
    g: nx.Graph, path: str | Path, parts: dict[str, list[list[str]]] | None = None
) -> Path:
    """Write the graph as node-link JSON (`.json`) or GraphML (`.graphml`), with communities."""
    path = Path(path)
    if path.suffix == ".json":
        write_json(path, graph_json(g, parts), indent=None)
    elif path.suffix == ".graphml":
        h = g.copy()
        for algo, ps in (parts or {}).items():
            for i, p in enumerate(ps):
                for n in p:
                    h.nodes[n][f"community_{algo}"] = i
        atomic_write(path, lambda tmp: nx.write_graphml(h, tmp))
    else:
        raise EvolutionError(f"graph files are .json or .graphml, got {path.name!r}")
    return path
