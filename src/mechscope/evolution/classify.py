"""Classify features between adjacent layers, as Balcells et al. (2024) do.

- **pass-through**: a layer l feature whose best Pearson correlation with a layer l+1 feature is
  >= tau (default 0.95); otherwise it is **disappearing** (dead features count as disappearing).
  A layer l+1 feature with no layer l partner >= tau is **appearing** (new).
- **AND**: a layer l+1 feature with exactly two layer l features of necessity
  P(prev active | next active) >= 0.999: whenever it fires, both fire.
- **OR**: exactly two layer l features of sufficiency P(next active | prev active) >= 0.999:
  whenever either fires, it fires.
The gates use the relative activity threshold (active = act > 0.2 x the feature's max), and only
features active on >= `min_support` tokens (default 50) take part, as children or as parents: a
conditional probability of 1 from a handful of firings is no evidence (a frequent feature contains
the 3 firings of a rare one by chance), so a low-support feature is left out of the gate analysis,
neither a parent nor a child. The Pearson pass-through rule has no floor: r >= tau needs the two
features' whole activation profiles to agree, which a rare and a frequent feature cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import EvolutionError

TAU = 0.95
GATE_THRESHOLD = 0.999
MIN_SUPPORT = 50  # active tokens a feature needs to take part in an AND / OR gate


@dataclass
class PairClassification:
    """Classification between layer `layer` (prev, F_prev features) and layer + 1 (next).

    best_next / best_next_idx [F_prev]: each prev feature's largest Pearson r with a next feature;
    best_prev / best_prev_idx [F_next]: the same from the next layer back;
    and_gates / or_gates [n, 3] (next feature, parent 1, parent 2), parents ascending;
    min_support: active tokens each gate feature (parents and child) needed.
    """

    layer: int
    tau: float
    gate_threshold: float
    min_support: int
    best_next: Tensor
    best_next_idx: Tensor
    best_prev: Tensor
    best_prev_idx: Tensor
    and_gates: Tensor
    or_gates: Tensor

    @property
    def passed_through(self) -> Tensor:
        """Bool [F_prev]: the feature has a next-layer partner with r >= tau."""
        return self.best_next >= self.tau

    @property
    def disappearing(self) -> Tensor:
        return ~self.passed_through

    @property
    def appearing(self) -> Tensor:
        """Bool [F_next]: no prev-layer partner with r >= tau (a new feature)."""
        return self.best_prev < self.tau

    def counts(self) -> dict[str, int]:
        """Numbers of pass-through / disappearing prev features and kept / appearing / AND / OR
        next features (`new_other`: appearing and neither AND nor OR)."""
        gate = torch.zeros_like(self.appearing)
        for g in (self.and_gates, self.or_gates):
            gate[g[:, 0].long()] = True
        return {
            "pass_through": int(self.passed_through.sum()),
            "disappearing": int(self.disappearing.sum()),
            "kept": int((~self.appearing).sum()),
            "appearing": int(self.appearing.sum()),
            "and": int(self.and_gates.shape[0]),
            "or": int(self.or_gates.shape[0]),
            "new_other": int((self.appearing & ~gate).sum()),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "tau": self.tau,
            "gate_threshold": self.gate_threshold,
            "min_support": self.min_support,
            "counts": self.counts(),
            "and_gates": self.and_gates.tolist(),
            "or_gates": self.or_gates.tolist(),
        }


def gates(
    mat: Tensor,
    threshold: float = GATE_THRESHOLD,
    n_parents: int = 2,
    *,
    active_prev: Tensor | None = None,
    active_next: Tensor | None = None,
    min_support: int = 0,
) -> Tensor:
    """[n, 1 + n_parents] (next feature, parents...) for every column of `mat` [F_prev, F_next]
    with exactly `n_parents` entries >= threshold, counting only features with active counts
    (active_prev [F_prev], active_next [F_next]) >= min_support."""
    high = mat >= threshold
    if min_support > 0:
        if active_prev is None or active_next is None:
            raise EvolutionError(
                f"min_support={min_support} needs the features' active counts (active_prev, "
                "active_next); pass them or min_support=0"
            )
        if active_prev.shape != (mat.shape[0],) or active_next.shape != (mat.shape[1],):
            raise EvolutionError(
                f"active counts of shapes {tuple(active_prev.shape)}, "
                f"{tuple(active_next.shape)} do not fit a {tuple(mat.shape)} measure"
            )
        dev = high.device
        high &= (active_prev.to(dev) >= min_support)[:, None]
        high &= (active_next.to(dev) >= min_support)[None, :]
    cols = (high.sum(0) == n_parents).nonzero().flatten()
    if cols.numel() == 0:
        return torch.zeros(0, 1 + n_parents, dtype=torch.long)
    sub = high[:, cols].T  # [n, F_prev], exactly n_parents True per row
    parents = sub.nonzero()[:, 1].view(-1, n_parents)
    return torch.cat([cols[:, None], parents], 1).long().cpu()


def classify_pair(
    pearson: Tensor,
    necessity: Tensor,
    sufficiency: Tensor,
    layer: int = 0,
    tau: float = TAU,
    gate_threshold: float = GATE_THRESHOLD,
    *,
    active_prev: Tensor | None = None,
    active_next: Tensor | None = None,
    min_support: int = MIN_SUPPORT,
) -> PairClassification:
    """Classify from the full (not sparsified) [F_prev, F_next] measures of one layer pair.

    active_prev [F_prev], active_next [F_next]: tokens each feature is active on (the gates'
    activity threshold; `PairStats.cnt_x` / `cnt_y`), needed when min_support > 0."""
    if not (pearson.shape == necessity.shape == sufficiency.shape) or pearson.ndim != 2:
        raise EvolutionError(
            "pearson, necessity and sufficiency must be [F_prev, F_next] of one shape, got "
            f"{tuple(pearson.shape)}, {tuple(necessity.shape)}, {tuple(sufficiency.shape)}"
        )
    if not 0 < tau <= 1 or not 0 < gate_threshold <= 1:
        raise EvolutionError(
            f"tau and gate_threshold must be in (0, 1], got {tau}, {gate_threshold}"
        )
    if min_support < 0:
        raise EvolutionError(f"min_support must be >= 0 active tokens, got {min_support}")

    def gates_of(mat: Tensor) -> Tensor:
        return gates(
            mat,
            gate_threshold,
            active_prev=active_prev,
            active_next=active_next,
            min_support=min_support,
        )

    bn, bni = pearson.max(1)
    bp, bpi = pearson.max(0)
    return PairClassification(
        layer=layer,
        tau=tau,
        gate_threshold=gate_threshold,
        min_support=min_support,
        best_next=bn.float().cpu(),
        best_next_idx=bni.cpu(),
        best_prev=bp.float().cpu(),
        best_prev_idx=bpi.cpu(),
        and_gates=gates_of(necessity),
        or_gates=gates_of(sufficiency),
    )


def counts_table(pairs: Sequence[PairClassification], sizes: Sequence[int]) -> list[dict[str, Any]]:
    """One row per layer: features, and what became of them (to the next layer) / where they came
    from (the previous layer). Entries that do not apply (first / last layer) are None."""
    rows: list[dict[str, Any]] = []
    for l, size in enumerate(sizes):
        row: dict[str, Any] = {"layer": l, "features": size}
        nxt = pairs[l].counts() if l < len(pairs) else None
        prv = pairs[l - 1].counts() if l > 0 else None
        row["pass_through"] = nxt["pass_through"] if nxt else None
        row["disappearing"] = nxt["disappearing"] if nxt else None
        for k in ("kept", "appearing", "and", "or", "new_other"):
            row[k] = prv[k] if prv else None
        rows.append(row)
    return rows


def sankey_figure(
    pairs: Sequence[PairClassification], sizes: Sequence[int], title: str = ""
) -> Any:
    """Plotly Sankey of kept / disappearing / appearing features from layer to layer (the paper's
    Figure 3 layout)."""
    import plotly.graph_objects as go

    n = len(sizes)
    labels, xs, ys, colors = [], [], [], []
    src, dst, val = [], [], []
    layer_node = {}
    for l in range(n):
        if l > 0:
            c = pairs[l - 1].counts()
            labels.append(f"appearing ({c['appearing'] / max(sizes[l], 1):.1%})")
            xs.append((2 * l - 0.6) / (2 * n - 1))
            ys.append(0.15)
            colors.append("#2ca02c")
        layer_node[l] = len(labels)
        labels.append(f"layer {l}")
        xs.append(2 * l / (2 * n - 1) + 0.01)
        ys.append(0.5)
        colors.append("#1f77b4")
        if l < n - 1:
            c = pairs[l].counts()
            labels.append(f"disappearing ({c['disappearing'] / max(sizes[l], 1):.1%})")
            xs.append((2 * l + 0.6) / (2 * n - 1))
            ys.append(0.85)
            colors.append("#d62728")
    for l in range(n - 1):
        c = pairs[l].counts()
        a, b = layer_node[l], layer_node[l + 1]
        src += [a, a, b - 1]
        dst += [a + 1, b, b]
        val += [c["disappearing"], c["pass_through"], c["appearing"]]
    fig = go.Figure(
        go.Sankey(
            arrangement="fixed",
            node={"label": labels, "x": xs, "y": ys, "color": colors, "pad": 10},
            link={"source": src, "target": dst, "value": val},
        )
    )
    fig.update_layout(
        title=title or f"features kept (r >= {pairs[0].tau:g}), disappearing, appearing",
        width=max(500, 220 * n),
        height=420,
    )
    return fig
