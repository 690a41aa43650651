"""`analyse`: the whole programme on one model: degeneracy, the interaction / PCA / neuron bases,
their edges, edge sparsity and modules."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mechscope.basis.degeneracy import measure_degeneracy
from mechscope.basis.edges import (
    Modules,
    Sparsity,
    compute_edges,
    find_modules,
    interaction_graph,
    sparsity,
)
from mechscope.basis.interaction import BASIS_KINDS, BasisKind, LayerBasis, build_basis
from mechscope.basis.models import NodeLayerModel
from mechscope.basis.result import BasisAnalysis


def analyse(
    model: NodeLayerModel,
    inputs: Tensor,
    kinds: tuple[BasisKind, ...] = BASIS_KINDS,
    tau: float = 1e-15,
    rtol: float = 1e-12,
    resolution: float = 1.0,
    batch_size: int = 2048,
    progress: bool = False,
    meta: dict[str, Any] | None = None,
) -> BasisAnalysis:
    """Degeneracy (a, b, c) of every node layer, then for each basis kind the bases, edges,
    edge sparsity and Louvain modules (at `resolution`) of the interaction graph.

    inputs: the model's input batch ([N, ...]), streamed in `batch_size` chunks. tau / rtol: the
    truncation thresholds of `build_basis` (rtol is also the rank tolerance of the degeneracy
    measures). Everything runs in float64 on a copy of the model.
    """
    degeneracy = measure_degeneracy(model, inputs, batch_size=batch_size, rtol=rtol)
    bases: dict[str, list[LayerBasis]] = {}
    edges: dict[str, list[Tensor]] = {}
    sparse: dict[str, list[Sparsity]] = {}
    modules: dict[str, Modules] = {}
    for kind in kinds:
        bases[kind] = build_basis(
            model, inputs, kind=kind, tau=tau, rtol=rtol, batch_size=batch_size, progress=progress
        )
        edges[kind] = compute_edges(model, bases[kind], inputs, batch_size, progress)
        sparse[kind] = sparsity(bases[kind], edges[kind])
        modules[kind] = find_modules(interaction_graph(bases[kind], edges[kind]), resolution)
    info = {"n_inputs": len(inputs), "tau": tau, "rtol": rtol, "resolution": resolution}
    return BasisAnalysis(
        list(model.node_layers), degeneracy, bases, edges, sparse, modules, info | (meta or {})
    )
