"""Feature cards: what each transcoder feature of a graph responds to on held-out text.

A card holds a feature's top-k activating contexts (the token, a few tokens around it with the
feature's activation on each, and the top activation), its activation density (the fraction of
the tokens read where it is > 0) and its largest activation, measured by running the model over
token batches (`card_batches`: held-out stdlib files, a fixed seed) with each transcoder encoding
its MLP's input (`mlp_input`, as the graph does). Special tokens (BOS/EOS) are left out, as the
graph zeroes its excluded positions. Only the requested features are kept per token; the top-k
streams through `evolution.collect.TopActivations`, so memory does not grow with the tokens.

`write_feature_files` also writes the cards in circuit-tracer's feature format
(`features/{scan}/{cantor(layer, feature)}.json`, frontend/feature_models.py), which its local
frontend reads beside the graph JSON; the graph JSON itself is unchanged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.data.batches import eval_batches
from mechscope.errors import GraphError
from mechscope.evolution.collect import TopActivations
from mechscope.files import write_json
from mechscope.graphs.export import cantor
from mechscope.models.lean import LeanModel, as_lean
from mechscope.progress import progress_bar
from mechscope.sae.activations import collect_many, keep_mask, special_ids
from mechscope.sae.transcoder import Transcoder, mlp_input


@dataclass
class CardExample:
    """One top activation: `act` at tokens[index], with the feature's activation on every token
    of the window (`acts`, zero on special tokens)."""

    act: float
    tokens: list[str]
    acts: list[float]
    index: int


@dataclass
class FeatureCard:
    """A feature's card: density (fraction of the tokens read where act > 0), max_act, the top
    activations, largest first (only positive ones), and the tokens whose logits its decoder row
    raises and lowers most directly (W_dec[f] @ W_U, the final norm's scale left out)."""

    layer: int
    feature: int
    density: float
    max_act: float
    examples: list[CardExample] = field(default_factory=list)
    top_logits: list[str] = field(default_factory=list)
    bottom_logits: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """`{layer}_{feature}`: the graph JSON's node ids of this feature start with it."""
        return f"{self.layer}_{self.feature}"


@dataclass
class FeatureCards:
    """Cards of some features over `n_tokens` tokens (meta: batches, batch shape, seconds)."""

    cards: list[FeatureCard]
    n_tokens: int
    meta: dict[str, Any] = field(default_factory=dict)

    def by_key(self) -> dict[str, dict[str, Any]]:
        """{`layer_feature`: card as a dict}, what the graph page embeds."""
        return {c.key: asdict(c) for c in self.cards}


def card_batches(model: Any, n_tokens: int, batch_size: int = 16) -> list[Tensor]:
    """Held-out token batches [batch_size, n_ctx] (`eval_batches`) holding >= n_tokens tokens."""
    if n_tokens < 1:
        raise GraphError(f"feature cards need at least one token, got {n_tokens}")
    n_ctx = int(model.cfg.n_ctx)
    return eval_batches(model, math.ceil(n_tokens / (batch_size * n_ctx)), batch_size=batch_size)


def _token_str(tokenizer: Any, token: int) -> str:
    return str(token) if tokenizer is None else str(tokenizer.decode([token]))


@torch.no_grad()
def feature_cards(
    model: Any,
    transcoders: Sequence[Transcoder],
    features: Tensor,
    batches: Sequence[Tensor],
    k: int = 8,
    before: int = 8,
    after: int = 3,
    n_logits: int = 5,
    progress: bool = False,
) -> FeatureCards:
    """Cards of `features` [n, 2] (layer, feature id; repeats are merged) over token `batches`
    (each [batch, n_ctx], one shape), from the transcoders of `transcoders` (one per layer, at
    index = layer). Each example's window is `before` tokens, the token and `after` tokens
    (cut at the sequence's ends); `n_logits` tokens in top_logits and bottom_logits."""
    lean: LeanModel = as_lean(model)
    if k < 1 or before < 0 or after < 0:
        raise GraphError(f"need k >= 1 and before, after >= 0, got {k}, {before}, {after}")
    if not batches or len({tuple(b.shape) for b in batches}) != 1:
        raise GraphError("feature cards need token batches of one shape [batch, n_ctx]")
    features = features.reshape(-1, 2).long().cpu()
    if not len(features):
        return FeatureCards([], 0, {"batches": 0, "seconds": 0.0})
    wanted: dict[int, Tensor] = {}
    for l in sorted(set(features[:, 0].tolist())):
        if not 0 <= l < len(transcoders):
            raise GraphError(f"feature of layer {l}: there are {len(transcoders)} transcoders")
        ids = features[features[:, 0] == l, 1].unique()
        if int(ids.min()) < 0 or int(ids.max()) >= transcoders[l].d_sae:
            raise GraphError(
                f"feature id out of range for layer {l}: the transcoder has "
                f"{transcoders[l].d_sae} features, got {ids.tolist()}"
            )
        wanted[l] = ids
    specials = special_ids(lean)
    tops = {l: TopActivations(len(ids), k) for l, ids in wanted.items()}
    fires = {l: torch.zeros(len(ids), dtype=torch.long) for l, ids in wanted.items()}
    # (layer, column, flat id) -> (window token ids, window acts, index in the window)
    windows: dict[tuple[int, int, int], tuple[list[int], list[float], int]] = {}
    size, n_ctx = batches[0].numel(), batches[0].shape[-1]
    n_tokens, t0 = 0, time.perf_counter()
    names = [f"blocks.{l}.hook_mlp_in" for l in wanted]
    with progress_bar(progress) as bar:
        task = bar.add_task("feature cards", total=len(batches))
        for b, tokens in enumerate(batches):
            keep = keep_mask(tokens, specials)
            n_tokens += int(keep.sum())
            flat_keep = keep.flatten()
            flat_ids = torch.arange(size)[flat_keep] + b * size
            acts = collect_many(lean, tokens.to(lean.device), names)
            for l, ids in wanted.items():
                tc = transcoders[l]
                x = mlp_input(lean, l, acts[f"blocks.{l}.hook_mlp_in"])
                codes = tc.encode(x.to(tc.W_dec.device, tc.W_dec.dtype))[..., ids.to(x.device)]
                codes = codes.float().cpu() * keep[..., None]  # [batch, n_ctx, n_wanted]
                kept = codes.flatten(0, 1)[flat_keep]
                fires[l] += (kept > 0).sum(0)
                tops[l].update(kept, flat_ids)
                for f, s in ((tops[l].ids >= b * size) & (tops[l].ids < (b + 1) * size)).nonzero():
                    flat = int(tops[l].ids[f, s])
                    row, pos = divmod(flat - b * size, n_ctx)
                    lo, hi = max(0, pos - before), min(n_ctx, pos + after + 1)
                    windows[(l, int(f), flat)] = (
                        tokens[row, lo:hi].tolist(),
                        codes[row, lo:hi, f].tolist(),
                        pos - lo,
                    )
            live = {
                (l, f, i)
                for l, t in tops.items()
                for f, row in enumerate(t.ids.tolist())
                for i in row
            }
            windows = {key: w for key, w in windows.items() if key in live}
            bar.update(task, advance=1)
    if n_tokens == 0:
        raise GraphError("the batches hold no non-special tokens")
    cards = []
    for l, ids in wanted.items():
        direct = transcoders[l].W_dec[ids.to(lean.W_U.device)].to(lean.W_U) @ lean.W_U
        n_logits = min(n_logits, direct.shape[1])
        up = direct.topk(n_logits, dim=1).indices.tolist()
        down = (-direct).topk(n_logits, dim=1).indices.tolist()
        for j, f in enumerate(ids.tolist()):
            examples = []
            for v, i in zip(tops[l].values[j].tolist(), tops[l].ids[j].tolist(), strict=True):
                if i < 0 or v <= 0:
                    continue
                toks, window, index = windows[(l, j, i)]
                strs = [_token_str(lean.tokenizer, t) for t in toks]
                examples.append(CardExample(v, strs, window, index))
            top = float(tops[l].values[j, 0])
            density = float(fires[l][j]) / n_tokens
            cards.append(
                FeatureCard(
                    l,
                    f,
                    density,
                    max(top, 0.0),
                    examples,
                    [_token_str(lean.tokenizer, t) for t in up[j]],
                    [_token_str(lean.tokenizer, t) for t in down[j]],
                )
            )
    meta = {
        "batches": len(batches),
        "batch_shape": list(batches[0].shape),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return FeatureCards(cards, n_tokens, meta)


def feature_file(card: FeatureCard, scan: str) -> dict[str, Any]:
    """`card` in circuit-tracer's feature format (frontend/feature_models.py `Model`); an example
    whose window repeats an earlier one's text (the corpus repeats lines) is marked repeated."""
    examples: list[dict[str, Any]] = []
    seen: set[tuple[tuple[str, ...], int]] = set()
    for e in card.examples:
        text = (tuple(e.tokens), e.index)
        examples.append(
            {
                "tokens_acts_list": e.acts,
                "train_token_ind": e.index,
                "is_repeated_datapoint": text in seen,
                "tokens": e.tokens,
            }
        )
        seen.add(text)
    return {
        "transcoder_id": f"{scan}/{card.layer}",
        "index": card.feature,
        "examples_quantiles": [{"quantile_name": "Top activations", "examples": examples}],
        "top_logits": card.top_logits,
        "bottom_logits": card.bottom_logits,
        "act_min": min((e.act for e in card.examples), default=0.0),
        "act_max": card.max_act,
        "quantile_values": [],
        "histogram": [],
        "activation_frequency": card.density,
    }


def write_feature_files(cards: FeatureCards, folder: str | Path, scan: str) -> Path:
    """Write each card to `folder/features/{scan}/{cantor(layer, feature)}.json`, where
    circuit-tracer's local frontend looks for them (serve with features_dir=folder/features);
    returns that scan folder."""
    out = Path(folder) / "features" / scan
    for card in cards.cards:
        write_json(out / f"{cantor(card.layer, card.feature)}.json", feature_file(card, scan))
    return out
