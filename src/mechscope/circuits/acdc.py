"""ACDC (Conmy et al. 2023): greedy edge pruning in reverse topological order.

For each receiver, last-computed first, and each of its incoming edges (nearest sender first):
remove the edge (its sender's contribution is replaced by the ablation run's), rerun the
circuit, and keep the removal if the metric (KL(model || circuit) by default; lower is better)
rose by less than tau; otherwise restore the edge. Receivers with no kept outgoing edge lose all
their incoming edges without a test (ACDC's "current_node_connected"). See graph.py for the
order and patched.py for how a circuit is run.

`acdc_reference` is that procedure literally: one full forward per tested edge. `acdc` gives the
same circuit faster: a tested removal recomputes only the nodes downstream of the removed edge
that read it through edges still present (delta.py), from the current circuit's cached
activations. Most tests remove their edge, so `acdc` tests the next k edges at once: variant j of
one pass is the current circuit without candidates 1..j, and its metric minus variant j-1's is
exactly the difference the sequential search compares with tau once it has removed 1..j-1. The
removals stand up to the first candidate kept; the search resumes after it, and k adapts to the
recent removal rate. A metric difference within `tie_tol` of tau is recomputed exactly as
`acdc_reference` computes it, so float rounding cannot flip a decision. Both return each tested
edge's metric difference as the circuit's `scores`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor

from mechscope.circuits.delta import DeltaCircuit
from mechscope.circuits.graph import Graph
from mechscope.circuits.metric import CircuitMetric, kl_metric
from mechscope.circuits.patched import CircuitRunner, check_prompts
from mechscope.circuits.result import Circuit
from mechscope.errors import CircuitError
from mechscope.models.lean import Hook, LeanModel, as_lean

# auto-circuit's acdc_prune_scores grid: {1,3,5,7,9} x 10^{-5..-2}
TAU_GRID: tuple[float, ...] = tuple(
    sorted(b * 10.0**e for b in (1, 3, 5, 7, 9) for e in range(-5, -1))
)

Step = tuple[list[int] | None, list[int]]  # (edges that keep the node alive | None, tests)


def check_tau(tau: float) -> float:
    """tau as a float; CircuitError unless finite and >= 0."""
    try:
        t = float(tau)
    except (TypeError, ValueError) as e:
        raise CircuitError(f"tau must be a number, got {tau!r}") from e
    if not math.isfinite(t) or t < 0:
        raise CircuitError(
            f"tau must be a finite threshold >= 0 (ACDC removes an edge when the metric rises by "
            f"less than tau; typical values 1e-4..1e-1), got {tau!r}"
        )
    return t


def steps_of(graph: Graph, order: Sequence[str] | None = None) -> list[Step]:
    """ACDC's steps, or one step per edge of an explicit `order` (edge names, all edges once)."""
    if order is None:
        return [
            (None if node == "logits" else graph.out_edges(node), edges)
            for node, edges in graph.acdc_steps()
        ]
    ids = graph.edge_ids(list(order)).tolist()
    if sorted(ids) != list(range(len(graph.edges))):
        raise CircuitError("order must list every edge of the graph exactly once")
    out: list[Step] = []
    for i in ids:
        e = graph.edges[i]
        node = e.receiver  # for a dc edge: the head
        out.append((None if node == "logits" else graph.out_edges(node), [i]))
    return out


def _setup(
    model: Any,
    clean_tokens: Tensor,
    corrupt_tokens: Tensor | None,
    metric: CircuitMetric | None,
    ablation: str,
    graph: Graph | None,
    split_input: bool,
    dc_edges: bool,
    ablation_hooks: Mapping[str, Hook] | None = None,
) -> tuple[LeanModel, Graph, CircuitRunner, CircuitMetric]:
    check_prompts(clean_tokens, corrupt_tokens, ablation)
    lean = as_lean(model)
    graph = graph or Graph.from_model(lean, split_input=split_input, dc_edges=dc_edges)
    positions = (-1,) if metric is None else metric.positions
    runner = CircuitRunner(
        lean, graph, clean_tokens, corrupt_tokens, ablation, positions, ablation_hooks
    )
    metric = metric or kl_metric(runner.clean_logits, positions)
    return lean, graph, runner, metric


def _progress(enabled: bool, tau: float, total: int) -> tuple[Progress, Any]:
    p = Progress(
        TextColumn("ACDC tau={task.fields[tau]:g}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} edges visited, {task.fields[kept]} kept"),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=True,
    )
    return p, p.add_task("acdc", total=total, tau=tau, kept=0)


