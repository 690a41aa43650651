"""The delta forward: each trial equals the full masked forward of its circuit, over commits."""

from __future__ import annotations

import pytest
import torch

from mechscope.circuits import Graph
from mechscope.circuits.delta import DeltaCircuit
from mechscope.circuits.patched import CircuitRunner
from mechscope.circuits.tracr import load_tracr


def _walk(runner: CircuitRunner, n_steps: int, seed: int, resync_every: int = 64) -> int:
    """Remove random sets of present edges, checking each trial against the full forward."""
    state = DeltaCircuit(runner, resync_every=resync_every)
    full = torch.ones(1, len(runner.graph.edges), dtype=torch.bool)
    torch.testing.assert_close(state.logits, runner.logits(full)[0], atol=1e-5, rtol=1e-5)
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_steps):
        present = state.mask.nonzero().flatten()
        if not len(present):
            break
        k = int(torch.randint(1, 4, (1,), generator=g))
        edges = present[torch.randint(len(present), (k,), generator=g)].unique().tolist()
        trial = state.trial([edges])
        without = state.mask.clone()
        without[edges] = False
        ref = runner.logits(without[None], start_layer=0)[0]
        torch.testing.assert_close(trial.logits[0], ref, atol=1e-5, rtol=1e-5)
        assert torch.equal(state.mask[edges], torch.ones(len(edges), dtype=torch.bool))
        if bool(torch.rand(1, generator=g) < 0.7):  # most trials are kept, as in ACDC
            state.commit(trial)
    return int(state.mask.sum())


def test_variants_of_one_trial_each_equal_their_circuit(tiny, prompts):
    """A chain of tentative removals (variant i removes the first i+1 edges) in one pass."""
    runner = CircuitRunner(tiny, Graph.from_model(tiny), *prompts, logit_pos=(-1,))
    state = DeltaCircuit(runner)
    for r in ("1.1.q", "mlp0", "logits"):
        edges = runner.graph.in_edges(r)[:5]
        trial = state.trial([edges[: k + 1] for k in range(len(edges))])
        masks = state.mask.repeat(len(edges), 1)
        for k in range(len(edges)):
            masks[k, edges[: k + 1]] = False
        torch.testing.assert_close(trial.logits, runner.logits(masks), atol=1e-5, rtol=1e-5)
        state.commit(trial, 2)  # the first three removals stand
        full = runner.logits(state.mask[None])[0]
        torch.testing.assert_close(state.logits, full, atol=1e-5, rtol=1e-5)
    assert int((~state.mask).sum()) == 9


@pytest.mark.parametrize("ablation", ["resample", "zero"])
@pytest.mark.parametrize("dc", [True, False])
def test_trials_equal_the_full_forward_with_mlps(tiny, prompts, ablation, dc):
    clean, corrupt = prompts
    graph = Graph.from_model(tiny, dc_edges=dc)
    corrupt = corrupt if ablation == "resample" else None
    runner = CircuitRunner(tiny, graph, clean, corrupt, ablation, logit_pos=(-1, 2))
    left = _walk(runner, 60, seed=1, resync_every=7)
    assert left < len(graph.edges) - 40  # the walk removed edges everywhere


def test_trials_equal_the_full_forward_attention_only(tiny_attn, prompts):
    runner = CircuitRunner(tiny_attn, Graph.from_model(tiny_attn), *prompts, logit_pos=None)
    _walk(runner, 40, seed=2)


def test_trials_equal_the_full_forward_on_a_bidirectional_tracr_model():
    t = load_tracr("proportion")
    runner = CircuitRunner(
        t.model, t.graph, t.tokens[:16], None, "zero", logit_pos=t.metric.positions
    )
    _walk(runner, 30, seed=3)


