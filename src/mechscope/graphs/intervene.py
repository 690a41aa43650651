"""Feature interventions: clamp, scale or zero transcoder features at chosen positions, in the
frozen replacement model and in the real model, next to what the attribution graph predicts.

Editing feature f of layer l at position p moves its activation from a to a new value (clamp:
`value`; scale: a * `value`; zero: 0) by adding (new - a) * W_dec[f] to that MLP output
(circuit-tracer's `feature_intervention`; the transcoder's error and other features stay):
    frozen: the prompt's local replacement model (patterns, norm denominators and every other
        node frozen; a the real activation), so only direct effects act. The frozen model is
        affine in its MLP writes, so the change of each logit target is exactly the graph's
        prediction sum_s (new_s / a_s - 1) * A[logit, s] for every edit kind.
    real: the model itself through hooks (`steering.TranscoderEdit`); later activations (and
        the edited feature's own a, when an earlier edit moves it) are recomputed.
The graph predicts nothing for an edit that moves a feature without a node (inactive, at the
excluded first position, or left out by max_feature_nodes): `predicted` is then None.
SAE features are edited in the real model the same way at the SAE's hook (`sae_logits`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import GraphError, SteeringError
from mechscope.graphs.attribution import AttributionGraph, _Setup, setup
from mechscope.graphs.replacement import frozen_forward
from mechscope.models.lean import LeanModel, as_lean
from mechscope.sae.model import SparseAutoencoder
from mechscope.sae.transcoder import Transcoder
from mechscope.steering.spec import FeatureEdit as SAEEdit
from mechscope.steering.spec import (
    Op,
    TranscoderEdit,
    check_interventions,
    hooks_for,
    new_code,
    parse_feature_op,
)

EDIT_SYNTAX = (
    "'LAYER:POS:FEATURE=VALUE' (clamp), 'LAYER:POS:FEATURE*FACTOR' (scale) or "
    "'LAYER:POS:FEATURE=0' (zero); POS one position, a list 3,5,-1 or 'all'"
)


@dataclass(frozen=True)
class FeatureEdit:
    """Edit transcoder feature `feature` of layer `layer` at position `pos`: op "clamp" sets
    it to `value`, "scale" multiplies it by `value`, "zero" sets it to 0."""

    layer: int
    pos: int
    feature: int
    value: float
    op: Op = "clamp"

    def __str__(self) -> str:
        """The edit as EDIT_SYNTAX writes it (what error messages show)."""
        how = f"*{self.value:g}" if self.op == "scale" else f"={self.value:g}"
        return f"edit {self.layer}:{self.pos}:{self.feature}{'=0' if self.op == 'zero' else how}"


def parse_edits(spec: str, n_pos: int, n_excluded: int = 1) -> list[FeatureEdit]:
    """The edits of one EDIT_SYNTAX spec on an n_pos-token prompt, one per position (negative
    positions count from the end; 'all' is every position but the first n_excluded, where the
    graph has no features)."""
    try:
        layer, where, rest = spec.split(":")
        feature, op, value = parse_feature_op(rest)
        if where == "all":
            positions = list(range(n_excluded, n_pos))
        else:
            positions = [int(p) for p in where.split(",")]
        return [FeatureEdit(int(layer), p, feature, value, op) for p in positions]
    except ValueError:
        raise GraphError(
            f"a feature edit is {EDIT_SYNTAX} (e.g. 1:12:345=0), got {spec!r}"
        ) from None


def check_edits(
    transcoders: Sequence[Transcoder], n_pos: int, edits: Sequence[FeatureEdit]
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


def _moves(codes: Sequence[Tensor], edits: Sequence[FeatureEdit]) -> list[tuple[float, float]]:
    """(a, new) of each edit: its feature's activation in codes (per layer [pos, d_tc]) and
    the edited value."""
    out = []
    for e in edits:
        a = codes[e.layer][e.pos, e.feature]
        out.append((float(a), float(new_code(a, e.op, e.value))))
    return out


def _frozen(
    lean: LeanModel,
    transcoders: Sequence[Transcoder],
    s: _Setup,
    edits: Sequence[FeatureEdit],
    moves: Sequence[tuple[float, float]],
) -> Tensor:
    """Last-position logits [vocab] of setup s's frozen model with edits moved as `moves`."""
    writes = s.writes.clone()
    for e, (a, new) in zip(edits, moves, strict=True):
        writes[e.layer, e.pos] += (new - a) * transcoders[e.layer].W_dec[e.feature]
    _, final = frozen_forward(lean, s.fz, transcoders, s.embed, writes)
    return final @ lean.W_U + lean.b_U


def _real_codes(transcoders: Sequence[Transcoder], s: _Setup) -> list[Tensor]:
    """Each layer's real transcoder activations [pos, d_tc] (the excluded positions too)."""
    return [tc.encode(x) for tc, x in zip(transcoders, s.fz.tc_in, strict=True)]


