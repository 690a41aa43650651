"""The computational graph of ACDC (Conmy et al. 2023): nodes and the edges between them.

Nodes (names):
    "input"                   token + position embedding (`blocks.0.hook_resid_pre`); or, with
    "embed", "pos_embed"      `split_input=True` (tracr models), the two embeddings separately
    "L.H"                     attention head H of layer L, its output (`attn.hook_result[:, :, H]`)
    "L.H.q"                   query head H's query input (`hook_q_input[:, :, H]`)
    "L.G.k", "L.G.v"          key/value head G's key / value input (`hook_{k,v}_input[:, :, G]`);
                              without grouped-query attention G = H, one per head
    "mlpL"                    MLP L (input `hook_mlp_in`, output `hook_mlp_out`)
    "logits"                  the final residual stream (`blocks.{L-1}.hook_resid_post`) -> unembed

Edges:
    sender -> receiver        the sender's output as one term of the receiver's residual input
                              ("add"), for every sender computed before the receiver (in parallel
                              blocks MLP L reads `resid_pre` of layer L: layer L's heads do not
                              feed it);
    "L.H.q" -> "L.H"          the head's query computation ("dc", ACDC's DIRECT_COMPUTATION edge:
                              removing it replaces the head's whole query with its ablated value);
    "L.G.k" -> "L.H"          the key (value) head H reads, for every query head H of group G
                              (H // group = G): removing it replaces the key (value) that head H
                              reads with its ablated value; the group's other heads keep theirs.
ACDC counts both kinds (1,377 edges for a 4-layer, 8-head attention-only model; 32,923 for GPT-2
small); auto-circuit's graph has no "dc" edges (`dc_edges=False`: 1,281 and 32,491).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import CircuitError
from mechscope.models.lean import LeanModel, as_lean

LETTERS = ("q", "k", "v")


def check_decomposable(lean: LeanModel) -> None:
    """CircuitError when the model's residual stream is not a sum of per-head outputs with per-head
    queries, keys and values (`lean.head_decomposition`): ACDC's graph does not exist for it."""
    why = lean.head_decomposition
    if why is not None:
        name = getattr(lean.cfg, "model_name", None) or lean.arch.family
        raise CircuitError(
            f"circuits cannot be computed on {name}: {why}, so the per-head edges of ACDC's graph "
            "do not exist. Use node-level activation patching (mechscope.patching) instead."
        )


