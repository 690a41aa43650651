"""Plotly figures of the stable-regions analysis (axes as in the authors' plotting code)."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import torch
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from mechscope import files
from mechscope.regions import boundaries as bd
from mechscope.regions.analysis import final_rows
from mechscope.regions.interpolate import PathCurves
from mechscope.regions.polytopes import polytope_counts
from mechscope.regions.result import RegionStats, RegionStatsTable, SemanticResult


def write_figure(fig: go.Figure, path: str | Path, cdn: bool = False) -> Path:
    """Write fig as HTML: plotly.js inlined (opens offline) or, with cdn, loaded from the web."""
    path = Path(path)
    files.write_figure(path, fig, "cdn" if cdn else True)
    return path


def _err(q: tuple[float, float, float]) -> tuple[float, float]:
    return q[2] - q[1], q[1] - q[0]


def sweep_figure(result: RegionStatsTable) -> go.Figure:
    """Median d(alpha)/d(1) per checkpoint (one panel per model), median sharpness vs training
    step (IQR error bars; dashed: isotropic control), and vs parameter count (final weights).

    Two rows (the models' curves above, the two summaries below) and no fixed width, so the
    figure fits its page; the legend sits below the panels."""
    models = result.models()
    cols = max(2, len(models))
    half = cols // 2
    below = [{"colspan": half}, *[None] * (half - 1), {"colspan": cols - half}]
    below += [None] * (cols - half - 1)
    fig = make_subplots(
        rows=2,
        cols=cols,
        specs=[[{} if i < len(models) else None for i in range(cols)], below],
        subplot_titles=[
            *(f"model={m}" for m in models),
            "sharpness vs training",
            "sharpness vs size",
        ],
        vertical_spacing=0.18,
    )
    training, size = {"row": 2, "col": 1}, {"row": 2, "col": half + 1}
    for col, m in enumerate(models, start=1):
        rows = result.of(m)
        shades = [i / max(1, len(rows) - 1) for i in range(len(rows))]
        colours = sample_colorscale("Viridis", shades)
        for r, c in zip(rows, colours, strict=True):
            alphas = torch.linspace(0, 1, len(r.median_curve)).tolist()
            fig.add_trace(
                go.Scatter(
                    x=alphas,
                    y=r.median_curve,
                    name=f"{m} step {r.step}",
                    line={"color": c},
                    legendgroup=m,
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="alpha", row=1, col=col)
        fig.update_yaxes(title_text="median d(alpha)/d(1)", row=1, col=col)
        steps = [r.step if r.step is not None else i for i, r in enumerate(rows)]
        up, down = zip(*(_err(r.sharpness) for r in rows), strict=True)
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[r.sharpness[1] for r in rows],
                mode="lines+markers",
                name=m,
                error_y={"type": "data", "array": list(up), "arrayminus": list(down)},
            ),
            **training,
        )
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[r.iso_sharpness[1] for r in rows],
                mode="lines",
                line={"dash": "dash"},
                name=f"{m} isotropic",
            ),
            **training,
        )
    fig.update_xaxes(title_text="training step", **training)
    fig.update_yaxes(title_text="median max_alpha d'(alpha)/d(1)", **training)
    last = final_rows(result)
    up, down = zip(*(_err(r.sharpness) for r in last), strict=True)
    fig.add_trace(
        go.Scatter(
            x=[r.n_params for r in last],
            y=[r.sharpness[1] for r in last],
            text=[r.model for r in last],
            mode="lines+markers+text",
            textposition="top center",
            error_y={"type": "data", "array": list(up), "arrayminus": list(down)},
            name="final checkpoints",
        ),
        **size,
    )
    fig.update_xaxes(title_text="number of parameters", **size)
    fig.update_layout(
        title="Stable regions: sharpness over training and size",
        height=900,
        legend={"orientation": "h", "yanchor": "top", "y": -0.08, "x": 0},
    )
    return fig


def curves_figure(
    real: PathCurves, stats: RegionStats, iso: PathCurves | None = None, n_show: int = 40
) -> go.Figure:
    """d(alpha)/d(1) of individual paths with the median (and the isotropic median), and each
    path's MLP-pattern bits flipped against its sharpness."""
    normed, kept = bd.normalise(real.dist, stats.meta.get("config", {}).get("min_end", 0.01))
    alphas = real.alphas.tolist()
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["output distance along the path", "polytopes vs regions"]
    )
    for row in normed[kept][:n_show]:
        fig.add_trace(
            go.Scatter(
                x=alphas,
                y=row.tolist(),
                mode="lines",
                line={"color": "lightgray", "width": 1},
                showlegend=False,
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scatter(x=alphas, y=stats.median_curve, name="median", line={"color": "black"}),
        row=1,
        col=1,
    )
    if iso is not None:
        fig.add_trace(
            go.Scatter(
                x=alphas,
                y=stats.iso_median_curve,
                name="median, isotropic direction",
                line={"color": "firebrick", "dash": "dash"},
            ),
            row=1,
            col=1,
        )
    fig.update_xaxes(title_text="alpha", row=1, col=1)
    fig.update_yaxes(title_text="d(alpha)/d(1)", range=[0, 1.4], row=1, col=1)
    if real.flips is not None:
        counts = polytope_counts(real, stats.threshold)
        fig.add_trace(
            go.Scatter(
                x=counts.crossings[kept].tolist(),
                y=bd.sharpness(normed[kept]).tolist(),
                mode="markers",
                name="paths",
            ),
            row=1,
            col=2,
        )
        fig.add_hline(y=stats.threshold, line_dash="dot", row=1, col=2)
        fig.update_xaxes(title_text="MLP pattern bits flipped along the path", row=1, col=2)
        fig.update_yaxes(title_text="max_alpha d'(alpha)/d(1)", row=1, col=2)
    fig.update_layout(title=f"{stats.label}: {stats.n_kept} paths, {stats.n_steps} steps")
    return fig


def semantic_figure(result: SemanticResult) -> go.Figure:
    """Pair sharpness ordered by cluster (ticks: prompt tail -> predicted token), and the rates
    at which pairs share a prediction or a last-token category, within and across clusters."""
    order = sorted(range(len(result.labels)), key=lambda i: (result.labels[i], i))
    sharp = torch.tensor(result.sharpness)[order][:, order]
    ticks = [
        f"{result.labels[i]}: {result.prompts[i][-14:]!r} -> {result.top1[i]!r}" for i in order
    ]
    r = result.rates
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.65, 0.35],
        subplot_titles=["pair sharpness max(s_ij, s_ji), by cluster", "agreement of pairs"],
    )
    fig.add_trace(
        go.Heatmap(
            z=sharp.tolist(),
            x=ticks,
            y=ticks,
            colorscale="Viridis",
            colorbar={"title": "s", "x": 0.6},
        ),
        row=1,
        col=1,
    )
    for kind in ("top1", "category"):
        fig.add_trace(
            go.Bar(
                x=["same cluster", "different clusters"],
                y=[r[f"same_{kind}_given_same_cluster"], r[f"same_{kind}_given_diff_cluster"]],
                name=f"same {kind}",
            ),
            row=1,
            col=2,
        )
    fig.update_yaxes(title_text="fraction of pairs", row=1, col=2)
    fig.update_layout(
        title=f"{result.model}: prompts clustered by stable region (threshold {result.threshold})",
        width=1300,
        height=800,
    )
    return fig
