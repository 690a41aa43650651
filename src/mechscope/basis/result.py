"""`BasisAnalysis`: degeneracy, bases, edges, sparsity, edge-ablation curves and modules of one
model, with save/load, markdown tables and plotly figures.

Saved as `<folder>/analysis.json` (everything but the matrices, ablation curves included) and
`<folder>/tensors.safetensors` (C, C_pinv, importances, spectra, edges), each written atomically.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from mechscope.basis.ablation import EdgeAblation
from mechscope.basis.degeneracy import DegeneracyReport, FiringReport, LayerDegeneracy
from mechscope.basis.edges import Modules, Sparsity, cumulative_mass
from mechscope.basis.interaction import LayerBasis
from mechscope.errors import BasisError
from mechscope.files import read_json, read_safetensors, write_figure, write_json, write_safetensors

KIND_COLOURS = {"lib": "#1f77b4", "pca": "#ff7f0e", "neuron": "#7f7f7f"}
KIND_NAMES = {"lib": "interaction basis", "pca": "PCA", "neuron": "neurons"}
ABLATION_DASH = {"mean": "solid", "zero": "dash"}


@dataclass
class BasisAnalysis:
    """Everything `analyse` measures on one model.

    bases / edges / sparsity / modules are keyed by basis kind ("lib", "pca", "neuron");
    edges[kind][l] is [r_{l+1}, r_l]. ablation[kind][ablation kind] ("mean", "zero"): one
    `EdgeAblation` per layer pair (empty when no held-out data was given). meta: model name, data,
    tau, rtol, resolution, ...
    """

    node_layers: list[str]
    degeneracy: DegeneracyReport
    bases: dict[str, list[LayerBasis]]
    edges: dict[str, list[Tensor]]
    sparsity: dict[str, list[Sparsity]]
    modules: dict[str, Modules]
    ablation: dict[str, dict[str, list[EdgeAblation]]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    # -------------------------------------------------------------------------------- save/load
    def save(self, folder: str | Path) -> Path:
        """Write analysis.json and tensors.safetensors into `folder`; returns the folder."""
        folder = Path(folder)
        tensors: dict[str, Tensor] = {}
        for d in self.degeneracy.layers:
            tensors[f"degeneracy/{d.name}/act"] = d.act_eigenvalues
            tensors[f"degeneracy/{d.name}/grad"] = d.grad_eigenvalues
        for kind, bases in self.bases.items():
            for b in bases:
                for attr in ("C", "C_pinv", "importance", "gram_eigenvalues", "m_eigenvalues"):
                    tensors[f"{kind}/{b.name}/{attr}"] = getattr(b, attr)
            for li, E in enumerate(self.edges[kind]):
                tensors[f"{kind}/edges/{li}"] = E
        head = {
            "node_layers": self.node_layers,
            "meta": self.meta,
            "degeneracy": {
                "rtol": self.degeneracy.layers[0].rtol if self.degeneracy.layers else None,
                "layers": [d.name for d in self.degeneracy.layers],
                "firing": [asdict(f) for f in self.degeneracy.firing],
            },
            "bases": {k: [[b.name, b.kind, b.has_const] for b in v] for k, v in self.bases.items()},
            "sparsity": {k: [asdict(s) for s in v] for k, v in self.sparsity.items()},
            "modules": {k: asdict(m) for k, m in self.modules.items()},
            "ablation": {
                k: {a: [asdict(e) for e in v] for a, v in by_abl.items()}
                for k, by_abl in self.ablation.items()
            },
            "summary": self.summary(),
        }
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        write_safetensors(folder / "tensors.safetensors", tensors)
        write_json(folder / "analysis.json", head)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> BasisAnalysis:
        """Inverse of `save`."""
        folder = Path(folder)
        if not (folder / "analysis.json").exists():
            raise BasisError(f"no analysis.json in {folder}; run `mechscope basis analyse` first")
        remake = "Rerun `mechscope basis analyse` to write it anew"
        head = read_json(folder / "analysis.json", BasisError, remake)
        t = read_safetensors(folder / "tensors.safetensors", BasisError, remake)
        deg = head["degeneracy"]
        layers = [
            LayerDegeneracy(
                n,
                len(t[f"degeneracy/{n}/act"]),
                t[f"degeneracy/{n}/act"],
                t[f"degeneracy/{n}/grad"],
                deg["rtol"],
            )
            for n in deg["layers"]
        ]
        firing = [FiringReport(**f) for f in deg["firing"]]
        bases = {
            kind: [
                LayerBasis(
                    name,
                    bkind,
                    t[f"{kind}/{name}/C"],
                    t[f"{kind}/{name}/C_pinv"],
                    t[f"{kind}/{name}/importance"],
                    has_const,
                    t[f"{kind}/{name}/gram_eigenvalues"],
                    t[f"{kind}/{name}/m_eigenvalues"],
                )
                for name, bkind, has_const in v
            ]
            for kind, v in head["bases"].items()
        }
        edges = {
            kind: [t[f"{kind}/edges/{li}"] for li in range(len(v) - 1)] for kind, v in bases.items()
        }
        modules = {
            k: Modules(
                [[tuple(n) for n in c] for c in m["communities"]],
                m["modularity"],
                m["within_fraction"],
            )
            for k, m in head["modules"].items()
        }
        sparsity = {k: [Sparsity(**s) for s in v] for k, v in head["sparsity"].items()}
        ablation = {
            k: {a: [EdgeAblation(**e) for e in v] for a, v in by_abl.items()}
            for k, by_abl in head.get("ablation", {}).items()
        }
        return cls(
            head["node_layers"],
            DegeneracyReport(layers, firing),
            bases,
            edges,
            sparsity,
            modules,
            ablation,
            head["meta"],
        )

    # ------------------------------------------------------------------------------ summaries
    def summary(self) -> dict[str, Any]:
        """Per node layer: width, activation / gradient rank, basis dims; per pair: sparsity."""
        deg = {d.name: d for d in self.degeneracy.layers}
        layers = []
        for i, name in enumerate(self.node_layers):
            row: dict[str, Any] = {"layer": name}
            if name in deg:
                row |= {
                    "width": deg[name].dim,
                    "act_rank": deg[name].act_rank,
                    "grad_rank": deg[name].grad_rank,
                    "act_participation": round(deg[name].act_participation, 2),
                }
            for kind, bases in self.bases.items():
                b = bases[i]
                row[f"{kind}_dim"] = b.dim - int(b.has_const)
            layers.append(row)
        pairs = []
        for li in range(len(self.node_layers) - 1):
            row = {"pair": f"{self.node_layers[li]} -> {self.node_layers[li + 1]}"}
            for kind, sp in self.sparsity.items():
                row[f"{kind}_edges_99"] = sp[li].edges_99
                row[f"{kind}_n_edges"] = sp[li].n_edges
            for kind, by_abl in self.ablation.items():
                for abl, res in by_abl.items():
                    row[f"{kind}_{abl}_needed_accuracy"] = res[li].needed_accuracy
                    row[f"{kind}_{abl}_needed_loss"] = res[li].needed_loss
            pairs.append(row)
        modules = {
            k: {
                "n_modules": len(m.communities),
                "modularity": round(m.modularity, 4),
                "within_fraction": round(m.within_fraction, 4),
            }
            for k, m in self.modules.items()
        }
        firing = [
            {
                "layer": f.name,
                "n_neurons": f.n_neurons,
                "n_dead": f.n_dead,
                "n_always_on": f.n_always_on,
                "groups_gt1": [len(g) for g in f.groups if len(g) > 1],
                "extra_free_directions": f.extra_free_directions,
            }
            for f in self.degeneracy.firing
        ]
        return {"layers": layers, "pairs": pairs, "modules": modules, "firing": firing}

    def markdown(self) -> str:
        """The summary as markdown tables (dims per layer, edge sparsity, modules, co-firing)."""
        s = self.summary()
        kinds = list(self.bases)
        lines = [
            "| node layer | width | act. rank | grad. rank | "
            + " | ".join(f"{KIND_NAMES[k]} dims" for k in kinds)
            + " |",
            "|---" * (4 + len(kinds)) + "|",
        ]
        for r in s["layers"]:
            lines.append(
                f"| `{r['layer']}` | {r.get('width', '-')} | {r.get('act_rank', '-')} | "
                f"{r.get('grad_rank', '-')} | "
                + " | ".join(str(r[f"{k}_dim"]) for k in kinds)
                + " |"
            )
        lines += ["", *self._edges_table(s)]
        lines += [
            "",
            "| basis | modules | modularity Q | weight inside modules |",
            "|---|---|---|---|",
        ]
        for k, m in s["modules"].items():
            lines.append(
                f"| {KIND_NAMES[k]} | {m['n_modules']} | {m['modularity']:.3f} | "
                f"{m['within_fraction']:.3f} |"
            )
        lines += [
            "",
            "| ReLU layer | neurons | dead | always on | co-firing groups (size > 1) | "
            "extra free directions |",
            "|---|---|---|---|---|---|",
        ]
        for f in s["firing"]:
            lines.append(
                f"| `{f['layer']}` | {f['n_neurons']} | {f['n_dead']} | {f['n_always_on']} | "
                f"{f['groups_gt1'] or 'none'} | {f['extra_free_directions']} |"
            )
        return "\n".join(lines)

    def _edges_table(self, s: dict[str, Any]) -> list[str]:
        """Edges needed per layer pair and basis (when ablated), with the 99%-of-ΣE proxy, from
        the summary `s`."""
        kinds = list(self.bases)
        if not self.ablation:
            lines = [
                "| layer pair | "
                + " | ".join(f"{KIND_NAMES[k]}: edges for 99% / all" for k in kinds)
                + " |",
                "|---" * (1 + len(kinds)) + "|",
            ]
            for r in s["pairs"]:
                lines.append(
                    f"| {r['pair']} | "
                    + " | ".join(f"{r[f'{k}_edges_99']} / {r[f'{k}_n_edges']}" for k in kinds)
                    + " |"
                )
            return lines
        first = next(iter(next(iter(self.ablation.values())).values()))[0]
        abls = list(next(iter(self.ablation.values())))
        bound = f"Δacc ≤ {first.acc_bound:g} / Δloss ≤ {first.loss_bound:g}"
        lines = [
            "| layer pair | basis | edges | "
            + " | ".join(f"edges needed, {a} ablation ({bound})" for a in abls)
            + " | (proxy) edges for 99% of ΣE |",
            "|---" * (4 + len(abls)) + "|",
        ]
        for li, r in enumerate(s["pairs"]):
            for k in self.ablation:
                cells = []
                for a in abls:
                    res = self.ablation[k][a][li]
                    cells.append(f"{res.needed_accuracy} / {res.needed_loss}")
                lines.append(
                    f"| {r['pair']} | {KIND_NAMES[k]} | {r[f'{k}_n_edges']} | "
                    + " | ".join(cells)
                    + f" | {r[f'{k}_edges_99']} |"
                )
        lines += [
            "",
            f"Held-out data: {self.meta.get('n_eval', '?')} inputs "
            f"({self.meta.get('eval_split', 'given')}); unablated accuracy "
            f"{first.base_accuracy:.4f}, loss {first.base_loss:.4g}.",
        ]
        return lines

    # -------------------------------------------------------------------------------- figures
    def spectra_figure(self) -> go.Figure:
        """Per node layer (log y): activation Gram and gradient Gram spectra (degeneracy a, b),
        LIB Lambda and PCA eigenvalues, each divided by its largest."""
        deg = {d.name: d for d in self.degeneracy.layers}
        names = [n for n in self.node_layers if n in deg]
        fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
        idx = {n: i for i, n in enumerate(self.node_layers)}
        for col, name in enumerate(names, start=1):
            series = {
                "activation Gram (a)": deg[name].act_eigenvalues,
                "gradient Gram (b)": deg[name].grad_eigenvalues,
            }
            if "lib" in self.bases:
                series["interaction basis Λ"] = self.bases["lib"][idx[name]].m_eigenvalues[1:]
            for (label, ev), colour in zip(
                series.items(), ["#2ca02c", "#d62728", KIND_COLOURS["lib"]], strict=True
            ):
                ev = ev.double().abs()
                y = (ev / ev.max()).clamp(min=1e-18) if float(ev.max()) > 0 else ev
                fig.add_trace(
                    go.Scatter(
                        y=y.tolist(),
                        mode="lines+markers",
                        name=label,
                        legendgroup=label,
                        showlegend=col == 1,
                        marker={"size": 3, "color": colour},
                    ),
                    row=1,
                    col=col,
                )
            fig.update_yaxes(type="log", exponentformat="power", row=1, col=col)
            fig.update_xaxes(title_text="index", row=1, col=col)
        fig.update_yaxes(title_text="eigenvalue / largest", row=1, col=1)
        fig.update_layout(
            title=f"{self.meta.get('model', '')}: spectra per node layer (constant direction "
            "excluded)",
            height=420,
            width=360 * len(names) + 120,
            template="plotly_white",
        )
        return fig

    def _pair_titles(self) -> list[str]:
        """ "a →<br>b" per consecutive pair of node layers: two lines, so that long hook names
        (blocks.0.hook_resid_pre) do not run into the next panel's title."""
        return [f"{a} →<br>{b}" for a, b in pairwise(self.node_layers)]

    def sparsity_figure(self) -> go.Figure:
        """Per layer pair: fraction of total edge strength in the k largest edges vs k (log x)."""
        n_pairs = len(self.node_layers) - 1
        titles = self._pair_titles()
        fig = make_subplots(rows=1, cols=n_pairs, subplot_titles=titles)
        for kind, edges in self.edges.items():
            for li, E in enumerate(edges):
                b_in, b_out = self.bases[kind][li], self.bases[kind][li + 1]
                Es = E[int(b_out.has_const) :, int(b_in.has_const) :]
                cm = cumulative_mass(Es)
                ks = torch.logspace(0, math.log10(len(cm)), 150).round().long().unique()
                fig.add_trace(
                    go.Scatter(
                        x=ks.tolist(),
                        y=cm[ks - 1].tolist(),
                        mode="lines",
                        name=KIND_NAMES[kind],
                        legendgroup=kind,
                        showlegend=li == 0,
                        line={"color": KIND_COLOURS[kind]},
                    ),
                    row=1,
                    col=li + 1,
                )
                fig.update_xaxes(type="log", title_text="k largest edges", row=1, col=li + 1)
        fig.update_yaxes(title_text="fraction of Σ E", row=1, col=1)
        fig.update_layout(
            title=f"{self.meta.get('model', '')}: how concentrated the interactions are "
            "(higher and further left = sparser)",
            height=400,
            width=380 * n_pairs + 120,
            margin={"t": 120},  # room for two-line subplot titles
            template="plotly_white",
        )
        return fig

    def ablation_figure(self) -> go.Figure:
        """Per layer pair (columns): held-out accuracy (top) and loss (bottom, log y) against the
        number of strongest edges kept (log x, so k = 0 is left out); colour = basis, dash =
        ablation; stars mark the edges needed, dotted lines the unablated model."""
        if not self.ablation:
            raise BasisError(
                "no edge ablation in this analysis; pass eval_data to analyse (CLI: --ablate-on "
                "test)"
            )
        n_pairs = len(self.node_layers) - 1
        titles = self._pair_titles()
        fig = make_subplots(rows=2, cols=n_pairs, subplot_titles=titles, vertical_spacing=0.12)
        for kind, by_abl in self.ablation.items():
            for abl, results in by_abl.items():
                name = f"{KIND_NAMES[kind]}, {abl} ablation"
                style = {"color": KIND_COLOURS[kind], "dash": ABLATION_DASH[abl]}
                for li, res in enumerate(results):
                    ks = [k for k in res.kept if k > 0]
                    curves = (
                        (res.accuracy, res.needed_accuracy, res.base_accuracy),
                        (res.loss, res.needed_loss, res.base_loss),
                    )
                    for row, (vals, needed, base) in enumerate(curves, start=1):
                        by_k = dict(zip(res.kept, vals, strict=True))
                        fig.add_trace(
                            go.Scatter(
                                x=ks,
                                y=[by_k[k] for k in ks],
                                mode="lines",
                                name=name,
                                legendgroup=name,
                                showlegend=li == 0 and row == 1,
                                line=style,
                            ),
                            row=row,
                            col=li + 1,
                        )
                        if needed > 0:
                            fig.add_trace(
                                go.Scatter(
                                    x=[needed],
                                    y=[by_k[needed]],
                                    mode="markers",
                                    legendgroup=name,
                                    showlegend=False,
                                    hovertext=f"{name}: {needed} edges needed",
                                    marker={"symbol": "star", "size": 10, "color": style["color"]},
                                ),
                                row=row,
                                col=li + 1,
                            )
                        fig.add_hline(
                            y=base, line={"dash": "dot", "color": "black"}, row=row, col=li + 1
                        )
        for col in range(1, n_pairs + 1):
            for row in (1, 2):
                fig.update_xaxes(type="log", row=row, col=col)
            fig.update_xaxes(title_text="strongest edges kept", row=2, col=col)
            fig.update_yaxes(type="log", exponentformat="power", row=2, col=col)
        fig.update_yaxes(title_text="held-out accuracy", row=1, col=1)
        fig.update_yaxes(title_text="held-out loss", row=2, col=1)
        fig.update_layout(
            title=f"{self.meta.get('model', '')}: edge ablation, one layer pair at a time "
            "(stars: edges needed)",
            height=720,
            width=380 * n_pairs + 220,
            margin={"t": 120},  # room for two-line subplot titles
            template="plotly_white",
        )
        return fig

    def graph_figure(
        self, kind: str = "lib", top_nodes: int = 20, top_edges: int = 60
    ) -> go.Figure:
        """The interaction graph: columns = node layers, the `top_nodes` most important directions
        of each (constant excluded), the `top_edges` strongest edges per pair, width ~ sqrt(E)."""
        if kind not in self.bases:
            raise BasisError(f"no {kind!r} basis in this analysis; have {list(self.bases)}")
        bases, edges = self.bases[kind], self.edges[kind]
        fig = go.Figure()
        first = [int(b.has_const) for b in bases]
        shown = [min(top_nodes, b.dim - f) for b, f in zip(bases, first, strict=True)]
        for li, E in enumerate(edges):
            sub = E[
                first[li + 1] : first[li + 1] + shown[li + 1], first[li] : first[li] + shown[li]
            ]
            if sub.numel() == 0 or float(sub.max()) <= 0:
                continue
            w = sub.sqrt() / sub.sqrt().max()
            k = min(top_edges, w.numel())
            vals, flat = w.flatten().topk(k)
            for v, f in zip(vals.tolist(), flat.tolist(), strict=True):
                i, j = divmod(f, w.shape[1])
                fig.add_trace(
                    go.Scatter(
                        x=[li, li + 1],
                        y=[j, i],
                        mode="lines",
                        hoverinfo="text",
                        text=f"E={float(sub[i, j]):.3g}",
                        showlegend=False,
                        line={"width": 0.5 + 6 * v, "color": f"rgba(31,119,180,{0.2 + 0.8 * v})"},
                    )
                )
        for li, n in enumerate(shown):
            imp = bases[li].importance[first[li] : first[li] + n]
            fig.add_trace(
                go.Scatter(
                    x=[li] * n,
                    y=list(range(n)),
                    mode="markers",
                    showlegend=False,
                    marker={"size": 8, "color": "black"},
                    text=[
                        f"{bases[li].name} #{k + first[li]}: importance {float(v):.3g}"
                        for k, v in enumerate(imp)
                    ],
                    hoverinfo="text",
                )
            )
        fig.update_layout(
            title=f"{self.meta.get('model', '')}: interaction graph in the {KIND_NAMES[kind]} "
            f"(top {top_nodes} directions per layer, top {top_edges} edges per pair)",
            xaxis={"tickvals": list(range(len(bases))), "ticktext": [b.name for b in bases]},
            yaxis={"title": "direction (by importance)", "autorange": "reversed"},
            height=520,
            width=max(700, 260 * len(bases)),
            template="plotly_white",
        )
        return fig

    def write_figures(self, folder: str | Path, prefix: str = "basis") -> list[Path]:
        """Write <prefix>_spectra.html, _sparsity.html, _graph.html and, when edges were ablated,
        _ablation.html (plotly from CDN)."""
        folder = Path(folder)
        out = []
        figs = {"spectra": self.spectra_figure(), "sparsity": self.sparsity_figure()}
        if "lib" in self.bases:
            figs["graph"] = self.graph_figure("lib")
        if self.ablation:
            figs["ablation"] = self.ablation_figure()
        for name, fig in figs.items():
            path = folder / f"{prefix}_{name}.html"
            write_figure(path, fig, "cdn")
            out.append(path)
        return out
