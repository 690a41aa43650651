"""The patched forward of a circuit ("tree patching", ACDC's semantics), batched over circuits.

A circuit is a boolean mask over the graph's edges (True = present). In its forward pass on the
clean prompts every receiver v reads

    in_v = c_v + sum_{u -> v present} a_u(now) + sum_{u -> v removed} A_u,

where a_u(now) is sender u's output in this (patched) pass, A_u its output in the ablation run
(the corrupted prompts, or zero) and c_v the input-independent terms (attention output biases).
That is the ablation run's input to v plus, over the present edges only, (a_u(now) - A_u):
circuits keep few edges, so this is the cheap form. A removed dc edge replaces the head's q (k,
v) with its value in the ablation run; with grouped-query attention a removed "L.G.k -> L.H" edge
replaces the key query head H reads (the layer's keys and values are then expanded to one per
query head). Under zero ablation the ablation run is ACDC's: the clean prompts with every sender
output set to zero (so its q/k/v come from the biases alone).

Many circuits run at once, stacked along the batch (row i*B + b is prompt b of circuit i). A run
starts at `start_layer`: every receiver before it must keep all its edges (then every activation
before it is the clean one and is read from the cache), which is how ACDC's later receivers are
tested without recomputing the earlier layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mechscope.circuits.graph import LETTERS, Graph, check_decomposable, per_query_head
from mechscope.errors import CircuitError
from mechscope.models.lean import Hook, LeanModel

ABLATIONS = ("resample", "zero")


def check_prompts(clean_tokens: Tensor, corrupt_tokens: Tensor | None, ablation: str) -> None:
    """CircuitError unless the prompts are [batch, pos] integers of one shape (resample)."""
    if ablation not in ABLATIONS:
        raise CircuitError(f"Unknown ablation {ablation!r}; choose one of {ABLATIONS}.")
    if not isinstance(clean_tokens, Tensor) or clean_tokens.ndim != 2:
        raise CircuitError("clean_tokens must be an integer tensor [batch, pos]")
    if ablation == "resample":
        if corrupt_tokens is None:
            raise CircuitError("resample ablation needs corrupted prompts (corrupt_tokens)")
        if corrupt_tokens.shape != clean_tokens.shape:
            raise CircuitError(
                f"clean tokens {tuple(clean_tokens.shape)} and corrupted tokens "
                f"{tuple(corrupt_tokens.shape)} differ in shape: every corrupted prompt must have "
                "the same token length as its clean prompt (edge ablation is position by position)."
            )


class CircuitRunner:
    """Logits of many circuits of one graph on one batch of prompts.

    lean: the model's LeanModel; clean_tokens [batch, pos]; corrupt_tokens [batch, pos] (resample)
    or None (zero); logit_pos: the positions whose logits are returned (None = all);
    ablation_hooks: hooks applied in the resample ablation run only (e.g. ACDC's tracr corruption
    permutes hook_pos_embed, `tracr.shuffle_positions`).
    """

    def __init__(
        self,
        lean: LeanModel,
        graph: Graph,
        clean_tokens: Tensor,
        corrupt_tokens: Tensor | None,
        ablation: str = "resample",
        logit_pos: Sequence[int] | None = (-1,),
        ablation_hooks: Mapping[str, Hook] | None = None,
    ) -> None:
        check_decomposable(lean)
        check_prompts(clean_tokens, corrupt_tokens, ablation)
        if ablation_hooks and ablation != "resample":
            raise CircuitError("ablation_hooks change the corrupted run: resample ablation only")
        shape = (lean.n_layers, lean.n_heads, lean.n_kv_heads, not lean.attn_only)
        if (graph.n_layers, graph.n_heads, graph.n_kv_heads, graph.has_mlp) != shape or (
            graph.has_mlp and graph.parallel != lean.arch.parallel
        ):
            raise CircuitError(
                "the graph does not match the model (layers, heads, key/value heads, MLPs or "
                "parallel blocks): build it with Graph.from_model(model)"
            )
        self.lean, self.graph, self.ablation = lean, graph, ablation
        self.tokens = clean_tokens
        self.logit_pos = None if logit_pos is None else list(logit_pos)
        L, H = lean.n_layers, lean.n_heads
        with torch.no_grad():  # caches of a split model: every tensor onto the main device
            _, clean = lean.run_with_cache(clean_tokens)
            clean = {k: v.to(lean.device) for k, v in clean.items()}
            if ablation == "resample":
                assert corrupt_tokens is not None
                _, abl = lean.run_with_cache(corrupt_tokens, ablation_hooks)
            else:
                _, abl = lean.run_with_cache(clean_tokens, self._zero_hooks())
            abl = {k: v.to(lean.device) for k, v in abl.items()}
            self.clean_logits = lean(clean_tokens, logit_pos=self.logit_pos)
        self.clean_out = self._sender_outputs(clean)  # [U, B, P, d]
        self.ablated_out = self._sender_outputs(abl)
        self.diff = self.clean_out - self.ablated_out  # a_u(clean) - A_u
        self.ablated_qkv = [
            torch.stack([per_query_head(abl[f"blocks.{l}.attn.hook_{x}"], H) for x in LETTERS])
            for l in range(L)
        ]  # [3, B, P, H, d_head] per layer: the q/k/v each query head reads
        # receiver inputs of the ablation run: q/k/v of layer l, MLP l, logits (index L); an MLP
        # reads resid_mid, or in a parallel block resid_pre (hook_mlp_in is either)
        self.ablated_in = [abl[f"blocks.{l}.hook_resid_pre"] for l in range(L)]
        self.ablated_in.append(abl[f"blocks.{L - 1}.hook_resid_post"])
        self.ablated_in_mlp = (
            [abl[f"blocks.{l}.hook_mlp_in"] for l in range(L)] if graph.has_mlp else []
        )
        self.resid = [clean[f"blocks.{l}.hook_resid_pre"] for l in range(L)]
        self.resid.append(clean[f"blocks.{L - 1}.hook_resid_post"])
        n_in = len(graph.inputs)
        per_layer = H + int(graph.has_mlp)
        self.first_sender = [n_in + l * per_layer for l in range(L + 1)]  # of layer l
        K = lean.n_kv_heads
        self.n_inputs = (H, K, K)  # q/k/v input nodes per layer
        self.input_offset = (0, H, H + K, H + 2 * K)  # of q, k, v inputs and the MLP in a layer
        per_rcv = H + 2 * K + int(graph.has_mlp)
        self.first_receiver = [l * per_rcv for l in range(L + 1)]
        # edge existence [receivers, senders]: a receiver reads no sender computed with or after it
        self.exists = torch.zeros(
            len(graph.receivers), len(graph.senders), device=lean.device, dtype=self.diff.dtype
        )
        self.exists[graph.add_receiver, graph.add_sender] = 1.0
        self.n_forwards = 0

    def _zero_hooks(self) -> dict[str, Hook]:
        names = ["hook_embed", "hook_pos_embed"] if self.graph.split_input else []
        names += [] if self.graph.split_input else ["blocks.0.hook_resid_pre"]
        for l in range(self.lean.n_layers):
            names.append(f"blocks.{l}.attn.hook_result")
            names += [f"blocks.{l}.hook_mlp_out"] if self.graph.has_mlp else []
        return {n: torch.zeros_like for n in names}

    def _sender_outputs(self, cache: dict[str, Tensor]) -> Tensor:
        outs = (
            [cache["hook_embed"], cache["hook_pos_embed"]]
            if self.graph.split_input
            else [cache["blocks.0.hook_resid_pre"]]
        )
        for l in range(self.lean.n_layers):
            outs += list(cache[f"blocks.{l}.attn.hook_result"].unbind(2))
            outs += [cache[f"blocks.{l}.hook_mlp_out"]] if self.graph.has_mlp else []
        return torch.stack(outs)

    # -- the batched forward ----------------------------------------------------------------------
    def start_layer(self, present: Tensor) -> int:
        """The first layer any circuit of `present` [n, n_edges] changes (n_layers: only logits)."""
        g = self.graph
        removed = ~present
        rcv = g.add_receiver[removed[:, : g.n_add].any(0)]
        layers = [self.n_layers_of_receiver(int(r)) for r in rcv.unique()]
        dc = removed[:, g.n_add :].any(0).nonzero().flatten()  # [layer, letter, query head]
        per = 3 * g.n_heads
        layers += [int(i) // per for i in dc]
        return min(layers, default=g.n_layers)

    def n_layers_of_receiver(self, r: int) -> int:
        return min(r // (self.first_receiver[1] or 1), self.graph.n_layers)

    @torch.no_grad()
    def logits(self, present: Tensor, start_layer: int | None = None) -> Tensor:
        """Logits [n, batch, len(logit_pos), vocab] of the circuits `present` [n, n_edges]."""
        g, lean = self.graph, self.lean
        if present.ndim != 2 or present.shape[1] != len(g.edges):
            raise CircuitError(f"present must be [n, {len(g.edges)}], got {tuple(present.shape)}")
        s = self.start_layer(present) if start_layer is None else start_layer
        n, (B, P) = present.shape[0], self.tokens.shape
        L, H = g.n_layers, g.n_heads
        removed = (~present).to(lean.device, self.diff.dtype)
        R = torch.zeros(
            n, len(g.receivers), len(g.senders), device=lean.device, dtype=self.diff.dtype
        )
        R[:, g.add_receiver, g.add_sender] = removed[:, : g.n_add]
        dc = removed[:, g.n_add :].view(n, L, 3, H) if g.dc_edges else None
        shared = self.first_sender[s]  # senders before layer s keep their clean outputs
        live: list[Tensor] = []  # a_u(now) - A_u [n, B, P, d] of senders from layer s on

        def new_input(r0: int, k: int, ablated_in: Tensor) -> Tensor | None:
            """Inputs [n, B, P, k, d] of receivers r0..r0+k-1, or None if none lost an edge:
            the ablation run's input plus (a_u(now) - A_u) over the present edges (ACDC's form,
            cheap because circuits keep few edges)."""
            if not bool(R[:, r0 : r0 + k].any()):
                return None
            keep = self.exists[r0 : r0 + k] - R[:, r0 : r0 + k]  # present edges [n, k, U]
            ks = keep[:, :, :shared].reshape(n * k, shared)
            uniq, inv = torch.unique(ks, dim=0, return_inverse=True)
            out = (uniq @ self.diff[:shared].reshape(shared, -1))[inv]  # [n*k, B*P*d]
            out += ablated_in.reshape(1, -1)
            for j, d_u in enumerate(live):  # senders from layer s on: sparse in the circuit
                nz = keep[:, :, shared + j].nonzero()
                if len(nz):
                    out.index_add_(0, nz[:, 0] * k + nz[:, 1], d_u.view(n, -1)[nz[:, 0]])
            return out.view(n, k, B, P, -1).permute(0, 2, 3, 1, 4)

        hooks: dict[str, Hook] = {}
        for l in range(s, L):
            r0 = self.first_receiver[l]
            # dc removals: keys and values expanded to one per query head, both or neither
            dc_l = [dc is not None and bool(dc[:, l, j].any()) for j in range(3)]
            if g.group > 1:
                dc_l[1] = dc_l[2] = dc_l[1] or dc_l[2]
            for j, x in enumerate(LETTERS):
                hooks[f"blocks.{l}.hook_{x}_input"] = self._input_hook(
                    new_input, r0 + self.input_offset[j], self.n_inputs[j], self.ablated_in[l]
                )
                if dc is not None and dc_l[j]:
                    hooks[f"blocks.{l}.attn.hook_{x}"] = self._dc_hook(
                        dc[:, l, j], self.ablated_qkv[l][j], n
                    )
            hooks[f"blocks.{l}.attn.hook_result"] = self._record(live, l, n, heads=True)
            if g.has_mlp:
                hooks[f"blocks.{l}.hook_mlp_in"] = self._input_hook(
                    new_input, r0 + self.input_offset[3], 1, self.ablated_in_mlp[l]
                )
                hooks[f"blocks.{l}.hook_mlp_out"] = self._record(live, l, n, heads=False)
        last = len(g.receivers) - 1
        final = self._input_hook(new_input, last, 1, self.ablated_in[L])
        self.n_forwards += n
        tokens = self.tokens.repeat(n, 1)
        if s == L:
            resid = self.resid[L].repeat(n, 1, 1)
            patched = final(resid)
            resid = resid if patched is None else patched
            out = lean(tokens, start_layer=L, resid=resid, logit_pos=self.logit_pos)
        else:
            hooks[f"blocks.{L - 1}.hook_resid_post"] = final
            resid = self.resid[s].repeat(n, 1, 1)
            out = lean(tokens, hooks, start_layer=s, resid=resid, logit_pos=self.logit_pos)
        return out.view(n, B, *out.shape[1:])

    @staticmethod
    def _input_hook(new_input: Any, r0: int, k: int, ablated_in: Tensor) -> Hook:
        def fn(x: Tensor) -> Tensor | None:  # x [n*B, P, H, d] or [n*B, P, d]
            new = new_input(r0, k, ablated_in)
            return None if new is None else new.reshape(x.shape)

        return fn

    @staticmethod
    def _dc_hook(removed: Tensor, ablated: Tensor, n: int) -> Hook:
        m = removed.bool().view(n, 1, 1, -1, 1)  # [n, 1, 1, H, 1]

        def fn(x: Tensor) -> Tensor:  # x [n*B, P, H or K, d_head]; ablated [B, P, H, d_head]
            # keys/values: one per query head (attention reads them as they are)
            y = per_query_head(x, ablated.shape[2]).view(n, *ablated.shape).to(ablated.device)
            return torch.where(m.to(ablated.device), ablated, y).view(len(x), *y.shape[2:])

        return fn

    def _record(self, live: list[Tensor], l: int, n: int, heads: bool) -> Hook:
        first = self.first_sender[l]
        if heads:
            abl = self.ablated_out[first : first + self.graph.n_heads]  # [H, B, P, d]

            def fn(x: Tensor) -> None:  # x [n*B, P, H, d]
                x = x.view(n, *abl.shape[1:3], *x.shape[2:]).to(abl.device)
                live.extend((x[:, :, :, h] - abl[h]) for h in range(abl.shape[0]))

            return fn
        abl_mlp = self.ablated_out[first + self.graph.n_heads]

        def fn_mlp(x: Tensor) -> None:  # x [n*B, P, d]
            live.append(x.view(n, *abl_mlp.shape).to(abl_mlp.device) - abl_mlp)

        return fn_mlp
