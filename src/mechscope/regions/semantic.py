"""Semantic alignment: cluster prompts by stable region and relate clusters to predictions.

Two prompts are in the same region when the path between their write-site activations crosses no
boundary. For n prompts every ordered pair (i, j) is interpolated in i's context; the pair's
sharpness is max(s_ij, s_ji) (a boundary seen from either side separates them). Complete-linkage
clustering at `threshold` then groups prompts that are pairwise boundary-free. The clusters are
compared with the prompts' predicted next tokens and their last tokens' categories, and, without
any threshold, the mean pair sharpness is compared between pairs that agree and pairs that do not.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import RegionsError
from mechscope.regions import boundaries as bd
from mechscope.regions.interpolate import PathRunner, interpolate_pairs
from mechscope.regions.prompts import sample_prompts, token_category
from mechscope.regions.result import SemanticResult


def pairwise_sharpness(
    runner: PathRunner,
    n_steps: int = 21,
    path: str = "linear",
    min_end: float = 0.01,
    batch_size: int = 2048,
    progress: bool = False,
) -> Tensor:
    """Symmetric pair sharpness [n, n]: max(s_ij, s_ji), 0 on the diagonal and where the output
    barely moves (d(1) <= min_end: no boundary between the two)."""
    n = runner.tokens.shape[0]
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    off = i != j
    curves = interpolate_pairs(runner, i[off], j[off], n_steps, path, batch_size, progress)
    s = bd.sharpness(bd.normalise(curves.dist, min_end)[0]).nan_to_num(nan=0.0)
    full = torch.zeros(n, n)
    full[off] = s.float()
    return torch.maximum(full, full.T)


def complete_linkage(dist: Tensor, threshold: float) -> Tensor:
    """Cluster labels [n] from a symmetric dist [n, n]: merge the closest clusters (largest
    pairwise distance between members) while that distance is below threshold."""
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise RegionsError(f"dist must be a square [n, n] matrix, got {tuple(dist.shape)}")
    clusters: list[list[int]] = [[k] for k in range(dist.shape[0])]
    while len(clusters) > 1:
        best, pair = math.inf, (0, 0)
        for x in range(len(clusters)):
            for y in range(x + 1, len(clusters)):
                d = float(dist[clusters[x]][:, clusters[y]].max())
                if d < best:
                    best, pair = d, (x, y)
        if best >= threshold:
            break
        x, y = pair
        clusters[x] = sorted(clusters[x] + clusters.pop(y))
    labels = torch.empty(dist.shape[0], dtype=torch.long)
    for c, members in enumerate(sorted(clusters, key=lambda m: (-len(m), m[0]))):
        labels[members] = c
    return labels


def agreement_rates(
    sharp: Tensor, labels: Tensor, top1: list[Any], category: list[str]
) -> dict[str, float]:
    """P(same top-1 | same / different cluster), the same for category, pair counts, and the
    mean pair sharpness of pairs with the same / a different top-1 and category."""
    n = len(top1)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    same_cluster = [bool(labels[i] == labels[j]) for i, j in pairs]
    same_top1 = [top1[i] == top1[j] for i, j in pairs]
    same_cat = [category[i] == category[j] for i, j in pairs]
    s = [float(sharp[i, j]) for i, j in pairs]

    def rate(hit: list[bool], given: list[bool]) -> float:
        sel = [h for h, g in zip(hit, given, strict=True) if g]
        return sum(sel) / len(sel) if sel else math.nan

    def mean_s(given: list[bool]) -> float:
        sel = [v for v, g in zip(s, given, strict=True) if g]
        return sum(sel) / len(sel) if sel else math.nan

    diff_cluster = [not x for x in same_cluster]
    return {
        "same_top1_given_same_cluster": rate(same_top1, same_cluster),
        "same_top1_given_diff_cluster": rate(same_top1, diff_cluster),
        "same_category_given_same_cluster": rate(same_cat, same_cluster),
        "same_category_given_diff_cluster": rate(same_cat, diff_cluster),
        "pairs_same_cluster": float(sum(same_cluster)),
        "pairs_diff_cluster": float(sum(diff_cluster)),
        "mean_s_same_top1": mean_s(same_top1),
        "mean_s_diff_top1": mean_s([not x for x in same_top1]),
        "mean_s_same_category": mean_s(same_cat),
        "mean_s_diff_category": mean_s([not x for x in same_cat]),
    }


def semantic_alignment(
    model: Any,
    revision: str | None = None,
    n_prompts: int = 24,
    seq_len: int = 10,
    n_steps: int = 21,
    layer: int = 0,
    threshold: float = 3.0,
    seed: int = 0,
    tokens: Tensor | None = None,
    progress: bool = True,
    name: str | None = None,
) -> SemanticResult:
    """Cluster n_prompts random windows by stable region and relate clusters to predictions.

    model: a loaded TransformerBridge, checkpoint `revision` of the model `name` (default: its
    cfg.model_name)."""
    name = name or str(getattr(model.cfg, "model_name", "model"))
    tok = model.tokenizer
    if tokens is None:
        tokens = sample_prompts(tok, n_prompts, seq_len, seed)
    runner = PathRunner(model, tokens, layer)
    sharp = pairwise_sharpness(runner, n_steps, progress=progress)
    labels = complete_linkage(sharp, threshold)
    top1 = [tok.decode([t]) for t in runner.clean.logprobs.argmax(-1).tolist()]
    category = [token_category(tok.decode([t])) for t in tokens[:, -1].tolist()]
    return SemanticResult(
        model=name,
        revision=revision,
        threshold=threshold,
        n_steps=n_steps,
        prompts=[tok.decode(t, skip_special_tokens=True) for t in tokens.tolist()],
        top1=top1,
        category=category,
        sharpness=sharp.tolist(),
        labels=labels.tolist(),
        rates=agreement_rates(sharp, labels, top1, category),
        meta={"layer": layer, "seed": seed, "n_prompts": int(tokens.shape[0])},
    )
