"""Edge ablation and "edges needed" (ApolloResearch/rib's `ablate_edges_and_eval` with its bisect
schedule): how many of a layer pair's interaction edges must stay for the model to keep its loss
or accuracy on held-out data.

For node layers l -> l+1 with bases C_l [d_l, r_l], C_{l+1} and edge strengths E [r_{l+1}, r_l],
keeping the k strongest edges (constant directions free and not counted) gives a mask K [r_{l+1},
r_l]. Output feature i of layer l+1 is then computed from the kept input features only, the others
set to a reference value ref_j (their mean on the basis-fitting data, per position: mean ablation;
or 0: zero ablation, rib's choice, which equals mean ablation in the centred interaction and PCA
bases on one-position layers):

    a_hat = a C_l,   a_i' = (K_i * a_hat + (1 - K_i) * ref) C_l_pinv + (a - a_hat C_l_pinv)
    h_hat_i = section_l(a_i') C_{l+1}[:, i]
    a_{l+1}' = a_{l+1} + (h_hat - a_{l+1} C_{l+1}) C_{l+1}_pinv

and the model runs on from a_{l+1}'. Deviation from rib: the parts of a_l and a_{l+1} outside the
span of their (truncated) bases pass through unchanged, so keeping every edge is exactly the
unablated model on any data (rib projects both onto the kept directions, which on held-out data
also removes what the truncation dropped). Each layer pair is ablated alone, the others intact.

Edges needed: the smallest k with accuracy >= base - acc_bound (rib: 0.001) or loss <= base +
loss_bound, at k and at every k evaluated above it (a log-spaced grid and the bisection steps):
the highest failing k evaluated, then bisection up to the next evaluated k, repeated until no new
point changes the answer. rib's `BisectSchedule` (tolerance 1) bisects all of [0, n_edges]; the
two agree when the score falls monotonically as edges go, and where it does not, starting from the
grid avoids stopping at a k above which a larger one fails again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import Tensor

from mechscope.basis.degeneracy import batches, float64_copy
from mechscope.basis.interaction import LayerBasis
from mechscope.basis.models import NodeLayerModel
from mechscope.errors import BasisError

AblationKind = Literal["mean", "zero"]
ABLATION_KINDS: tuple[AblationKind, ...] = ("mean", "zero")


def ablation_reference(
    model: NodeLayerModel,
    bases: list[LayerBasis],
    inputs: Tensor,
    ablation: AblationKind,
    batch_size: int = 2048,
) -> list[Tensor]:
    """The value an ablated feature takes, per node layer but the last: [P_l, r_l] (float64).

    "mean": E[a_hat] over `inputs` (the data the basis was fitted on) at each position; "zero": 0.
    """
    if ablation not in ABLATION_KINDS:
        raise BasisError(
            f"unknown ablation {ablation!r}; choose one of {', '.join(ABLATION_KINDS)}"
        )
    m = float64_copy(model)
    sums: list[Tensor] = []
    count = 0
    with torch.no_grad():
        for xb in batches(inputs, batch_size):
            acts = m.node_acts(xb)[:-1]
            if not sums:
                sums = [
                    torch.zeros(a.shape[1], b.dim, dtype=torch.float64)
                    for a, b in zip(acts, bases, strict=False)
                ]
            for s, a, b in zip(sums, acts, bases, strict=False):
                s += (a @ b.C).sum(dim=0)
            count += xb.shape[0]
    if not sums:
        raise BasisError("no inputs: pass a non-empty input tensor")
    return [s / count if ablation == "mean" else torch.zeros_like(s) for s in sums]


def edge_order(E: Tensor, b_in: LayerBasis, b_out: LayerBasis) -> Tensor:
    """The counted edges of E [r_out, r_in] (none from or to a constant direction), strongest
    first (ties in row-major order): [n_edges, 2] of (output feature i, input feature j)."""
    c_out, c_in = int(b_out.has_const), int(b_in.has_const)
    sub = E[c_out:, c_in:]
    order = torch.argsort(sub.flatten(), descending=True, stable=True)
    return torch.stack([order // sub.shape[1] + c_out, order % sub.shape[1] + c_in], dim=1)


def keep_mask(E: Tensor, n_kept: int, b_in: LayerBasis, b_out: LayerBasis) -> Tensor:
    """Bool [r_out, r_in]: the n_kept strongest counted edges, plus every edge from or to a
    constant direction (free, as rib's `keep_const_edges`)."""
    order = edge_order(E, b_in, b_out)
    if not 0 <= n_kept <= len(order):
        raise BasisError(f"n_kept must be in [0, {len(order)}] (the counted edges), got {n_kept}")
    keep = torch.ones(E.shape, dtype=torch.bool)
    keep[int(b_out.has_const) :, int(b_in.has_const) :] = False
    top = order[:n_kept]
    keep[top[:, 0], top[:, 1]] = True
    return keep


def ablated_section(
    model: NodeLayerModel,
    layer: int,
    a: Tensor,
    b_in: LayerBasis,
    b_out: LayerBasis,
    keep: Tensor,
    reference: Tensor,
) -> Tensor:
    """Node layer `layer + 1` [batch, pos', d'] computed from node layer `layer` a [batch, pos, d]
    with only the edges in `keep` [r_out, r_in]: output feature i sees input feature j only where
    keep[i, j], else j is set to reference [pos, r_in] (the module docstring gives the formula).
    Everything in the dtype of the bases (float64): pass a float64 model."""
    a_hat = a @ b_in.C
    rest = a - a_hat @ b_in.C_pinv  # the part of a outside the basis: passed through
    out = model.section(layer, a)
    h_hat = out @ b_out.C
    new_h = h_hat.clone()
    rows, group = keep.unique(dim=0, return_inverse=True)
    for g, row in enumerate(rows):
        if bool(row.all()):
            continue
        cols = group == g  # output features that keep exactly the input features in `row`
        a_g = torch.where(row, a_hat, reference) @ b_in.C_pinv + rest
        new_h[..., cols] = model.section(layer, a_g) @ b_out.C[:, cols]
    return out + (new_h - h_hat) @ b_out.C_pinv


def edges_needed(ok: Callable[[int], bool], grid: list[int]) -> int:
    """The smallest k that meets the bound (ok) at k and at every grid point above k.

    grid: ascending k values ending at n_edges, where ok holds (the unablated model). Finds the
    highest grid point that fails, then bisects up to the next grid point (rib's `BisectSchedule`,
    tolerance 1, which assumes ok is false below some k and true from it on); the result meets
    the bound but may have a failing k between it and the next grid point when ok is not
    monotone. With grid = 0..n_edges this is literally the smallest k from which on every k meets
    the bound; 0 when every grid point meets it.
    """
    failing = [g for g in grid if not ok(g)]
    if not failing:
        return 0
    lo = max(failing)
    hi = min(g for g in grid if g > lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def kept_grid(n: int, points: int = 20) -> list[int]:
    """0, n and about `points` values in between, log-spaced from 1 (the curves' x values)."""
    if n == 0:
        return [0]
    inner = torch.logspace(0, math.log10(n), points, dtype=torch.float64).round().long()
    return sorted({0, n, *inner.tolist()})


@dataclass
class EdgeAblation:
    """Loss and accuracy of one layer pair with only its k strongest edges kept, on held-out data.

    kept / accuracy / loss: every k evaluated (ascending), k = n_edges being the unablated model;
    needed_accuracy / needed_loss: edges needed to keep accuracy >= base_accuracy - acc_bound /
    loss <= base_loss + loss_bound there and at every larger k evaluated (module docstring).
    """

    layer_in: str
    layer_out: str
    n_edges: int
    base_accuracy: float
    base_loss: float
    kept: list[int]
    accuracy: list[float]
    loss: list[float]
    acc_bound: float
    loss_bound: float
    needed_accuracy: int
    needed_loss: int


class _PairEvaluator:
    """Accuracy and mean cross-entropy on (inputs, labels) with only the k strongest edges of one
    layer pair kept; node layer `layer`'s activations are computed once, scores cached by k."""

    def __init__(
        self,
        m: NodeLayerModel,
        layer: int,
        bases: tuple[LayerBasis, LayerBasis],
        E: Tensor,
        reference: Tensor,
        data: tuple[Tensor, Tensor],
        batch_size: int,
    ) -> None:
        self.m, self.layer, self.E, self.reference = m, layer, E, reference
        self.b_in, self.b_out = bases
        self.n_edges = len(edge_order(E, self.b_in, self.b_out))
        inputs, labels = data
        with torch.no_grad():
            self.acts = [m.node_acts(xb)[layer] for xb in batches(inputs, batch_size)]
        self.labels = list(batches(labels, batch_size))
        self.cache: dict[int, tuple[float, float]] = {self.n_edges: self._score(None)}

    def __call__(self, k: int) -> tuple[float, float]:
        """(accuracy, loss) with the k strongest edges kept (k = n_edges: the unablated model)."""
        if k not in self.cache:
            self.cache[k] = self._score(keep_mask(self.E, k, self.b_in, self.b_out))
        return self.cache[k]

    @torch.no_grad()
    def _score(self, keep: Tensor | None) -> tuple[float, float]:
        correct, total_loss, count = 0, 0.0, 0
        for a, y in zip(self.acts, self.labels, strict=True):
            if keep is None:
                nxt = self.m.section(self.layer, a)
            else:
                nxt = ablated_section(
                    self.m, self.layer, a, self.b_in, self.b_out, keep, self.reference
                )
            logits = self.m.run_from(self.layer + 1, nxt)[:, -1]
            correct += int((logits.argmax(-1) == y).sum())
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            count += len(y)
        return correct / count, total_loss / count


def _ablate_pair(
    ev: _PairEvaluator, acc_bound: float, loss_bound: float, grid_points: int
) -> EdgeAblation:
    n = ev.n_edges
    base_acc, base_loss = ev(n)
    for k in kept_grid(n, grid_points):
        ev(k)
    while True:  # each bisection adds points; repeat until no new point moves either answer
        n_evaluated = len(ev.cache)
        need_acc = edges_needed(lambda k: ev(k)[0] >= base_acc - acc_bound, sorted(ev.cache))
        need_loss = edges_needed(lambda k: ev(k)[1] <= base_loss + loss_bound, sorted(ev.cache))
        if len(ev.cache) == n_evaluated:
            break
    ks = sorted(ev.cache)
    return EdgeAblation(
        ev.b_in.name,
        ev.b_out.name,
        n,
        base_acc,
        base_loss,
        ks,
        [ev.cache[k][0] for k in ks],
        [ev.cache[k][1] for k in ks],
        acc_bound,
        loss_bound,
        need_acc,
        need_loss,
    )


def ablate_edges(
    model: NodeLayerModel,
    bases: list[LayerBasis],
    edges: list[Tensor],
    inputs: Tensor,
    labels: Tensor,
    reference: list[Tensor],
    acc_bound: float = 1e-3,
    loss_bound: float = 1e-2,
    grid_points: int = 20,
    batch_size: int = 2048,
    progress: bool = False,
) -> list[EdgeAblation]:
    """Edge-ablation curves and edges needed for every layer pair, each pair ablated alone.

    inputs [N, ...] / labels [N]: held-out evaluation data (not the data the basis and edges were
    computed on); reference: `ablation_reference(...)` (mean or zero ablation). The curve holds
    `kept_grid(n_edges, grid_points)` and every k the two bisections evaluate. Runs in float64.
    """
    if len(bases) != len(model.node_layers) or len(edges) != len(bases) - 1:
        raise BasisError(
            f"{len(bases)} bases and {len(edges)} edge matrices for {len(model.node_layers)} node "
            "layers; pass build_basis(model, ...) and compute_edges(model, bases, ...)"
        )
    if len(inputs) != len(labels) or len(inputs) == 0:
        raise BasisError(f"need as many labels as inputs (> 0), got {len(inputs)} / {len(labels)}")
    m = float64_copy(model)
    out = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("edge ablation", total=len(edges))
        for layer, E in enumerate(edges):
            pair = (bases[layer], bases[layer + 1])
            ev = _PairEvaluator(m, layer, pair, E, reference[layer], (inputs, labels), batch_size)
            out.append(_ablate_pair(ev, acc_bound, loss_bound, grid_points))
            bar.advance(task)
    return out
