"""ACDC: the fast search finds exactly the reference's circuit; errors; files."""

from __future__ import annotations

import json

import pytest
import torch

from mechscope.circuits import Circuit, Graph, acdc, acdc_reference, task_circuit_metric
from mechscope.circuits.render import to_dot, write
from mechscope.errors import CircuitError
from mechscope.models.lean import as_lean
from mechscope.tasks.base import Task


@pytest.mark.parametrize("tau", [0.0, 0.003, 0.02, 0.1])
@pytest.mark.parametrize("ablation", ["resample", "zero"])
@pytest.mark.parametrize("batch", [1, 3, 16])
def test_fast_equals_reference(tiny, prompts, tau, ablation, batch):
    clean, corrupt = prompts
    corrupt = corrupt if ablation == "resample" else None
    ref = acdc_reference(tiny, clean, corrupt, tau, ablation=ablation)
    fast = acdc(tiny, clean, corrupt, tau, ablation=ablation, batch_size=batch)
    assert torch.equal(ref.present, fast.present)
    assert ref.meta["edge_tests"] == fast.meta["edge_tests"]
    # not trivial: something was removed and (below the largest tau) something kept
    assert 0 < ref.n_edges < len(ref.graph.edges) or tau == 0.0


def test_fast_equals_reference_without_dc_edges_and_in_an_explicit_order(tiny_attn, prompts):
    clean, corrupt = prompts
    g = Graph.from_model(tiny_attn, dc_edges=False)
    order = [e.name for e in sorted(g.edges, key=lambda e: -g.layer(e.receiver))]
    for skip in (True, False):
        kw = dict(graph=g, order=order, skip_disconnected=skip)
        ref = acdc_reference(tiny_attn, clean, corrupt, 0.01, **kw)
        fast = acdc(tiny_attn, clean, corrupt, 0.01, **kw)
        assert torch.equal(ref.present, fast.present)


def test_circuit_shape_properties(tiny, prompts):
    c = acdc(tiny, *prompts, tau=0.01)
    g = c.graph
    for node in g.nodes_of(c.present) - {"input", "logits"}:
        if node.count(".") == 2 or node.startswith("mlp") or node[0].isdigit():
            out = g.out_edges(node)
            assert bool(c.present[out].any()), node  # every kept node still reaches the output
    assert c.full == pytest.approx(0.0, abs=1e-5)  # KL of the full model to itself
    assert c.value is not None and c.ablated is not None and c.value < c.ablated
    everything = acdc(tiny, *prompts, tau=1e9)
    assert everything.n_edges == 0
    nothing_removed = acdc(tiny, *prompts, tau=0.0, metric=None)
    assert nothing_removed.n_edges >= c.n_edges


def test_task_metric_works(tiny, prompts):
    clean, corrupt = prompts
    task = Task("toy", clean, corrupt, torch.tensor([1, 2, 3, 4]), torch.tensor([[0]] * 4))
    m = task_circuit_metric(task, "logit_diff")
    ref = acdc_reference(tiny, clean, corrupt, 0.05, metric=m)
    assert torch.equal(ref.present, acdc(tiny, clean, corrupt, 0.05, metric=m).present)
    assert ref.metric == "logit_diff"


@pytest.mark.parametrize("tau", [-0.1, float("nan"), float("inf"), "big"])
def test_bad_tau(tiny, prompts, tau):
    with pytest.raises(CircuitError, match="tau"):
        acdc(tiny, *prompts, tau=tau)


def test_corrupt_prompts_of_another_length(tiny, prompts):
    clean, corrupt = prompts
    with pytest.raises(CircuitError, match="same token length"):
        acdc(tiny, clean, corrupt[:, :-1], tau=0.01)
    with pytest.raises(CircuitError, match="resample ablation needs"):
        acdc(tiny, clean, None, tau=0.01)
    with pytest.raises(CircuitError, match="Unknown ablation"):
        acdc(tiny, clean, corrupt, tau=0.01, ablation="mean")


def test_unknown_node_in_an_order(tiny, prompts):
    with pytest.raises(CircuitError, match="unknown node"):
        acdc(tiny, *prompts, tau=0.01, order=["7.0->logits"])


def test_save_load_and_render(tiny, prompts, tmp_path):
    c = acdc(tiny, *prompts, tau=0.01)
    paths = write(c, tmp_path / "c")
    assert [p.suffix for p in paths] == [".json", ".dot", ".html"]
    back = Circuit.load(paths[0])
    assert torch.equal(back.present, c.present) and back.tau == c.tau
    d = json.loads(paths[0].read_text())
    assert d["n_edges"] == c.n_edges and d["faithfulness"] == pytest.approx(c.faithfulness)
    dot = to_dot(c)
    assert dot.count("->") == c.n_edges and f"{c.n_edges} of {len(c.graph.edges)}" in dot
    page = paths[2].read_text()
    assert c.edges[0].split("->")[0] in page and "faithfulness" in page
    with pytest.raises(CircuitError, match="not a mechscope circuit"):
        (tmp_path / "bad.json").write_text("{}")
        Circuit.load(tmp_path / "bad.json")


@pytest.mark.parametrize("ablation", ["resample", "zero"])
def test_fast_equals_reference_on_gqa_and_parallel_models(
    toy_lean, toy_family, toy_prompts, ablation
):
    lean = toy_lean(toy_family)
    clean, corrupt = toy_prompts
    corrupt = corrupt if ablation == "resample" else None
    empty = acdc_reference(lean, clean, corrupt, 1e9, ablation=ablation)
    tau = 0.01 * empty.ablated  # the toys' KL scales differ by 1000x
    ref = acdc_reference(lean, clean, corrupt, tau, ablation=ablation)
    fast = acdc(lean, clean, corrupt, tau, ablation=ablation)
    assert torch.equal(ref.present, fast.present)
    assert ref.meta["edge_tests"] == fast.meta["edge_tests"]
    assert 0 < ref.n_edges < len(ref.graph.edges) - 20


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text", "olmo2"])
def test_models_without_per_head_edges_are_refused_before_any_work(toy_dir, toy_prompts, family):
    import mechscope
    from mechscope.circuits import eap_scores
    from mechscope.circuits.metric import kl_metric
    from mechscope.circuits.patched import CircuitRunner

    bridge = mechscope.load_model(toy_dir(family))
    why = "post-attention / post-MLP norms rescale the summed head outputs"
    with pytest.raises(CircuitError, match=f"cannot be computed on .*{why}"):
        Graph.from_model(bridge)
    with pytest.raises(CircuitError, match=why):
        acdc(bridge, *toy_prompts, tau=0.01)
    with pytest.raises(CircuitError, match=why):
        eap_scores(bridge, *toy_prompts, kl_metric(torch.zeros(3, 1, 4096)))
    with pytest.raises(CircuitError, match=why):  # a graph built by hand is refused too
        CircuitRunner(as_lean(bridge), Graph(2, 4, True, n_kv_heads=2), *toy_prompts)


def test_gqa_circuit_saves_and_loads(toy_lean, toy_prompts, tmp_path):
    c = acdc(toy_lean("llama"), *toy_prompts, tau=1e-4)
    back = Circuit.load(c.save(tmp_path / "c"))
    assert back.graph.n_kv_heads == 2 and back.graph.edges == c.graph.edges
    assert torch.equal(back.present, c.present)
