"""Pruning by influence on the logits, as circuit-tracer's `graph.prune_graph` does.

    A_hat = |A| with each row divided by its sum (clamped at 1e-10)
    influence = w (A_hat + A_hat^2 + ...)       w: logit probabilities on the logit nodes
Nodes: keep those whose influence reaches the score at which the descending cumulative share
first reaches `node_threshold` (tokens and logits always kept). Edges: zero the dropped nodes,
renormalise, score[t, s] = A_hat'[t, s] * (influence'_t + w_t), keep by the same rule at
`edge_threshold`. Then, to a fixed point, drop feature / error nodes with no kept outgoing edge
and features with no kept incoming edge, and the edges touching them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope.errors import GraphError

NODE_THRESHOLD = 0.8
EDGE_THRESHOLD = 0.98


@dataclass
class PruneResult:
    """node_mask [N] and edge_mask [N, N] (bool, rows = targets) of the kept graph;
    cumulative_scores [N]: each node's cumulative influence share at its rank (small: important).
    """

    node_mask: Tensor
    edge_mask: Tensor
    cumulative_scores: Tensor


def normalize_rows(A: Tensor) -> Tensor:
    """|A| [N, N] with each row divided by its sum (rows of zeros stay zero)."""
    a = A.abs()
    return a / a.sum(1, keepdim=True).clamp(min=1e-10)


def influence(A_hat: Tensor, weights: Tensor, max_iter: int = 1000) -> Tensor:
    """w (A_hat + A_hat^2 + ...) [N] for a nilpotent A_hat [N, N] (the graph is acyclic)."""
    current = weights @ A_hat
    total = current.clone()
    for _ in range(max_iter):
        if not bool(current.any()):
            return total
        current = current @ A_hat
        total += current
    raise GraphError(f"influence did not converge in {max_iter} steps: the graph has a cycle")


def threshold_score(scores: Tensor, threshold: float) -> Tensor:
    """The score at the first rank where the descending cumulative share reaches `threshold`."""
    ordered = scores.sort(descending=True).values
    cum = ordered.cumsum(0) / ordered.sum()
    i = min(int(torch.searchsorted(cum, torch.tensor(threshold, dtype=cum.dtype))), len(cum) - 1)
    return ordered[i]


def prune(
    adjacency: Tensor,
    logit_probs: Tensor,
    n_features: int,
    n_tokens: int,
    node_threshold: float = NODE_THRESHOLD,
    edge_threshold: float = EDGE_THRESHOLD,
) -> PruneResult:
    """Prune a graph laid out as [features, errors, tokens, logits] (adjacency [N, N], rows =
    targets; logit_probs [n_logits], the logit nodes' weights)."""
    if not (0 < node_threshold <= 1 and 0 < edge_threshold <= 1):
        raise GraphError(
            f"thresholds must lie in (0, 1], got node {node_threshold}, edge {edge_threshold}"
        )
    A = adjacency.float()
    N, n_logits = A.shape[0], logit_probs.shape[0]
    w = torch.zeros(N)
    w[N - n_logits :] = logit_probs.float()
    node_infl = influence(normalize_rows(A), w)
    node_mask = node_infl >= threshold_score(node_infl, node_threshold)
    node_mask[N - n_logits - n_tokens :] = True
    pruned = A.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    A_hat = normalize_rows(pruned)
    edge_scores = A_hat * (influence(A_hat, w) + w)[:, None]
    edge_mask = edge_scores >= threshold_score(edge_scores.flatten(), edge_threshold)
    inner = N - n_logits - n_tokens  # features and errors
    while True:
        old = node_mask.clone()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        node_mask[:inner] &= edge_mask[:, :inner].any(0)
        node_mask[:n_features] &= edge_mask[:n_features].any(1)
        if bool((node_mask == old).all()):
            break
    edge_mask[~node_mask] = False
    edge_mask[:, ~node_mask] = False
    ordered, order = node_infl.sort(descending=True)
    cumulative = torch.zeros(N)
    cumulative[order] = ordered.cumsum(0) / ordered.sum()
    return PruneResult(node_mask, edge_mask, cumulative)
