"""ACDC's delta forward: a circuit's activations, and the circuit with a few edges removed,
recomputed only where it differs.

ACDC tests one edge at a time, and removing edge u -> v changes only what depends on v: the head
(or MLP, or the logits) that v feeds, then only the nodes that read a changed node through an edge
still present. `DeltaCircuit` keeps the current circuit's activations; `trial(edge_sets)`
recomputes the changed nodes alone (a removal into the last layer recomputes one head, at the
metric's positions, and the logits; so does a removal into any layer whose outputs, once the
search has pruned the later keys and values, are read only there) and `commit` makes one of
its variants the current circuit.
Inputs follow the formula of patched.py; with grouped-query attention a key/value head's input
is computed once and its key (value) shared by the query heads of its group, each of which reads
it or, its dc edge removed, the ablated one. A trial equals `CircuitRunner.logits` of the same mask
to float32 rounding, which a test checks over long random walks of commits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mechscope.circuits.graph import per_query_head
from mechscope.circuits.patched import CircuitRunner


@dataclass
class Picked:
    """Per-variant values taken from a table of versions: variant i's is `table` indexed by
    `index[i]` along `dim` (a scalar index: one row [m]; a vector: a slice of those rows)."""

    table: Tensor
    index: Tensor  # [n] or [n, k]
    dim: int = 0

    def __getitem__(self, i: int) -> Tensor:
        return self.table[(slice(None),) * self.dim + (self.index[i],)]

    def at(self, f: Callable[[Tensor], Tensor]) -> Tensor:
        """f of the versions ([versions, m] -> [versions, m']), per variant [n, m']."""
        return f(self.table).index_select(0, self.index)


Rows = Tensor | Picked  # per-variant rows [n, m]


def _take(x: Tensor, idx: list[int] | Tensor, dim: int = 0) -> Tensor:
    """x indexed by idx along dim (index_select: many times faster than x[idx] on CPU)."""
    return x.index_select(dim, torch.as_tensor(idx, device=x.device))


def _full(x: Rows, f: Callable[[Tensor], Tensor] = lambda x: x) -> Tensor:
    """f of per-variant rows, [n, m']."""
    return x.at(f) if isinstance(x, Picked) else f(x)


@dataclass
class Trial:
    """Circuits a few edges away from the current one (variants), ready to be committed.

    Variant i is the current circuit without `edge_sets[i]`; every tensor has the variant first.
    """

    edge_sets: list[list[int]]
    logits: Tensor  # [n, batch, len(logit_pos), vocab]
    rows: dict[int, Tensor] = field(default_factory=dict)  # receiver -> new K rows [n, U]
    dc: Tensor | None = None  # new dc presence [n, L, 3, H] (per query head; None: unchanged)
    outs: dict[int, Rows] = field(default_factory=dict)  # sender -> new a_u - A_u [n, B*P*d]
    outs_pos: dict[int, Rows] = field(default_factory=dict)  # at-position layers' senders
    ins: dict[int, Rows] = field(default_factory=dict)  # receiver -> new input [n, B*P*d]
    qkv: dict[tuple[int, int], tuple[Tensor, Rows]] = field(default_factory=dict)
    # (layer, letter) -> (query heads [k], the new q/k/v they read [n, batch, pos, k, d_head]);
    # at-position layers' queries only at the logit positions


class DeltaCircuit:
    """The current circuit's activations on `runner`'s prompts (start: every edge present).

    runner: the CircuitRunner of the model, graph, prompts and ablation (its ablation run and
    clean outputs are reused); mask: [n_edges] bool, the starting circuit (default: all edges).
    Stored: each sender's a_u - A_u (`D`, and `Dp` at the logit positions), each q/k/v and MLP
    input (`IN`), the q/k/v each query head reads (`qkv`, after its dc edges). A trial's changed
    inputs are the stored ones plus the few changed terms; every `resync_every` commits all is
    recomputed from scratch, which bounds float32 drift. The last layer's outputs are read only
    at the logit positions, and so are an earlier layer's once no key or value input, nor a
    query or MLP input of a layer computed at all positions, reads them (`at_pos`; ACDC prunes
    the later layers first, so most layers get there): in those layers trials compute queries,
    head outputs and the MLP at those positions alone (keys and values at all), from scratch,
    and keep them in `Dp` only.
    """

    @torch.no_grad()
    def __init__(
        self, runner: CircuitRunner, mask: Tensor | None = None, resync_every: int = 256
    ) -> None:
        g, lean = runner.graph, runner.lean
        self.runner, self.g, self.lean = runner, g, lean
        self.L, self.H = g.n_layers, g.n_heads
        self.B, self.P = runner.tokens.shape
        # absolute logit positions (head_results masks attention by them)
        pos = range(self.P) if runner.logit_pos is None else runner.logit_pos
        self.pos = [p % self.P for p in pos]
        U, V = len(g.senders), len(g.receivers)
        self.n_in = len(g.inputs)
        self.per_layer = self.H + int(g.has_mlp)  # senders per layer
        self.offset = runner.input_offset  # of q, k, v inputs and the MLP in a layer's receivers
        self.n_qkv = self.offset[3]  # q/k/v input receivers per layer
        self.per_rcv = self.n_qkv + int(g.has_mlp)  # receivers per layer
        self.A = runner.ablated_out.reshape(U, -1)  # A_u [U, B*P*d]
        dev = self.device = lean.device  # a split model's pieces return here
        dt = runner.diff.dtype  # the model's (bf16 models keep bf16 activations)
        # the q/k/v input each query head reads, per letter: [H] indices into the letter's inputs
        heads = torch.arange(self.H, device=dev)
        self.src = [heads, heads // g.group, heads // g.group]
        self.mask = torch.ones(len(g.edges), dtype=torch.bool) if mask is None else mask.clone()
        self.K = torch.zeros(V, U, device=dev, dtype=dt)
        self.K[g.add_receiver, g.add_sender] = self.mask[: g.n_add].to(dev, dt)
        self.dc = (
            self.mask[g.n_add :].view(self.L, 3, self.H).clone()
            if g.dc_edges
            else torch.ones(self.L, 3, self.H, dtype=torch.bool)
        ).to(dev)
        self.D = runner.diff.reshape(U, -1).clone()  # a_u - A_u; inputs' rows never change
        self.Ap = self._at_pos(self.A)
        self.ain_logits = self._at_pos(runner.ablated_in[self.L].reshape(1, -1))[0]
        # layers read only at the logit positions (the last; earlier ones once no key or value,
        # nor a receiver computed at all positions, reads them): computed there alone
        self.at_pos = [False] * (self.L - 1) + [True]
        self.q_pos: dict[int, Tensor] = {}  # their queries [B, len(pos), H, d_head]
        self.IN = torch.zeros(V - 1, self.B * self.P * lean.W_E.shape[1], device=dev, dtype=dt)
        self.qkv = torch.zeros(self.L, 3, self.B, self.P, self.H, lean.d_head, device=dev, dtype=dt)
        # (the q/k/v each query head reads)
        self.resync_every, self.n_commits, self.n_trials = resync_every, 0, 0
        self.logits = self._full()
        self._update_at_pos()

    # -- indices ----------------------------------------------------------------------------------
    def _sender(self, l: int, h: int) -> int:
        """Sender index of head h of layer l (h = H: the layer's MLP)."""
        return self.n_in + l * self.per_layer + h

    def _receiver(self, l: int, j: int, h: int) -> int:
        """Receiver index of letter j (0 q, 1 k, 2 v) of input h (query head for q, key/value
        head for k and v) of layer l; j = 3: the MLP."""
        return l * self.per_rcv + self.offset[j] + (0 if j == 3 else h)

    def _ablated_in_at_pos(self, l: int, j: int) -> Tensor:
        """The ablation run's input [B*len(pos)*d] to layer l's queries (j = 0) or MLP (j = 3)."""
        r = self.runner
        return self._at_pos((r.ablated_in[l] if j == 0 else r.ablated_in_mlp[l]).reshape(1, -1))[0]

    def _at_pos(self, x: Tensor) -> Tensor:
        """Rows [n, B*P*d] -> the logit positions only [n, B*len(pos)*d]."""
        return _take(x.view(len(x), self.B, self.P, -1), self.pos, 2).reshape(len(x), -1)

    # -- the full forward of the current circuit ------------------------------------------------
    @torch.no_grad()
    def _full(self) -> Tensor:
        """Compute every activation of the current circuit from scratch; logits [B, pos, vocab]."""
        r = self.runner
        all_heads = torch.arange(self.H, device=self.device)
        for l in range(self.L):
            r0, nq = self._receiver(l, 0, 0), self.n_qkv
            self.IN[r0 : r0 + nq] = r.ablated_in[l].reshape(1, -1) + self.K[r0 : r0 + nq] @ self.D
            for j in range(3):
                a, k = r0 + self.offset[j], r.n_inputs[j]
                ins = self.IN[a : a + k].view(k, self.B, self.P, -1).permute(1, 2, 0, 3)
                out = self.lean.head_qkv(l, ins, j, torch.arange(k, device=self.device))
                out = per_query_head(out, self.H)
                abl = r.ablated_qkv[l][j]
                self.qkv[l, j] = torch.where(self.dc[l, j].view(1, 1, -1, 1), out, abl)
            q, k, v = self.qkv[l]
            self._set_heads(l, all_heads, q, k, v, self.D)
            if self.g.has_mlp:
                rm = self._receiver(l, 3, 0)
                self.IN[rm] = r.ablated_in_mlp[l].reshape(-1) + self.K[rm] @ self.D
                self._set_mlp(l, self.IN[rm : rm + 1], self.D)
        self.Dp = self._at_pos(self.D)
        self.q_pos = {l: self.qkv[l, 0][:, self.pos] for l in range(self.L) if self.at_pos[l]}
        return self._logits(self.K[-1:], {}, {})[0]

    def _update_at_pos(self) -> None:
        """Mark the layers whose outputs no receiver computed at all positions reads (keys and
        values always are; queries and MLP inputs of layers not so marked); removals only add
        layers, so a mark holds for every later circuit."""
        full = torch.zeros(len(self.g.receivers), dtype=torch.bool, device=self.device)
        for l in range(self.L):
            full[self._receiver(l, 1, 0) : self._receiver(l, 3, 0)] = True  # keys, values
        for l in reversed(range(self.L - 1)):
            s0 = self._sender(l, 0)
            if not self.at_pos[l] and not bool(self.K[full, s0 : s0 + self.per_layer].any()):
                self.at_pos[l] = True
                self.q_pos[l] = self.qkv[l, 0][:, self.pos]
            if not self.at_pos[l]:
                full[self._receiver(l, 0, 0) : self._receiver(l, 1, 0)] = True  # queries
                full[self._receiver(l, 3, 0) : self._receiver(l + 1, 0, 0)] = True  # MLP

    def _set_heads(
        self, l: int, heads: Tensor, q: Tensor, k: Tensor, v: Tensor, dest: Tensor | dict
    ) -> None:
        """Head outputs from q, k, v [n*B, P, k, d_head] into dest[sender] ([n, B*P*d], or a
        row of D when n = 1 and dest is D)."""
        res = self.lean.head_results(l, q, k, v, heads)  # [n*B, P, k, d]
        n = res.shape[0] // self.B
        for i, h in enumerate(heads.tolist()):
            s = self._sender(l, h)
            out = res[:, :, i].reshape(n, -1) - self.A[s]
            dest[s] = out[0] if isinstance(dest, Tensor) else out

    def _set_mlp(self, l: int, x: Tensor, dest: Tensor | dict) -> None:
        """MLP l's output from its input x [n, B*P*d] into dest[sender]."""
        s = self._sender(l, self.H)
        n = x.shape[0]
        out = self.lean.mlp_out(l, x.view(n * self.B, self.P, -1)).reshape(n, -1) - self.A[s]
        dest[s] = out[0] if isinstance(dest, Tensor) else out

    def _at_pos_input(
        self, ain: Tensor, rows: Tensor, outs: dict[int, Rows], outs_pos: dict[int, Rows]
    ) -> Tensor:
        """Inputs [n, k, B*len(pos)*d] at the logit positions of receivers with K rows
        [n, k, U], from scratch (cheap there): ablated input plus the present edges' terms,
        changed senders at their new values (`outs` full, `outs_pos` at the positions)."""
        x = ain + rows @ self.Dp
        idx = list(outs) + list(outs_pos)
        if idx:
            new = [_full(outs[s], self._at_pos) for s in outs]
            new += [_full(x) for x in outs_pos.values()]
            x = x + torch.bmm(rows[:, :, idx], torch.stack(new, 1) - _take(self.Dp, idx))
        return x

    def _logits(self, rows: Tensor, outs: dict[int, Rows], outs_pos: dict[int, Rows]) -> Tensor:
        """Logits [n, B, len(pos), vocab] from K rows [n, U] of the logits receiver."""
        x = self._at_pos_input(self.ain_logits, rows[:, None], outs, outs_pos)
        return self.lean.unembed(x.view(x.shape[0], self.B, len(self.pos), -1))

    # -- trials -------------------------------------------------------------------------------
    @torch.no_grad()
    def trial(self, edge_sets: list[list[int]]) -> Trial:
        """Variants of the current circuit, variant i without `edge_sets[i]` (present edges):
        their logits and what changed, recomputing only the nodes whose inputs differ.
        Variants share one pass (stacked along the batch). Where variant j removes chain[:j + 1]
        of residual edges into one layer's inputs (`layer_chain_length`), that layer's heads are
        computed once per version of their inputs (`_head_versions`), later layers per variant."""
        g, n = self.g, len(edge_sets)
        self.n_trials += 1
        t = Trial([list(es) for es in edge_sets], self.logits.expand(n, *self.logits.shape))
        layers = [self.L]
        for i, es in enumerate(edge_sets):
            for e in es:
                if e < g.n_add:
                    r = int(g.add_receiver[e])
                    if r not in t.rows:
                        t.rows[r] = self.K[r].repeat(n, 1)
                    t.rows[r][i, int(g.add_sender[e])] = 0.0
                    layers.append(min(r // self.per_rcv, self.L))
                else:
                    if t.dc is None:
                        t.dc = self.dc.repeat(n, 1, 1, 1)
                    t.dc[i].view(-1)[e - g.n_add] = False
                    layers.append((e - g.n_add) // (3 * self.H))
        dc = self.dc.expand(n, -1, -1, -1) if t.dc is None else t.dc
        removed = sorted({int(g.add_sender[e]) for es in edge_sets for e in es if e < g.n_add})

        def new_rows(rs: list[int]) -> Tensor:
            rows = [t.rows[r] if r in t.rows else self.K[r].expand(n, -1) for r in rs]
            return torch.stack(rows, 1)

        deltas: dict[int, Tensor] = {}  # changed sender -> its new output - stored [n, B*P*d]

        def new_inputs(rs: list[int]) -> Tensor:
            """Inputs [n, k, B*P*d] of receivers rs: stored ones plus what changed."""
            x = _take(self.IN, rs).expand(n, -1, -1)
            rows = new_rows(rs)  # [n, k, U]
            if removed:
                x = x + (rows[:, :, removed] - self.K[rs][:, removed]) @ _take(self.D, removed)
            ch = list(t.outs)
            if ch:  # the changed senders these receivers read
                read = rows[:, :, ch].any(0).any(0).tolist()
                ch = [s for s, r in zip(ch, read, strict=True) if r]
            if ch:
                for s in ch:
                    if s not in deltas:

                        def minus(x: Tensor, d: Tensor = self.D[s]) -> Tensor:
                            return x - d

                        deltas[s] = _full(t.outs[s], minus)
                x = x + torch.bmm(rows[:, :, ch], torch.stack([deltas[s] for s in ch], 1))
            for i, r in enumerate(rs):
                t.ins[r] = x[:, i]
            return x

        def touched(r0: int, k: int) -> Tensor:
            """Which of receivers r0..r0+k-1 have inputs that differ in some variant [k]."""
            out = torch.zeros(k, dtype=torch.bool, device=self.device)
            for r in t.rows:
                if r0 <= r < r0 + k:
                    out[r - r0] = True
            changed = list(t.outs) + list(t.outs_pos)
            if changed:
                out |= self.K[r0 : r0 + k, changed].any(1)
            return out

        P, npos = self.P, len(self.pos)
        l0 = min(layers)
        versioned = n > 1 and self._is_layer_chain(edge_sets, l0)

        for l in range(l0, self.L):
            r0 = self._receiver(l, 0, 0)
            is_last = self.at_pos[l]  # outputs read only at the logit positions
            if versioned and l == l0:  # heads once per version of their inputs
                self._head_versions(l, edge_sets[-1], t)
            else:
                in_touched = touched(r0, self.n_qkv)  # per q/k/v input
                # per query head and letter: does the input it reads differ? [3, H]
                head_touched = torch.stack(
                    [in_touched[self.offset[j] + self.src[j]] for j in range(3)]
                )
                redo_heads = head_touched.any(0) | (dc[:, l] != self.dc[l]).any(0).any(0)
                if bool(redo_heads.any()):
                    hs = redo_heads.nonzero().flatten()
                    # the changed q/k/v inputs at all positions, in one pass (the last layer's
                    # queries apart: at the logit positions only)
                    full = [
                        i
                        for i in in_touched.nonzero().flatten().tolist()
                        if not is_last or i >= self.H
                    ]
                    x_full = new_inputs([r0 + i for i in full]) if full else None
                    qkv = []
                    for j in range(3):
                        at_pos = is_last and j == 0  # the last layer's queries: logit positions
                        p = npos if at_pos else P
                        base = self.q_pos[l] if at_pos else self.qkv[l, j]
                        cur = base.index_select(2, hs).expand(n, -1, -1, -1, -1)
                        src = self.src[j][hs]  # the input each head of hs reads
                        a = self.offset[j]
                        ins = in_touched[a : a + self.runner.n_inputs[j]].nonzero().flatten()
                        if len(ins):  # recompute the changed inputs' q/k/v once each
                            rs = [r0 + a + i for i in ins.tolist()]
                            if at_pos:
                                x = self._at_pos_input(
                                    self._ablated_in_at_pos(l, 0), new_rows(rs), t.outs, t.outs_pos
                                )
                            else:  # a contiguous block of x_full
                                assert x_full is not None
                                first = full.index(a + int(ins[0]))
                                x = x_full[:, first : first + len(rs)]
                            x = x.view(n, len(rs), self.B, p, -1).permute(0, 2, 3, 1, 4)
                            x = x.reshape(n * self.B, p, len(rs), -1)
                            new = self.lean.head_qkv(l, x, j, ins).view(n, self.B, p, len(rs), -1)
                            reads = src[:, None] == ins[None]  # [len(hs), len(ins)]
                            redo = reads.any(1)
                            cur = cur.clone()
                            cur[:, :, :, redo] = new[:, :, :, reads[redo].int().argmax(1)]
                        # stored q/k/v already hold the current circuit's ablated ones; only
                        # recomputed ones, or a trial that removes dc edges, need the ablation
                        present = dc[:, l, j, hs]  # [n, k]
                        if (len(ins) or t.dc is not None) and not bool(present.all()):
                            abl = self.runner.ablated_qkv[l][j]
                            abl = _take(abl, self.pos, 1) if at_pos else abl
                            abl = abl.index_select(2, hs)
                            cur = torch.where(present.view(n, 1, 1, -1, 1), cur, abl)
                        t.qkv[(l, j)] = (hs, cur)
                        qkv.append(cur.reshape(n * self.B, p, len(hs), -1))
                    if is_last:
                        res = self.lean.head_results(l, qkv[0], qkv[1], qkv[2], hs, q_pos=self.pos)
                        res = res.view(n, self.B, npos, len(hs), -1)
                        for i, h in enumerate(hs.tolist()):
                            s = self._sender(l, h)
                            t.outs_pos[s] = res[:, :, :, i].reshape(n, -1) - self.Ap[s]
                    else:
                        self._set_heads(l, hs, qkv[0], qkv[1], qkv[2], t.outs)
            rm = r0 + self.n_qkv
            if g.has_mlp and bool(touched(rm, 1)[0]):
                if is_last:
                    ain = self._ablated_in_at_pos(l, 3)
                    x = self._at_pos_input(ain, new_rows([rm]), t.outs, t.outs_pos)
                    s = self._sender(l, self.H)
                    out = self.lean.mlp_out(l, x.view(n * self.B, npos, -1))
                    t.outs_pos[s] = out.reshape(n, -1) - self.Ap[s]
                else:
                    self._set_mlp(l, new_inputs([rm])[:, 0], t.outs)
        last = len(g.receivers) - 1
        if bool(touched(last, 1)[0]):
            t.logits = self._logits(new_rows([last])[:, 0], t.outs, t.outs_pos)
        return t

    def layer_chain_length(self, edges: list[int]) -> int:
        """How many leading `edges` are residual edges into the q/k/v or MLP inputs of the first
        one's layer (0 if the first is not): for the variants "current circuit without
        edges[:j + 1]", `trial` computes that layer's heads once per version of their inputs."""
        g, n = self.g, 0
        layer = None
        for e in edges:
            if e >= g.n_add:
                break
            l = int(g.add_receiver[e]) // self.per_rcv
            if l >= self.L or (layer is not None and l != layer):
                break
            layer, n = l, n + 1
        return n

    def _is_layer_chain(self, edge_sets: list[list[int]], layer: int) -> bool:
        """Whether variant j removes edge_sets[-1][:j + 1], edges into `layer`'s inputs."""
        chain = edge_sets[-1]
        return (
            layer < self.L
            and len(chain) == len(edge_sets)
            and all(es == chain[: j + 1] for j, es in enumerate(edge_sets))
            and self.layer_chain_length(chain) == len(chain)
        )

    def _head_versions(self, l: int, chain: list[int], t: Trial) -> None:
        """Layer l's heads in the variants "without chain[:j + 1]" (edges into layer l's
        inputs), each computed once per change instead of once per variant: candidate j changes
        its receiver's input, so the q/k/v it feeds (one version) and the heads reading that;
        variant j reads, for each head, its latest version up to j. Sets t.ins, t.qkv and the
        heads' outputs in t.outs (t.outs_pos where layer l is computed at the logit positions);
        an MLP input among the candidates is left to the caller (via t.rows)."""
        g, n, B, dev = self.g, len(chain), self.B, self.device
        at_pos = self.at_pos[l]
        r0 = self._receiver(l, 0, 0)
        rcv = [int(g.add_receiver[e]) for e in chain]
        snd = [int(g.add_sender[e]) for e in chain]
        versions: list[list[tuple[int, int]]] = [[], [], []]  # letter -> (chain position, rcv)
        latest: list[dict[int, int]] = [{}, {}, {}]  # letter -> query head -> version
        pairs: list[tuple[int, int, int, int, int]] = []  # (j, head, q, k, v version; -1 stored)
        for j, r in enumerate(rcv):
            i = r - r0
            if i >= self.n_qkv:
                continue  # the MLP's input
            x = 0 if i < self.offset[1] else 1 if i < self.offset[2] else 2
            ix = i - self.offset[x]  # the q (k, v) input's index
            versions[x].append((j, r))
            for h in [ix] if x == 0 else range(ix * g.group, (ix + 1) * g.group):
                latest[x][h] = len(versions[x]) - 1
                qv, kv, vv = (latest[y].get(h, -1) for y in range(3))
                pairs.append((j, h, qv, kv, vv))
        if not pairs:
            return
        new: list[Tensor | None] = [None, None, None]  # per letter [B, p, versions, d_head]
        for x, vs in enumerate(versions):
            if not vs:
                continue
            rs = [r for _, r in vs]
            us = sorted({u for u, r in zip(snd, rcv, strict=True) if r in rs})
            # gone[v, u]: version v's receiver has lost sender us[u] by its chain position
            gone = torch.tensor(
                [
                    [float(any(rcv[i] == r and snd[i] == u for i in range(j + 1))) for u in us]
                    for j, r in vs
                ],
                device=dev,
                dtype=self.K.dtype,
            )
            if x == 0 and at_pos:  # queries at the logit positions, from scratch
                rows = self.K[rs]
                rows[:, us] -= gone
                inp = self._ablated_in_at_pos(l, 0) + rows @ self.Dp
                p = len(self.pos)
            else:  # the stored input minus the removed terms
                inp = _take(self.IN, rs) - gone @ _take(self.D, us)
                p = self.P
                for r in dict.fromkeys(rs):  # each variant's latest version of r
                    last, pick = -1, []
                    for j in range(n):
                        if rcv[j] == r:
                            last += 1
                        pick.append(last)
                    own = [v for v, (_, rv) in enumerate(vs) if rv == r]
                    table = torch.cat([self.IN[r][None], inp[own]])
                    t.ins[r] = Picked(table, torch.tensor(pick, device=dev) + 1)
            idx = torch.tensor([r - r0 - self.offset[x] for r in rs], device=dev)
            xin = inp.view(len(rs), B, p, -1).permute(1, 2, 0, 3)
            new[x] = self.lean.head_qkv(l, xin, x, idx)
        # each variant's latest pair per changed head (or the stored head: -1)
        hs = sorted({h for _, h, *_ in pairs})
        col = {h: c for c, h in enumerate(hs)}
        sel, cur = [], [-1] * len(hs)
        k = 0
        for j in range(n):
            while k < len(pairs) and pairs[k][0] == j:
                cur[col[pairs[k][1]]] = k
                k += 1
            sel.append([len(hs) + c if c >= 0 else s for s, c in enumerate(cur)])
        pick_t = torch.tensor(sel, device=dev)  # [n, len(hs)] into stored heads, then pairs
        hp = torch.tensor([h for _, h, *_ in pairs], dtype=torch.long, device=dev)
        hs_t = torch.tensor(hs, dtype=torch.long, device=dev)
        qkv: list[Tensor] = []
        for x in range(3):
            stored = self.q_pos[l] if x == 0 and at_pos else self.qkv[l, x]  # after dc edges
            nx = new[x]
            table = stored if nx is None else torch.cat([stored, nx], 2)
            at = torch.tensor(
                [p[1] if p[2 + x] < 0 else self.H + p[2 + x] for p in pairs], device=dev
            )
            abl = self.runner.ablated_qkv[l][x]
            abl = (_take(abl, self.pos, 1) if x == 0 and at_pos else abl).index_select(2, hp)
            present = self.dc[l, x, hp].view(1, 1, -1, 1)
            qx = torch.where(present, table.index_select(2, at), abl)  # [B, p, pairs, d_head]
            qkv.append(qx)
            both = torch.cat([stored.index_select(2, hs_t), qx], 2)
            t.qkv[(l, x)] = (hs_t, Picked(both, pick_t, dim=2))
        res = self.lean.head_results(
            l, qkv[0], qkv[1], qkv[2], hp, q_pos=self.pos if at_pos else None
        )
        s_hs = [self._sender(l, h) for h in hs]
        base, dest = (self.Ap, t.outs_pos) if at_pos else (self.A, t.outs)
        s_pairs = self.n_in + l * self.per_layer + hp
        outs = res.permute(2, 0, 1, 3).reshape(len(pairs), -1) - _take(base, s_pairs)  # a - A
        table = torch.cat([_take(self.Dp if at_pos else self.D, s_hs), outs])
        for c, s in enumerate(s_hs):
            dest[s] = Picked(table, pick_t[:, c])

    @torch.no_grad()
    def commit(self, t: Trial, i: int = 0) -> None:
        """Make variant i of trial `t` (of the current circuit) the current circuit."""
        self.mask[t.edge_sets[i]] = False
        for r, rows in t.rows.items():
            self.K[r] = rows[i]
        if t.dc is not None:
            self.dc = t.dc[i].clone()
        for r, x in t.ins.items():
            self.IN[r] = x[i]
        for s, out in t.outs.items():
            self.D[s] = out[i]
        if t.outs:
            idx = list(t.outs)
            self.Dp[idx] = self._at_pos(_take(self.D, idx))
        for s, out in t.outs_pos.items():  # at-position layers': D keeps stale rows for them
            self.Dp[s] = out[i]
        for (l, j), (hs, val) in t.qkv.items():
            if l in self.q_pos and j == 0:
                self.q_pos[l][:, :, hs] = val[i]
            else:
                self.qkv[l, j][:, :, hs] = val[i]
        self._after_commit(t.logits[i])

    def _after_commit(self, logits: Tensor) -> None:
        self.logits = logits.clone()
        self.n_commits += 1
        if self.n_commits % self.resync_every == 0:
            self.logits = self._full()
        self._update_at_pos()
