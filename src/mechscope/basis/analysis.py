"""`analyse`: the whole programme on one model: degeneracy, the interaction / PCA / neuron bases,
their edges, edge sparsity, edges needed (edge ablation on held-out data) and modules."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mechscope.basis.ablation import (
    ABLATION_KINDS,
    AblationKind,
    EdgeAblation,
    ablate_edges,
    ablation_reference,
)
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
    eval_data: tuple[Tensor, Tensor] | None = None,
    ablations: tuple[AblationKind, ...] = ABLATION_KINDS,
    acc_bound: float = 1e-3,
    loss_bound: float = 1e-2,
    batch_size: int = 2048,
    progress: bool = False,
    meta: dict[str, Any] | None = None,
) -> BasisAnalysis:
    """Degeneracy (a, b, c) of every node layer, then for each basis kind the bases, edges,
    edge sparsity, Louvain modules (at `resolution`) of the interaction graph and, given
    `eval_data`, the edge-ablation curves and edges needed of every layer pair.

    inputs: the model's input batch ([N, ...]), streamed in `batch_size` chunks; the bases, edges
    and ablation means are fitted on it. tau / rtol: the truncation thresholds of `build_basis`
    (rtol is also the rank tolerance of the degeneracy measures). eval_data: held-out (inputs
    [M, ...], labels [M]) for `ablate_edges` with each of `ablations` ("mean", "zero") and the
    bounds acc_bound / loss_bound. Everything runs in float64 on a copy of the model.
    """
    degeneracy = measure_degeneracy(model, inputs, batch_size=batch_size, rtol=rtol)
    bases: dict[str, list[LayerBasis]] = {}
    edges: dict[str, list[Tensor]] = {}
    sparse: dict[str, list[Sparsity]] = {}
    modules: dict[str, Modules] = {}
    ablation: dict[str, dict[str, list[EdgeAblation]]] = {}
    for kind in kinds:
        bases[kind] = build_basis(
            model, inputs, kind=kind, tau=tau, rtol=rtol, batch_size=batch_size, progress=progress
        )
        edges[kind] = compute_edges(model, bases[kind], inputs, batch_size, progress)
        sparse[kind] = sparsity(bases[kind], edges[kind])
        modules[kind] = find_modules(interaction_graph(bases[kind], edges[kind]), resolution)
        if eval_data is not None:
            ablation[kind] = {
                abl: ablate_edges(
                    model,
                    bases[kind],
                    edges[kind],
                    *eval_data,
                    ablation_reference(model, bases[kind], inputs, abl, batch_size),
                    acc_bound,
                    loss_bound,
                    batch_size=batch_size,
                    progress=progress,
                )
                for abl in ablations
            }
    info: dict[str, Any] = {
        "n_inputs": len(inputs),
        "tau": tau,
        "rtol": rtol,
        "resolution": resolution,
    }
    if eval_data is not None:
        info["n_eval"] = len(eval_data[0])
    return BasisAnalysis(
        list(model.node_layers),
        degeneracy,
        bases,
        edges,
        sparse,
        modules,
        ablation,
        info | (meta or {}),
    )