def _finish(
    runner: CircuitRunner,
    graph: Graph,
    mask: Tensor,
    metric: CircuitMetric,
    method: str,
    ablation: str,
    tau: float,
    t0: float,
    n_tests: int,
) -> Circuit:
    """The circuit `mask` with its metric values and run statistics (`scores` set by callers)."""
    circuit = Circuit(graph, mask.clone(), method, metric.name, ablation, tau=tau)
    circuit.meta.update(
        seconds=time.perf_counter() - t0,
        edge_tests=n_tests,
        forwards=runner.n_forwards,
        n_prompts=int(runner.tokens.shape[0]),
    )
    full, value, ablated = circuit_values(runner, metric, mask)
    circuit.full, circuit.value, circuit.ablated = full, value, ablated
    return circuit


def circuit_values(
    runner: CircuitRunner, metric: CircuitMetric, mask: Tensor
) -> tuple[float, float, float]:
    """Metric of the full model, of the circuit `mask` [n_edges], and of the empty circuit."""
    masks = torch.stack([torch.ones_like(mask), mask, torch.zeros_like(mask)])
    v = metric(runner.logits(masks))
    return float(v[0]), float(v[1]), float(v[2])


def acdc_reference(
    model: Any,
    clean_tokens: Tensor,
    corrupt_tokens: Tensor | None,
    tau: float,
    metric: CircuitMetric | None = None,
    ablation: str = "resample",
    graph: Graph | None = None,
    split_input: bool = False,
    dc_edges: bool = True,
    order: Sequence[str] | None = None,
    skip_disconnected: bool = True,
    progress: bool = False,
    ablation_hooks: Mapping[str, Hook] | None = None,
) -> Circuit:
    """ACDC exactly as published: one full forward of the circuit per tested edge.

    clean_tokens, corrupt_tokens: [batch, pos] (corrupt_tokens None for ablation="zero").
    metric: lower is better (default KL(model || circuit) at the last position).
    order: an explicit edge order (default ACDC's); skip_disconnected: remove the incoming edges
    of a node with no kept outgoing edge without testing them (ACDC does; auto-circuit doesn't).
    ablation_hooks: hooks of the corrupted run (CircuitRunner), e.g. ACDC's tracr position shuffle.
    """
    tau = check_tau(tau)
    t0 = time.perf_counter()
    _, graph, runner, metric = _setup(
        model,
        clean_tokens,
        corrupt_tokens,
        metric,
        ablation,
        graph,
        split_input,
        dc_edges,
        ablation_hooks,
    )
    steps = steps_of(graph, order)
    mask = torch.ones(len(graph.edges), dtype=torch.bool)

    def ev(m: Tensor) -> float:
        return float(metric(runner.logits(m[None], start_layer=0))[0])

    cur, n_tests = ev(mask), 0
    scores = torch.full((len(graph.edges),), float("nan"))
    bar, task = _progress(progress, tau, len(graph.edges))
    with bar:
        for alive, edges in steps:
            if skip_disconnected and alive is not None and not bool(mask[alive].any()):
                if bool(mask[edges].any()):
                    mask[edges] = False
                    cur = ev(mask)
                bar.update(task, advance=len(edges))
                continue
            for e in edges:
                mask[e] = False
                new = ev(mask)
                n_tests += 1
                scores[e] = new - cur
                if new - cur < tau:
                    cur = new
                else:
                    mask[e] = True
                bar.update(task, advance=1, kept=int(mask.sum()) - _untested(bar, task, mask))
    c = _finish(runner, graph, mask, metric, "acdc-reference", ablation, tau, t0, n_tests)
    c.scores = scores
    return c


def _chain(graph: Graph, state: DeltaCircuit, edges: list[int]) -> list[int]:
    """The longest prefix of `edges` worth testing in one delta pass: residual edges into the
    inputs of the first edge's layer (each changed head computed once per change, delta.py), or
    else edges into the first edge's receiver."""
    n = state.layer_chain_length(edges)
    if n:
        return edges[:n]
    first = graph.edges[edges[0]].receiver
    out = edges[:1]
    for e in edges[1:]:
        if graph.edges[e].receiver != first:
            break
        out.append(e)
    return out


def _untested(bar: Progress, task: Any, mask: Tensor) -> int:
    """Edges not yet visited (all still present), so that 'kept' counts visited edges only."""
    return len(mask) - int(bar.tasks[task].completed)


