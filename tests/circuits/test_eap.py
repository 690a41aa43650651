"""EAP and EAP-IG: against exact patching where the model is linear, and their identities."""

from __future__ import annotations

import pytest
import torch

from mechscope.circuits import CircuitMetric, CircuitRunner, Graph, eap, eap_scores, kl_metric
from mechscope.circuits.eap import top_k_circuit
from mechscope.errors import CircuitError

LOGIT0 = CircuitMetric("logit0", lambda lg: -lg[:, :, -1, 0].mean(1))


def test_eap_is_exact_for_edges_into_the_logits_without_layernorm(no_ln, prompts):
    g = Graph.from_model(no_ln)
    r = CircuitRunner(no_ln, g, *prompts, logit_pos=(-1,))
    scores = eap_scores(no_ln, *prompts, LOGIT0, graph=g, runner=r)
    ids = g.in_edges("logits")
    masks = torch.ones(len(ids) + 1, len(g.edges), dtype=torch.bool)
    for row, i in enumerate(ids):
        masks[row + 1, i] = False
    values = LOGIT0(r.logits(masks))
    exact = values[1:] - values[0]
    assert torch.allclose(scores[ids], exact, atol=1e-5)
    assert exact.abs().max() > 1e-2  # not vacuous


def test_eap_equals_an_explicit_loop_over_edges(tiny, prompts):
    """score(u -> v) = sum (A_u - a_u) * dM/d in_v, written edge by edge from the gradients."""
    g = Graph.from_model(tiny)
    r = CircuitRunner(tiny, g, *prompts, logit_pos=(-1,))
    scores = eap_scores(tiny, *prompts, LOGIT0, graph=g, runner=r)
    x0 = r.resid[0].clone().requires_grad_()
    saved = {}

    def keep(name):
        def fn(x):
            y = x.clone()
            y.retain_grad()
            saved[name] = y
            return y

        return fn

    hooks = {f"blocks.{l}.hook_{c}_input": keep(f"{l}{c}") for l in range(2) for c in "qkv"}
    hooks["blocks.1.hook_mlp_in"] = keep("mlp1")
    logits = tiny(prompts[0], hooks, start_layer=0, resid=x0, logit_pos=(-1,))
    LOGIT0(logits[None]).sum().backward()
    for name, grad_of in [
        ("0.1->1.0.k", saved["1k"].grad[:, :, 0]),
        ("mlp0->mlp1", saved["mlp1"].grad),
        ("input->0.1.v", saved["0v"].grad[:, :, 1]),
    ]:
        u = g.sender_index[name.split("->")[0]]
        expected = ((r.ablated_out[u] - r.clean_out[u]) * grad_of).sum()
        assert scores[g.edge_index[name]].item() == pytest.approx(expected.item(), rel=1e-4)


def test_eap_ig_with_one_step_is_eap_and_kl_gives_zero(tiny, prompts):
    a = eap_scores(tiny, *prompts, LOGIT0)
    b = eap_scores(tiny, *prompts, LOGIT0, ig_steps=1)
    assert torch.equal(a, b)
    c = eap_scores(tiny, *prompts, LOGIT0, ig_steps=4)
    assert not torch.allclose(a, c)
    kl = kl_metric(tiny(prompts[0], logit_pos=(-1,)))
    assert eap_scores(tiny, *prompts, kl).abs().max() < 1e-5  # KL's gradient at the model is 0
    with pytest.raises(CircuitError, match="ig_steps"):
        eap_scores(tiny, *prompts, LOGIT0, ig_steps=0)


def test_top_k_and_eap_circuit(tiny, prompts):
    g = Graph.from_model(tiny)
    s = torch.arange(len(g.edges), dtype=torch.float) - 10
    m = top_k_circuit(g, s, 3)
    assert m.nonzero().flatten().tolist() == list(range(len(g.edges) - 3, len(g.edges)))
    c = eap(tiny, *prompts, LOGIT0, k=10)
    assert c.n_edges == 10 and c.method == "eap" and c.faithfulness is not None
    with pytest.raises(CircuitError, match="k must be"):
        top_k_circuit(g, s, len(g.edges) + 1)
