"""`PatchResult`: a labelled tensor of patched metric values with its baselines.

Saved as two files side by side: `<stem>.json` (axes, labels, baselines, metadata) and
`<stem>.safetensors` (the values), each written atomically (temporary file, then rename).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope import metrics
from mechscope.errors import PatchingError
from mechscope.files import read_json, read_safetensors, suffixed, write_json, write_safetensors


@dataclass
class PatchResult:
    """Metric values of patched runs, one per index of `axes`.

    values: tensor with one dimension per axis, e.g. [layer, pos, head]; each entry is the
        metric (mean over prompts) of the run patched at that index (for method "attribution":
        its first-order estimate, base value + (a_source - a_base) . grad).
    axes: axis names ("layer", "pos", "head", "sender", "receiver"); labels: axis -> tick labels.
    clean / corrupted: the metric of the unpatched clean / corrupted runs.
    metric, direction ("denoising", "noising", "zero", "mean"), component, method ("exact",
        "attribution", "path"), meta: free-form (model, task, prompts ...).
    """

    values: Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    clean: float
    corrupted: float
    metric: str
    direction: str
    component: str
    method: str = "exact"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.ndim != len(self.axes):
            raise ValueError(f"values {tuple(self.values.shape)} do not match axes {self.axes}")
        for ax, n in zip(self.axes, self.values.shape, strict=True):
            if ax in self.labels and len(self.labels[ax]) != n:
                raise ValueError(f"axis {ax!r} has {n} entries but {len(self.labels[ax])} labels")

    def normalised(self) -> Tensor:
        """values mapped so that 0 = corrupted baseline and 1 = clean baseline."""
        return metrics.normalise(self.values, self.clean, self.corrupted)

    def effect(self) -> Tensor:
        """values minus the base run's metric (corrupted for denoising, clean otherwise)."""
        base = self.corrupted if self.direction == "denoising" else self.clean
        return self.values - base

    def save(self, stem: str | Path) -> tuple[Path, Path]:
        """Write `<stem>.json` and `<stem>.safetensors`; returns both paths."""
        stem = Path(stem)
        head = {
            "axes": list(self.axes),
            "shape": list(self.values.shape),
            "labels": self.labels,
            "clean": self.clean,
            "corrupted": self.corrupted,
            "metric": self.metric,
            "direction": self.direction,
            "component": self.component,
            "method": self.method,
            "meta": self.meta,
        }
        js, st = suffixed(stem, ".json"), suffixed(stem, ".safetensors")
        write_json(js, head, indent=2)
        write_safetensors(st, {"values": self.values.detach().float().cpu().contiguous()})
        return js, st

    @classmethod
    def load(cls, stem: str | Path) -> PatchResult:
        """Read a result written by `save` (give the stem or either file)."""
        stem = Path(stem)
        if stem.suffix in (".json", ".safetensors"):
            stem = stem.with_suffix("")
        remake = "Rerun `mechscope patch` to write it anew."
        head = read_json(suffixed(stem, ".json"), PatchingError, remake)
        values = read_safetensors(suffixed(stem, ".safetensors"), PatchingError, remake)["values"]
        head.pop("shape")
        return cls(values=values, axes=tuple(head.pop("axes")), **head)


def position_labels(tokens: Tensor, tokenizer: Any | None) -> list[str]:
    """Position labels "i: token" for the first prompt of tokens [batch, pos]."""
    ids = tokens[0].tolist()
    if tokenizer is None:
        return [str(i) for i in range(len(ids))]
    return [f"{i}: {tokenizer.decode([t])!r}"[:24] for i, t in enumerate(ids)]


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two same-shaped tensors, flattened."""
    x = torch.stack([a.flatten().double(), b.flatten().double()])
    return float(torch.corrcoef(x)[0, 1])
