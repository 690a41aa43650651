"""ROC / AUC (trapezoid and ACDC's pessimistic rule), ACDC's node view, faithfulness curve.

The areas and the node counts are held to literal copies of the reference code: ACDC's
`discard_non_pareto_optimal` + `pessimistic_auc` (notebooks/make_plotly_plots.py,
acdc/acdc_graphics.py), auto-circuit's `measurements_auc`, and ACDC's `get_present_nodes` +
`filter_nodes` + `get_node_stats` (acdc/acdc_utils.py) on ACDC's own edge tuples.
"""

from __future__ import annotations

import contextlib

import numpy as np
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
from mechscope.circuits.evaluate import acdc_nodes, node_mask, roc_from_circuits, roc_from_scores
from mechscope.errors import CircuitError


# -- literal copies of the reference implementations ---------------------------------------------
def acdc_discard_non_pareto_optimal(points):
    ret = []
    for x, y in points:
        for x1, y1 in points:
            if x1 < x and y1 > y and (x1, y1) != (x, y):
                break
        else:
            ret.append((x, y))
    return list(sorted(ret))


def acdc_pessimistic_auc(xs, ys):
    i = np.lexsort((ys, xs))
    xs = np.array(xs, dtype=np.float64)[i]
    ys = np.array(ys, dtype=np.float64)[i]
    dys = np.diff(ys)
    assert np.all(np.diff(xs) >= 0), "not sorted"
    assert np.all(dys >= 0), "not monotonically increasing"
    return np.sum((1 - xs)[1:] * dys)


def acdc_area(points):
    xs, ys = zip(*acdc_discard_non_pareto_optimal(points), strict=True)
    return float(acdc_pessimistic_auc(xs, ys))


def autocircuit_measurements_auc(points, eps=1e-3):
    points = sorted(points, key=lambda x: x[0])
    assert points[0][0] == 0
    y_baseline = points[0][1]
    area = 0.0
    for i in range(1, len(points)):
        x1, y1 = points[i - 1]
        x2, y2 = points[i]
        height_1, height_2 = y1 - y_baseline, y2 - y_baseline
        area += (x2 - x1) * (height_1 + height_2) / 2.0
    return max(area, eps)


def acdc_tuples(g: Graph):
    """ACDC's edges of g as (child hook, child index, parent hook, parent index, kind), with
    its uncounted placeholder edges (q/k/v -> head output, MLP input -> output)."""
    last = g.n_layers - 1

    def sender(n):
        if n in ("embed", "pos_embed"):
            return f"hook_{n}", (None,)
        if n == "input":
            return "blocks.0.hook_resid_pre", (None,)
        if n.startswith("mlp"):
            return f"blocks.{n[3:]}.hook_mlp_out", (None,)
        l, h = n.split(".")
        return f"blocks.{l}.attn.hook_result", (None, None, int(h))

    def receiver(n):
        if n == "logits":
            return f"blocks.{last}.hook_resid_post", (None,)
        if n.startswith("mlp"):
            return f"blocks.{n[3:]}.hook_mlp_in", (None,)
        l, h, x = n.split(".")
        return f"blocks.{l}.hook_{x}_input", (None, None, int(h))

    out = []
    for e in g.edges:
        if e.kind == "add":
            out.append((*receiver(e.receiver), *sender(e.sender), "add"))
        else:
            l, h, x = e.sender.split(".")
            qkv = f"blocks.{l}.attn.hook_{x}", (None, None, int(h))
            out.append((*qkv, *receiver(e.sender), "dc"))
    for l in range(g.n_layers):
        for h in range(g.n_heads):
            for x in "qkv":
                res, q = f"blocks.{l}.attn.hook_result", f"blocks.{l}.attn.hook_{x}"
                out.append((res, (None, None, h), q, (None, None, h), "placeholder"))
        if g.has_mlp:
            out.append(
                (f"blocks.{l}.hook_mlp_out", (None,), f"blocks.{l}.hook_mlp_in", (None,), "ph")
            )
    return out


def acdc_present_nodes(tuples, present):
    present_nodes, all_nodes = set(), set()
    for t, p in zip(tuples, present, strict=True):
        all_nodes.add((t[0], t[1]))
        all_nodes.add((t[2], t[3]))
        if p and t[4] in ("add", "dc"):
            present_nodes.add((t[0], t[1]))
            present_nodes.add((t[2], t[3]))
    return present_nodes, all_nodes


