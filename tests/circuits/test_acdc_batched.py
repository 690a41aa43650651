"""Batched ACDC (several candidate edges per pass) against the sequential search (one edge per
pass) and the literal reference: the same kept edges and the same per-edge scores, on every
bundled model with the docstring task and on the tracr programs."""

from __future__ import annotations

import pytest
import torch

from mechscope.circuits import Graph, acdc, acdc_reference
from mechscope.circuits.tracr import load_tracr, shuffle_positions, tracr_metric
from mechscope.circuits.tracr_eval import acdc_prompts


def assert_same_search(batched, sequential):
    """Identical kept edges and tested edges, and per-edge metric differences equal to 1e-6 of
    the metric's scale (float32 values of the metric: the fully ablated model's, plus 1)."""
    assert torch.equal(batched.present, sequential.present)
    assert batched.meta["edge_tests"] == sequential.meta["edge_tests"]
    tested = ~torch.isnan(sequential.scores)
    assert torch.equal(tested, ~torch.isnan(batched.scores))
    diff = (batched.scores[tested] - sequential.scores[tested]).abs().max()
    assert diff <= 1e-6 * (1 + abs(sequential.ablated))


@pytest.fixture(scope="module")
def bundled():
    """name -> (LeanModel, clean, corrupt): 6 docstring prompts (seed 0)."""
    import mechscope
    from mechscope.models.lean import LeanModel
    from mechscope.tasks import make_task

    cache: dict[str, tuple] = {}

    def get(name: str) -> tuple:
        if name not in cache:
            bridge = mechscope.load_model(name)
            task = make_task("docstring", bridge.tokenizer, n=6, seed=0)
            cache[name] = (LeanModel(bridge), task.clean_tokens, task.corrupt_tokens)
        return cache[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", ["code-attn4", "code-2l", "code-4l", "code-llama-2l"])
@pytest.mark.parametrize("frac", [0.001, 0.01])
def test_batched_equals_sequential_on_the_bundled_models(bundled, name, frac):
    lean, clean, corrupt = bundled(name)
    tau = frac * acdc(lean, clean, corrupt, 1e9).ablated  # the models' KL scales differ
    seq = acdc(lean, clean, corrupt, tau, batch_size=1)
    fast = acdc(lean, clean, corrupt, tau)
    assert_same_search(fast, seq)
    assert fast.meta["delta_passes"] < seq.meta["delta_passes"]  # edges were tested together
    assert 0 < seq.n_edges < len(seq.graph.edges)


@pytest.mark.slow
def test_batched_equals_sequential_in_auto_circuits_order_without_skipping(bundled):
    """The benchmark's search: no q/k/v computation edges, edges by receiver layer (latest
    first), receivers interleaved within a layer, every edge tested."""
    lean, clean, corrupt = bundled("code-attn4")
    g = Graph.from_model(lean, dc_edges=False)
    gen = torch.Generator().manual_seed(0)
    order = []
    for layer in reversed(range(g.n_layers + 1)):
        edges = [e.name for e in g.edges if g.layer(e.receiver) == layer]
        order += [edges[i] for i in torch.randperm(len(edges), generator=gen).tolist()]
    kw = dict(graph=g, order=order, skip_disconnected=False)
    seq = acdc(lean, clean, corrupt, 0.01, batch_size=1, **kw)
    assert_same_search(acdc(lean, clean, corrupt, 0.01, **kw), seq)
    assert seq.meta["edge_tests"] == len(g.edges)


@pytest.mark.parametrize("program", ["reverse", "proportion"])
@pytest.mark.parametrize("truth", ["zero", "resample_shuffled"])
def test_batched_equals_sequential_and_reference_on_tracr(program, truth):
    task = load_tracr(program)
    clean, corrupt = acdc_prompts(task, seed=0)
    metric = tracr_metric(task.model, clean)
    ablation = "zero" if truth == "zero" else "resample"
    corrupt = corrupt if ablation == "resample" else None
    hooks = shuffle_positions(clean.shape[1]) if truth == "resample_shuffled" else None
    for tau in (1e-4, 0.03):
        kw = dict(metric=metric, ablation=ablation, graph=task.graph, ablation_hooks=hooks)
        seq = acdc(task.model, clean, corrupt, tau, batch_size=1, **kw)
        fast = acdc(task.model, clean, corrupt, tau, **kw)
        ref = acdc_reference(task.model, clean, corrupt, tau, **kw)
        assert_same_search(fast, seq)
        assert_same_search(ref, seq)
        assert 0 < seq.n_edges < len(task.graph.edges) // 2