def per_query_head(x: Tensor, n_heads: int) -> Tensor:
    """Keys or values [batch, pos, K, d] -> the ones each query head reads [batch, pos, H, d]
    (key/value head h // group for query head h); q (K = H) unchanged."""
    k = x.shape[2]
    return x if k == n_heads else x.repeat_interleave(n_heads // k, 2)


@dataclass(frozen=True)
class Edge:
    """One edge: `sender -> receiver`; kind "add" (residual term) or "dc" (q/k/v computation)."""

    sender: str
    receiver: str
    kind: str

    @property
    def name(self) -> str:
        return f"{self.sender}->{self.receiver}"


@dataclass
class Graph:
    """ACDC's graph of a transformer with `n_layers` x `n_heads` heads and optional MLPs.

    n_kv_heads: key/value heads (K; None = n_heads, multi-head attention); parallel: each MLP
    reads its block's input (GPT-J, GPT-NeoX, Phi-2), not the residual after attention.
    Senders (forward order): inputs, then per layer heads "L.0".."L.{H-1}" and "mlpL".
    Receivers (forward order): per layer "L.h.q" (h < H), "L.g.k", "L.g.v" (g < K), "mlpL"; then
    "logits". Edges: additions sorted by receiver then sender (forward order), then dc edges
    ([layer, letter, query head] order).
    """

    n_layers: int
    n_heads: int
    has_mlp: bool
    split_input: bool = False
    dc_edges: bool = True
    n_kv_heads: int | None = None
    parallel: bool = False
    senders: list[str] = field(init=False)
    receivers: list[str] = field(init=False)
    edges: list[Edge] = field(init=False)

    def __post_init__(self) -> None:
        if self.n_layers < 1 or self.n_heads < 1:
            raise CircuitError("a graph needs at least one layer and one head")
        self.n_kv_heads = self.n_kv_heads or self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise CircuitError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        L, H = self.n_layers, self.n_heads
        self.inputs = ["embed", "pos_embed"] if self.split_input else ["input"]
        self.senders = list(self.inputs)
        self.receivers = []
        for l in range(L):
            self.senders += [f"{l}.{h}" for h in range(H)] + ([f"mlp{l}"] if self.has_mlp else [])
            self.receivers += [f"{l}.{h}.{x}" for x in LETTERS for h in range(self.inputs_of(x))]
            self.receivers += [f"mlp{l}"] if self.has_mlp else []
        self.receivers.append("logits")
        self.sender_index = {s: i for i, s in enumerate(self.senders)}
        self.receiver_index = {r: i for i, r in enumerate(self.receivers)}
        self.edges = [
            Edge(s, r, "add")
            for r in self.receivers
            for s in self.senders
            if self.stage(s) < self.stage(r, receiving=True)
        ]
        if self.dc_edges:
            self.edges += [
                Edge(self.head_input(l, h, x), f"{l}.{h}", "dc")
                for l in range(L)
                for x in LETTERS
                for h in range(H)
            ]
        self.edge_index = {e.name: i for i, e in enumerate(self.edges)}
        self._by_sender: dict[str, list[int]] = {}
        self._by_receiver: dict[str, list[int]] = {}
        for i, e in enumerate(self.edges):
            self._by_sender.setdefault(e.sender, []).append(i)
            self._by_receiver.setdefault(e.receiver, []).append(i)
        self.n_add = sum(e.kind == "add" for e in self.edges)
        # tensors the patched forward uses
        adds = self.edges[: self.n_add]
        self.add_sender = torch.tensor([self.sender_index[e.sender] for e in adds])
        self.add_receiver = torch.tensor([self.receiver_index[e.receiver] for e in adds])

    @classmethod
    def from_model(cls, model: Any, split_input: bool = False, dc_edges: bool = True) -> Graph:
        """The graph of a LeanModel or TransformerBridge (reads n_layers, n_heads, n_kv_heads,
        attn_only and parallel blocks); CircuitError for a model without per-head edges
        (`check_decomposable`)."""
        lean = as_lean(model)
        check_decomposable(lean)
        return cls(
            lean.n_layers,
            lean.n_heads,
            not lean.attn_only,
            split_input,
            dc_edges,
            lean.n_kv_heads,
            lean.arch.parallel,
        )

    # -- structure ------------------------------------------------------------------------------
    @property
    def group(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        assert self.n_kv_heads is not None
        return self.n_heads // self.n_kv_heads

    def inputs_of(self, letter: str) -> int:
        """How many "L.*.{letter}" input nodes a layer has: H for q, K for k and v."""
        assert self.n_kv_heads is not None
        return self.n_heads if letter == "q" else self.n_kv_heads

    def head_input(self, l: int, h: int, letter: str) -> str:
        """The q/k/v input node query head h of layer l reads ("L.G.k" with G = h // group)."""
        return f"{l}.{h if letter == 'q' else h // self.group}.{letter}"

    def stage(self, node: str, receiving: bool = False) -> int:
        """Position in the forward pass: inputs 0, layer L's attention 2L+1, its MLP 2L+2 (a
        parallel block's MLP receives at 2L+1, beside the heads), logits 2*n_layers+1. A sender
        feeds a receiver iff its stage is smaller."""
        if node in self.inputs:
            return 0
        if node == "logits":
            return 2 * self.n_layers + 1
        if node.startswith("mlp"):
            return 2 * int(node[3:]) + 2 - int(receiving and self.parallel)
        return 2 * int(node.split(".")[0]) + 1

    def layer(self, node: str) -> int:
        """The block a receiver (or dc edge) lives in; n_layers for "logits"."""
        if node == "logits":
            return self.n_layers
        return int(node[3:]) if node.startswith("mlp") else int(node.split(".")[0])

    @property
    def nodes(self) -> list[str]:
        """Every node: senders, head inputs and logits (MLPs once)."""
        heads_in = [r for r in self.receivers if r.count(".") == 2]
        return [*self.senders, *heads_in, "logits"]

    def check_nodes(self, names: list[str]) -> None:
        """Raise CircuitError naming unknown nodes and a few valid ones."""
        known = set(self.nodes)
        bad = [n for n in names if n not in known]
        if bad:
            raise CircuitError(
                f"unknown node(s) {bad}; nodes are like {self.nodes[:3]} ... "
                f"'{self.n_layers - 1}.{self.n_heads - 1}.q', 'logits' ({len(known)} in all)"
            )

    def edge_ids(self, names: list[str]) -> Tensor:
        """Indices of edges given by name ("0.1->logits"); CircuitError for unknown ones."""
        bad = [n for n in names if n not in self.edge_index]
        if bad:
            ends = {p for n in bad for p in n.split("->")}
            self.check_nodes(sorted(ends))
            raise CircuitError(f"no such edge(s) {bad}: a sender must come before its receiver")
        return torch.tensor([self.edge_index[n] for n in names], dtype=torch.long)

    def mask(self, names: list[str]) -> Tensor:
        """Boolean [n_edges] mask with the named edges set."""
        m = torch.zeros(len(self.edges), dtype=torch.bool)
        m[self.edge_ids(names)] = True
        return m

    def heads_reading(self, node: str) -> list[str]:
        """The heads reading q/k/v input `node`: "L.H.q" its head, "L.G.k" group G's heads."""
        l, i, letter = node.split(".")
        hs = [int(i)] if letter == "q" else range(int(i) * self.group, (int(i) + 1) * self.group)
        return [f"{l}.{h}" for h in hs]

    def out_edges(self, node: str) -> list[int]:
        """Indices of the edges leaving `node` (for a q/k/v input: its dc edges, or without dc
        edges the outgoing edges of the heads reading it; for "mlpL": the MLP's outgoing
        edges)."""
        if node.count(".") == 2:
            if self.dc_edges:
                return list(self._by_sender[node])
            return [i for h in self.heads_reading(node) for i in self._by_sender.get(h, ())]
        return list(self._by_sender.get(node, ()))

    def in_edges(self, node: str) -> list[int]:
        """Indices of the edges into `node`, in edge order."""
        return list(self._by_receiver.get(node, ()))

    def nodes_of(self, mask: Tensor) -> set[str]:
        """Nodes touched by an edge of `mask` [n_edges] (node-level view)."""
        out: set[str] = set()
        for i in mask.nonzero().flatten().tolist():
            out.update((self.edges[i].sender, self.edges[i].receiver))
        return out

    def heads_of(self, mask: Tensor) -> list[str]:
        """Heads "L.H" whose output or inputs are touched by an edge of `mask` (a key or value
        input "L.G.k" touches every head of its group)."""
        heads: set[str] = set()
        for n in self.nodes_of(mask):
            if n[0].isdigit():
                heads.update(self.heads_reading(n) if n.count(".") == 2 else [n])
        return sorted(heads, key=lambda s: tuple(int(x) for x in s.split(".")))

    def summary(self) -> str:
        n_dc = len(self.edges) - self.n_add
        return (
            f"{len(self.nodes)} nodes, {len(self.edges)} edges "
            f"({self.n_add} residual, {n_dc} q/k/v computation)"
        )

    # -- ACDC's visiting order ------------------------------------------------------------------
    def acdc_steps(self) -> list[tuple[str, list[int]]]:
        """(node, incoming edges in test order) in ACDC's reverse topological order.

        Receivers last-computed first: logits; per layer (last first) the MLP input, the heads'
        dc edges (v, k, q; heads H-1..0), then their v, k, q inputs (heads H-1..0; key/value heads
        K-1..0). Senders of one receiver nearest first: MLP of the layer before, its heads
        H-1..0, ..., inputs last (`TLACDCCorrespondence` insertion order with ACDC's default
        `indices_mode="normal"`). A dc step's node is the head, so it is skipped when the head has
        no outgoing edge. (A parallel block's MLP and heads do not feed each other: either order
        is topological; the MLP stays first.)
        """
        H = self.n_heads

        def senders_nearest_first(receiver: str) -> list[int]:
            ids = self.in_edges(receiver)
            rank = {i: -self.stage(self.edges[i].sender) for i in ids}
            order = {s: k for k, s in enumerate(self.senders)}
            # nearest stage first; within a stage MLP before heads, heads H-1..0; inputs in order
            return sorted(
                ids,
                key=lambda i: (
                    rank[i],
                    -order[self.edges[i].sender] if rank[i] != 0 else order[self.edges[i].sender],
                ),
            )

        steps: list[tuple[str, list[int]]] = [("logits", senders_nearest_first("logits"))]
        for l in reversed(range(self.n_layers)):
            if self.has_mlp:
                steps.append((f"mlp{l}", senders_nearest_first(f"mlp{l}")))
            if self.dc_edges:
                for x in reversed(LETTERS):
                    for h in reversed(range(H)):
                        dc = self.edge_index[f"{self.head_input(l, h, x)}->{l}.{h}"]
                        steps.append((f"{l}.{h}", [dc]))
            for x in reversed(LETTERS):
                for h in reversed(range(self.inputs_of(x))):
                    steps.append((f"{l}.{h}.{x}", senders_nearest_first(f"{l}.{h}.{x}")))
        return steps
