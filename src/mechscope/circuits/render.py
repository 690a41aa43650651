"""Render a circuit: Graphviz DOT text and a self-contained HTML page (no network needed)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from mechscope.circuits.result import Circuit
from mechscope.files import suffixed, write_text


def _node_style(node: str) -> str:
    if node in ("input", "embed", "pos_embed"):
        return 'shape=box, style=filled, fillcolor="#d9ead3"'
    if node == "logits":
        return 'shape=box, style=filled, fillcolor="#f4cccc"'
    if node.startswith("mlp"):
        return 'shape=box, style=filled, fillcolor="#fff2cc"'
    if node.count(".") == 2:
        return 'shape=ellipse, fontsize=9, style=filled, fillcolor="#eeeeee"'
    return 'shape=ellipse, style=filled, fillcolor="#cfe2f3"'


def to_dot(circuit: Circuit) -> str:
    """Graphviz DOT of the kept edges (dc edges dashed), with counts and metrics as the label."""
    edges = [circuit.graph.edges[i] for i in circuit.present.nonzero().flatten().tolist()]
    nodes = sorted({n for e in edges for n in (e.sender, e.receiver)})
    lines = [
        "digraph circuit {",
        "  rankdir=BT;",
        f'  label="{_esc(circuit.summary())}"; labelloc=t;',
    ]
    lines += [f'  "{n}" [{_node_style(n)}];' for n in nodes]
    for e in edges:
        style = " [style=dashed]" if e.kind == "dc" else ""
        lines.append(f'  "{e.sender}" -> "{e.receiver}"{style};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def to_html(circuit: Circuit) -> str:
    """An HTML page: summary, heads, edge list and a layered SVG drawing of the circuit."""
    g = circuit.graph
    edges = [g.edges[i] for i in circuit.present.nonzero().flatten().tolist()]
    nodes = sorted({n for e in edges for n in (e.sender, e.receiver)}, key=g.nodes.index)
    by_stage: dict[int, list[str]] = {}
    for n in nodes:
        st = g.stage(n, receiving=n == "logits") * 2 + (1 if n.count(".") == 2 else 0)
        by_stage.setdefault(st, []).append(n)
    stages = sorted(by_stage)
    width = max([len(v) for v in by_stage.values()] + [1]) * 90 + 40
    height = len(stages) * 70 + 40
    pos = {}
    for row, st in enumerate(stages):
        for col, n in enumerate(by_stage[st]):
            pos[n] = (40 + col * 90, height - 40 - row * 70)
    svg = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for e in edges:
        (x1, y1), (x2, y2) = pos[e.sender], pos[e.receiver]
        dash = ' stroke-dasharray="4"' if e.kind == "dc" else ""
        svg.append(
            f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#888"{dash}>'
            f"<title>{html.escape(e.name)}</title></line>"
        )
    for n, (x, y) in pos.items():
        svg.append(
            f'<circle cx="{x}" cy="{y}" r="14" fill="#cfe2f3" stroke="#333"/>'
            f'<text x="{x}" y="{y + 28}" font-size="10" text-anchor="middle">'
            f"{html.escape(n)}</text>"
        )
    svg.append("</svg>")
    rows = "".join(
        f"<tr><td>{html.escape(e.sender)}</td><td>{html.escape(e.receiver)}</td>"
        f"<td>{e.kind}</td></tr>"
        for e in edges
    )
    meta = html.escape(json.dumps(circuit.meta, indent=1, default=str))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>mechscope circuit</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 8px}}</style></head>
<body>
<h1>Circuit ({html.escape(circuit.method)})</h1>
<p id="summary">{html.escape(circuit.summary())}</p>
<p>Graph: {html.escape(g.summary())}. Heads: {html.escape(", ".join(circuit.heads) or "none")}</p>
{"".join(svg)}
<h2>{len(edges)} edges</h2>
<table><tr><th>sender</th><th>receiver</th><th>kind</th></tr>{rows}</table>
<h2>Run</h2><pre>{meta}</pre>
</body></html>
"""


def write(circuit: Circuit, stem: str | Path) -> list[Path]:
    """Write <stem>.json, <stem>.dot and <stem>.html; returns the paths."""
    stem = Path(stem)
    json_path = circuit.save(suffixed(stem, ".json"))
    dot_path, html_path = suffixed(stem, ".dot"), suffixed(stem, ".html")
    write_text(dot_path, to_dot(circuit))
    write_text(html_path, to_html(circuit))
    return [json_path, dot_path, html_path]
