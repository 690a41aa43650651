"""Results of the stable-regions analysis: plain dataclasses saved as JSON (+ safetensors).

- `RegionStats`: the summary of one model (one checkpoint): sharpness quartiles, median curve,
  boundary and polytope counts, and the isotropic-direction control. JSON.
- `RegionStatsTable`: `RegionStats` rows over checkpoints and model sizes. JSON.
- `SemanticResult`: prompts clustered by region, and how clusters relate to predictions. JSON.
- `PathCurves` (from `interpolate`): every path's curves. `save_curves` writes `<stem>.json` (meta)
  and `<stem>.safetensors` (tensors).
All files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechscope.errors import RegionsError
from mechscope.files import read_json, read_safetensors, suffixed, write_json, write_safetensors
from mechscope.regions.interpolate import PathCurves

_REMAKE = "Rerun the `mechscope regions` command that wrote it"

Quartiles = tuple[float, float, float]


@dataclass
class RegionStats:
    """Stable-region statistics of one model at one checkpoint.

    sharpness: quartiles over pairs of the paper's s = max_alpha d~'(alpha) (L2 output distance);
    sharpness_kl: the same on KL(P_A || P_alpha) / KL(1); median_curve [S]: median d~(alpha_k);
    boundaries_mean / with_boundary: boundaries crossed per path and the fraction of paths with at
    least one (slope >= threshold); top1_changes_mean: argmax-token changes per path;
    polytope_crossings: quartiles of MLP pattern bits flipped along the path, polytope_mismatch:
    median bits differing end to end (None for attention-only models); iso_*: the same on paths of
    equal length in isotropic random directions; output_ratio: median over pairs of
    d_real(1) / d_isotropic(1), the output change of a real step relative to a random one.
    """

    model: str
    revision: str | None
    step: int | None
    n_params: int | None
    n_pairs: int
    n_kept: int
    n_steps: int
    layer: int
    path: str
    read: str
    threshold: float
    sharpness: Quartiles
    sharpness_kl: Quartiles
    median_curve: list[float]
    boundaries_mean: float
    with_boundary: float
    top1_changes_mean: float
    iso_sharpness: Quartiles
    iso_median_curve: list[float]
    iso_with_boundary: float
    output_ratio: float
    polytope_crossings: Quartiles | None = None
    polytope_mismatch: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model}@{self.revision or 'main'}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegionStats:
        d = dict(d)
        for k in ("sharpness", "sharpness_kl", "iso_sharpness", "polytope_crossings"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_json(path, self.to_dict(), indent=2)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RegionStats:
        return cls.from_dict(read_json(Path(path), RegionsError, _REMAKE))


@dataclass
class RegionStatsTable:
    """`RegionStats` of several models and checkpoints, analysed on the same settings."""

    rows: list[RegionStats]
    meta: dict[str, Any] = field(default_factory=dict)

    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.rows))

    def of(self, model: str) -> list[RegionStats]:
        """The rows of one model in training order (checkpoints without a step last)."""
        rows = [r for r in self.rows if r.model == model]
        return sorted(rows, key=lambda r: (r.step is None, r.step or 0))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_json(path, {"rows": [r.to_dict() for r in self.rows], "meta": self.meta}, indent=2)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RegionStatsTable:
        d = read_json(Path(path), RegionsError, _REMAKE)
        return cls([RegionStats.from_dict(r) for r in d["rows"]], d.get("meta", {}))

    def table(self) -> list[dict[str, Any]]:
        """One flat dict per row (for printing and the docs' tables)."""
        return [
            {
                "model": r.model,
                "revision": r.revision or "main",
                "step": r.step,
                "s_q25": r.sharpness[0],
                "s_median": r.sharpness[1],
                "s_q75": r.sharpness[2],
                "s_kl_median": r.sharpness_kl[1],
                "iso_s_median": r.iso_sharpness[1],
                "with_boundary": r.with_boundary,
                "iso_with_boundary": r.iso_with_boundary,
                "output_ratio": r.output_ratio,
                "polytope_crossings_median": (
                    r.polytope_crossings[1] if r.polytope_crossings else None
                ),
                "boundaries_mean": r.boundaries_mean,
            }
            for r in self.rows
        ]


@dataclass
class SemanticResult:
    """Prompts clustered by stable region, and how the clusters relate to their predictions.

    prompts: each prompt's text; top1: its predicted next token; category: its last token's
    category (`prompts.token_category`); sharpness: [n][n] symmetric max(s_ij, s_ji) (0 on the
    diagonal); labels: cluster of each prompt (complete linkage: every pair inside a cluster has
    sharpness below `threshold`); rates: P(same top-1 | same cluster), P(same top-1 | different
    clusters), and the same for category, with the pair counts behind them.
    """

    model: str
    revision: str | None
    threshold: float
    n_steps: int
    prompts: list[str]
    top1: list[str]
    category: list[str]
    sharpness: list[list[float]]
    labels: list[int]
    rates: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_json(path, dataclasses.asdict(self), indent=2)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SemanticResult:
        return cls(**read_json(Path(path), RegionsError, _REMAKE))


def save_curves(curves: PathCurves, stem: str | Path) -> tuple[Path, Path]:
    """Write `<stem>.json` (gate layers, meta) and `<stem>.safetensors` (the tensors)."""
    stem = Path(stem)
    js, st = suffixed(stem, ".json"), suffixed(stem, ".safetensors")
    write_json(js, {"gate_layers": curves.gate_layers, "meta": curves.meta}, indent=2)
    tensors = {k: v.detach().cpu().contiguous() for k, v in curves.tensors().items()}
    write_safetensors(st, tensors)
    return js, st


def load_curves(stem: str | Path) -> PathCurves:
    """Read curves written by `save_curves` (give the stem or either file)."""
    stem = Path(stem)
    if stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    head = read_json(suffixed(stem, ".json"), RegionsError, _REMAKE)
    tensors: dict[str, Any] = read_safetensors(
        suffixed(stem, ".safetensors"), RegionsError, _REMAKE
    )
    return PathCurves(**tensors, **head)
