"""ROC / AUC (trapezoid and ACDC's pessimistic rule), node view, faithfulness curve."""

from __future__ import annotations

import pytest
import torch

from mechscope.circuits import (
    CircuitRunner,
    Graph,
    auc,
    faithfulness_curve,
    kl_metric,
    pessimistic_auc,
    roc,
)
from mechscope.circuits.evaluate import node_mask, roc_from_circuits, roc_from_scores
from mechscope.errors import CircuitError


def test_auc_of_perfect_reversed_and_tied_scores():
    truth = torch.tensor([True, True, False, False, False])
    perfect = torch.tensor([5.0, 4.0, 1.0, 0.5, 0.1])
    assert auc(roc_from_scores(perfect, truth)) == 1.0
    assert auc(roc_from_scores(-1 / perfect, truth)) == 0.0  # |score| ranks the other way
    tied = torch.ones(5)
    assert auc(roc_from_scores(tied, truth)) == pytest.approx(0.5)


def test_pessimistic_auc_is_a_staircase_on_the_pareto_front():
    pts = [(0.0, 0.0), (0.2, 0.5), (0.3, 0.4), (0.5, 1.0), (1.0, 1.0)]
    # (0.3, 0.4) is dominated by (0.2, 0.5); area = 0.8 * 0.5 + 0.5 * 0.5
    assert pessimistic_auc(pts) == pytest.approx(0.65)
    assert auc([(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)]) == 1.0


def test_roc_of_circuits_and_nodes():
    g = Graph(1, 1, False)  # input -> 0.0.{q,k,v}, input -> logits, 0.0 -> logits, 3 dc
    truth = g.mask(["input->0.0.v", "0.0.v->0.0", "0.0->logits"])
    r = roc(g, truth, circuits=[truth, torch.ones(len(g.edges), dtype=torch.bool)])
    assert r.edge_auc == 1.0 and r.edge_auc_pessimistic == 1.0
    assert node_mask(g, truth).sum() == 4  # input, 0.0, 0.0.v, logits
    assert roc_from_circuits([truth], truth)[1] == (0.0, 1.0)
    with pytest.raises(CircuitError, match="some but not all"):
        roc_from_scores(torch.ones(len(g.edges)), torch.zeros(len(g.edges), dtype=torch.bool))


def test_faithfulness_curve_ends_at_the_full_model(tiny, prompts):
    g = Graph.from_model(tiny)
    r = CircuitRunner(tiny, g, *prompts)
    m = kl_metric(r.clean_logits)
    s = torch.randn(len(g.edges), generator=torch.Generator().manual_seed(0))
    curve = faithfulness_curve(r, m, s, [0, 10, len(g.edges)])
    f = curve.faithfulness
    assert f[0] == pytest.approx(0.0, abs=1e-5) and f[-1] == pytest.approx(1.0, abs=1e-5)
