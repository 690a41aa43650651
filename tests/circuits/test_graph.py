"""The graph: ACDC's edge counts, names, order, node errors."""

from __future__ import annotations

import pytest

from mechscope.circuits.graph import Graph
from mechscope.errors import CircuitError


@pytest.mark.parametrize(
    ("layers", "heads", "mlp", "split", "dc", "count"),
    [
        (4, 8, False, False, True, 1377),  # attn-only-4l (docstring), ACDC's count
        (12, 12, True, False, True, 32923),  # GPT-2 small, ACDC
        (4, 8, False, False, False, 1281),  # auto-circuit / EAP-IG style (no dc edges)
        (12, 12, True, False, False, 32491),
        (4, 1, True, True, True, 106),  # tracr-reverse
        (2, 1, True, True, True, 38),  # tracr-proportion
    ],
)
def test_edge_counts_match_acdc(layers, heads, mlp, split, dc, count):
    assert len(Graph(layers, heads, mlp, split, dc).edges) == count


def test_edges_respect_the_forward_order():
    g = Graph(2, 2, True)
    names = {e.name for e in g.edges}
    assert "0.1->mlp0" in names and "0.1->1.0.q" in names and "mlp0->1.1.v" in names
    assert "0.1->0.0.q" not in names and "mlp1->1.0.k" not in names and "1.0->mlp0" not in names
    assert "input->logits" in names and "1.0.q->1.0" in names
    assert g.summary().startswith(f"{len(g.nodes)} nodes, {len(g.edges)} edges")


def test_acdc_steps_visit_every_edge_once_receivers_last_first():
    g = Graph(3, 2, True)
    steps = g.acdc_steps()
    flat = [i for _, ids in steps for i in ids]
    assert sorted(flat) == list(range(len(g.edges)))
    assert steps[0][0] == "logits" and steps[1][0] == "mlp2"
    # logits: the last MLP first, then the last layer's heads H-1..0, inputs last
    first = [g.edges[i].sender for i in steps[0][1]]
    assert first[:3] == ["mlp2", "2.1", "2.0"] and first[-1] == "input"
    # dc edges of a layer come before its q/k/v inputs, v first
    nodes = [n for n, _ in steps]
    assert nodes.index("2.1") < nodes.index("2.1.v") < nodes.index("2.1.k") < nodes.index("2.1.q")


def test_unknown_nodes_and_edges_raise_clear_errors():
    g = Graph(2, 2, True)
    with pytest.raises(CircuitError, match="unknown node"):
        g.mask(["5.0->logits"])
    with pytest.raises(CircuitError, match="unknown node"):
        g.check_nodes(["mlp7"])
    with pytest.raises(CircuitError, match="sender must come before"):
        g.mask(["1.0->0.0.q"])
    assert g.mask(["0.0->logits"]).sum() == 1


def test_without_grouped_query_attention_the_graph_is_unchanged():
    for args in [(4, 8, False), (2, 2, True), (4, 1, True, True)]:
        a, b = Graph(*args), Graph(*args, n_kv_heads=args[1])
        assert a.edges == b.edges and a.receivers == b.receivers and a.senders == b.senders


def _count(L: int, H: int, K: int, mlp: bool, parallel: bool) -> int:
    """Edges counted from the definition: every sender into every later receiver, 3H dc edges."""
    n = 0
    for l in range(L):
        before = 1 + l * (H + mlp)  # input and the earlier layers' senders
        n += (H + 2 * K) * before
        n += mlp * (before + (0 if parallel else H))
    return n + 1 + L * (H + mlp) + 3 * H * L


@pytest.mark.parametrize(("K", "parallel"), [(2, False), (1, False), (4, True), (2, True)])
def test_gqa_and_parallel_graphs(K, parallel):
    g = Graph(2, 4, True, n_kv_heads=K, parallel=parallel)
    assert len(g.edges) == _count(2, 4, K, True, parallel)
    names = {e.name for e in g.edges}
    assert f"1.{K - 1}.k" in g.receivers and f"1.{K}.k" not in g.receivers
    assert "1.3.q" in g.receivers and "0.3->1.3.q" in names and f"mlp0->1.{K - 1}.v" in names
    assert ("0.1->mlp0" in names) != parallel and "mlp0->mlp1" in names and "0.1->mlp1" in names
    # each query head reads key/value head h // group through its own dc edge
    group = 4 // K
    dc = [e.name for e in g.edges if e.kind == "dc" and e.sender.endswith(".k")]
    assert dc == [f"{l}.{h // group}.k->{l}.{h}" for l in range(2) for h in range(4)]
    assert [g.edges[i].receiver for i in g.out_edges("1.0.k")] == [f"1.{h}" for h in range(group)]
    nodc = Graph(2, 4, True, dc_edges=False, n_kv_heads=K)
    assert nodc.out_edges("1.0.k") == [i for h in range(group) for i in nodc.out_edges(f"1.{h}")]
    assert g.heads_of(g.mask([f"input->0.{K - 1}.v"])) == [f"0.{h}" for h in range(4 - group, 4)]
    steps = g.acdc_steps()
    assert sorted(i for _, ids in steps for i in ids) == list(range(len(g.edges)))
    with pytest.raises(CircuitError, match="multiple of n_kv_heads"):
        Graph(2, 4, True, n_kv_heads=3)


def test_from_model_reads_key_value_heads_and_parallel_blocks(toy_dir):
    import mechscope

    llama = mechscope.load_model(toy_dir("llama"))  # a bridge: 4 query heads, 2 key/value heads
    g = Graph.from_model(llama)
    assert (g.n_heads, g.n_kv_heads, g.parallel) == (4, 2, False)
    neox = Graph.from_model(mechscope.load_model(toy_dir("gpt_neox")))
    assert (neox.n_kv_heads, neox.parallel) == (4, True)
    assert "0.0->mlp0" not in neox.edge_index and "0.0->mlp1" in neox.edge_index
