"""Synthetic SAE codes with known structure, and a small result built from them."""

from __future__ import annotations

import pytest
import torch

from mechscope.evolution.compute import EvolutionConfig, finalise_pair, find_communities
from mechscope.evolution.result import EvolutionResult, LayerInfo
from mechscope.evolution.stats import PairStats, relative_thresholds

EVIL = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2"> & "q" \'x\''

# layer 1 features: 0-3 copies of layer 0 features 0-3; 4 = AND(4, 5); 5 = AND(6, 7);
# 6 = OR(8, 9); 7 = OR(4, 6); 8 = new (independent); 9 = dead. Layer 0 feature 10 is dead.
EXPECTED_PASS = [0, 1, 2, 3]
EXPECTED_AND = [[4, 4, 5], [5, 6, 7]]
EXPECTED_OR = [[6, 8, 9], [7, 4, 6]]


def synthetic_codes(n: int = 20_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x [n, 12] (layer 0), y [n, 10] (layer 1): sparse, active values in [0.5, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 12, generator=g) < 0.15) * (0.5 + 0.5 * torch.rand(n, 12, generator=g))
    x[:, 10] = 0.0
    y = torch.zeros(n, 10)
    y[:, :4] = x[:, :4]
    y[:, 4] = torch.minimum(x[:, 4], x[:, 5])
    y[:, 5] = torch.minimum(x[:, 6], x[:, 7])
    y[:, 6] = torch.maximum(x[:, 8], x[:, 9])
    y[:, 7] = torch.maximum(x[:, 4], x[:, 6])
    y[:, 8] = (torch.rand(n, generator=g) < 0.2) * (0.5 + 0.5 * torch.rand(n, generator=g))
    return x, y


def synthetic_stats(method: str = "auto", batch: int = 3000, rel: float = 0.2) -> PairStats:
    x, y = synthetic_codes()
    st = PairStats(
        12,
        10,
        thr_prev=relative_thresholds(x.max(0).values, rel),
        thr_next=relative_thresholds(y.max(0).values, rel),
        method=method,  # type: ignore[arg-type]
        device="cpu",
    )
    for s in range(0, x.shape[0], batch):
        st.update(x[s : s + batch], y[s : s + batch])
    return st


def synthetic_result(labels: list[str] | None = None) -> EvolutionResult:
    """A two-layer result from the synthetic codes (no model), with examples and labels."""
    x, y = synthetic_codes()
    cfg = EvolutionConfig(measures=("pearson", "jaccard", "sufficiency", "necessity"))
    st = synthetic_stats()
    pair = finalise_pair(st, 0, cfg)
    layers = []
    for l, (codes, active) in enumerate(((x, st.cnt_x), (y, st.cnt_y))):
        freq = (codes > 0).float().mean(0)
        lab = [f"L{l} feature {f}" for f in range(codes.shape[1])]
        ex = [
            [(0.9, "def f(x):\n    return ", "x", " + 1")] if freq[f] > 0 else []
            for f in range(len(lab))
        ]
        layers.append(
            LayerInfo(
                f"blocks.{l}.hook_resid_post",
                f"sae{l}",
                freq,
                codes.max(0).values,
                active.long(),
                ex,
                lab,
            )
        )
    if labels:
        layers[1].labels[: len(labels)] = labels
    layers[0].neuronpedia = "gpt2-small/0-res-jb"
    parts = find_communities(layers, [pair], cfg)
    return EvolutionResult("synthetic", layers, [pair], parts, cfg.to_dict(), x.shape[0])


def dense_measures(x: torch.Tensor, y: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> dict:
    """All measures from the whole data at once, float64, by the textbook formulas."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    xc, yc = x - x.mean(0), y - y.mean(0)
    out = {}
    sd = xc.norm(dim=0)[:, None] * yc.norm(dim=0)[None]
    out["pearson"] = torch.where(sd > 1e-9, xc.T @ yc / sd, torch.zeros_like(sd))
    nn_ = x.norm(dim=0)[:, None] * y.norm(dim=0)[None]
    out["cosine"] = torch.where(nn_ > 0, x.T @ y / nn_, torch.zeros_like(nn_))
    ax, ay = (x > tx).double(), (y > ty).double()
    co = ax.T @ ay
    cx, cy = ax.sum(0)[:, None], ay.sum(0)[None]
    union = cx + cy - co
    out["jaccard"] = torch.where(union > 0, co / union, torch.zeros_like(co))
    out["sufficiency"] = torch.where(cx > 0, co / cx, torch.zeros_like(co))
    out["necessity"] = torch.where(cy > 0, co / cy, torch.zeros_like(co))
    mi = torch.zeros_like(co)
    for a in (0, 1):
        for b in (0, 1):
            pa = (ax if a else 1 - ax).mean(0)[:, None]
            pb = (ay if b else 1 - ay).mean(0)[None]
            pab = (ax if a else 1 - ax).T @ (ay if b else 1 - ay) / n
            term = pab * torch.log(pab / (pa * pb))
            mi += torch.where(pab > 0, term, torch.zeros_like(term))
    out["mutual_info"] = mi
    return out


@pytest.fixture(scope="session")
def dense_reference():
    """`dense_measures`: every measure from whole code matrices by the textbook formulas."""
    return dense_measures


@pytest.fixture(scope="session")
def evil_result() -> EvolutionResult:
    return synthetic_result([EVIL])
