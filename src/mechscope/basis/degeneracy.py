"""Degeneracy measures of Bushnaq et al. 2024 (degeneracy in the loss landscape), streamed.

Three sources of free directions in parameter space, each measured per node layer:

(a) linear dependence between activations: the spectrum of the centred activation Gram matrix
    (covariance); every direction with zero variance makes the next layer's weights along it free.
(b) linear dependence between the gradients passed back to the layer: the spectrum of the Gram
    matrix of Jacobians of the output logits w.r.t. the layer, E_x sum_o g_o g_o^T; a direction
    no later layer reads has zero gradient.
(c) ReLUs that fire on the same subset of data points: neurons whose firing patterns (pre-act > 0)
    are identical form a group S; A in GL(|S|) near I applied to their in-weights and undone on
    their out-weights leaves the function unchanged on the data: |S|^2 - |S| extra free directions.

All statistics are sums over (data point, position) accumulated batch by batch in float64, and
normalised by N * P at the end.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mechscope.basis.models import NodeLayerModel
from mechscope.errors import BasisError


def batches(inputs: Tensor, batch_size: int) -> Iterator[Tensor]:
    """Consecutive slices of `inputs` along dim 0, each [<= batch_size, ...]."""
    if batch_size < 1:
        raise BasisError(f"batch_size must be >= 1, got {batch_size}")
    for i in range(0, len(inputs), batch_size):
        yield inputs[i : i + batch_size]


def float64_copy(model: NodeLayerModel) -> NodeLayerModel:
    """A float64 copy of `model` in eval mode (the basis is computed in float64, as rib does)."""
    return copy.deepcopy(model).double().eval()


def eigh_desc(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Eigendecomposition of a symmetric [d, d] matrix in float64: (|eigenvalues| [d] sorted
    descending, eigenvectors [d, d] as columns), as rib's `eigendecompose`."""
    vals, vecs = torch.linalg.eigh(matrix.double())
    vals = vals.abs()
    order = torch.argsort(vals, descending=True)
    return vals[order], vecs[:, order]


def numerical_rank(eigenvalues: Tensor, rtol: float = 1e-10) -> int:
    """Number of eigenvalues above rtol * the largest (0 for an all-zero spectrum)."""
    top = float(eigenvalues.abs().max()) if eigenvalues.numel() else 0.0
    return int((eigenvalues.abs() > rtol * top).sum()) if top > 0 else 0


def participation_ratio(eigenvalues: Tensor) -> float:
    """(sum lambda)^2 / sum lambda^2: a soft effective dimension (1 .. d)."""
    ev = eigenvalues.abs().double()
    denom = float((ev**2).sum())
    return float(ev.sum() ** 2 / denom) if denom > 0 else 0.0


class MomentAccumulator:
    """Streams the raw second moment sum_{x,s} a a^T of an extended node layer ([..., d], last
    coordinate 1); the mean (its last row) and the centred Gram matrix follow from it."""

    def __init__(self, d: int) -> None:
        self.sum = torch.zeros(d, d, dtype=torch.float64)
        self.count = 0

    def update(self, acts: Tensor) -> None:
        """Add a batch [batch, pos, d]."""
        a = acts.detach().reshape(-1, acts.shape[-1]).double()
        self.sum += a.T @ a
        self.count += a.shape[0]

    def _check(self) -> None:
        if self.count == 0:
            raise BasisError("no activations accumulated; pass a non-empty input")

    @property
    def mean(self) -> Tensor:
        """E[a] [d] (its last entry is 1)."""
        self._check()
        return self.sum[-1] / self.count

    def gram(self, center: bool = True) -> Tensor:
        """E[(aY)^T (aY)] [d, d], Y = `centering_matrix(mean)` (identity if not `center`)."""
        self._check()
        raw = self.sum / self.count
        if not center:
            return raw
        y = centering_matrix(self.mean)
        return y.T @ raw @ y


def centering_matrix(mean: Tensor, inverse: bool = False) -> Tensor:
    """Y [d, d] with a @ Y = (a[:-1] - mean[:-1], a[-1]) for row vectors a (inverse: + mean)."""
    if abs(float(mean[-1]) - 1.0) > 1e-6:
        raise BasisError(f"the last coordinate must be the constant 1, its mean is {mean[-1]:.4g}")
    y = torch.eye(len(mean), dtype=mean.dtype)
    y[-1, :-1] = mean[:-1] if inverse else -mean[:-1]
    return y


