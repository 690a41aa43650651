"""Results of the sensitive-directions experiments: plain dataclasses, JSON files, tidy tables.

- `KLCurves`: KL against perturbation length for several direction families at one hook
  (the paper's curves); also the feature comparisons across SAEs (finding b, c).
- `SubstitutionResult`: the epsilon-substitution comparison: per SAE, KL of SAE(x) against
  x + eps * (isotropic, cov-mixture, real-mixture direction), eps = |SAE(x) - x| (finding a).
Rows are tidy: one dict per (family, length) or (SAE, family) with the KL's mean and quantiles
over every counted token of every draw. Files are written atomically.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.table import Table
from torch import Tensor

from mechscope.errors import DirectionsError
from mechscope.files import read_json, write_json

_REMAKE = "Rerun the `mechscope directions` command that wrote it"

QUANTILES: dict[str, float] = {
    "kl_q05": 0.05,
    "kl_q25": 0.25,
    "kl_median": 0.5,
    "kl_q75": 0.75,
    "kl_q95": 0.95,
}


def summarise(values: Tensor) -> dict[str, float]:
    """kl_mean, kl_sem (standard error of the mean, tokens taken as independent), the QUANTILES
    and n of a tensor of per-token KLs."""
    v = values.flatten().double()
    if v.numel() == 0:
        return {
            "kl_mean": math.nan,
            "kl_sem": math.nan,
            **dict.fromkeys(QUANTILES, math.nan),
            "n": 0,
        }
    if v.numel() > 2**24:  # torch.quantile's limit: a fixed-stride subsample
        v = v[:: math.ceil(v.numel() / 2**24)]
    qs = torch.quantile(v, torch.tensor(list(QUANTILES.values()), dtype=v.dtype))
    full = values.flatten().double()
    out = {"kl_mean": float(full.mean()), "kl_sem": float(full.std() / math.sqrt(full.numel()))}
    out.update({k: float(q) for k, q in zip(QUANTILES, qs, strict=True)})
    out["n"] = int(values.numel())
    return out


def _save(obj: Any, path: str | Path) -> Path:
    p = Path(path)
    write_json(p, obj.to_dict(), indent=2)
    return p


@dataclass
class KLCurves:
    """Mean and quantiles of per-token KL against length L for each direction family.

    rows: tidy, one per (family, length): family, length, kl_mean, kl_sem, kl_q05 .. kl_q95, n.
    families: label -> info (family key; for SAE families: sae, loss, l0, pool size).
    meta: tokens, seed, positions, median norm and how lengths were chosen.
    """

    model: str
    hook_name: str
    lengths: list[float]
    rows: list[dict[str, Any]]
    families: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def labels(self) -> list[str]:
        return list(dict.fromkeys(r["family"] for r in self.rows))

    def curve(self, family: str, stat: str = "kl_mean") -> list[float]:
        """`stat` against self.lengths for one family."""
        rows = [r for r in self.rows if r["family"] == family]
        if not rows:
            raise KeyError(f"no family {family!r}; have {self.labels()}")
        return [r[stat] for r in sorted(rows, key=lambda r: r["length"])]

    def kl_at(self, family: str, length: float, stat: str = "kl_mean") -> float:
        """`stat` at `length`, linearly interpolated between the swept lengths."""
        xs = sorted(self.lengths)
        ys = self.curve(family, stat)
        if length <= xs[0]:
            return ys[0]
        for k in range(1, len(xs)):
            if length <= xs[k]:
                x0, x1, y0, y1 = xs[k - 1], xs[k], ys[k - 1], ys[k]
                return y0 + (y1 - y0) * (length - x0) / (x1 - x0)
        return ys[-1]

    def table(self, lengths: list[float] | None = None) -> Table:
        """Rich table: one row per family, mean KL at a few lengths (default: 5 spread ones)."""
        picks = lengths or [self.lengths[i] for i in _spread(len(self.lengths), 5)]
        table = Table(
            "family", *[f"L={x:.3g}" for x in picks], title=f"{self.model} {self.hook_name}"
        )
        for label in self.labels():
            info = self.families.get(label, {})
            name = label + (f" (L0 {info['l0']:.1f})" if "l0" in info else "")
            table.add_row(name, *[f"{self.kl_at(label, x):.4g}" for x in picks])
        return table

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "sweep", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KLCurves:
        d = {k: v for k, v in d.items() if k != "kind"}
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        return _save(self, path)

    @classmethod
    def load(cls, path: str | Path) -> KLCurves:
        return cls.from_dict(
            read_json(
                Path(path),
                DirectionsError,
                "Rerun the `mechscope directions` command that wrote it",
            )
        )


@dataclass
class SubstitutionResult:
    """Epsilon-substitution per SAE: KL of SAE(x) vs x + eps * baseline direction.

    rows: tidy, one per (sae, family) with family in ("sae", *baselines): sae, hook_name, loss,
    l0, eps_mean (mean |SAE(x) - x|), eps_rel (mean |SAE(x) - x| / |x|), kl_mean, quantiles, n.
    """

    model: str
    rows: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def saes(self) -> list[str]:
        return list(dict.fromkeys(r["sae"] for r in self.rows))

    def kl(self, sae: str, family: str, stat: str = "kl_mean") -> float:
        for r in self.rows:
            if r["sae"] == sae and r["family"] == family:
                return float(r[stat])
        raise KeyError(f"no row ({sae!r}, {family!r})")

    def ratios(self, stat: str = "kl_mean") -> list[dict[str, Any]]:
        """Per SAE: KL(SAE) / KL(baseline) for each baseline (ratio of means by default)."""
        out = []
        for sae in self.saes():
            first = next(r for r in self.rows if r["sae"] == sae)
            row = {k: first[k] for k in ("sae", "hook_name", "loss", "l0", "eps_mean", "eps_rel")}
            row["kl_sae"] = self.kl(sae, "sae", stat)
            for r in self.rows:
                if r["sae"] == sae and r["family"] != "sae":
                    row[f"kl_{r['family']}"] = r[stat]
                    row[f"ratio_{r['family']}"] = row["kl_sae"] / r[stat] if r[stat] else math.inf
            out.append(row)
        return out

    def table(self) -> Table:
        rows = self.ratios()
        base = [k[len("ratio_") :] for k in rows[0] if k.startswith("ratio_")] if rows else []
        table = Table("SAE", "L0", "eps", "KL SAE(x)", title=f"{self.model}: SAE(x) vs x + eps*d")
        for b in base:
            table.add_column(f"KL {b}")
            table.add_column(f"ratio {b}")
        for r in rows:
            cells = [r["sae"], f"{r['l0']:.1f}", f"{r['eps_mean']:.3g}", f"{r['kl_sae']:.4g}"]
            for b in base:
                cells += [f"{r[f'kl_{b}']:.4g}", f"{r[f'ratio_{b}']:.2f}x"]
            table.add_row(*cells)
        return table

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "substitution", **dataclasses.asdict(self), "ratios": self.ratios()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SubstitutionResult:
        return cls(model=d["model"], rows=d["rows"], meta=d.get("meta", {}))

    def save(self, path: str | Path) -> Path:
        return _save(self, path)

    @classmethod
    def load(cls, path: str | Path) -> SubstitutionResult:
        return cls.from_dict(
            read_json(
                Path(path),
                DirectionsError,
                "Rerun the `mechscope directions` command that wrote it",
            )
        )


def _spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when n <= k)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})
