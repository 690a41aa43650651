"""Plotly figures of the sensitive-directions experiments (as in the paper: mean KL against L)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechscope.directions.result import KLCurves, SubstitutionResult
from mechscope.regions.plot import write_figure

__all__ = ["curves_figure", "paper_figure", "substitution_figure", "write_figure"]

_DASHED = ("toward_random", "toward_cov", "toward_real")


def _curve_traces(result: KLCurves, stat: str = "kl_mean") -> list[go.Scatter]:
    traces = []
    for label in result.labels():
        info = result.families.get(label, {})
        name = label + (f" (L0 {info['l0']:.1f})" if "l0" in info and "pool" in info else "")
        dash = "dash" if info.get("family", label) in _DASHED else None
        traces.append(
            go.Scatter(
                x=result.lengths,
                y=result.curve(label, stat),
                mode="lines+markers",
                name=name,
                line={"dash": dash},
                marker={"size": 4},
            )
        )
    return traces


def _error_line(fig: go.Figure, result: KLCurves, **where: Any) -> None:
    """A dotted vertical line at the mean |SAE(x) - x| of the result's SAE, if it has one."""
    for info in result.families.values():
        if "error_norm" in info:
            fig.add_vline(
                x=info["error_norm"],
                line={"dash": "dot", "color": "grey"},
                annotation_text="mean |SAE error|",
                **where,
            )
            return


def curves_figure(result: KLCurves, stat: str = "kl_mean", log_y: bool = True) -> go.Figure:
    """Mean (or another stat's) KL(P_orig || P_perturbed) against L, one line per family."""
    fig = go.Figure(_curve_traces(result, stat))
    _error_line(fig, result)
    fig.update_layout(
        title=f"{result.model} {result.hook_name}: perturbation x + L d",
        xaxis_title="L (absolute length)",
        yaxis_title=f"KL ({stat.removeprefix('kl_')})",
        yaxis_type="log" if log_y else "linear",
    )
    return fig


def substitution_figure(result: SubstitutionResult) -> go.Figure:
    """Grouped bars per SAE: mean KL of SAE(x) and of x + eps * baseline direction (log y)."""
    rows = result.ratios()
    fig = go.Figure()
    names = [f"{r['sae']} (L0 {r['l0']:.0f})" for r in rows]
    keys = ["kl_sae"] + [
        k for k in (rows[0] if rows else {}) if k.startswith("kl_") and k != "kl_sae"
    ]
    for k in keys:
        fig.add_trace(go.Bar(x=names, y=[r[k] for r in rows], name=k.removeprefix("kl_")))
    fig.update_layout(
        barmode="group",
        title=f"{result.model}: SAE(x) vs x + eps d, eps = |SAE(x) - x|",
        yaxis_title="mean KL",
        yaxis_type="log",
    )
    return fig


def paper_figure(
    substitution: SubstitutionResult,
    curves: Sequence[KLCurves],
    features: Sequence[KLCurves],
    pool: str = "active",
) -> go.Figure:
    """One figure for the three findings: per hook, the baseline curves (with the SAE error) and
    the `pool` feature curves of every SAE there; below, the substitution bars (log y)."""
    n = len(curves)
    titles = []
    for c, f in zip(curves, features, strict=True):
        titles += [f"{c.hook_name}: baselines", f"{f.hook_name}: {pool} SAE features"]
    titles += ["eps-substitution: SAE(x) vs x + eps d", ""]
    fig = make_subplots(rows=n + 1, cols=2, subplot_titles=titles, vertical_spacing=0.08)
    for i, (c, f) in enumerate(zip(curves, features, strict=True), start=1):
        for t in _curve_traces(c):
            t.legendgroup = t.name
            t.showlegend = i == 1
            fig.add_trace(t, row=i, col=1)
        keep = KLCurves(
            f.model,
            f.hook_name,
            f.lengths,
            [r for r in f.rows if f.families.get(r["family"], {}).get("pool") == pool],
            f.families,
        )
        for t in _curve_traces(keep):
            fig.add_trace(t, row=i, col=2)
        for col in (1, 2):
            fig.update_xaxes(title_text="L", row=i, col=col)
            fig.update_yaxes(title_text="mean KL", type="log", row=i, col=col)
    for t in substitution_figure(substitution).data:
        fig.add_trace(t, row=n + 1, col=1)
    fig.update_yaxes(title_text="mean KL", type="log", row=n + 1, col=1)
    fig.update_layout(height=420 * (n + 1), width=1300, barmode="group")
    return fig