def acdc(
    model: Any,
    clean_tokens: Tensor,
    corrupt_tokens: Tensor | None,
    tau: float,
    metric: CircuitMetric | None = None,
    ablation: str = "resample",
    graph: Graph | None = None,
    split_input: bool = False,
    dc_edges: bool = True,
    order: Sequence[str] | None = None,
    skip_disconnected: bool = True,
    batch_size: int = 16,
    tie_tol: float = 1e-5,
    progress: bool = False,
    ablation_hooks: Mapping[str, Hook] | None = None,
) -> Circuit:
    """ACDC: the circuit `acdc_reference` finds with the same arguments, faster.

    Each tested removal recomputes only the nodes it changes (delta.py), from the current
    circuit's cached activations. batch_size: the most candidate edges tested in one pass
    (1: one edge per pass, the sequential search). Variant j of a pass removes candidates
    1..j, so its metric minus variant j-1's (the current circuit's for j = 1) is what the
    sequential search compares with tau after removing 1..j-1; the removals stand up to the
    first candidate kept, and the search resumes after it. The width k doubles after a pass
    that removed all its candidates, falls to the number removed before a keep and restarts at
    1 in each layer. Candidates of one pass are residual edges into one layer's inputs (that
    layer's heads computed once per version of their inputs, delta.py) or edges into one
    receiver, within one step when skipping disconnected receivers, and k stays 1 where the
    last pass recomputed more than two nodes at every position (there a pass of k variants
    costs about k single ones).
    tie_tol: where the metric difference lies within tie_tol (+ tie_tol x |metric|) of tau,
    both sides are recomputed with acdc_reference's own full forward before deciding, so float
    rounding cannot flip a decision. Other arguments as there.
    """
    tau = check_tau(tau)
    if batch_size < 1:
        raise CircuitError(f"batch_size must be at least 1, got {batch_size}")
    t0 = time.perf_counter()
    _, graph, runner, metric = _setup(
        model,
        clean_tokens,
        corrupt_tokens,
        metric,
        ablation,
        graph,
        split_input,
        dc_edges,
        ablation_hooks,
    )
    steps = steps_of(graph, order)
    state = DeltaCircuit(runner)
    mask = state.mask

    def ev_exact(m: Tensor) -> float:
        return float(metric(runner.logits(m[None], start_layer=0))[0])

    cur, n_tests = float(metric(state.logits[None])[0]), 0
    scores = torch.full((len(graph.edges),), float("nan"))
    bar, task = _progress(progress, tau, len(graph.edges))
    # the tests in order: (step, edge); a chain of tentative removals may run past the end of
    # a step unless skipping disconnected receivers (that check needs the step's start state)
    tests = [(si, e) for si, (_, edges) in enumerate(steps) for e in edges]
    step_end = {si: k + 1 for k, (si, _) in enumerate(tests)}
    layer = [graph.layer(e.receiver) for e in graph.edges]
    pos, width = 0, 1
    with bar:
        while pos < len(tests):
            si, _ = tests[pos]
            alive, edges = steps[si]
            new_step = pos == 0 or tests[pos - 1][0] != si
            if new_step and (pos == 0 or layer[tests[pos - 1][1]] != layer[tests[pos][1]]):
                width = 1  # a new layer: its first test shows how far its changes spread
            if skip_disconnected and new_step and alive is not None and not mask[alive].any():
                present = [e for e in edges if mask[e]]
                if present:
                    state.commit(state.trial([present]))
                    cur = float(metric(state.logits[None])[0])
                bar.update(task, advance=len(edges))
                pos = step_end[si]
                continue
            end = step_end[si] if skip_disconnected else len(tests)
            candidates = [e for _, e in tests[pos : min(pos + width, end)]]
            chain = _chain(graph, state, candidates)
            trial = state.trial([chain[: k + 1] for k in range(len(chain))])
            values = metric(trial.logits).tolist()
            done, decided = -1, len(chain)  # last variant whose removals all stand
            for k, e in enumerate(chain):
                before = cur if k == 0 else values[k - 1]
                delta = values[k] - before
                n_tests += 1
                if abs(delta - tau) <= tie_tol * (1 + max(abs(values[k]), abs(before))):
                    base = mask.clone()
                    base[chain[:k]] = False
                    without = base.clone()
                    without[e] = False
                    delta = ev_exact(without) - ev_exact(base)
                scores[e] = delta
                if delta >= tau:  # kept: the later variants assumed otherwise
                    decided = k + 1
                    break
                done = k
            # stacking variants pays where a pass recomputes little at every position (a last-
            # layer receiver, or later layers already pruned); a wide spread costs ~k x as much
            if len(trial.outs) > 2:
                width = 1
            elif decided == len(chain) and done == decided - 1:  # all removed: look further
                width = min(2 * width, batch_size)
            else:  # a keep: as many as were removed before it
                width = max(1, done + 1)
            if done >= 0:
                state.commit(trial, done)
                cur = values[done]
            pos += decided
            bar.update(task, advance=decided, kept=int(mask.sum()) - _untested(bar, task, mask))
    c = _finish(runner, graph, mask, metric, "acdc", ablation, tau, t0, n_tests)
    c.scores = scores
    c.meta.update(delta_passes=state.n_trials, batch_size=batch_size)
    return c
