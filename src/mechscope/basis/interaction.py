"""The (local) interaction basis: Bushnaq et al. 2024, following ApolloResearch/rib's algorithm.

Row-vector convention: node-layer activations a [d] (last coordinate the constant 1), a basis is
C [d, r] with features a_hat = a @ C and C_pinv [r, d] with a ~ a_hat @ C_pinv. For node layer l,
computed from the last node layer backwards (layer l needs the next layer's full C):

1. Y: the centring matrix (a @ Y = (a - mean, 1)); G = E[(aY)^T (aY)], G = U' D' U'^T in float64,
   the constant direction moved first, directions with D' <= tau dropped (degeneracy a) -> U, D.
2. R = Y U D^{-1/2} (whitening), R_pinv = D^{1/2} U^T Y^{-1}.   [PCA basis: C = Y U, stop here]
3. M' = E_{x,s} sum_{t,i} J_{(t,i),(s,:)}^T J_{(t,i),(s,:)}, J = d(F_l(a) @ C_{l+1}) / d a, the
   Jacobian of the next layer's interaction features; M = R_pinv M' R_pinv^T; its eigenvectors V
   (the constant direction held out), eigenvalues Lambda; directions with Lambda <= tau dropped
   (degeneracy b).
4. C = R V Lambda^{1/2}, C_pinv = Lambda^{-1/2} V^T R_pinv; E[a_hat_k^2] = Lambda_k.

Means, Gram matrices and M' are sums over (data point, position), divided by N * P_l, accumulated
batch by batch in float64. The last node layer (the logits) is left unrotated (C = I). Deviation
from rib: the constant direction is always kept (with scale 1 if its Lambda is below tau), where
rib's truncation would drop the wrong column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from rich.progress import Progress
from torch import Tensor

from mechscope.basis.degeneracy import (
    MomentAccumulator,
    batches,
    centering_matrix,
    eigh_desc,
    float64_copy,
)
from mechscope.basis.models import NodeLayerModel
from mechscope.errors import BasisError

BasisKind = Literal["lib", "pca", "neuron"]
BASIS_KINDS: tuple[BasisKind, ...] = ("lib", "pca", "neuron")


@dataclass
class LayerBasis:
    """One node layer's basis.

    C [d, r], C_pinv [r, d] (float64); feature 0 is the constant direction when `has_const`.
    importance [r]: Lambda (lib), Gram eigenvalue (pca), E[a^2] (neuron), 1 (unrotated logits).
    gram_eigenvalues [d] / m_eigenvalues [k]: the full spectra before truncation (empty if unused).
    """

    name: str
    kind: str
    C: Tensor
    C_pinv: Tensor
    importance: Tensor
    has_const: bool
    gram_eigenvalues: Tensor
    m_eigenvalues: Tensor

    @property
    def dim(self) -> int:
        """Number of kept directions r (including the constant one)."""
        return int(self.C.shape[1])

    @property
    def orig_dim(self) -> int:
        return int(self.C.shape[0])


def move_const_first(vals: Tensor, vecs: Tensor, threshold: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Reorder an eigendecomposition of a centred Gram matrix so the constant direction (the one
    eigenvector with a non-zero last entry and a non-zero eigenvalue) comes first."""
    is_const = (vecs[-1].abs() > threshold) & (vals.abs() > threshold)
    if int(is_const.sum()) != 1:
        raise BasisError(
            f"expected exactly one constant direction in the centred Gram matrix, found "
            f"{int(is_const.sum())}; is the last coordinate of the node layer the constant 1?"
        )
    k = int(torch.nonzero(is_const)[0, 0])
    order = torch.tensor([k, *[i for i in range(len(vals)) if i != k]])
    return vals[order], vecs[:, order]


def masked_eigh(matrix: Tensor, n_masked: int) -> tuple[Tensor, Tensor]:
    """Eigendecomposition with the first n_masked coordinates held out as their own directions:
    (values [k] = diag for the masked then sorted descending, vectors [k, k])."""
    sub_vals, sub_vecs = eigh_desc(matrix[n_masked:, n_masked:])
    vecs = torch.block_diag(torch.eye(n_masked, dtype=sub_vecs.dtype), sub_vecs)
    return torch.cat([matrix.diag()[:n_masked], sub_vals]), vecs


def jacobian_gram(
    model: NodeLayerModel,
    layer: int,
    C_next: Tensor,
    inputs: Tensor,
    batch_size: int,
) -> Tensor:
    """M' [d, d] = E_{x,s} sum_{t,i} J^T J with J = d (section_layer(a) @ C_next)[t, i] / d a[s],
    over the extended coordinates; normalised by N * P_layer. `model` must be float64."""
    total: Tensor | None = None
    count = 0
    for xb in batches(inputs, batch_size):
        with torch.no_grad():
            a = model.node_acts(xb)[layer]
        a.requires_grad_(True)
        out = model.section(layer, a) @ C_next
        d = a.shape[-1]
        if total is None:
            total = torch.zeros(d, d, dtype=torch.float64)
        for t in range(out.shape[1]):
            for i in range(out.shape[2]):
                (g,) = torch.autograd.grad(out[:, t, i].sum(), a, retain_graph=True)
                g = g.reshape(-1, d)
                total += g.T @ g
        count += a.shape[0] * a.shape[1]
    if total is None:
        raise BasisError("no inputs: pass a non-empty input tensor")
    return total / count


