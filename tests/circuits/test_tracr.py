"""tracr ground truth: the bundled models compute their programs, the truth, ACDC recovers it."""

from __future__ import annotations

import pytest
import torch

from mechscope.circuits import acdc, roc
from mechscope.circuits.patched import CircuitRunner
from mechscope.circuits.tracr import TRACR_DIR, build_tracr, load_tracr

# The ACDC repository's truth for tracr-reverse (acdc/tracr_task/utils.py), in mechscope names.
ACDC_REVERSE = {
    "3.0->logits", "mlp2->3.0.q", "pos_embed->3.0.k", "embed->3.0.v", "mlp1->mlp2",
    "mlp0->mlp1", "embed->mlp1", "pos_embed->mlp1", "0.0->mlp0", "embed->mlp0", "embed->0.0.v",
    "3.0.q->3.0", "3.0.k->3.0", "3.0.v->3.0", "0.0.v->0.0",
}  # fmt: skip
ACDC_PROPORTION = {
    "1.0->logits", "embed->1.0.q", "pos_embed->1.0.q", "embed->1.0.k", "pos_embed->1.0.k",
    "mlp0->1.0.v", "embed->mlp0", "1.0.q->1.0", "1.0.k->1.0", "1.0.v->1.0",
}  # fmt: skip


def test_bundled_models_compute_their_programs():
    rev = load_tracr("reverse")
    enc = {int(k): v for k, v in rev.info["input_encoding"].items() if k.isdigit()}
    out = rev.model(rev.tokens)[:, 1:].argmax(-1)  # output index i = value i + 1
    inputs = [[k for t in row for k, v in enc.items() if v == t] for row in rev.tokens[:, 1:]]
    assert out.tolist() == [[x - 1 for x in reversed(row)] for row in inputs]
    prop = load_tracr("proportion")
    x_id = prop.info["input_encoding"]["x"]
    is_x = (prop.tokens[:, 1:] == x_id).float()
    frac = is_x.cumsum(1) / torch.arange(1, is_x.shape[1] + 1)
    assert torch.allclose(prop.model(prop.tokens)[:, 1:, 0], frac, atol=1e-3)
    assert len(prop.tokens) == 256 and len(rev.tokens) == 6


def test_truth_is_the_used_part_of_the_compiled_dataflow():
    rev, prop = load_tracr("reverse"), load_tracr("proportion")
    assert set(rev.info["true_edges"]) == ACDC_REVERSE  # derived here, equal to ACDC's
    assert bool((rev.truth <= rev.structural).all()) and rev.structural.sum() > rev.truth.sum()
    # proportion: ACDC's truth also has the BOS-default reads embed -> 1.0.q / 1.0.k; with BOS
    # first (tracr's encoding) removing either changes no output at all
    extra = ACDC_PROPORTION - set(prop.info["true_edges"])
    assert extra == {"embed->1.0.q", "embed->1.0.k"}
    r = CircuitRunner(
        prop.model, prop.graph, prop.tokens, None, "zero", logit_pos=prop.metric.positions
    )
    masks = torch.ones(3, len(prop.graph.edges), dtype=torch.bool)
    masks[1:, prop.graph.edge_ids(sorted(extra))] = False
    masks[2, prop.graph.edge_index["pos_embed->1.0.q"]] = False
    out = r.logits(masks)
    assert torch.equal(out[1], out[0]) and not torch.allclose(out[2], out[0], atol=1e-2)


@pytest.mark.parametrize("name", ["reverse", "proportion"])
def test_acdc_recovers_the_truth(name):
    t = load_tracr(name)
    circuits = []
    for tau in (1e-5, 1e-3, 0.03, 0.3, 1.0):
        c = acdc(t.model, t.tokens, None, tau, metric=t.metric, ablation="zero", graph=t.graph)
        circuits.append(c.present)
    assert torch.equal(circuits[1], t.truth)  # exactly the true edges at tau = 1e-3
    r = roc(t.graph, t.truth, circuits=circuits)
    assert r.edge_auc == 1.0 and r.node_auc == 1.0 and r.edge_auc_pessimistic == 1.0
    assert circuits[-1].sum() == 0  # a huge tau removes everything: the sweep is not trivial


def test_rebuilding_with_tracr_reproduces_the_bundle(tmp_path):
    from safetensors.torch import load_file

    build_tracr(tmp_path)
    for name in ("reverse", "proportion"):
        new = load_file(str(tmp_path / name / "model.safetensors"))
        old = load_file(str(TRACR_DIR / name / "model.safetensors"))
        assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new)
        assert (tmp_path / name / "truth.json").read_text() == (
            TRACR_DIR / name / "truth.json"
        ).read_text()
