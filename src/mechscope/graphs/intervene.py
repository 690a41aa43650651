"""Feature interventions: set transcoder features to chosen values at chosen positions, in the
frozen replacement model and in the real model, next to what the attribution graph predicts.

Setting feature f of layer l at position p to v adds (v - a) * W_dec[f] to that MLP output, a
being the feature's activation in the run being intervened on (circuit-tracer's
`feature_intervention`):
    frozen: the prompt's local replacement model (patterns, norm denominators and every other
        node frozen), so only direct effects act; the change of each logit target equals the
        graph's prediction sum_s (v_s / a_s - 1) * A[logit, s] exactly.
    real: the model itself through hooks; later activations (and the intervened feature's own
        activation, when an earlier intervention moves it) are recomputed.
SAE features are set in the real model the same way at the SAE's hook (`sae_logits`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import GraphError
from mechscope.graphs.attribution import AttributionGraph, setup
from mechscope.graphs.replacement import frozen_forward
from mechscope.models.lean import Hook, LeanModel, as_lean
from mechscope.sae.model import SparseAutoencoder
from mechscope.sae.transcoder import Transcoder, mlp_input


@dataclass(frozen=True)
class FeatureEdit:
    """Set feature `feature` of layer `layer` at position `pos` to `value`."""

    layer: int
    pos: int
    feature: int
    value: float

    @classmethod
    def parse(cls, spec: str) -> FeatureEdit:
        """From 'layer:pos:feature=value' (e.g. '1:12:345=0')."""
        try:
            where, value = spec.split("=")
            layer, pos, feature = (int(x) for x in where.split(":"))
            return cls(layer, pos, feature, float(value))
        except ValueError:
            raise GraphError(
                f"a feature edit is 'layer:pos:feature=value' (e.g. 1:12:345=0), got {spec!r}"
            ) from None


def check_edits(
    lean: LeanModel, transcoders: Sequence[Transcoder], n_pos: int, edits: Sequence[FeatureEdit]
) -> None:
    """GraphError for an edit whose layer, position or feature index does not exist."""
    for e in edits:
        if not 0 <= e.layer < len(transcoders):
            raise GraphError(f"{e}: layer out of range (transcoders of {len(transcoders)} layers)")
        if not -n_pos <= e.pos < n_pos:
            raise GraphError(f"{e}: position out of range for a {n_pos}-token prompt")
        if not 0 <= e.feature < transcoders[e.layer].d_sae:
            raise GraphError(
                f"{e}: feature out of range (layer {e.layer} has {transcoders[e.layer].d_sae})"
            )


@torch.no_grad()
def frozen_logits(
    model: Any, transcoders: Sequence[Transcoder], tokens: Tensor, edits: Sequence[FeatureEdit]
) -> Tensor:
    """Last-position logits [vocab] of the prompt's frozen replacement model with `edits`."""
    lean = as_lean(model)
    s = setup(lean, transcoders, tokens)
    check_edits(lean, transcoders, s.fz.n_pos, edits)
    writes = s.writes.clone()
    for e in edits:
        a = s.fz.codes[e.layer][e.pos, e.feature]
        writes[e.layer, e.pos] += (e.value - a) * transcoders[e.layer].W_dec[e.feature]
    _, final = frozen_forward(lean, s.fz, transcoders, s.embed, writes)
    return final @ lean.W_U + lean.b_U


@torch.no_grad()
def real_logits(
    model: Any, transcoders: Sequence[Transcoder], tokens: Tensor, edits: Sequence[FeatureEdit]
) -> Tensor:
    """Last-position logits [vocab] of the real model with `edits` applied through hooks."""
    lean = as_lean(model)
    n = int(tokens.shape[-1])
    check_edits(lean, transcoders, n, edits)
    hooks: dict[str, Hook] = {}
    for l in sorted({e.layer for e in edits}):
        mine = [e for e in edits if e.layer == l]
        seen: dict[str, Tensor] = {}

        def grab(x: Tensor, seen: dict[str, Tensor] = seen) -> None:
            seen["x"] = x

        def edit(
            y: Tensor, seen: dict[str, Tensor] = seen, l: int = l, mine: list[FeatureEdit] = mine
        ) -> Tensor:
            tc = transcoders[l]
            codes = tc.encode(mlp_input(lean, l, seen["x"][0]))
            y = y.clone()
            for e in mine:
                y[0, e.pos] += (e.value - codes[e.pos, e.feature]) * tc.W_dec[e.feature]
            return y

        hooks[f"blocks.{l}.hook_mlp_in"] = grab
        hooks[f"blocks.{l}.hook_mlp_out"] = edit
    return lean.forward(tokens.reshape(1, -1).to(lean.device), hooks=hooks)[0, -1]