@pytest.mark.parametrize("ablation", ["resample", "zero"])
def test_trials_equal_the_full_forward_on_gqa_and_parallel_models(
    toy_lean, toy_family, toy_prompts, ablation
):
    """Every decomposable family: grouped-query attention (shared key/value inputs, per-query-head
    k/v dc edges), parallel blocks (MLPs reading resid_pre), rotary positions, sliding windows."""
    lean = toy_lean(toy_family)
    clean, corrupt = toy_prompts
    graph = Graph.from_model(lean)
    corrupt = corrupt if ablation == "resample" else None
    runner = CircuitRunner(lean, graph, clean, corrupt, ablation, logit_pos=(-1, 3))
    left = _walk(runner, 40, seed=4, resync_every=9)
    assert left < len(graph.edges) - 30


def _acdc_like_walk(runner: CircuitRunner, seed: int) -> DeltaCircuit:
    """Single removals in ACDC's order, each trial checked against the full forward: every edge
    into a key or value input and half of the others are committed, so that during the walk the
    earlier layers come to be read only at the logit positions (and computed there alone)."""
    state = DeltaCircuit(runner, resync_every=50)
    g = torch.Generator().manual_seed(seed)
    for _, edges in runner.graph.acdc_steps():
        for e in edges:
            if not bool(state.mask[e]):
                continue
            trial = state.trial([[e]])
            without = state.mask.clone()
            without[e] = False
            ref = runner.logits(without[None], start_layer=0)[0]
            torch.testing.assert_close(trial.logits[0], ref, atol=1e-5, rtol=1e-5)
            into_kv = runner.graph.edges[e].receiver.endswith((".k", ".v"))
            if into_kv or bool(torch.rand(1, generator=g) < 0.5):
                state.commit(trial)
    return state


def test_layers_read_only_at_the_logit_positions_are_computed_there(tiny, tiny_attn, prompts):
    for model in (tiny, tiny_attn):
        runner = CircuitRunner(model, Graph.from_model(model), *prompts, logit_pos=(-1, 2))
        state = _acdc_like_walk(runner, seed=5)
        assert all(state.at_pos)  # every layer went over to the logit positions on the way
        full = runner.logits(state.mask[None])[0]
        torch.testing.assert_close(state.logits, full, atol=1e-5, rtol=1e-5)


def test_layers_read_only_at_the_logit_positions_on_gqa_and_parallel_models(
    toy_lean, toy_family, toy_prompts
):
    lean = toy_lean(toy_family)
    runner = CircuitRunner(lean, Graph.from_model(lean), *toy_prompts, logit_pos=(-1, 3))
    assert all(_acdc_like_walk(runner, seed=6).at_pos)


def test_a_layer_read_by_a_layer_computed_at_all_positions_stays_there(tiny3, tiny_attn, prompts):
    """Layer 0 feeds no key or value, but layer 1's queries, and layer 1 feeds layer 2's keys:
    both must stay computed at all positions."""
    for model in (tiny3, tiny_attn):
        g = Graph.from_model(model)
        runner = CircuitRunner(model, g, *prompts, logit_pos=(-1,))
        layer0 = {s for s in g.senders if s.startswith(("0.", "mlp0"))}
        mask = torch.tensor(
            [not (e.sender in layer0 and e.receiver.endswith((".k", ".v"))) for e in g.edges]
        )
        state = DeltaCircuit(runner, mask)
        assert state.at_pos == [False, False, True]
        for e in g.in_edges("0.1.q") + g.in_edges("0.0.v") + g.out_edges("0.1"):
            trial = state.trial([[e]])
            without = state.mask.clone()
            without[e] = False
            ref = runner.logits(without[None], start_layer=0)[0]
            torch.testing.assert_close(trial.logits[0], ref, atol=1e-5, rtol=1e-5)