def acdc_filter_nodes(nodes):
    all_nodes = nodes.copy()
    for node in nodes:
        if "resid_mid" in node[0] or "mlp_in" in node[0]:
            with contextlib.suppress(IndexError):  # ACDC: try/except, always fails
                all_nodes.add((f"blocks.{node[0].split()[1]}.hook_mlp_out", node[1]))
            all_nodes.remove(node)
        for letter in "qkv":
            hook_name = f"hook_{letter}_input"
            if hook_name in node[0]:
                all_nodes.add((node[0].replace(hook_name, f"hook_{letter}"), node[1]))
                all_nodes.remove(node)
    return all_nodes


def acdc_node_stats(g: Graph, truth, recovered):
    tuples = acdc_tuples(g)
    pad = [False] * (len(tuples) - len(g.edges))  # placeholders: present, never counted
    gt, all_nodes = acdc_present_nodes(tuples, truth.tolist() + pad)
    rec, _ = acdc_present_nodes(tuples, recovered.tolist() + pad)
    all_nodes, gt, rec = map(acdc_filter_nodes, (all_nodes, gt, rec))
    return {
        "tp": len(gt & rec),
        "fp": len(rec - gt),
        "fn": len(gt - rec),
        "tn": len(all_nodes - gt - rec),
        "all": len(all_nodes),
    }


# -- tests ----------------------------------------------------------------------------------------
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


def test_areas_equal_acdcs_and_auto_circuits_code_on_random_circuits():
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        n = int(torch.randint(5, 40, (1,), generator=g))
        truth = torch.rand(n, generator=g) < 0.3
        truth[0], truth[1] = True, False
        sizes = torch.rand(6, generator=g).tolist()
        circuits = [torch.rand(n, generator=g) < size for size in sizes]
        pts = roc_from_circuits(circuits, truth)
        assert pessimistic_auc(pts) == pytest.approx(acdc_area(pts), abs=1e-12), trial
        assert auc(pts) == pytest.approx(autocircuit_measurements_auc(pts), abs=1e-12), trial


def test_pessimistic_auc_of_acdcs_stored_tracr_points_gives_the_papers_numbers():
    """experiments/results/plots_data/acdc-tracr-*-l2-False-0.json (resample ablation, scored
    against the zero-ablation truth): distinct (FPR, TPR) points of the stored sweeps."""
    stored = {
        "reverse edges": ([(0, 0), (0, 0.2), (0, 2 / 15), (1, 1)], 0.2),
        "reverse nodes": ([(0, 0), (0, 0.3125), (0, 0.25), (1, 1)], 0.3125),
        "proportion edges": ([(0, 0), (0, 0.6), (1, 1)], 0.6),
        "proportion nodes": ([(0, 0), (0, 8 / 11), (1, 1)], 8 / 11),
    }
    for pts, area in stored.values():
        assert pessimistic_auc(pts) == pytest.approx(area) == acdc_area(pts)


@pytest.mark.parametrize(
    ("layers", "heads", "mlp", "split", "dc"),
    [(4, 1, True, True, True), (2, 2, True, False, True), (3, 2, False, False, True)],
)
def test_nodes_are_counted_as_acdcs_get_node_stats(layers, heads, mlp, split, dc):
    g = Graph(layers, heads, mlp, split, dc)
    gen = torch.Generator().manual_seed(layers * 10 + heads)
    truth = torch.rand(len(g.edges), generator=gen) < 0.2
    for density in (0.0, 0.05, 0.2, 0.5, 1.0):
        rec = torch.rand(len(g.edges), generator=gen) < density
        want = acdc_node_stats(g, truth, rec)
        t, r = node_mask(g, truth), node_mask(g, rec)
        got = {
            "tp": int((t & r).sum()),
            "fp": int((r & ~t).sum()),
            "fn": int((t & ~r).sum()),
            "tn": int((~t & ~r).sum()),
            "all": len(acdc_nodes(g)),
        }
        assert got == want


def test_roc_of_circuits_and_nodes():
    g = Graph(1, 1, False)  # input -> 0.0.{q,k,v}, input -> logits, 0.0 -> logits, 3 dc
    truth = g.mask(["input->0.0.v", "0.0.v->0.0", "0.0->logits"])
    r = roc(g, truth, circuits=[truth, torch.ones(len(g.edges), dtype=torch.bool)])
    assert r.edge_auc == 1.0 and r.edge_auc_pessimistic == 1.0
    assert node_mask(g, truth).sum() == 5  # input, 0.0, 0.0.v, 0.0.hook_v, logits
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
