"""Edges between consecutive node layers' basis directions, the interaction graph, its sparsity
and its modularity (rib's `calc_edge_squared` and `GraphClustering`, with networkx's Louvain).

Edge strength (rib's "squared" formula, integration point alpha = 1): with a_hat = a @ C_l and
h_hat(a_hat) = section_l(a_hat @ C_l_pinv) @ C_{l+1},

    A_{t,i,j}(x) = sum_s  d h_hat_{t,i} / d a_hat_{s,j}  *  a_hat_{s,j}      (gradient x input)
    E_ij = 1 / (N * P_l) * sum_x sum_t A_{t,i,j}(x)^2                        [r_{l+1}, r_l]
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch
from rich.progress import Progress
from torch import Tensor

from mechscope.basis.degeneracy import batches, float64_copy
from mechscope.basis.interaction import LayerBasis
from mechscope.basis.models import NodeLayerModel
from mechscope.errors import BasisError


def compute_edges(
    model: NodeLayerModel,
    bases: list[LayerBasis],
    inputs: Tensor,
    batch_size: int = 2048,
    progress: bool = False,
) -> list[Tensor]:
    """E^l [r_{l+1}, r_l] (float64, >= 0) for every consecutive pair of node layers."""
    if len(bases) != len(model.node_layers):
        raise BasisError(
            f"{len(bases)} bases for {len(model.node_layers)} node layers; build the bases of "
            "this model with build_basis(model, ...)"
        )
    m = float64_copy(model)
    edges: list[Tensor] = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("edges", total=len(bases) - 1)
        for layer in range(len(bases) - 1):
            edges.append(_layer_edges(m, layer, bases[layer], bases[layer + 1], inputs, batch_size))
            bar.advance(task)
    return edges


def _layer_edges(
    m: NodeLayerModel,
    layer: int,
    b_in: LayerBasis,
    b_out: LayerBasis,
    inputs: Tensor,
    batch_size: int,
) -> Tensor:
    E = torch.zeros(b_out.dim, b_in.dim, dtype=torch.float64)
    count = 0
    for xb in batches(inputs, batch_size):
        with torch.no_grad():
            a_hat = m.node_acts(xb)[layer] @ b_in.C
        a_hat.requires_grad_(True)
        h_hat = m.section(layer, a_hat @ b_in.C_pinv) @ b_out.C
        for t in range(h_hat.shape[1]):
            for i in range(h_hat.shape[2]):
                (g,) = torch.autograd.grad(h_hat[:, t, i].sum(), a_hat, retain_graph=True)
                E[i] += ((g * a_hat.detach()).sum(dim=1) ** 2).sum(dim=0)
        count += a_hat.shape[0] * a_hat.shape[1]
    return E / count


def _strip_const(E: Tensor, b_in: LayerBasis, b_out: LayerBasis) -> Tensor:
    """E without edges from or to constant directions."""
    return E[int(b_out.has_const) :, int(b_in.has_const) :]


def edges_for_mass(E: Tensor, fraction: float = 0.99) -> int:
    """Smallest number of the largest edges of E whose sum is >= fraction of E's total."""
    vals = E.flatten().sort(descending=True).values
    total = float(vals.sum())
    if total <= 0:
        return 0
    cum = vals.cumsum(0) / total
    return int(torch.searchsorted(cum, torch.tensor(fraction, dtype=cum.dtype)).item()) + 1


def cumulative_mass(E: Tensor) -> Tensor:
    """Fraction of E's total held by the k largest edges, k = 1 .. E.numel() ([numel])."""
    vals = E.flatten().sort(descending=True).values
    total = vals.sum()
    return vals.cumsum(0) / total if float(total) > 0 else torch.zeros_like(vals)


@dataclass
class Sparsity:
    """Edge concentration of one layer pair (constant directions left out)."""

    layer_in: str
    layer_out: str
    n_edges: int
    edges_99: int
    edges_90: int

    @property
    def frac_99(self) -> float:
        return self.edges_99 / self.n_edges if self.n_edges else 0.0


def sparsity(bases: list[LayerBasis], edges: list[Tensor]) -> list[Sparsity]:
    """For every layer pair: number of edges, and how many of the largest hold 99% / 90% of ΣE."""
    out = []
    for layer, E in enumerate(edges):
        b_in, b_out = bases[layer], bases[layer + 1]
        Es = _strip_const(E, b_in, b_out)
        out.append(
            Sparsity(
                b_in.name, b_out.name, Es.numel(), edges_for_mass(Es, 0.99), edges_for_mass(Es, 0.9)
            )
        )
    return out


def interaction_graph(
    bases: list[LayerBasis], edges: list[Tensor], norm: str = "sqrt", eps: float | None = None
) -> nx.Graph:
    """Undirected weighted graph: nodes (layer index, feature index) with attribute `layer` (the
    node layer's name), edges weighted by sqrt(E) ("sqrt", rib's default) or log10(E / eps)
    clipped at 0 ("log", eps: a lower cut such as the smallest edge worth keeping). Edges from or
    to constant directions are left out (those directions stay as isolated nodes)."""
    if norm not in ("sqrt", "log"):
        raise BasisError(f"norm must be 'sqrt' or 'log', not {norm!r}")
    if norm == "log" and (eps is None or eps <= 0):
        raise BasisError("norm='log' needs eps > 0 (edges below eps get weight 0)")
    g = nx.Graph()
    for li, b in enumerate(bases):
        g.add_nodes_from(((li, k) for k in range(b.dim)), layer=b.name)
    for li, E in enumerate(edges):
        w = E.sqrt() if norm == "sqrt" else (E / eps).log10().clamp(min=0)  # type: ignore[operator]
        c_out, c_in = int(bases[li + 1].has_const), int(bases[li].has_const)
        w = w.clone()
        w[:c_out, :] = 0
        w[:, :c_in] = 0
        for i, j in torch.nonzero(w > 0).tolist():
            g.add_edge((li, j), (li + 1, i), weight=float(w[i, j]))
    return g


@dataclass
class Modules:
    """A partition of the interaction graph into modules (communities) with its quality.

    communities: lists of nodes (layer index, feature index), largest first, isolated nodes left
    out. modularity: Newman's Q of the partition (weighted, resolution 1). within_fraction: share
    of the total edge weight inside modules.
    """

    communities: list[list[tuple[int, int]]]
    modularity: float
    within_fraction: float


def find_modules(graph: nx.Graph, resolution: float = 1.0, seed: int = 0) -> Modules:
    """Louvain communities of the non-isolated nodes (networkx, seeded) and their modularity Q."""
    sub = graph.subgraph([n for n in graph if graph.degree(n) > 0])
    if sub.number_of_edges() == 0:
        return Modules([], 0.0, 0.0)
    comms = nx.community.louvain_communities(sub, weight="weight", resolution=resolution, seed=seed)
    q = nx.community.modularity(sub, comms, weight="weight")
    label = {n: k for k, c in enumerate(comms) for n in c}
    total = sub.size(weight="weight")
    inside = sum(d["weight"] for u, v, d in sub.edges(data=True) if label[u] == label[v])
    ordered = sorted((sorted(c) for c in comms), key=lambda c: (-len(c), c[0]))
    return Modules(ordered, float(q), float(inside / total) if total > 0 else 0.0)