def _identity_basis(name: str, d: int) -> LayerBasis:
    eye = torch.eye(d, dtype=torch.float64)
    empty = torch.zeros(0, dtype=torch.float64)
    return LayerBasis(name, "identity", eye, eye.clone(), torch.ones(d), False, empty, empty)


def _neuron_basis(name: str, acc: MomentAccumulator) -> LayerBasis:
    d = acc.sum.shape[0]
    perm = torch.eye(d, dtype=torch.float64)[:, [d - 1, *range(d - 1)]]  # constant first
    second = (acc.sum.diag() / acc.count)[[d - 1, *range(d - 1)]]
    empty = torch.zeros(0, dtype=torch.float64)
    return LayerBasis(name, "neuron", perm, perm.T.clone(), second, True, empty, empty)


def build_basis(
    model: NodeLayerModel,
    inputs: Tensor,
    kind: BasisKind = "lib",
    tau: float = 1e-15,
    rtol: float = 1e-12,
    batch_size: int = 2048,
    progress: bool = False,
) -> list[LayerBasis]:
    """The basis of every node layer of `model`, computed on `inputs` (the model's input batch,
    streamed in `batch_size` chunks), as a list in model order; the logits layer is unrotated.

    kind: "lib" (interaction basis), "pca" (centred Gram eigenbasis, truncated at tau) or
    "neuron" (identity, constant coordinate moved first). tau: absolute truncation threshold on
    the mean-normalised D and Lambda (rib's experiments use 1e-15 in float64). rtol: directions
    with D or Lambda <= rtol * the layer's largest are dropped too: they are float64 round-off
    (about 1e-16 * the largest), which an absolute 1e-15 keeps for layers of large scale and then
    whitens into noise. rtol=0 reproduces rib exactly.
    """
    if kind not in BASIS_KINDS:
        raise BasisError(f"unknown basis kind {kind!r}; choose one of {', '.join(BASIS_KINDS)}")
    m = float64_copy(model)
    n_nodes = len(m.node_layers)
    moments: list[MomentAccumulator] = []
    out_dim = 0
    with torch.no_grad():
        for xb in batches(inputs, batch_size):
            acts = m.node_acts(xb)
            if not moments:
                moments = [MomentAccumulator(a.shape[-1]) for a in acts[:-1]]
                out_dim = acts[-1].shape[-1]
            for acc, a in zip(moments, acts[:-1], strict=True):
                acc.update(a)
    if not moments:
        raise BasisError("no inputs: pass a non-empty input tensor")
    bases = [_identity_basis(m.node_layers[-1], out_dim)]
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"{kind} basis", total=n_nodes - 1)
        for layer in range(n_nodes - 2, -1, -1):
            name = m.node_layers[layer]
            if kind == "neuron":
                bases.append(_neuron_basis(name, moments[layer]))
            else:
                bases.append(
                    _rotated_basis(
                        m, layer, moments[layer], bases[-1].C, inputs, kind, tau, rtol, batch_size
                    )
                )
            bar.advance(task)
    return bases[::-1]


def _rotated_basis(
    m: NodeLayerModel,
    layer: int,
    acc: MomentAccumulator,
    C_next: Tensor,
    inputs: Tensor,
    kind: BasisKind,
    tau: float,
    rtol: float,
    batch_size: int,
) -> LayerBasis:
    name = m.node_layers[layer]
    gram_vals, gram_vecs = move_const_first(*eigh_desc(acc.gram(center=True)))
    keep = gram_vals > max(tau, rtol * float(gram_vals.max()))
    keep[0] = True
    U, D = gram_vecs[:, keep], gram_vals[keep]
    Y, Y_inv = centering_matrix(acc.mean), centering_matrix(acc.mean, inverse=True)
    W, W_pinv = Y @ U, U.T @ Y_inv
    if kind == "pca":
        return LayerBasis(name, "pca", W, W_pinv, D, True, gram_vals, torch.zeros(0))
    R, R_pinv = W / D.sqrt(), D.sqrt()[:, None] * W_pinv
    M = R_pinv @ jacobian_gram(m, layer, C_next, inputs, batch_size) @ R_pinv.T
    lam_all, V_all = masked_eigh(M, 1)
    cut = max(tau, rtol * float(lam_all.max()))
    kept = lam_all > cut
    kept[0] = True
    lam, V = lam_all[kept], V_all[:, kept]
    scale = lam.sqrt()
    if float(lam[0]) <= cut:  # the constant direction does not matter downstream: keep it unscaled
        scale[0] = 1.0
    C = R @ V * scale
    C_pinv = (V.T @ R_pinv) / scale[:, None]
    return LayerBasis(name, "lib", C, C_pinv, lam, True, gram_vals, lam_all)
