"""Hand-built networks whose structure is known: rib's block-diagonal (modular) MLP, and
constructions that add a known amount of degeneracy to an MLP."""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from mechscope.basis.interaction import LayerBasis
from mechscope.basis.models import MLP, MLPConfig
from mechscope.errors import BasisError


def block_diagonal_mlp(
    width: int = 8, n_hidden: int = 4, first_block: int = 4, std: float = 1.0, seed: int = 0
) -> MLP:
    """rib's modular MLP: width -> width (x n_hidden) -> width, every weight matrix block-diagonal
    with two blocks (first_block and width - first_block), entries std * N(0, 1), zero biases.
    Unlike rib (one seed for all layers) each layer draws its own weights."""
    if not 0 < first_block < width:
        raise BasisError(f"first_block must be in (0, {width}), got {first_block}")
    mlp = MLP(MLPConfig(d_in=width, hidden=(width,) * n_hidden, d_out=width))
    g = torch.Generator().manual_seed(seed)
    second = width - first_block
    with torch.no_grad():
        for i in range(len(mlp.layers)):
            lin = mlp.linear(i)
            blocks = [std * torch.randn(n, n, generator=g) for n in (first_block, second)]
            lin.weight.copy_(torch.block_diag(*blocks))
            lin.bias.zero_()
    return mlp


def block_product_inputs(
    n_per_block: int = 60, width: int = 8, first_block: int = 4, seed: int = 0
) -> Tensor:
    """Inputs [n_per_block^2, width] whose two blocks are independent *on the sample*: every
    combination of n_per_block standard-normal vectors of the first block with n_per_block of the
    second. Any function of one block is then exactly uncorrelated with any function of the other
    on this data set, so the blocks separate exactly (i.i.d. Gaussian inputs, as in rib's
    `block_vector` data set, have O(1/sqrt(N)) cross-block sample covariance, which mixes them)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n_per_block, first_block, generator=g)
    b = torch.randn(n_per_block, width - first_block, generator=g)
    ia, ib = torch.meshgrid(torch.arange(n_per_block), torch.arange(n_per_block), indexing="ij")
    return torch.cat([a[ia.flatten()], b[ib.flatten()]], dim=1)


def feature_blocks(basis: LayerBasis, first_block: int, tol: float = 1e-8) -> list[int]:
    """Which block each basis direction lives in: 0, 1, or -1 (the constant one, or mixed).

    A direction's block is read from its column of C [d, r] (rows of the two blocks' units; the
    constant row ignored), where entries below tol * the column's largest count as zero.
    """
    out = []
    for k in range(basis.dim):
        col = basis.C[:, k].abs() if basis.kind == "identity" else basis.C[:-1, k].abs()
        if (basis.has_const and k == 0) or float(col.max()) == 0:
            out.append(-1)
            continue
        big = col > tol * col.max()
        in_first, in_second = bool(big[:first_block].any()), bool(big[first_block:].any())
        out.append(0 if in_first and not in_second else 1 if in_second and not in_first else -1)
    return out


def duplicate_neurons(mlp: MLP, layer: int, neurons: list[int]) -> MLP:
    """A copy of `mlp` whose hidden layer `layer` gets one extra copy of each neuron in `neurons`
    (same in-weights and bias; the out-weights split equally between original and copy), so the
    function is unchanged and the layer has len(neurons) linearly dependent activations."""
    if not 0 <= layer < len(mlp.cfg.hidden):
        raise BasisError(f"hidden layer {layer} does not exist; the MLP has {len(mlp.cfg.hidden)}")
    hidden = list(mlp.cfg.hidden)
    hidden[layer] += len(neurons)
    out = MLP(MLPConfig(mlp.cfg.d_in, tuple(hidden), mlp.cfg.d_out)).to(mlp.linear(0).weight.dtype)
    idx = torch.tensor(neurons, dtype=torch.long)
    with torch.no_grad():
        for i in range(len(mlp.layers)):
            src, dst = mlp.linear(i), out.linear(i)
            w, b = src.weight.clone(), src.bias.clone()
            if i == layer:  # the copies' in-weights and biases
                w, b = torch.cat([w, w[idx]]), torch.cat([b, b[idx]])
            if i == layer + 1:  # the out-weights, split between original and copy
                w[:, idx] /= 2
                w = torch.cat([w, w[:, idx]], dim=1)
            dst.weight.copy_(w)
            dst.bias.copy_(b)
    return out


def remove_read_direction(mlp: MLP, layer: int, seed: int = 0) -> tuple[MLP, Tensor]:
    """A copy of `mlp` in which the linear map after hidden layer `layer` no longer reads one
    direction v of that layer's activations: W_next <- W_next (I - v v^T), v a random unit vector
    in the row space of W_next (so one read direction is lost). Returns (mlp, v [width])."""
    if not 0 <= layer < len(mlp.cfg.hidden):
        raise BasisError(f"hidden layer {layer} does not exist; the MLP has {len(mlp.cfg.hidden)}")
    out = copy.deepcopy(mlp)
    lin = out.linear(layer + 1)
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(lin.weight.shape[0], generator=g, dtype=torch.float64)
    v = lin.weight.double().T @ u
    v = v / v.norm()
    with torch.no_grad():
        w = lin.weight.double()
        lin.weight.copy_((w - torch.outer(w @ v, v)).to(lin.weight.dtype))
    return out, v.to(lin.weight.dtype)
