"""The patched forward: full and empty circuits, both ablations, ACDC's two receiver formulas."""

from __future__ import annotations

import pytest
import torch

from mechscope.circuits.graph import LETTERS, Graph
from mechscope.circuits.patched import CircuitRunner
from mechscope.errors import CircuitError


def _runner(model, prompts, ablation="resample", **kw):
    clean, corrupt = prompts
    g = Graph.from_model(model, **kw)
    return CircuitRunner(
        model, g, clean, corrupt if ablation == "resample" else None, ablation, logit_pos=None
    )


def test_full_circuit_is_the_model_and_empty_is_the_corrupted_run(tiny, prompts):
    r = _runner(tiny, prompts)
    n = len(r.graph.edges)
    out = r.logits(torch.stack([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)]))
    assert torch.allclose(out[0], tiny(prompts[0]), atol=1e-5)
    assert torch.allclose(out[1], tiny(prompts[1]), atol=1e-5)
    assert not torch.allclose(out[0], out[1], atol=1e-3)


def test_ablation_hooks_change_the_corrupted_run_only(tiny, prompts):
    clean, corrupt = prompts
    flip = {"hook_pos_embed": lambda z: z.flip(1)}
    g = Graph.from_model(tiny, split_input=True)
    r = CircuitRunner(tiny, g, clean, corrupt, "resample", None, ablation_hooks=flip)
    n = len(g.edges)
    out = r.logits(torch.stack([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)]))
    assert torch.allclose(out[0], tiny(clean), atol=1e-5)
    assert torch.allclose(out[1], tiny(corrupt, flip), atol=1e-5)
    assert not torch.allclose(out[1], tiny(corrupt), atol=1e-3)
    with pytest.raises(CircuitError, match="resample ablation only"):
        CircuitRunner(tiny, g, clean, None, "zero", None, ablation_hooks=flip)


def test_zero_ablation_empty_circuit_zeroes_every_sender(tiny, prompts):
    r = _runner(tiny, prompts, "zero")
    zero = {n: torch.zeros_like for n in ["blocks.0.hook_resid_pre"]}
    for l in range(tiny.n_layers):
        zero[f"blocks.{l}.attn.hook_result"] = torch.zeros_like
        zero[f"blocks.{l}.hook_mlp_out"] = torch.zeros_like
    empty = r.logits(torch.zeros(1, len(r.graph.edges), dtype=torch.bool))[0]
    assert torch.allclose(empty, tiny(prompts[0], zero), atol=1e-5)


