"""`Circuit`: a set of edges of a `Graph`, how it was found, and how faithful it is."""

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
from mechscope.files import write_json


@dataclass
class Circuit:
    """A circuit: `present` [n_edges] (True = kept) over `graph`'s edges.

    method: "acdc", "acdc-reference", "eap", "eap-ig" or "topk"; tau: ACDC's threshold;
    scores: [n_edges] edge scores of a scoring method (None for ACDC);
    metric / ablation: what the circuit was measured with;
    full, value, ablated: the metric of the full model, of the circuit and of the fully ablated
    model (lower is better; filled by `faithfulness`); meta: model, task, timings, forwards.
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
        denom = self.ablated - self.full
        return float("nan") if abs(denom) < 1e-12 else (self.ablated - self.value) / denom

    def summary(self) -> str:
        f = self.faithfulness
        parts = [
            f"{self.method}: {self.n_edges} of {len(self.graph.edges)} edges",
            f"{len(self.heads)} heads",
        ]
        if self.tau is not None:
            parts.append(f"tau={self.tau:g}")
        if f is not None:
            parts.append(
                f"{self.metric}: circuit {self.value:.4g}, full model {self.full:.4g}, "
                f"ablated {self.ablated:.4g} (faithfulness {f:.3f})"
            )
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
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> Path:
        """Write JSON to `path` (".json" added if missing), atomically."""
        path = Path(path)
        path = path if path.suffix == ".json" else path.with_suffix(".json")
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Circuit:
        try:
            d = json.loads(Path(path).read_text())
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
        scores = d.get("scores")
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
            meta=d.get("meta", {}),
        )


def _finite(xs: list[float]) -> list[float | str]:
    return [x if math.isfinite(x) else str(x) for x in xs]


def _unfinite(xs: list[float | str]) -> list[float]:
    return [float(x) for x in xs]
