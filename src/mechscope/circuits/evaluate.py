"""Evaluation: ROC curves and AUC against a ground truth (edge and node level), faithfulness.

ROC points are (false positive rate, true positive rate). From scores, every threshold on |score|
gives a point (ties enter together); from circuits (ACDC over a tau sweep, as the ACDC paper
reports it) each circuit is a point. Two areas: `auc` (trapezoid, auto-circuit's) and
`pessimistic_auc` (ACDC's: Pareto front, staircase without interpolation). Edges are the graph's
(ACDC's count, q/k/v computation edges included); nodes are ACDC's (`acdc_nodes`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope.circuits.acdc import circuit_values
from mechscope.circuits.eap import top_k_circuit
from mechscope.circuits.graph import LETTERS, Graph
from mechscope.circuits.metric import CircuitMetric
from mechscope.circuits.patched import CircuitRunner
from mechscope.errors import CircuitError

Point = tuple[float, float]


def _rates(pred: Tensor, truth: Tensor) -> Point:
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    pos, neg = int(truth.sum()), int((~truth).sum())
    return (fp / neg if neg else 0.0, tp / pos if pos else 0.0)


def _check_truth(truth: Tensor, n: int) -> None:
    if truth.shape != (n,) or truth.dtype != torch.bool:
        raise CircuitError(f"truth must be a boolean mask [{n}], got {tuple(truth.shape)}")
    if not bool(truth.any()) or bool(truth.all()):
        raise CircuitError("the ground truth must contain some but not all edges")


def roc_from_scores(scores: Tensor, truth: Tensor) -> list[Point]:
    """ROC points [(FPR, TPR)] from (0, 0) to (1, 1) of ranking by |scores| [n] against `truth`."""
    _check_truth(truth, scores.shape[0])
    points = [(0.0, 0.0)]
    for t in torch.unique(scores.abs()).flip(0):
        points.append(_rates(scores.abs() >= t, truth))
    if points[-1] != (1.0, 1.0):
        points.append((1.0, 1.0))
    return points


def roc_from_circuits(masks: Sequence[Tensor], truth: Tensor) -> list[Point]:
    """ROC points of circuits (e.g. ACDC at each tau), sorted, with (0, 0) and (1, 1) added."""
    if not masks:
        raise CircuitError("no circuits given")
    _check_truth(truth, masks[0].shape[0])
    pts = sorted({_rates(m, truth) for m in masks})
    return [(0.0, 0.0), *[p for p in pts if p not in ((0.0, 0.0), (1.0, 1.0))], (1.0, 1.0)]


def auc(points: Sequence[Point]) -> float:
    """Trapezoid area under ROC points sorted by FPR (then TPR)."""
    pts = sorted(points)
    return float(sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(pts)))


def pessimistic_auc(points: Sequence[Point]) -> float:
    """ACDC's area: drop points dominated (lower TPR at higher FPR), then a staircase
    sum_i (1 - x_i)(y_i - y_{i-1}) over the front sorted by FPR."""
    front = [p for p in points if not any(q[0] < p[0] and q[1] > p[1] for q in points)]
    front = sorted(front)
    area, prev_y = 0.0, 0.0
    for x, y in front:
        if y > prev_y:
            area += (1 - x) * (y - prev_y)
            prev_y = y
    return float(area)


def acdc_nodes(graph: Graph) -> list[str]:
    """ACDC's nodes for node-level ROC (`acdc_utils.get_node_stats`): the inputs, per head its
    output "L.H", its q/k/v inputs "L.H.q" (hook_q_input) and, with q/k/v computation edges, its
    q/k/v vectors "L.H.hook_q" (ACDC renames hook_q_input to "blocks.L.hook_q", which is not
    the name of the hook_q node "blocks.L.attn.hook_q", so both count), the MLPs (hook_mlp_out:
    ACDC drops the hook_mlp_in nodes) and "logits"."""
    heads = [f"{l}.{h}" for l in range(graph.n_layers) for h in range(graph.n_heads)]
    letters = [*LETTERS, *(f"hook_{x}" for x in LETTERS)] if graph.dc_edges else list(LETTERS)
    mlps = [f"mlp{l}" for l in range(graph.n_layers)] if graph.has_mlp else []
    return [*graph.inputs, *heads, *(f"{h}.{x}" for h in heads for x in letters), *mlps, "logits"]


def node_mask(graph: Graph, edges: Tensor) -> Tensor:
    """ACDC's node-level view [len(acdc_nodes(graph))] of a circuit `edges` [n_edges]: a node is
    present iff a present edge touches it, where an edge touches ACDC's endpoints: u -> v touches
    u's output (an input, "L.H", "mlpL") and v's input ("L.H.q", "logits"; an MLP's input is no
    node), the computation edge "L.H.q" -> "L.H" touches "L.H.q" and "L.H.hook_q" (not the head's
    output: ACDC's hook_q -> hook_result edge is an uncounted placeholder)."""
    present: set[str] = set()
    for i in edges.nonzero().flatten().tolist():
        e = graph.edges[i]
        if e.kind == "dc":
            head, x = e.sender.rsplit(".", 1)
            present.update((e.sender, f"{head}.hook_{x}"))
        else:
            present.add(e.sender)
            if not e.receiver.startswith("mlp"):
                present.add(e.receiver)
    return torch.tensor([n in present for n in acdc_nodes(graph)])


@dataclass
class Roc:
    """ROC of one method against one truth, at edge and node level."""

    edge_points: list[Point]
    node_points: list[Point]

    @property
    def edge_auc(self) -> float:
        return auc(self.edge_points)

    @property
    def node_auc(self) -> float:
        return auc(self.node_points)

    @property
    def edge_auc_pessimistic(self) -> float:
        return pessimistic_auc(self.edge_points)

    @property
    def node_auc_pessimistic(self) -> float:
        return pessimistic_auc(self.node_points)


def roc(
    graph: Graph,
    truth: Tensor,
    *,
    scores: Tensor | None = None,
    circuits: Sequence[Tensor] | None = None,
) -> Roc:
    """Edge- and node-level ROC of `scores` [n_edges] or of `circuits` (masks [n_edges])."""
    if (scores is None) == (circuits is None):
        raise CircuitError("give either scores or circuits")
    truth_nodes = node_mask(graph, truth)
    if scores is not None:
        masks = [scores.abs() >= t for t in torch.unique(scores.abs()).flip(0)]
        return Roc(
            roc_from_scores(scores, truth),
            roc_from_circuits([node_mask(graph, m) for m in masks], truth_nodes),
        )
    assert circuits is not None
    return Roc(
        roc_from_circuits(list(circuits), truth),
        roc_from_circuits([node_mask(graph, m) for m in circuits], truth_nodes),
    )


@dataclass
class FaithfulnessCurve:
    """Metric of the top-k circuits: sizes [n], values [n], with the full and ablated model."""

    sizes: list[int]
    values: list[float]
    full: float
    ablated: float

    @property
    def faithfulness(self) -> list[float]:
        """(ablated - value) / (ablated - full) per size: 1 = full model, 0 = fully ablated."""
        d = self.ablated - self.full
        return [(self.ablated - v) / d if abs(d) > 1e-12 else float("nan") for v in self.values]


def faithfulness_curve(
    runner: CircuitRunner, metric: CircuitMetric, scores: Tensor, sizes: Sequence[int]
) -> FaithfulnessCurve:
    """Metric of the circuit of the k top-|score| edges for each k in sizes (one batched run)."""
    masks = torch.stack([top_k_circuit(runner.graph, scores, k) for k in sizes])
    full, _, ablated = circuit_values(runner, metric, masks[0])
    values = torch.cat([metric(runner.logits(m)) for m in masks.split(16)]).tolist()
    return FaithfulnessCurve(list(sizes), values, full, ablated)