@torch.no_grad()
def sae_logits(
    model: Any, sae: SparseAutoencoder, tokens: Tensor, edits: Sequence[tuple[int, int, float]]
) -> Tensor:
    """Last-position logits [vocab] of the real model with SAE features set: each edit
    (pos, feature, value) adds (value - a) * W_dec[feature] at the SAE's hook and position, a
    being the feature's activation there in this run."""
    lean = as_lean(model)
    n = int(tokens.shape[-1])
    hook = sae.cfg.hook_name
    if hook not in lean.hook_names():
        raise GraphError(f"the SAE's hook {hook!r} is not a hook of this model")
    for p, f, _ in edits:
        if not -n <= p < n or not 0 <= f < sae.d_sae:
            raise GraphError(
                f"SAE edit ({p}, {f}): position or feature out of range ({n} tokens, "
                f"d_sae = {sae.d_sae})"
            )

    def edit(x: Tensor) -> Tensor:
        codes = sae.encode(x[0])
        x = x.clone()
        for p, f, v in edits:
            x[0, p] += (v - codes[p, f]) * sae.W_dec[f].to(x)
        return x

    return lean.forward(tokens.reshape(1, -1).to(lean.device), hooks={hook: edit})[0, -1]


@dataclass
class InterventionResult:
    """Changes of the graph's logit targets (demeaned logits) under the edits: in the frozen
    replacement model, in the real model, and as the graph predicts (direct effects)."""

    edits: list[FeatureEdit]
    logit_tokens: list[int]
    logit_strs: list[str]
    frozen: list[float]
    real: list[float]
    predicted: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def predicted_change(g: AttributionGraph, edits: Sequence[FeatureEdit]) -> Tensor:
    """The graph's prediction [n_logits] of the change of its logit targets: for each edit of an
    active feature, (value / a - 1) times its column; inactive features have no node (0)."""
    out = torch.zeros(g.n_logits, dtype=torch.float64)
    rows = [g.logit_index(i) for i in range(g.n_logits)]
    for e in edits:
        try:
            s = g.feature_index(e.layer, e.pos % g.n_pos, e.feature)
        except GraphError:
            continue
        a = float(g.activation_values[s])
        out += (e.value / a - 1) * g.adjacency[rows, s].double()
    return out


def intervene(
    model: Any,
    transcoders: Sequence[Transcoder],
    g: AttributionGraph,
    edits: Sequence[FeatureEdit],
) -> InterventionResult:
    """Apply `edits` to graph g's prompt in the frozen and the real model; compare the changes
    of g's logit targets (demeaned logits) with the graph's prediction."""
    ids = g.logit_tokens

    def demeaned(logits: Tensor) -> Tensor:
        return (logits - logits.mean())[ids.to(logits.device)].double().cpu()

    base_frozen = demeaned(frozen_logits(model, transcoders, g.tokens, []))
    base_real = demeaned(real_logits(model, transcoders, g.tokens, []))
    frozen = demeaned(frozen_logits(model, transcoders, g.tokens, edits)) - base_frozen
    real = demeaned(real_logits(model, transcoders, g.tokens, edits)) - base_real
    return InterventionResult(
        edits=list(edits),
        logit_tokens=ids.tolist(),
        logit_strs=list(g.meta.get("logit_strs", [])),
        frozen=frozen.tolist(),
        real=real.tolist(),
        predicted=predicted_change(g, edits).tolist(),
    )
