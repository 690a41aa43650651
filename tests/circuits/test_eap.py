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


def test_eap_on_gqa_and_parallel_models_equals_literal_gradients_and_finite_differences(
    toy_lean, toy_family, toy_prompts
):
    """Edges into a key/value head's input (shared by its group) and into a parallel block's MLP
    (which reads resid_pre) against the gradients; a key and a value dc edge of one query head
    against a central finite difference."""
    model, (clean, corrupt) = toy_lean(toy_family), toy_prompts
    g = Graph.from_model(model)
    r = CircuitRunner(model, g, clean, corrupt, logit_pos=(-1,))
    scores = eap_scores(model, clean, corrupt, LOGIT0, graph=g, runner=r)
    H, K = model.n_heads, model.n_kv_heads
    x0 = r.resid[0].clone().requires_grad_()
    saved = {}

    def keep(name):
        def fn(x):
            y = x.clone()
            y.retain_grad()
            saved[name] = y
            return y

        return fn

    hooks = {f"blocks.1.hook_{c}_input": keep(c) for c in "qkv"}
    hooks["blocks.1.hook_mlp_in"] = keep("mlp1")
    LOGIT0(model(clean, hooks, start_layer=0, resid=x0, logit_pos=(-1,))[None]).sum().backward()
    G = K - 1  # the last key/value head, read by query heads (K-1)*group..H-1
    for name, grad_of in [
        (f"0.1->1.{G}.k", saved["k"].grad[:, :, G]),
        (f"mlp0->1.{G}.v", saved["v"].grad[:, :, G]),
        ("0.2->1.3.q", saved["q"].grad[:, :, 3]),
        ("mlp0->mlp1", saved["mlp1"].grad),
        ("0.3->mlp1", saved["mlp1"].grad),
    ]:
        u = g.sender_index[name.split("->")[0]]
        expected = ((r.ablated_out[u] - r.clean_out[u]) * grad_of).sum()
        # float32: tiny scores (near-cancelling sums) are exact only up to the largest's rounding
        tol = 1e-5 * float(scores.abs().max())
        assert scores[g.edge_index[name]].item() == pytest.approx(
            expected.item(), rel=1e-4, abs=tol
        )
    assert ("1.0->mlp1" in g.edge_index) != g.parallel  # parallel: heads do not feed their MLP

    # the key (value) dc edge with the largest score: central difference along (A - a) of the
    # copy of key head G's key that query head h alone reads
    _, abl_cache = model.run_with_cache(corrupt)
    copies = [h * K // H for h in range(H)]  # the key/value head each query head reads
    for letter in "kv":
        ids = [i for i, e in enumerate(g.edges) if e.kind == "dc" and e.sender[-1] == letter]
        i = max(ids, key=lambda i: abs(scores[i].item()))
        l, h = (int(x) for x in g.edges[i].receiver.split("."))
        assert g.edges[i].sender == f"{l}.{copies[h]}.{letter}"

        def metric_moved(eps, l=l, h=h, letter=letter):
            def move(x):
                x = x[:, :, copies].clone()
                d = abl_cache[f"blocks.{l}.attn.hook_{letter}"][:, :, copies[h]] - x[:, :, h]
                x[:, :, h] += eps * d
                return x

            hooks = {f"blocks.{l}.attn.hook_{c}": lambda x: x[:, :, copies] for c in "kv"}
            hooks[f"blocks.{l}.attn.hook_{letter}"] = move
            return LOGIT0(model(clean, hooks, logit_pos=(-1,))[None]).item()

        # a small central difference: q/k norms (Qwen3) and the softmax bend the metric
        # (curvature error ~h^2); float32 rounding of the metric adds ~1e-7 / h
        h_ = 0.1
        fd = (metric_moved(h_) - metric_moved(-h_)) / (2 * h_)
        assert abs(fd) > 1e-5 and scores[i].item() == pytest.approx(fd, rel=2e-2, abs=1e-6)


def test_eap_ig_runs_on_gqa_and_parallel_models(toy_lean, toy_family, toy_prompts):
    model = toy_lean(toy_family)
    a = eap_scores(model, *toy_prompts, LOGIT0)
    b = eap_scores(model, *toy_prompts, LOGIT0, ig_steps=3)
    assert a.shape == b.shape == (len(Graph.from_model(model).edges),)
    assert bool(b.isfinite().all()) and not torch.allclose(a, b)
    c = eap(model, *toy_prompts, LOGIT0, k=20, ig_steps=3)
    assert c.n_edges == 20 and c.method == "eap-ig" and c.faithfulness is not None