def _chain_walk(runner: CircuitRunner, seed: int) -> None:
    """ACDC's order without skipping; wherever `layer_chain_length` admits them, a trial of the
    variants "without the next 1..k edges" (k <= 9; receivers of one layer, interleaved, heads
    computed once per version of their inputs) is held to the full forward of every variant, and
    a random variant committed. Chains come both in layers computed at all positions and in
    layers computed at the logit positions alone."""
    state = DeltaCircuit(runner, resync_every=50)
    g = torch.Generator().manual_seed(seed)
    edges = [e for _, es in runner.graph.acdc_steps() for e in es]
    perm = torch.randperm(len(edges), generator=g).tolist()
    layer = [runner.graph.layer(runner.graph.edges[e].receiver) for e in edges]
    edges = sorted(edges, key=lambda e: (-layer[edges.index(e)], perm[edges.index(e)]))
    pos, n_chains = 0, {False: 0, True: 0}
    while pos < len(edges):
        chain = [e for e in edges[pos : pos + 9] if bool(state.mask[e])]
        chain = chain[: max(1, state.layer_chain_length(chain))]
        if len(chain) < 2:
            trial = state.trial([chain]) if chain else None
            if trial is not None and bool(torch.rand(1, generator=g) < 0.8):
                state.commit(trial)
            pos += 1
            continue
        n_chains[state.at_pos[runner.graph.layer(runner.graph.edges[chain[0]].receiver)]] += 1
        trial = state.trial([chain[: k + 1] for k in range(len(chain))])
        masks = state.mask.repeat(len(chain), 1)
        for k in range(len(chain)):
            masks[k, chain[: k + 1]] = False
        torch.testing.assert_close(trial.logits, runner.logits(masks), atol=1e-5, rtol=1e-5)
        i = int(torch.randint(len(chain), (1,), generator=g))
        state.commit(trial, i)
        ref = runner.logits(state.mask[None], start_layer=0)[0]
        torch.testing.assert_close(state.logits, ref, atol=1e-5, rtol=1e-5)
        pos += len(chain)
    assert min(n_chains.values()) >= 1, n_chains
    full = runner.logits(state.mask[None], start_layer=0)[0]
    torch.testing.assert_close(state.logits, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dc", [True, False])
def test_layer_chains_where_every_later_layer_is_computed_at_all_positions(
    tiny3, tiny_attn, toy_lean, prompts, toy_prompts, dc
):
    """From the full circuit (every layer but the last computed at all positions), chains of
    interleaved edges into each layer's q/k/v and MLP inputs: every variant equals its full
    forward, and so does the committed one."""
    for model, tokens in ((tiny3, prompts), (tiny_attn, prompts), (toy_lean("llama"), toy_prompts)):
        graph = Graph.from_model(model, dc_edges=dc)
        runner = CircuitRunner(model, graph, *tokens, logit_pos=(-1, 2))
        state = DeltaCircuit(runner)
        assert not any(state.at_pos[:-1])
        g = torch.Generator().manual_seed(9)
        for layer in range(graph.n_layers):
            into = [e for e in range(graph.n_add) if graph.layer(graph.edges[e].receiver) == layer]
            chain = [into[i] for i in torch.randperm(len(into), generator=g)[:7].tolist()]
            assert state.layer_chain_length(chain) == len(chain)
            assert len({graph.edges[e].receiver for e in chain}) > 2  # receivers interleave
            trial = state.trial([chain[: k + 1] for k in range(len(chain))])
            masks = state.mask.repeat(len(chain), 1)
            for k in range(len(chain)):
                masks[k, chain[: k + 1]] = False
            torch.testing.assert_close(trial.logits, runner.logits(masks), atol=1e-5, rtol=1e-5)
            state.commit(trial, 3)
            ref = runner.logits(state.mask[None], start_layer=0)[0]
            torch.testing.assert_close(state.logits, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dc", [True, False])
def test_chain_trials_equal_the_full_forward(tiny, tiny_attn, prompts, dc):
    for model in (tiny, tiny_attn):
        graph = Graph.from_model(model, dc_edges=dc)
        _chain_walk(CircuitRunner(model, graph, *prompts, logit_pos=(-1, 2)), seed=7)


def test_chain_trials_equal_the_full_forward_on_gqa_and_parallel_models(
    toy_lean, toy_family, toy_prompts
):
    lean = toy_lean(toy_family)
    runner = CircuitRunner(lean, Graph.from_model(lean), *toy_prompts, logit_pos=(-1, 3))
    _chain_walk(runner, seed=8)
