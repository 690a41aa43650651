"""Plotly heatmaps of patching results: layer x position (token labels), layer x head, and
sender x receiver; a 3-axis sweep (layer, pos, head) gets one panel per layer (head x position)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from mechscope.files import write_figure
from mechscope.patching.result import PatchResult
from mechscope.patching.specs import PatchingError


def _values(result: PatchResult, normalise: bool) -> tuple[Tensor, str, float]:
    """(values to show, colour-bar title, value at the colour midpoint)."""
    if normalise and abs(result.clean - result.corrupted) > 1e-6:
        return result.normalised(), f"{result.metric} (0 = corrupted, 1 = clean)", 0.0
    base = result.corrupted if result.direction == "denoising" else result.clean
    return result.values, result.metric, base


def centred_range(vals: Tensor, mid: float) -> dict[str, float]:
    """zmin / zmax symmetric about `mid`, so `mid` is the colour scale's centre (white in RdBu):
    plotly ignores zmid once zmin and zmax are set."""
    finite = vals[vals.isfinite()]
    half = float((finite - mid).abs().max()) if finite.numel() else 0.0
    half = half or 1.0  # all values at mid: any range centred there
    return {"zmin": mid - half, "zmax": mid + half}


def plot_result(result: PatchResult, normalise: bool = True, title: str | None = None) -> go.Figure:
    """A heatmap (or bar chart for a single axis) of `result`, labelled with its axis labels."""
    vals, cbar, mid = _values(result, normalise)
    title = title or (
        f"{result.method} patching, {result.direction}: {result.component} "
        f"({result.meta.get('task', '')} {result.metric})"
    )
    lab = result.labels
    style: dict[str, Any] = {"colorscale": "RdBu", "colorbar": {"title": cbar}}
    style.update(centred_range(vals, mid))
    axes = result.axes
    if len(axes) > 3:
        raise PatchingError(
            f"cannot plot {len(axes)} axes {axes}; plot a slice, e.g. a pattern sweep's "
            "dest x src entries of one head: go.Heatmap(z=result.values[layer, head])"
        )
    if len(axes) == 1:
        fig = go.Figure(go.Bar(x=lab.get(axes[0]), y=vals.tolist()))
        fig.update_layout(xaxis_title=axes[0], yaxis_title=cbar)
    elif len(axes) == 2:
        fig = go.Figure(
            go.Heatmap(z=vals.tolist(), x=lab.get(axes[1]), y=lab.get(axes[0]), **style)
        )
        fig.update_layout(xaxis_title=axes[1], yaxis_title=axes[0])
        fig.update_yaxes(type="category")
        fig.update_xaxes(type="category")
    else:
        if axes[:3] == ("layer", "pos", "head"):
            vals = vals.transpose(1, 2)  # -> layer, head, pos
        n = vals.shape[0]
        fig = make_subplots(
            rows=n,
            cols=1,
            shared_xaxes=True,
            subplot_titles=[f"layer {x}" for x in lab.get("layer", [str(i) for i in range(n)])],
        )
        for i in range(n):  # one colour scale over all panels, centred on mid
            fig.add_trace(
                go.Heatmap(
                    z=vals[i].tolist(),
                    x=lab.get("pos"),
                    y=lab.get("head"),
                    showscale=i == 0,
                    **style,
                ),
                row=i + 1,
                col=1,
            )
        fig.update_layout(height=220 * n + 120)
        fig.update_yaxes(title_text="head", type="category")
        fig.update_xaxes(type="category")
    fig.update_layout(title=title)
    return fig


def write_html(fig: go.Figure, path: str | Path) -> Path:
    """Write a self-contained HTML file (plotly.js inlined, so it opens offline)."""
    path = Path(path)
    write_figure(path, fig)
    return path
