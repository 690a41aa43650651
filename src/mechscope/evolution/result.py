"""`EvolutionResult`: what feature evolution found, saved as JSON + safetensors and loaded back.

A result folder holds `evolution.json` (config, layers' hooks, SAE names, labels, top examples,
classification, communities) and `tensors.safetensors` (per-feature frequencies and maxima, the
sparsified similarity matrices as (row, col, value) triplets, the best-partner arrays, the
per-feature active-token counts the AND / OR support floor reads).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
from torch import Tensor

from mechscope.errors import EvolutionError
from mechscope.evolution.classify import PairClassification, counts_table
from mechscope.evolution.graph import build_graph, community_stats
from mechscope.evolution.stats import SparseSimilarity
from mechscope.files import read_json, read_safetensors, write_json, write_safetensors

RESULT_FILE = "evolution.json"
TENSORS_FILE = "tensors.safetensors"
FORMAT = 2  # 2: per-feature active counts, the gates' min_support

# SAELens releases whose features Neuronpedia hosts: release -> source template ({layer} is the
# model layer of the SAE's hook). Feature pages: https://www.neuronpedia.org/<source>/<index>.
NEURONPEDIA = {
    "gpt2-small-res-jb": "gpt2-small/{layer}-res-jb",
    "gpt2-small-resid-post-v5-32k": "gpt2-small/{layer}-res_post_32k-oai",
    "gemma-scope-2b-pt-res-canonical": "gemma-2-2b/{layer}-gemmascope-res-16k",
}


def neuronpedia_source(release_or_template: str | None, hook: str) -> str | None:
    """Neuronpedia source ("gpt2-small/6-res-jb") of a known release or a template with {layer},
    for the SAE at `hook` (blocks.{layer}.*); None if unknown."""
    if not release_or_template:
        return None
    template = NEURONPEDIA.get(release_or_template, release_or_template)
    m = re.match(r"blocks\.(\d+)\.", hook)
    if "{layer}" in template and m is None:
        return None
    source = template.format(layer=m.group(1) if m else "")
    if not re.fullmatch(r"[A-Za-z0-9._\-]+/[A-Za-z0-9._\-]+", source):
        raise EvolutionError(
            f"Neuronpedia source {source!r} is not '<model>/<sae id>'; known releases: "
            f"{sorted(NEURONPEDIA)}"
        )
    return source


@dataclass
class LayerInfo:
    """One layer's SAE: hook, name, per-feature firing fraction and max activation, examples.

    freq [F]: fraction of the tokens read where act > 0; max_act [F]; active [F] (int64): tokens
    where the feature is active by the relative threshold (act > rel_threshold x max: the notion
    of the AND / OR gates, whose `min_support` floor reads these counts);
    examples[f]: the feature's top activations as (act, text before, token, text after);
    labels[f]: a short label (default: its most frequent top token); neuronpedia: source or None.
    """

    hook: str
    sae: str
    freq: Tensor
    max_act: Tensor
    active: Tensor
    examples: list[list[tuple[float, str, str, str]]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    neuronpedia: str | None = None

    @property
    def n_features(self) -> int:
        return int(self.freq.numel())

    @property
    def alive(self) -> Tensor:
        return self.freq > 0


@dataclass
class PairResult:
    """Layer l -> l+1: sparsified similarity per measure and the classification."""

    sims: dict[str, SparseSimilarity]
    classification: PairClassification


@dataclass
class EvolutionResult:
    """Feature evolution over a stack of SAEs (layer = position in the stack)."""

    model: str
    layers: list[LayerInfo]
    pairs: list[PairResult]
    communities: dict[str, list[list[str]]]
    config: dict[str, Any]
    n_tokens: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sizes(self) -> list[int]:
        return [l.n_features for l in self.layers]

    @property
    def measures(self) -> list[str]:
        return list(self.pairs[0].sims) if self.pairs else []

    def counts(self) -> list[dict[str, Any]]:
        """Per layer: pass-through / disappearing (to the next), kept / appearing / AND / OR
        (from the previous); see `classify.counts_table`."""
        rows = counts_table([p.classification for p in self.pairs], self.sizes)
        for row, layer in zip(rows, self.layers, strict=True):
            row["dead"] = int((~layer.alive).sum())
        return rows

    def community_stats(self) -> dict[str, dict[str, Any]]:
        return {algo: community_stats(parts) for algo, parts in self.communities.items()}

    def graph(self, measure: str | None = None, threshold: float | None = None) -> nx.Graph:
        """The feature graph on `measure` (default: the config's) above `threshold`."""
        measure = measure or self.config["graph_measure"]
        if measure not in self.measures:
            raise EvolutionError(f"measure {measure!r} not stored; stored: {self.measures}")
        return build_graph(
            [p.sims[measure] for p in self.pairs],
            self.sizes,
            threshold=self.config["graph_threshold"] if threshold is None else threshold,
            top_k=self.config.get("graph_top_k"),
            alive=[l.alive for l in self.layers],
        )

    # -- files ----------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        tensors: dict[str, Tensor] = {}
        for i, l in enumerate(self.layers):
            tensors[f"layer{i}.freq"] = l.freq.float()
            tensors[f"layer{i}.max_act"] = l.max_act.float()
            tensors[f"layer{i}.active"] = l.active.long()
        for i, p in enumerate(self.pairs):
            for m, s in p.sims.items():
                tensors[f"pair{i}.{m}.rows"] = s.rows.int()
                tensors[f"pair{i}.{m}.cols"] = s.cols.int()
                tensors[f"pair{i}.{m}.values"] = s.values.float()
            c = p.classification
            for k in ("best_next", "best_next_idx", "best_prev", "best_prev_idx"):
                tensors[f"pair{i}.{k}"] = getattr(c, k)
            tensors[f"pair{i}.and_gates"] = c.and_gates.long()
            tensors[f"pair{i}.or_gates"] = c.or_gates.long()
        tensors = {k: v.contiguous().cpu() for k, v in tensors.items()}
        write_safetensors(folder / TENSORS_FILE, tensors)
        doc = {
            "format": FORMAT,
            "model": self.model,
            "n_tokens": self.n_tokens,
            "config": self.config,
            "meta": self.meta,
            "layers": [
                {
                    "hook": l.hook,
                    "sae": l.sae,
                    "labels": l.labels,
                    "examples": l.examples,
                    "neuronpedia": l.neuronpedia,
                }
                for l in self.layers
            ],
            "pairs": [
                {
                    "measures": list(p.sims),
                    "tau": p.classification.tau,
                    "gate_threshold": p.classification.gate_threshold,
                    "min_support": p.classification.min_support,
                }
                for p in self.pairs
            ],
            "communities": self.communities,
            "counts": self.counts(),
            "community_stats": self.community_stats(),
        }
        write_json(folder / RESULT_FILE, doc, indent=None)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> EvolutionResult:
        folder = Path(folder)
        if not (folder / RESULT_FILE).exists():
            raise EvolutionError(
                f"no {RESULT_FILE} in {folder}; write one with `mechscope evolution run --out`"
            )
        remake = "Rerun `mechscope evolution run --out` to write the result anew."
        doc = read_json(folder / RESULT_FILE, EvolutionError, remake)
        if doc.get("format") != FORMAT:
            raise EvolutionError(
                f"{folder}: result format {doc.get('format')!r}, expected {FORMAT}; rerun "
                "`mechscope evolution run` to write it anew"
            )
        t = read_safetensors(folder / TENSORS_FILE, EvolutionError, remake)
        try:
            layers = [
                LayerInfo(
                    hook=d["hook"],
                    sae=d["sae"],
                    freq=t[f"layer{i}.freq"],
                    max_act=t[f"layer{i}.max_act"],
                    active=t[f"layer{i}.active"],
                    examples=[[(e[0], e[1], e[2], e[3]) for e in ex] for ex in d["examples"]],
                    labels=list(d["labels"]),
                    neuronpedia=d.get("neuronpedia"),
                )
                for i, d in enumerate(doc["layers"])
            ]
            sizes = [l.n_features for l in layers]
            pairs = []
            for i, d in enumerate(doc["pairs"]):
                sims = {
                    m: SparseSimilarity(
                        t[f"pair{i}.{m}.rows"],
                        t[f"pair{i}.{m}.cols"],
                        t[f"pair{i}.{m}.values"],
                        (sizes[i], sizes[i + 1]),
                    )
                    for m in d["measures"]
                }
                cls_ = PairClassification(
                    layer=i,
                    tau=d["tau"],
                    gate_threshold=d["gate_threshold"],
                    min_support=int(d["min_support"]),
                    best_next=t[f"pair{i}.best_next"],
                    best_next_idx=t[f"pair{i}.best_next_idx"],
                    best_prev=t[f"pair{i}.best_prev"],
                    best_prev_idx=t[f"pair{i}.best_prev_idx"],
                    and_gates=t[f"pair{i}.and_gates"],
                    or_gates=t[f"pair{i}.or_gates"],
                )
                pairs.append(PairResult(sims, cls_))
            return cls(
                model=doc["model"],
                layers=layers,
                pairs=pairs,
                communities={k: [list(p) for p in v] for k, v in doc["communities"].items()},
                config=doc["config"],
                n_tokens=int(doc["n_tokens"]),
                meta=doc.get("meta", {}),
            )
        except (KeyError, IndexError, TypeError) as e:
            raise EvolutionError(
                f"{folder}: {RESULT_FILE} and {TENSORS_FILE} do not fit together (missing {e}). "
                f"{remake}"
            ) from e
