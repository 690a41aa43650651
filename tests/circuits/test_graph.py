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
