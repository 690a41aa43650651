"""The modularity metric finds the known blocks of rib's hand-built block-diagonal MLP in every
basis, and does not report two clean modules for a network without blocks."""

from __future__ import annotations

import pytest
import torch

from mechscope.basis.edges import compute_edges, find_modules, interaction_graph, sparsity
from mechscope.basis.handbuilt import block_diagonal_mlp, block_product_inputs, feature_blocks
from mechscope.basis.interaction import build_basis
from mechscope.basis.models import MLP, MLPConfig

RESOLUTION = 0.1  # low: one module per block; at 1.0 Louvain also cuts a block's layer chain


@pytest.fixture(scope="module")
def modular():
    return block_diagonal_mlp(width=8, n_hidden=4, first_block=4, seed=0), block_product_inputs(40)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind", ["lib", "pca", "neuron"])
def test_modules_are_the_blocks(kind: str, seed: int) -> None:
    mlp, x = block_diagonal_mlp(seed=seed), block_product_inputs(40, seed=seed)
    bases = build_basis(mlp, x, kind=kind)
    edges = compute_edges(mlp, bases, x)
    blocks = [feature_blocks(b, 4) for b in bases]
    # every non-constant direction lives in one block ...
    for b, fb in zip(bases, blocks, strict=True):
        assert all(f in (0, 1) for k, f in enumerate(fb) if not (b.has_const and k == 0)), b.name
    # ... no edge crosses blocks ...
    for layer, E in enumerate(edges):
        for i, j in torch.nonzero(1e-20 * E.max() < E).tolist():
            if blocks[layer][j] != -1:
                assert blocks[layer + 1][i] == blocks[layer][j]
    # ... and the modularity clustering recovers exactly the two blocks
    graph = interaction_graph(bases, edges)
    mods = find_modules(graph, resolution=RESOLUTION, seed=0)
    assert len(mods.communities) == 2
    found = sorted({blocks[li][k] for li, k in c}.pop() for c in mods.communities)
    assert found == [0, 1]
    assert all(len({blocks[li][k] for li, k in c}) == 1 for c in mods.communities)
    assert mods.within_fraction == pytest.approx(1.0, abs=1e-9)
    # two disconnected modules holding shares f, 1 - f of the edge weight: Q = 2 f (1 - f)
    w_first = sum(d["weight"] for u, _, d in graph.edges(data=True) if blocks[u[0]][u[1]] == 0)
    f = w_first / graph.size(weight="weight")
    assert mods.modularity == pytest.approx(2 * f * (1 - f), rel=1e-9)


def test_dense_network_has_no_clean_modules(modular) -> None:
    _, x = modular
    torch.manual_seed(0)
    dense = MLP(MLPConfig(d_in=8, hidden=(8,) * 4, d_out=8))
    bases = build_basis(dense, x, kind="lib")
    edges = compute_edges(dense, bases, x)
    mods = find_modules(interaction_graph(bases, edges), resolution=RESOLUTION, seed=0)
    assert len(mods.communities) == 1  # one module: nothing to split
    assert mods.modularity == pytest.approx(0.0, abs=1e-9)
    assert all(s.edges_99 > 0 for s in sparsity(bases, edges))
