"""Feature evolution end to end: stream a model's tokens through per-layer SAEs, finalise the
measures, classify features, build the graph and find communities.

    result = compute_evolution(model, [sae_0, sae_1], eval_batches(model, 64))

With `rel_threshold` > 0 (the default 0.2) the batches are read twice: first each feature's
maximum (the relative activity thresholds), then the cross-layer sums. With a `checkpoint` folder
the run is resumable (`checkpoint.py`): its state is written every `checkpoint_every` batches and
at the end of each pass, and a rerun with the same inputs goes on from there.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import EvolutionError
from mechscope.evolution.checkpoint import StreamState, fingerprint, load_state, save_state
from mechscope.evolution.classify import GATE_THRESHOLD, MIN_SUPPORT, TAU, classify_pair
from mechscope.evolution.collect import TopActivations, check_layers, context, stream_codes
from mechscope.evolution.graph import ALGORITHMS, communities
from mechscope.evolution.result import (
    EvolutionResult,
    LayerInfo,
    PairResult,
    neuronpedia_source,
)
from mechscope.evolution.stats import (
    DATA_FREE,
    MEASURES,
    Method,
    PairStats,
    decoder_cosine,
    relative_thresholds,
    sparsify,
)
from mechscope.models.lean import as_lean
from mechscope.sae.model import SparseAutoencoder


@dataclass(frozen=True)
class EvolutionConfig:
    """How feature evolution is computed.

    measures: stored (sparsified) measures; any of stats.MEASURES and "decoder_cosine".
    rel_threshold: active = act > rel_threshold x the feature's max (0: act > 0).
    tau: pass-through threshold on the best next-layer Pearson r; gate_threshold: AND / OR;
    min_support: active tokens each AND / OR feature (parents and child) needs (0: no floor).
    min_abs, top_k: sparsification of the stored measures (|s| >= min_abs, top-k per feature);
        min_abs_mi: the floor for mutual information instead (nats: far below 1).
    graph_measure, graph_threshold, graph_top_k: the feature graph's edges.
    algorithms: community algorithms run (louvain, leiden, leiden-cpm), seeded with `seed`.
    n_examples: top activations kept per feature; method: PairStats' update path.
    """

    measures: tuple[str, ...] = (*MEASURES, *DATA_FREE)
    rel_threshold: float = 0.2
    tau: float = TAU
    gate_threshold: float = GATE_THRESHOLD
    min_support: int = MIN_SUPPORT
    min_abs: float = 0.1
    min_abs_mi: float = 0.001
    top_k: int | None = 10
    graph_measure: str = "pearson"
    graph_threshold: float = 0.1
    graph_top_k: int | None = None
    algorithms: tuple[str, ...] = ALGORITHMS
    seed: int = 42
    n_examples: int = 8
    method: Method = "auto"

    def __post_init__(self) -> None:
        known = (*MEASURES, *DATA_FREE)
        bad = [m for m in self.measures if m not in known]
        if bad or not self.measures:
            raise EvolutionError(f"unknown measures {bad}; choose from {known}")
        if self.graph_measure not in self.measures:
            raise EvolutionError(
                f"graph_measure {self.graph_measure!r} must be one of the measures {self.measures}"
            )
        bad = [a for a in self.algorithms if a not in ALGORITHMS]
        if bad:
            raise EvolutionError(f"unknown community algorithms {bad}; choose from {ALGORITHMS}")
        relative_thresholds(torch.zeros(1), self.rel_threshold)  # range check
        if self.min_support < 0:
            raise EvolutionError(f"min_support must be >= 0 active tokens, got {self.min_support}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["measures"], d["algorithms"] = list(self.measures), list(self.algorithms)
        return d


def finalise_pair(
    stats: PairStats,
    layer: int,
    config: EvolutionConfig,
    decoders: tuple[Tensor, Tensor] | None = None,
) -> PairResult:
    """Measures (sparsified) and classification of one layer pair from its running sums."""
    sims = {}
    for m in config.measures:
        if m == "decoder_cosine":
            if decoders is None:
                continue
            mat = decoder_cosine(*decoders)
        else:
            mat = stats.matrix(m)
        floor = config.min_abs_mi if m == "mutual_info" else config.min_abs
        sims[m] = sparsify(mat, floor, config.top_k)
        del mat
    cls = classify_pair(
        stats.matrix("pearson"),
        stats.matrix("necessity"),
        stats.matrix("sufficiency"),
        layer=layer,
        tau=config.tau,
        gate_threshold=config.gate_threshold,
        active_prev=stats.cnt_x,
        active_next=stats.cnt_y,
        min_support=config.min_support,
    )
    return PairResult(sims, cls)


def find_communities(
    result_layers: Sequence[LayerInfo], pairs: Sequence[PairResult], config: EvolutionConfig
) -> dict[str, list[list[str]]]:
    """Run every configured community algorithm on the graph of `config.graph_measure`."""
    from mechscope.evolution.graph import build_graph

    g = build_graph(
        [p.sims[config.graph_measure] for p in pairs],
        [l.n_features for l in result_layers],
        threshold=config.graph_threshold,
        top_k=config.graph_top_k,
        alive=[l.alive for l in result_layers],
    )
    return {a: communities(g, a, seed=config.seed) for a in config.algorithms}


def _label(examples: Sequence[tuple[float, str, str, str]]) -> str:
    if not examples:
        return "dead"
    tok, _ = Counter(e[2] for e in examples).most_common(1)[0]
    return repr(tok)


@torch.no_grad()
def compute_evolution(
    model: Any,
    saes: Sequence[SparseAutoencoder],
    batches: Sequence[Tensor],
    config: EvolutionConfig | None = None,
    *,
    hooks: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    model_name: str = "",
    neuronpedia: str | None = None,
    device: str | torch.device | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 50,
    progress: bool = False,
) -> EvolutionResult:
    """Feature evolution of `saes` (one per layer, in forward order) over token `batches`.

    hooks: where each SAE reads (default: its own cfg.hook_name); names: SAE names for the page;
    neuronpedia: a known SAELens release (`result.NEURONPEDIA`) or a source template with
    {layer}, for feature links; device: where the sums live (default: the model's);
    checkpoint: a folder for the resumable state, written every `checkpoint_every` batches.
    """
    config = config or EvolutionConfig()
    lean = as_lean(model)
    hooks = list(hooks or [s.cfg.hook_name for s in saes])
    check_layers(lean, hooks, saes)
    if not batches:
        raise EvolutionError("no token batches given")
    if len({tuple(b.shape) for b in batches}) != 1:
        raise EvolutionError("all token batches must have one shape [batch, n_ctx]")
    if checkpoint_every < 1:
        raise EvolutionError(f"checkpoint_every must be >= 1 batch, got {checkpoint_every}")
    names = list(names or [s.cfg.hook_name or f"sae{i}" for i, s in enumerate(saes)])
    sizes = [s.d_sae for s in saes]
    n_layers, n_batches = len(saes), len(batches)
    t0 = time.time()
    fp = ""
    state = None
    if checkpoint is not None:
        fp = fingerprint(batches, saes, hooks, config.rel_threshold, config.n_examples)
        state = load_state(checkpoint, fp)
    # pass 1: per-feature maxima, firing counts, top activations
    fires = [torch.zeros(f, dtype=torch.float64) for f in sizes]
    tops = [TopActivations(f, config.n_examples) for f in sizes]
    n_tokens, start = 0, 0
    if state is not None:
        n_tokens = state.n_tokens
        for l in range(n_layers):
            fires[l] = state.tensors[f"layer{l}.fires"]
            tops[l].values = state.tensors[f"layer{l}.top_values"]
            tops[l].ids = state.tensors[f"layer{l}.top_ids"]
        start = state.batch if state.stage == "features" else n_batches

    def save(stage: str, batch: int, stats: Sequence[PairStats] = ()) -> None:
        if checkpoint is None:
            return
        t = {}
        for l in range(n_layers):
            t[f"layer{l}.fires"] = fires[l]
            t[f"layer{l}.top_values"] = tops[l].values
            t[f"layer{l}.top_ids"] = tops[l].ids
        for l, st in enumerate(stats):
            t.update({f"pair{l}.{k}": v for k, v in st.state_dict().items()})
        save_state(checkpoint, fp, StreamState(stage, batch, n_tokens, t))

    for b, ids, codes in _progress(
        stream_codes(lean, hooks, saes, batches, start), progress, "features", n_batches - start
    ):
        n_tokens += int(ids.numel())
        for l, c in enumerate(codes):
            fires[l] += (c > 0).sum(0, dtype=torch.float64).cpu()
            tops[l].update(c, ids)
        if (b + 1) % checkpoint_every == 0 and b + 1 < n_batches:
            save("features", b + 1)
    if n_tokens == 0:
        raise EvolutionError("the batches hold no non-special tokens")
    if state is None or state.stage == "features":
        save("pairs", 0)
    max_acts = [t.values[:, 0].clamp_min(0.0) for t in tops]
    thr = [relative_thresholds(m, config.rel_threshold) for m in max_acts]
    # pass 2: cross-layer sums
    stats = [
        PairStats(
            sizes[l],
            sizes[l + 1],
            thr_prev=thr[l],
            thr_next=thr[l + 1],
            method=config.method,
            device=device if device is not None else lean.device,
        )
        for l in range(n_layers - 1)
    ]
    start = 0
    if state is not None and state.stage != "features" and "pair0.n" in state.tensors:
        for l, st in enumerate(stats):
            pre = f"pair{l}."
            saved = {k[len(pre) :]: v for k, v in state.tensors.items() if k.startswith(pre)}
            st.load_state_dict(saved)
        start = state.batch if state.stage == "pairs" else n_batches
    for b, _, codes in _progress(
        stream_codes(lean, hooks, saes, batches, start), progress, "pairs", n_batches - start
    ):
        for l, st in enumerate(stats):
            st.update(codes[l], codes[l + 1])
        if (b + 1) % checkpoint_every == 0 and b + 1 < n_batches:
            save("pairs", b + 1, stats)
    if state is None or state.stage != "done":
        save("done", n_batches, stats)
    t_stream = time.time() - t0
    # tokens each feature is active on (the gates' relative threshold); equal in both pairs of a
    # middle layer
    active = [stats[0].cnt_x, *(st.cnt_y for st in stats)]
    layers = []
    for l in range(n_layers):
        ex = [
            [
                (round(float(v), 4), *context(lean.tokenizer, batches, int(i)))
                for v, i in zip(tops[l].values[f].tolist(), tops[l].ids[f].tolist(), strict=True)
                if i >= 0 and v > 0
            ]
            for f in range(sizes[l])
        ]
        layers.append(
            LayerInfo(
                hook=hooks[l],
                sae=names[l],
                freq=(fires[l] / n_tokens).float(),
                max_act=max_acts[l],
                active=active[l].round().long().cpu(),
                examples=ex,
                labels=[_label(e) for e in ex],
                neuronpedia=neuronpedia_source(neuronpedia, hooks[l]),
            )
        )
    pairs = [
        finalise_pair(st, l, config, (saes[l].W_dec, saes[l + 1].W_dec))
        for l, st in enumerate(stats)
    ]
    del stats
    t1 = time.time()
    parts = find_communities(layers, pairs, config)
    meta: dict[str, Any] = {
        "stream_seconds": round(t_stream, 2),
        "graph_seconds": round(time.time() - t1, 2),
        "seconds": round(time.time() - t0, 2),
        "batches": n_batches,
        "batch_shape": list(batches[0].shape),
    }
    if state is not None:
        meta["resumed_from"] = {"stage": state.stage, "batch": state.batch}
    return EvolutionResult(
        model=model_name or str(getattr(lean.cfg, "model_name", "")),
        layers=layers,
        pairs=pairs,
        communities=parts,
        config=config.to_dict(),
        n_tokens=n_tokens,
        meta=meta,
    )


def _progress(it: Any, on: bool, what: str, total: int) -> Any:
    if not on:
        return it
    from rich.progress import track

    return track(it, description=f"evolution: {what}", total=total)
