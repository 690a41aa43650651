"""Attribution graphs: direct effects between the nodes of a prompt's local replacement model.

Nodes (circuit-tracer's order, which is also the adjacency's row and column order):
    active features (layer, pos, feature id; a != 0, excluded positions left out), sorted by
    layer, then position, then feature id;
    error nodes, layer-major (n_feat + l * pos + c);
    token nodes, positions 0..pos-1;
    logit nodes: the most probable next tokens, descending, up to `desired_logit_prob` of the
    probability mass (at most `max_n_logits`).
adjacency[t, s] (rows = targets, columns = sources) is source s's direct effect on target t in the
frozen replacement model (`replacement.frozen_forward`): the source's vector (a_s * W_dec[s], the
error, the token embedding) times the Jacobian of the frozen model from where it is written to
where t reads, times t's reading vector (a feature: its encoder column, so the target is the
pre-activation minus b_enc; a logit: the demeaned unembedding column). Only feature and logit rows
are non-zero. With `bias` (kappa, the target's value with every node at zero) each target's value
is exactly the sum of its row plus its bias (completeness).

`attribute` computes the rows in batches: one vector-Jacobian product per batch of targets,
vectorised over the batch (`torch.func.vmap` of one `torch.func.vjp`), then contracted with every
source at once. `attribute_literal` is the definition taken literally: one backward pass per
target node, one dot product per edge; the tests hold the two equal and the benchmark times both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import GraphError
from mechscope.graphs.replacement import Frozen, freeze, frozen_forward, token_vectors
from mechscope.models.lean import LeanModel, as_lean
from mechscope.sae.transcoder import Transcoder


@dataclass
class AttributionGraph:
    """An attribution graph of one prompt (circuit-tracer's `Graph` fields).

    tokens [pos]; token_strs: their text; active_features [n_feat, 3] (layer, pos, feature id);
    activation_values [n_feat]; logit_tokens [n_logits] (vocab ids, descending probability);
    logit_probs [n_logits]; adjacency [N, N] float32, N = n_feat + L * pos + pos + n_logits;
    bias [N]: each target's value with every node at zero (zero for error and token rows);
    values [N]: each target's value at the prompt (feature pre-activation - b_enc, demeaned
    logit, b_U included); n_layers; prompt.
    """

    prompt: str
    tokens: Tensor
    token_strs: list[str]
    active_features: Tensor
    activation_values: Tensor
    logit_tokens: Tensor
    logit_probs: Tensor
    adjacency: Tensor
    bias: Tensor
    values: Tensor
    n_layers: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.active_features.shape[0])

    @property
    def n_logits(self) -> int:
        return int(self.logit_tokens.shape[0])

    def error_index(self, layer: int, pos: int) -> int:
        """Node index of the error node of (layer, pos)."""
        return self.n_features + layer * self.n_pos + pos

    def token_index(self, pos: int) -> int:
        return self.n_features + self.n_layers * self.n_pos + pos

    def logit_index(self, i: int) -> int:
        return self.n_features + (self.n_layers + 1) * self.n_pos + i

    def feature_index(self, layer: int, pos: int, feature: int) -> int:
        """Node index of active feature (layer, pos, feature); GraphError if it is not active."""
        want = torch.tensor([layer, pos, feature])
        hit = (self.active_features == want).all(1).nonzero()
        if hit.numel() == 0:
            raise GraphError(f"feature {feature} of layer {layer} is not active at position {pos}")
        return int(hit[0, 0])


def select_logits(
    logits: Tensor, max_n_logits: int = 10, desired_logit_prob: float = 0.95
) -> tuple[Tensor, Tensor]:
    """(vocab ids, probabilities) of the smallest set of most probable tokens whose probability
    reaches desired_logit_prob, at most max_n_logits (circuit-tracer's salient logits)."""
    probs = logits.double().softmax(-1)
    top_p, top_i = probs.topk(min(max_n_logits, probs.shape[-1]))
    m = int(
        torch.searchsorted(
            top_p.cumsum(0),
            torch.tensor(desired_logit_prob, dtype=top_p.dtype, device=top_p.device),
        )
    )
    m = min(m + 1, top_p.shape[0])
    return top_i[:m], top_p[:m].float()


@dataclass
class _Setup:
    """Everything both implementations share: the frozen run, node lists and target vectors."""

    fz: Frozen
    embed: Tensor  # [pos, d] token vectors
    writes: Tensor  # [L, pos, d] real MLP writes (feature writes + errors)
    feats: Tensor  # [n_feat, 3]
    acts: Tensor  # [n_feat]
    logit_ids: Tensor
    logit_probs: Tensor
    logit_vecs: Tensor  # [n_logits, d] demeaned unembedding columns
    logit_bias: Tensor  # [n_logits] demeaned b_U: part of each logit target's value and kappa


def setup(
    lean: LeanModel,
    transcoders: Sequence[Transcoder],
    tokens: Tensor,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    n_excluded: int = 1,
) -> _Setup:
    """The real run frozen, active features (layer, pos, feature order) and logit targets."""
    if tokens.ndim != 1:
        raise GraphError(f"tokens must be one prompt [pos], got shape {tuple(tokens.shape)}")
    n_ctx = getattr(lean.cfg, "n_ctx", None)
    if n_ctx is not None and tokens.shape[0] > int(n_ctx):
        raise GraphError(
            f"the prompt has {tokens.shape[0]} tokens, the model's context is {n_ctx}: shorten it"
        )
    fz = freeze(lean, transcoders, tokens.to(lean.device), n_excluded)
    feats = torch.cat(
        [
            torch.cat([torch.full((len(nz), 1), l, device=nz.device), nz], 1)
            for l, a in enumerate(fz.codes)
            for nz in [a.nonzero()]
        ]
    )
    acts = torch.stack([fz.codes[l][p, f] for l, p, f in feats.tolist()]) if len(feats) else None
    writes = torch.stack([fz.codes[l] @ tc.W_dec for l, tc in enumerate(transcoders)]) + fz.errors
    ids, probs = select_logits(fz.logits, max_n_logits, desired_logit_prob)
    W_U = lean.W_U.to(lean.device)
    vecs = (W_U[:, ids] - W_U.mean(1, keepdim=True)).T
    b_U = lean.b_U.to(lean.device)
    return _Setup(
        fz=fz,
        embed=token_vectors(lean, fz.tokens),
        writes=writes,
        feats=feats.cpu(),
        acts=acts if acts is not None else torch.zeros(0, dtype=fz.errors.dtype),
        logit_ids=ids.cpu(),
        logit_probs=probs.cpu(),
        logit_vecs=vecs,
        logit_bias=b_U[ids] - b_U.mean(),
    )


def prompt_tokens(lean: LeanModel, prompt: str) -> Tensor:
    """Token ids [pos] of `prompt`, with BOS prepended unless it starts with a special token
    (circuit-tracer's rule)."""
    tok = lean.tokenizer
    if tok is None:
        raise GraphError("the model has no tokenizer: pass token ids instead of a prompt string")
    ids = list(tok(prompt, add_special_tokens=False)["input_ids"])
    if not ids or ids[0] not in set(tok.all_special_ids):
        bos = next(
            t for t in (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, 0) if t is not None
        )
        ids = [int(bos), *ids]
    return torch.tensor(ids, dtype=torch.long)


def graph_bytes(n_features: int, n_layers: int, n_pos: int, n_logits: int) -> int:
    """Peak bytes of a graph's dense float32 matrices: the adjacency and pruning's normalised
    copy, edge scores and their sort (4 N^2 floats), N = features + errors + tokens + logits."""
    n = n_features + (n_layers + 1) * n_pos + n_logits
    return 4 * 4 * n * n


def _targets(s: _Setup, transcoders: Sequence[Transcoder]) -> list[tuple[int, int, Tensor]]:
    """Per target row, in node order (features, then logits): (layer or L for a logit, pos,
    reading vector [d])."""
    L, n = len(transcoders), s.fz.n_pos
    rows = [(l, p, transcoders[l].W_enc[:, f]) for l, p, f in s.feats.tolist()]
    return rows + [(L, n - 1, v) for v in s.logit_vecs]


def _columns(
    s: _Setup, transcoders: Sequence[Transcoder], g_embed: Tensor, g_writes: Tensor
) -> Tensor:
    """Edge weights [B, n_feat + L*pos + pos] of B rows from the gradients at the token vectors
    g_embed [B, pos, d] and at the MLP writes g_writes [B, L, pos, d]."""
    parts = []
    if len(s.feats):
        l, p, f = s.feats.T.to(g_writes.device)
        per_layer = [g_writes[:, k] @ tc.W_dec.T for k, tc in enumerate(transcoders)]
        proj = torch.stack(per_layer, 1)  # [B, L, pos, d_tc]
        parts.append(proj[:, l, p, f] * s.acts)
    parts.append((g_writes * s.fz.errors).sum(-1).flatten(1))  # [B, L*pos]
    parts.append((g_embed * s.embed).sum(-1))  # [B, pos]
    return torch.cat(parts, 1)


def _assemble(
    prompt: str,
    lean: LeanModel,
    s: _Setup,
    rows: Tensor,
    bias: Tensor,
    values: Tensor,
    selected: Tensor | None = None,
) -> AttributionGraph:
    """The graph from target rows [selected features + logits, all sources]; without
    `selected` every active feature is a node, else only those (others' columns dropped)."""
    n_active = len(s.feats)
    sel = torch.arange(n_active) if selected is None else selected.cpu()
    cols = torch.cat([sel, torch.arange(n_active, rows.shape[1])]).to(rows.device)
    rows = rows[:, cols]
    n_feat, n_src = len(sel), rows.shape[1]
    n_log = len(s.logit_ids)
    N = n_src + n_log
    adj = torch.zeros(N, N, dtype=torch.float32)
    adj[:n_feat, :n_src] = rows[:n_feat].float().cpu()
    adj[n_src:, :n_src] = rows[n_feat:].float().cpu()
    full_bias = torch.zeros(N, dtype=torch.float64)
    full_vals = torch.zeros(N, dtype=torch.float64)
    target_idx = list(range(n_feat)) + list(range(n_src, N))
    full_bias[target_idx] = bias.double().cpu()
    full_vals[target_idx] = values.double().cpu()
    tok = lean.tokenizer
    toks = s.fz.tokens.cpu()

    def text(ids: list[int]) -> list[str]:
        return [tok.decode([t]) for t in ids] if tok is not None else [str(t) for t in ids]

    return AttributionGraph(
        prompt=prompt,
        tokens=toks,
        token_strs=text(toks.tolist()),
        active_features=s.feats[sel],
        activation_values=s.acts[sel.to(s.acts.device)].float().cpu(),
        logit_tokens=s.logit_ids,
        logit_probs=s.logit_probs,
        adjacency=adj,
        bias=full_bias,
        values=full_vals,
        n_layers=lean.n_layers,
        meta={"logit_strs": text(s.logit_ids.tolist()), "n_active": n_active},
    )


def _read(s: _Setup, targets: list[tuple[int, int, Tensor]], ins: Tensor, final: Tensor) -> Tensor:
    """Each target's value [T] from the frozen model's outputs: a feature's pre-activation -
    b_enc, a logit's demeaned logit (its demeaned b_U included, so the value does not depend on
    where weight processing put the final norm's bias)."""
    vals = torch.stack([(final if l == ins.shape[0] else ins[l, p]) @ v for l, p, v in targets])
    n_feat = len(s.feats)
    return torch.cat([vals[:n_feat], vals[n_feat:] + s.logit_bias.to(vals.dtype)])


def attribute(
    model: Any,
    transcoders: Sequence[Transcoder],
    tokens: Tensor,
    prompt: str = "",
    batch_size: int = 256,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    n_excluded: int = 1,
    max_bytes: int = 8 * 2**30,
    max_feature_nodes: int | None = None,
    update_interval: int = 4,
) -> AttributionGraph:
    """The attribution graph of one prompt, tokens [pos] (BOS included), in batches of
    `batch_size` target rows (vectorised vector-Jacobian products).

    transcoders: one per layer 0..L-1, on the model's device and dtype.
    n_excluded: leading positions whose features and errors are left out (the BOS sink).
    max_bytes: refuse (GraphError, with the estimate) a graph whose dense matrices need more.
    max_feature_nodes: keep at most this many features (None: all): after the logit rows, the
        most influential unvisited features (through the rows so far) are computed
        update_interval * batch_size at a time, as circuit-tracer does; the others' columns are
        dropped (not moved into the errors), so completeness then holds only with all features.
    """
    lean = as_lean(model)
    s = setup(lean, transcoders, tokens, max_n_logits, desired_logit_prob, n_excluded)
    n_nodes = len(s.feats) if max_feature_nodes is None else min(len(s.feats), max_feature_nodes)
    need = graph_bytes(n_nodes, lean.n_layers, s.fz.n_pos, len(s.logit_ids))
    if need > max_bytes:
        raise GraphError(
            f"the graph of this prompt has {n_nodes} feature nodes ({len(s.feats)} active); its "
            f"matrices need about {need / 2**30:.3g} GiB, over max_bytes = "
            f"{max_bytes / 2**30:.3g} GiB: keep fewer features (max_feature_nodes, "
            "--max-feature-nodes), shorten the prompt or raise max_bytes (--max-gb)"
        )
    targets = _targets(s, transcoders)
    L, n, d = s.writes.shape

    def fn(embed: Tensor, writes: Tensor) -> tuple[Tensor, Tensor]:
        return frozen_forward(lean, s.fz, transcoders, embed, writes)

    with torch.no_grad():
        (ins, final), vjp, *_ = torch.func.vjp(fn, s.embed, s.writes)
        ins0, final0 = fn(torch.zeros_like(s.embed), torch.zeros_like(s.writes))
        values, bias = _read(s, targets, ins, final), _read(s, targets, ins0, final0)
        batched = torch.func.vmap(vjp)

        def rows_of(idx: Sequence[int]) -> Tensor:
            """Rows [len(idx), n_src] of targets idx, batch_size at a time."""
            out = []
            for start in range(0, len(idx), batch_size):
                chunk = [targets[i] for i in idx[start : start + batch_size]]
                ct_in = ins.new_zeros(len(chunk), L, n, d)
                ct_final = final.new_zeros(len(chunk), d)
                for b, (l, p, v) in enumerate(chunk):
                    if l == L:
                        ct_final[b] = v
                    else:
                        ct_in[b, l, p] = v
                g_embed, g_writes = batched((ct_in, ct_final))
                out.append(_columns(s, transcoders, g_embed, g_writes))
            return torch.cat(out)

        n_feat = len(s.feats)
        logit_idx = list(range(n_feat, len(targets)))
        if max_feature_nodes is None or max_feature_nodes >= n_feat:
            return _assemble(prompt, lean, s, rows_of(range(len(targets))), bias, values)
        logit_rows = rows_of(logit_idx)
        step = update_interval * batch_size
        selected, feat_rows = _budget(s, rows_of, logit_rows, max_feature_nodes, step)
        rows = torch.cat([feat_rows, logit_rows])
        keep = selected + logit_idx
    return _assemble(
        prompt, lean, s, rows, bias[keep], values[keep], torch.tensor(selected, dtype=torch.long)
    )


def _budget(
    s: _Setup,
    rows_of: Callable[[Sequence[int]], Tensor],
    logit_rows: Tensor,
    budget: int,
    step: int,
) -> tuple[list[int], Tensor]:
    """(the `budget` features kept, sorted; their rows [budget, n_src]), chosen as
    circuit-tracer does: repeatedly rank the unvisited features by their influence on the logits
    through the rows computed so far (|rows| row-normalised, influence = w (A + A^2 + ...)) and
    compute the next `step` of them."""
    from mechscope.graphs.prune import influence, normalize_rows

    n_feat, n_logits, n_src = len(s.feats), logit_rows.shape[0], logit_rows.shape[1]
    A = torch.zeros(n_src + n_logits, n_src + n_logits)
    A[n_src:, :n_src] = logit_rows.float().cpu()
    w = torch.zeros(A.shape[0])
    w[n_src:] = s.logit_probs.float()
    done: list[int] = []
    rows: dict[int, Tensor] = {}
    while len(done) < budget:
        infl = influence(normalize_rows(A), w)[:n_feat]
        infl[done] = -1.0
        nxt = infl.argsort(descending=True)[: min(step, budget - len(done))].tolist()
        new = rows_of(nxt)
        A[nxt, :n_src] = new.float().cpu()
        rows.update(zip(nxt, new, strict=True))
        done += nxt
    done.sort()
    return done, torch.stack([rows[i] for i in done])


def attribute_literal(
    model: Any,
    transcoders: Sequence[Transcoder],
    tokens: Tensor,
    prompt: str = "",
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    n_excluded: int = 1,
) -> AttributionGraph:
    """The same graph by the definition taken literally: one backward pass per target node and
    one dot product per (target, source) edge. Slow; the reference for tests and benchmarks."""
    lean = as_lean(model)
    s = setup(lean, transcoders, tokens, max_n_logits, desired_logit_prob, n_excluded)
    targets = _targets(s, transcoders)
    L, n, _ = s.writes.shape
    embed = s.embed.detach().clone().requires_grad_(True)
    writes = s.writes.detach().clone().requires_grad_(True)
    ins, final = frozen_forward(lean, s.fz, transcoders, embed, writes)
    values = _read(s, targets, ins, final).detach()
    with torch.no_grad():
        ins0, final0 = frozen_forward(
            lean, s.fz, transcoders, torch.zeros_like(embed), torch.zeros_like(writes)
        )
        bias = _read(s, targets, ins0, final0)
    n_src = len(s.feats) + L * n + n
    rows = torch.zeros(len(targets), n_src, dtype=writes.dtype, device=writes.device)
    for t, (l, p, v) in enumerate(targets):
        out = final @ v if l == L else ins[l, p] @ v
        g_embed, g_writes = torch.autograd.grad(out, [embed, writes], retain_graph=True)
        _literal_row(s, transcoders, rows[t], g_embed, g_writes)
    return _assemble(prompt, lean, s, rows, bias, values)


@torch.no_grad()
def _literal_row(
    s: _Setup, transcoders: Sequence[Transcoder], row: Tensor, g_embed: Tensor, g_writes: Tensor
) -> None:
    """Fill one target's row [n_src] edge by edge from its gradients at the token vectors
    [pos, d] and the MLP writes [L, pos, d]."""
    L, n, _ = g_writes.shape
    for j, (lj, pj, fj) in enumerate(s.feats.tolist()):
        row[j] = g_writes[lj, pj] @ (s.acts[j] * transcoders[lj].W_dec[fj])
    for lj in range(L):
        for pj in range(n):
            row[len(s.feats) + lj * n + pj] = g_writes[lj, pj] @ s.fz.errors[lj, pj]
    for pj in range(n):
        row[len(s.feats) + L * n + pj] = g_embed[pj] @ s.embed[pj]
