"""`Circuit`: a set of edges of a `Graph`, how it was found, and how faithful it is (on held-out
test prompts when it was found with `acdc_task` / `eap_task`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.circuits.graph import Graph
from mechscope.errors import CircuitError
from mechscope.files import read_json, suffixed, write_json


@dataclass
class MetricValues:
    """One metric (lower is better) of the full model, of a circuit and of the fully ablated
    model, on one prompt set."""

    full: float
    value: float
    ablated: float

    @property
    def faithfulness(self) -> float:
        """(ablated - circuit) / (ablated - full): 1 = as good as the full model, 0 = as bad as
        the fully ablated one (NaN where the full and ablated model agree)."""
        denom = self.ablated - self.full
        return float("nan") if abs(denom) < 1e-12 else (self.ablated - self.value) / denom

    def to_dict(self) -> dict[str, float]:
        return {
            "full": self.full,
            "value": self.value,
            "ablated": self.ablated,
            "faithfulness": self.faithfulness,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricValues:
        return cls(d["full"], d["value"], d["ablated"])


@dataclass
class Circuit:
    """A circuit: `present` [n_edges] (True = kept) over `graph`'s edges.

    method: "acdc", "acdc-reference", "eap", "eap-ig" or "topk"; tau: ACDC's threshold;
    scores: [n_edges] edge scores of a scoring method; for ACDC each tested edge's metric
    difference when it was tested (NaN: removed untested, its receiver disconnected);
    metric / ablation: what the circuit was found and measured with;
    full, value, ablated: the metric of the full model, of the circuit and of the fully ablated
    model (lower is better), on the held-out test prompts where `search` is set (`acdc_task`,
    `eap_task`), else on the prompts the circuit was found on;
    search: those values on the search prompts (the in-sample numbers), None without a test set;
    test_metrics: every task metric (`metrics.NAMES`) on the test prompts, by name;
    meta: model, task, seeds, prompt counts, timings, forwards.
    """

    graph: Graph
    present: Tensor
    method: str
    metric: str
    ablation: str
    tau: float | None = None
    scores: Tensor | None = None
    full: float | None = None
    value: float | None = None
    ablated: float | None = None
    search: MetricValues | None = None
    test_metrics: dict[str, MetricValues] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def edges(self) -> list[str]:
        """Names of the kept edges, in graph order."""
        return [self.graph.edges[i].name for i in self.present.nonzero().flatten().tolist()]

    @property
    def n_edges(self) -> int:
        return int(self.present.sum())

    @property
    def heads(self) -> list[str]:
        """Heads "L.H" touched by a kept edge."""
        return self.graph.heads_of(self.present)

    @property
    def faithfulness(self) -> float | None:
        """(ablated - circuit) / (ablated - full): 1 = as good as the full model, 0 = as bad as the
        fully ablated one (None before `faithfulness` was measured)."""
        if self.full is None or self.value is None or self.ablated is None:
            return None
        return MetricValues(self.full, self.value, self.ablated).faithfulness

    def summary(self) -> str:
        f = self.faithfulness
        parts = [
            f"{self.method}: {self.n_edges} of {len(self.graph.edges)} edges",
            f"{len(self.heads)} heads",
        ]
        if self.tau is not None:
            parts.append(f"tau={self.tau:g}")
        if f is not None:
            where = "held-out " if self.search is not None else ""
            parts.append(
                f"{where}{self.metric}: circuit {self.value:.4g}, full model {self.full:.4g}, "
                f"ablated {self.ablated:.4g} (faithfulness {f:.3f})"
            )
        if self.search is not None:
            parts.append(f"on the search prompts: faithfulness {self.search.faithfulness:.3f}")
        return ", ".join(parts)

    # -- files ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        g = self.graph
        return {
            "format": "mechscope-circuit/1",
            "graph": {
                "n_layers": g.n_layers,
                "n_heads": g.n_heads,
                "has_mlp": g.has_mlp,
                "split_input": g.split_input,
                "dc_edges": g.dc_edges,
                "n_kv_heads": g.n_kv_heads,
                "parallel": g.parallel,
                "n_edges": len(g.edges),
            },
            "method": self.method,
            "metric": self.metric,
            "ablation": self.ablation,
            "tau": self.tau,
            "n_edges": self.n_edges,
            "heads": self.heads,
            "edges": self.edges,
            "scores": None if self.scores is None else _finite(self.scores.tolist()),
            "full": self.full,
            "value": self.value,
            "ablated": self.ablated,
            "faithfulness": self.faithfulness,
            "search": None if self.search is None else self.search.to_dict(),
            "test_metrics": {k: v.to_dict() for k, v in self.test_metrics.items()},
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> Path:
        """Write JSON to `path` (".json" added if missing), atomically."""
        path = Path(path)
        path = path if path.suffix == ".json" else suffixed(path, ".json")
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Circuit:
        try:
            d = read_json(Path(path), CircuitError, "Rerun `mechscope acdc --out` to remake it")
            gd = d["graph"]
            graph = Graph(
                gd["n_layers"],
                gd["n_heads"],
                gd["has_mlp"],
                gd["split_input"],
                gd["dc_edges"],
                gd.get("n_kv_heads"),  # files from before grouped-query attention lack these
                gd.get("parallel", False),
            )
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise CircuitError(f"{path} is not a mechscope circuit file ({e})") from e
        scores, search = d.get("scores"), d.get("search")
        tests = d.get("test_metrics", {})
        return cls(
            graph=graph,
            present=graph.mask(d["edges"]),
            method=d["method"],
            metric=d["metric"],
            ablation=d["ablation"],
            tau=d.get("tau"),
            scores=None if scores is None else torch.tensor(_unfinite(scores)),
            full=d.get("full"),
            value=d.get("value"),
            ablated=d.get("ablated"),
            search=None if search is None else MetricValues.from_dict(search),
            test_metrics={k: MetricValues.from_dict(v) for k, v in tests.items()},
            meta=d.get("meta", {}),
        )


def _finite(xs: list[float]) -> list[float | str]:
    return [x if math.isfinite(x) else str(x) for x in xs]


def _unfinite(xs: list[float | str]) -> list[float]:
    return [float(x) for x in xs]