def _subtract_formula(model, graph, clean, corrupt, present):
    """ACDC's receiver rule written the other way, one circuit, plain hooks: in_v = residual
    stream - sum over removed u -> v of (a_u(now) - A_u); removed dc edge -> ablated q/k/v (with
    grouped-query attention: keys and values always copied out to one per query head, and a
    removed "L.G.k -> L.H" replaces head H's copy)."""
    _, abl = model.run_with_cache(corrupt)
    group = model.n_heads // model.n_kv_heads
    copies = torch.tensor([h // group for h in range(model.n_heads)])
    now: dict[str, torch.Tensor] = {}
    ablated = {}

    def outputs(cache, prefix):
        o = {"input": cache["blocks.0.hook_resid_pre"]}
        for l in range(model.n_layers):
            for h in range(model.n_heads):
                o[f"{l}.{h}"] = cache[f"blocks.{l}.attn.hook_result"][:, :, h]
            if not model.attn_only:
                o[f"mlp{l}"] = cache[f"blocks.{l}.hook_mlp_out"]
        return o

    ablated = outputs(abl, "")
    removed = [graph.edges[i] for i in (~present).nonzero().flatten().tolist()]

    def fix(x, receiver):
        for e in removed:
            if e.kind == "add" and e.receiver == receiver:
                x = x - (now[e.sender] - ablated[e.sender])
        return x

    hooks = {}

    def rec_resid(name):
        def fn(x):
            now["input"] = x
            return None

        return fn

    hooks["blocks.0.hook_resid_pre"] = rec_resid("input")
    for l in range(model.n_layers):

        def qkv(x, l=l, letter="q"):
            x = x.clone()
            for h in range(x.shape[2]):  # query heads, or key/value heads
                x[:, :, h] = fix(x[:, :, h], f"{l}.{h}.{letter}")
            return x

        def dc(x, l=l, letter="q"):
            a = abl[f"blocks.{l}.attn.hook_{letter}"]
            if letter != "q":
                x, a = x[:, :, copies], a[:, :, copies]
            x = x.clone()
            for e in removed:
                if e.kind == "dc" and e.receiver.split(".")[0] == str(l) and e.sender[-1] == letter:
                    h = int(e.receiver.split(".")[1])
                    assert int(e.sender.split(".")[1]) == copies[h] or letter == "q"
                    x[:, :, h] = a[:, :, h]
            return x

        def res(x, l=l):
            for h in range(model.n_heads):
                now[f"{l}.{h}"] = x[:, :, h]

        def mlp_out(x, l=l):
            now[f"mlp{l}"] = x

        for letter in LETTERS:
            hooks[f"blocks.{l}.hook_{letter}_input"] = lambda x, l=l, c=letter: qkv(x, l, c)
            hooks[f"blocks.{l}.attn.hook_{letter}"] = lambda x, l=l, c=letter: dc(x, l, c)
        hooks[f"blocks.{l}.attn.hook_result"] = res
        if not model.attn_only:
            hooks[f"blocks.{l}.hook_mlp_in"] = lambda x, l=l: fix(x, f"mlp{l}")
            hooks[f"blocks.{l}.hook_mlp_out"] = mlp_out
    last = f"blocks.{model.n_layers - 1}.hook_resid_post"
    hooks[last] = lambda x: fix(x, "logits")
    return model(clean, hooks)


def test_batched_runner_matches_the_subtract_formula_on_random_circuits(tiny, prompts):
    r = _runner(tiny, prompts)
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(6, len(r.graph.edges), generator=g) > 0.4
    masks[0, :] = True
    masks[1, : r.graph.n_add] = True  # dc edges only
    out = r.logits(masks)
    for i in range(len(masks)):
        ref = _subtract_formula(tiny, r.graph, *prompts, masks[i])
        assert torch.allclose(out[i], ref, atol=1e-5), i
    assert torch.allclose(out, r.logits(masks, start_layer=0), atol=1e-6)


def test_removing_an_edge_into_the_logits_moves_the_final_residual_by_its_difference(
    no_ln, prompts
):
    """Without LayerNorm the logits change by exactly (A_u - a_u) @ W_U."""
    m = no_ln
    r = _runner(m, prompts)
    mask = torch.ones(2, len(r.graph.edges), dtype=torch.bool)
    i = r.graph.edge_index["1.1->logits"]
    mask[1, i] = False
    out = r.logits(mask)
    u = r.graph.sender_index["1.1"]
    expected = (r.ablated_out[u] - r.clean_out[u]) @ m.W_U
    assert torch.allclose(out[1] - out[0], expected, atol=1e-5)


def test_gqa_and_parallel_models_match_the_subtract_formula(toy_lean, toy_family, toy_prompts):
    """Key/value inputs shared by a group, per-query-head key/value dc edges, parallel MLPs."""
    model = toy_lean(toy_family)
    r = _runner(model, toy_prompts)
    n = len(r.graph.edges)
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(5, n, generator=g) > 0.3
    masks[0], masks[1] = True, False
    masks[2, : r.graph.n_add] = True  # dc edges only
    out = r.logits(masks)
    torch.testing.assert_close(out[0], model(toy_prompts[0]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], model(toy_prompts[1]), atol=1e-5, rtol=1e-5)
    for i in range(2, len(masks)):
        ref = _subtract_formula(model, r.graph, *toy_prompts, masks[i])
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=1e-5)
    assert (out[2] - out[0]).abs().max() > 1e-4  # removing dc edges alone changes the logits