class FiringAccumulator:
    """Streams firing counts of n ReLU neurons: c_i = #{x: pre_i(x) > 0}, C_ij = #{both fire}."""

    def __init__(self, n: int) -> None:
        self.co = torch.zeros(n, n, dtype=torch.float64)
        self.count = 0

    def update(self, preacts: Tensor) -> None:
        """Add a batch of pre-activations [batch, pos, n]."""
        f = (preacts.detach() > 0).reshape(-1, preacts.shape[-1]).double()
        self.co += f.T @ f
        self.count += f.shape[0]

    def groups(self, tol: float = 0.0) -> list[list[int]]:
        """Neurons grouped by firing pattern (Jaccard >= 1 - tol; tol=0: identical patterns),
        largest group first. Dead neurons (never fire) form one group together."""
        c = self.co.diag()
        union = c[:, None] + c[None, :] - self.co
        jac = torch.where(union > 0, self.co / union.clamp(min=1), torch.ones_like(union))
        linked = jac >= 1.0 - tol - 1e-12
        parent = list(range(len(c)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, j in torch.nonzero(torch.triu(linked, diagonal=1)).tolist():
            parent[find(i)] = find(j)
        out: dict[int, list[int]] = {}
        for i in range(len(c)):
            out.setdefault(find(i), []).append(i)
        return sorted(out.values(), key=lambda g: (-len(g), g[0]))


@dataclass
class FiringReport:
    """Co-firing groups of one ReLU layer (degeneracy c)."""

    name: str
    n_neurons: int
    groups: list[list[int]]
    n_dead: int
    n_always_on: int
    tol: float

    @property
    def group_sizes(self) -> list[int]:
        return [len(g) for g in self.groups]

    dead: list[int] = field(default_factory=list)

    @property
    def extra_free_directions(self) -> int:
        """sum over groups S of neurons that fire on some data of |S|^2 - |S| (0 for singletons;
        dead neurons, whose weights are all free, are counted in n_dead instead)."""
        return sum(
            len(g) ** 2 - len(g) for g in self.groups if len(g) > 1 and g[0] not in self.dead
        )


@dataclass
class LayerDegeneracy:
    """Degeneracy (a) and (b) of one node layer; spectra over its d real coordinates."""

    name: str
    dim: int
    act_eigenvalues: Tensor
    grad_eigenvalues: Tensor
    rtol: float

    @property
    def act_rank(self) -> int:
        return numerical_rank(self.act_eigenvalues, self.rtol)

    @property
    def grad_rank(self) -> int:
        return numerical_rank(self.grad_eigenvalues, self.rtol)

    @property
    def act_participation(self) -> float:
        return participation_ratio(self.act_eigenvalues)

    @property
    def grad_participation(self) -> float:
        return participation_ratio(self.grad_eigenvalues)


@dataclass
class DegeneracyReport:
    """Per node layer (all but the logits): activation and gradient spectra; per ReLU layer:
    co-firing groups."""

    layers: list[LayerDegeneracy]
    firing: list[FiringReport] = field(default_factory=list)


def gradient_gram(model: NodeLayerModel, layer: int, inputs: Tensor, batch_size: int) -> Tensor:
    """E_{x,s} sum_{t,o} g g^T [d, d] with g = d logits[t, o] / d a_layer[s, :d] (the d real
    coordinates; the constant one is left out), normalised by N * P_layer. float64."""
    m = float64_copy(model)
    d = None
    total = None
    count = 0
    for xb in batches(inputs, batch_size):
        with torch.no_grad():
            a = m.node_acts(xb)[layer]
        a.requires_grad_(True)
        out = m.run_from(layer, a)
        d = a.shape[-1] - 1
        if total is None:
            total = torch.zeros(d, d, dtype=torch.float64)
        for t in range(out.shape[1]):
            for o in range(out.shape[2]):
                (g,) = torch.autograd.grad(out[:, t, o].sum(), a, retain_graph=True)
                g = g[..., :-1].reshape(-1, d)
                total += g.T @ g
        count += a.shape[0] * a.shape[1]
    if total is None:
        raise BasisError("no inputs: pass a non-empty input tensor")
    return total / count


def measure_degeneracy(
    model: NodeLayerModel,
    inputs: Tensor,
    batch_size: int = 2048,
    rtol: float = 1e-10,
    firing_tol: float = 0.0,
) -> DegeneracyReport:
    """Degeneracy (a), (b) at every node layer but the logits and (c) at every ReLU layer.

    inputs: the model's input batch (e.g. [N, 64] pixels or [N, 3] tokens), streamed in batches.
    rtol: eigenvalues above rtol * max count towards a rank. firing_tol: 0 groups neurons with
    identical firing patterns; > 0 links neurons whose Jaccard similarity is >= 1 - firing_tol.
    """
    m = float64_copy(model)
    n_nodes = len(m.node_layers) - 1
    moments: list[MomentAccumulator] = []
    firing: dict[str, FiringAccumulator] = {}
    with torch.no_grad():
        for xb in batches(inputs, batch_size):
            acts = m.node_acts(xb)[:n_nodes]
            if not moments:
                moments = [MomentAccumulator(a.shape[-1]) for a in acts]
            for acc, a in zip(moments, acts, strict=True):
                acc.update(a)
            for name, pre in m.neuron_preacts(xb).items():
                firing.setdefault(name, FiringAccumulator(pre.shape[-1])).update(pre)
    layers = []
    for i, acc in enumerate(moments):
        act_ev, _ = eigh_desc(acc.gram(center=True)[:-1, :-1])
        grad_ev, _ = eigh_desc(gradient_gram(m, i, inputs, batch_size))
        layers.append(LayerDegeneracy(m.node_layers[i], len(act_ev), act_ev, grad_ev, rtol))
    reports = []
    for name, f in firing.items():
        c = f.co.diag()
        reports.append(
            FiringReport(
                name=name,
                n_neurons=len(c),
                groups=f.groups(firing_tol),
                n_dead=int((c == 0).sum()),
                dead=torch.nonzero(c == 0).flatten().tolist(),
                n_always_on=int((c == f.count).sum()),
                tol=firing_tol,
            )
        )
    return DegeneracyReport(layers, reports)