@torch.no_grad()
def frozen_logits(
    model: Any, transcoders: Sequence[Transcoder], tokens: Tensor, edits: Sequence[FeatureEdit]
) -> Tensor:
    """Last-position logits [vocab] of the prompt's frozen replacement model with `edits`."""
    lean = as_lean(model)
    s = setup(lean, transcoders, tokens)
    check_edits(transcoders, s.fz.n_pos, edits)
    return _frozen(lean, transcoders, s, edits, _moves(_real_codes(transcoders, s), edits))


@torch.no_grad()
def real_logits(
    model: Any, transcoders: Sequence[Transcoder], tokens: Tensor, edits: Sequence[FeatureEdit]
) -> Tensor:
    """Last-position logits [vocab] of the real model with `edits` applied through hooks."""
    lean = as_lean(model)
    n = int(tokens.shape[-1])
    check_edits(transcoders, n, edits)
    ivs = [
        TranscoderEdit(transcoders[e.layer], e.feature, e.op, e.value, (e.pos % n,)) for e in edits
    ]
    hooks = hooks_for(ivs, 0, n, lean)
    return lean.forward(tokens.reshape(1, -1).to(lean.device), hooks=hooks)[0, -1]


@torch.no_grad()
def sae_logits(
    model: Any, sae: SparseAutoencoder, tokens: Tensor, edits: Sequence[tuple[int, int, float]]
) -> Tensor:
    """Last-position logits [vocab] of the real model with SAE features set: each edit
    (pos, feature, value) adds (value - a) * W_dec[feature] at the SAE's hook and position, a
    being the feature's activation there in this run (`steering.FeatureEdit`)."""
    lean = as_lean(model)
    n = int(tokens.shape[-1])
    for p, f, _ in edits:
        if not -n <= p < n:
            raise GraphError(f"SAE edit ({p}, {f}): position out of range ({n} tokens)")
    ivs = [SAEEdit(sae.cfg.hook_name, sae, f, "clamp", v, (p % n,)) for p, f, v in edits]
    try:  # the hook, the SAE's width and the feature index, as steering checks them
        check_interventions(lean, ivs, n)
    except SteeringError as e:
        raise GraphError(str(e)) from None
    hooks = hooks_for(ivs, 0, n)
    return lean.forward(tokens.reshape(1, -1).to(lean.device), hooks=hooks)[0, -1]


@dataclass
class InterventionResult:
    """Changes of the graph's logit targets (demeaned logits) under the edits: in the frozen
    replacement model, in the real model, and as the graph predicts (direct effects; None
    where an edit moves a feature the graph has no node for)."""

    edits: list[FeatureEdit]
    moves: list[tuple[float, float]]  # per edit (activation in the real run, edited value)
    logit_tokens: list[int]
    logit_strs: list[str]
    frozen: list[float]
    real: list[float]
    predicted: list[float] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def predicted_change(
    g: AttributionGraph, edits: Sequence[FeatureEdit], moves: Sequence[tuple[float, float]]
) -> Tensor | None:
    """The graph's prediction [n_logits] of the change of its logit targets: for each edit,
    with moves[i] = (a, new) its feature's activation and edited value, (new / a - 1) times
    its node's column (the column is a times the direct effect of W_dec[f]); an edit that
    changes nothing adds 0; None when an edit moves a feature without a node."""
    out = torch.zeros(g.n_logits, dtype=torch.float64)
    rows = [g.logit_index(i) for i in range(g.n_logits)]
    for e, (a, new) in zip(edits, moves, strict=True):
        if new == a:
            continue
        try:
            s = g.feature_index(e.layer, e.pos % g.n_pos, e.feature)
        except GraphError:
            return None
        out += (new - a) / a * g.adjacency[rows, s].double()
    return out


def intervene(
    model: Any,
    transcoders: Sequence[Transcoder],
    g: AttributionGraph,
    edits: Sequence[FeatureEdit],
) -> InterventionResult:
    """Apply `edits` to graph g's prompt in the frozen and the real model; compare the changes
    of g's logit targets (demeaned logits) with the graph's prediction."""
    lean = as_lean(model)
    check_edits(transcoders, g.n_pos, edits)
    ids = g.logit_tokens

    def demeaned(logits: Tensor) -> Tensor:
        return (logits - logits.mean())[ids.to(logits.device)].double().cpu()

    with torch.no_grad():
        s = setup(lean, transcoders, g.tokens)
        moves = _moves(_real_codes(transcoders, s), edits)
        frozen = demeaned(_frozen(lean, transcoders, s, edits, moves))
        frozen -= demeaned(_frozen(lean, transcoders, s, [], []))
    real = demeaned(real_logits(lean, transcoders, g.tokens, edits))
    real -= demeaned(real_logits(lean, transcoders, g.tokens, []))
    predicted = predicted_change(g, edits, moves)
    return InterventionResult(
        edits=list(edits),
        moves=moves,
        logit_tokens=ids.tolist(),
        logit_strs=list(g.meta.get("logit_strs", [])),
        frozen=frozen.tolist(),
        real=real.tolist(),
        predicted=None if predicted is None else predicted.tolist(),
    )
