"""Edge attribution patching (EAP, Syed et al. 2023) and EAP with integrated gradients
(EAP-IG, Hanna et al. 2024): every edge scored from one (or m) forward and backward passes.

EAP's estimate of the metric change when edge u -> v is removed is

    score(u -> v) = sum_{batch, pos, d_model} (A_u - a_u) * dM/d in_v,

with a_u the sender's output on the clean prompts, A_u in the ablation run, and the gradient of
the metric (a batch mean) with respect to the receiver's input at the clean run. A dc edge
L.H.q -> L.H is scored the same way on the head's query (A_q - q) * dM/dq; a key (value) dc edge
L.G.k -> L.H of grouped-query attention on the key query head H reads (the gradient with respect
to that head's copy of key head G's key). EAP-IG averages the gradient over m runs whose input
embedding moves in m steps from the ablated to the clean one (step k/m, k = 1..m; m = 1 is EAP).
Rank edges by |score|; `top_k_circuit` keeps the k largest. Use a task metric (logit
difference): the gradient of KL(model || circuit) at the model is zero.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from mechscope.circuits.graph import LETTERS, Graph, per_query_head
from mechscope.circuits.metric import CircuitMetric
from mechscope.circuits.patched import CircuitRunner, check_prompts
from mechscope.circuits.result import Circuit
from mechscope.errors import CircuitError
from mechscope.models.lean import Hook, as_lean


def eap_scores(
    model: Any,
    clean_tokens: Tensor,
    corrupt_tokens: Tensor | None,
    metric: CircuitMetric,
    ablation: str = "resample",
    graph: Graph | None = None,
    ig_steps: int = 1,
    runner: CircuitRunner | None = None,
) -> Tensor:
    """EAP (ig_steps=1) or EAP-IG (ig_steps=m > 1) scores [n_edges] of `graph`'s edges.

    clean_tokens, corrupt_tokens: [batch, pos]; metric: any differentiable CircuitMetric.
    """
    if ig_steps < 1:
        raise CircuitError(f"ig_steps must be >= 1, got {ig_steps}")
    check_prompts(clean_tokens, corrupt_tokens, ablation)
    lean = as_lean(model)
    graph = graph or Graph.from_model(lean)
    runner = runner or CircuitRunner(
        lean, graph, clean_tokens, corrupt_tokens, ablation, metric.positions
    )
    L, H = graph.n_layers, graph.n_heads
    grads: dict[str, Tensor] = {}
    saved: dict[str, Tensor] = {}

    def keep(name: str) -> Hook:
        def fn(x: Tensor) -> Tensor:
            if ".attn.hook_" in name:  # keys/values: one copy per query head reading them
                x = per_query_head(x, H)
            y = x.clone()  # q/k/v inputs share one tensor: give each its own gradient
            y.retain_grad()
            saved[name] = y
            return y

        return fn

    names = [f"blocks.{l}.hook_{x}_input" for l in range(L) for x in LETTERS]
    names += [f"blocks.{l}.attn.hook_{x}" for l in range(L) for x in LETTERS]
    names += [f"blocks.{l}.hook_mlp_in" for l in range(L)] if graph.has_mlp else []
    names.append(f"blocks.{L - 1}.hook_resid_post")
    start = runner.resid[0]  # clean blocks.0.hook_resid_pre
    abl_start = runner.ablated_in[0] if ablation == "zero" else _ablated_start(runner, lean)
    for k in range(1, ig_steps + 1):
        x0 = (abl_start + (k / ig_steps) * (start - abl_start)).detach().requires_grad_()
        hooks: dict[str, Hook] = {n: keep(n) for n in names}
        with torch.enable_grad():
            logits = lean(clean_tokens, hooks, start_layer=0, resid=x0, logit_pos=metric.positions)
            metric(logits.unsqueeze(0)).sum().backward()
        for n in names:
            g = saved[n].grad
            assert g is not None
            g = g.to(lean.device)  # a split model's blocks: onto the main device
            grads[n] = grads[n] + g if n in grads else g.clone()
    for n in names:
        grads[n] /= ig_steps
    # receiver gradients [R, B, P, d] in graph order
    g_rcv = []
    for l in range(L):
        for x in LETTERS:
            g_rcv += list(grads[f"blocks.{l}.hook_{x}_input"].unbind(2))
        g_rcv += [grads[f"blocks.{l}.hook_mlp_in"]] if graph.has_mlp else []
    g_rcv.append(grads[f"blocks.{L - 1}.hook_resid_post"])
    delta = (runner.ablated_out - runner.clean_out).flatten(1)  # [U, B*P*d]
    by_pair = delta @ torch.stack(g_rcv).flatten(1).T  # [U, R]
    scores = by_pair[graph.add_sender, graph.add_receiver]
    if graph.dc_edges:
        _, clean_cache = lean.run_with_cache(clean_tokens)
        dc = []
        for l in range(L):
            for j, x in enumerate(LETTERS):
                clean_qkv = per_query_head(clean_cache[f"blocks.{l}.attn.hook_{x}"], H)
                clean_qkv = clean_qkv.to(lean.device)
                d = runner.ablated_qkv[l][j] - clean_qkv
                dc.append((d * grads[f"blocks.{l}.attn.hook_{x}"]).sum((0, 1, 3)))  # [H]
        scores = torch.cat([scores, torch.stack(dc).flatten()])
    assert scores.shape == (len(graph.edges),) and H > 0
    return scores.detach()


def _ablated_start(runner: CircuitRunner, lean: Any) -> Tensor:
    """blocks.0.hook_resid_pre of the corrupted prompts (the input senders' ablated outputs)."""
    n_in = len(runner.graph.inputs)
    return runner.ablated_out[:n_in].sum(0)


def top_k_circuit(graph: Graph, scores: Tensor, k: int) -> Tensor:
    """Mask [n_edges] of the k edges with the largest |score| (ties: lower index first)."""
    if not 0 <= k <= len(graph.edges):
        raise CircuitError(f"k must be in [0, {len(graph.edges)}], got {k}")
    order = torch.sort(scores.abs(), descending=True, stable=True).indices
    mask = torch.zeros(len(graph.edges), dtype=torch.bool)
    mask[order[:k]] = True
    return mask


def eap(
    model: Any,
    clean_tokens: Tensor,
    corrupt_tokens: Tensor | None,
    metric: CircuitMetric,
    k: int,
    ablation: str = "resample",
    graph: Graph | None = None,
    ig_steps: int = 1,
) -> Circuit:
    """The circuit of the k top-scoring edges by EAP (EAP-IG if ig_steps > 1), measured."""
    from mechscope.circuits.acdc import circuit_values

    t0 = time.perf_counter()
    lean = as_lean(model)
    graph = graph or Graph.from_model(lean)
    runner = CircuitRunner(lean, graph, clean_tokens, corrupt_tokens, ablation, metric.positions)
    scores = eap_scores(
        lean, clean_tokens, corrupt_tokens, metric, ablation, graph, ig_steps, runner
    )
    mask = top_k_circuit(graph, scores, k)
    seconds = time.perf_counter() - t0
    method = "eap" if ig_steps == 1 else "eap-ig"
    c = Circuit(graph, mask, method, metric.name, ablation, scores=scores)
    c.full, c.value, c.ablated = circuit_values(runner, metric, mask)
    c.meta.update(seconds=seconds, ig_steps=ig_steps, n_prompts=int(clean_tokens.shape[0]))
    return c
