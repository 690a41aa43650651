"""The offline attribution-graph page: one self-contained HTML file (no network) drawn from a
graph JSON (`export.graph_json`, circuit-tracer's format).

Nodes are laid out by position (x) and layer (y: tokens at the bottom, logits at the top), links
drawn blue (positive) or red (negative) with width by |weight|. Clicking a node shows its fields,
a feature's card when the page has cards (`cards.feature_cards`: density, the tokens its decoder
raises and lowers, its top activating contexts on held-out text with each token shaded by the
feature's activation) and the node's incoming and outgoing links, strongest first (each
clickable). Shift-click adds nodes to a
selection that "group" turns into a supernode (listed, and kept in the page's `qParams.supernodes`
as circuit-tracer's frontend stores them). Every string reaches the page as JSON and is shown as
text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mechscope.evolution.page import _script_json
from mechscope.files import atomic_write
from mechscope.graphs.cards import FeatureCards

CSS = """
body{font:13px system-ui,sans-serif;margin:0;display:flex;height:100vh}
#plot{flex:1;overflow:auto}#side{width:360px;border-left:1px solid #ccc;padding:8px;overflow:auto}
.node{cursor:pointer}.node circle{stroke:#333;stroke-width:1}
.node.sel circle{stroke:#f80;stroke-width:3}
.node.picked circle{stroke:#0a0;stroke-width:3}.lnk{cursor:pointer}.lnk:hover{color:#06c}
h2{font-size:15px;margin:4px 0}ul{padding-left:16px;margin:4px 0}button{margin:4px 0}
#card{border:1px solid #ddd;border-radius:4px;padding:4px;margin:6px 0}
.ex{font-family:monospace;white-space:pre-wrap;margin:3px 0;border-top:1px solid #eee}
.ex .act{color:#666;margin-right:6px}.ex .top{font-weight:bold;outline:1px solid #f80}
.muted{color:#888}
"""

JS = r"""
const D = JSON.parse(document.getElementById('graph-data').textContent);
const nodes = D.nodes;
nodes.forEach((n, i) => { n.i = i; });
const ids = {}; nodes.forEach(n => { (ids[n.node_id] = ids[n.node_id] || []).push(n); });
const rowOf = n => n.feature_type === 'embedding' ? 0
  : n.feature_type === 'logit' ? 2 + 2 * D.n_layers
  : 1 + 2 * Number(n.layer) + (n.feature_type === 'mlp reconstruction error' ? 1 : 0);
const slot = {};
nodes.forEach(n => {
  const k = n.ctx_idx + '_' + rowOf(n);
  n.k = (slot[k] = (slot[k] || 0) + 1) - 1;
});
const nPos = D.metadata.prompt_tokens.length, H = 70, pad = 40;
// each position's column is as wide as its most crowded row needs (nodes never overlap)
const colW = [...Array(nPos).keys()].map(p => Math.max(60, 20 * Math.max(0,
  ...Object.entries(slot).filter(([k]) => Number(k.split('_')[0]) === p).map(([, m]) => m)) + 24));
const colX = colW.map((w, p) => pad + colW.slice(0, p).reduce((a, b) => a + b, 0));
const rows = 3 + 2 * D.n_layers, height = pad * 2 + H * rows;
const width = pad * 2 + colW.reduce((a, b) => a + b, 0);
nodes.forEach(n => {
  const k = n.ctx_idx + '_' + rowOf(n), m = slot[k], w = colW[n.ctx_idx];
  n.x = colX[n.ctx_idx] + w / 2 + (m > 1 ? (n.k / (m - 1) - 0.5) * (w - 24) : 0);
  n.y = height - pad - H * rowOf(n) - H / 2;
});
const svgNS = 'http://www.w3.org/2000/svg';
const svg = document.createElementNS(svgNS, 'svg');
svg.setAttribute('width', width); svg.setAttribute('height', height);
document.getElementById('plot').appendChild(svg);
const maxW = Math.max(1e-12, ...D.links.map(l => Math.abs(l.weight)));
D.links.forEach(l => {
  const s = ids[l.source][0], t = ids[l.target][0];  // circuit-tracer's ids can repeat
  l.s = s; l.t = t;
  const e = document.createElementNS(svgNS, 'line');
  e.setAttribute('x1', s.x); e.setAttribute('y1', s.y);
  e.setAttribute('x2', t.x); e.setAttribute('y2', t.y);
  e.setAttribute('stroke', l.weight >= 0 ? '#3a6fd8' : '#d83a3a');
  e.setAttribute('stroke-opacity', 0.25 + 0.6 * Math.abs(l.weight) / maxW);
  e.setAttribute('stroke-width', 0.5 + 3 * Math.abs(l.weight) / maxW);
  svg.appendChild(e);
});
const colour = {'embedding': '#ddd', 'logit': '#fd5', 'mlp reconstruction error': '#bbb',
  'cross layer transcoder': '#9cf'};
nodes.forEach(n => {
  const g = document.createElementNS(svgNS, 'g');
  g.setAttribute('class', 'node'); g.dataset.id = n.node_id; g.dataset.i = n.i;
  const c = document.createElementNS(svgNS, 'circle');
  c.setAttribute('cx', n.x); c.setAttribute('cy', n.y); c.setAttribute('r', 7);
  c.setAttribute('fill', colour[n.feature_type] || '#ccc');
  const t = document.createElementNS(svgNS, 'title'); t.textContent = n.node_id; c.appendChild(t);
  g.appendChild(c); svg.appendChild(g); n.g = g;
  g.addEventListener('click', ev => ev.shiftKey ? toggle(n) : show(n));
});
D.metadata.prompt_tokens.forEach((tok, p) => {
  const t = document.createElementNS(svgNS, 'text');
  t.setAttribute('x', colX[p] + colW[p] / 2); t.setAttribute('y', height - 8);
  t.setAttribute('text-anchor', 'middle'); t.textContent = JSON.stringify(tok).slice(1, -1);
  svg.appendChild(t);
});
const side = document.getElementById('detail');
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function linkList(title, links, other) {
  side.appendChild(el('h2', title + ' (' + links.length + ')'));
  const ul = el('ul'); ul.className = title === 'incoming' ? 'in' : 'out';
  links.sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).forEach(l => {
    const li = el('li', other(l).node_id + '  ' + l.weight.toFixed(4), 'lnk');
    li.dataset.id = other(l).node_id; li.addEventListener('click', () => show(other(l)));
    ul.appendChild(li);
  });
  side.appendChild(ul);
}
function show(n) {
  nodes.forEach(m => m.g.classList.toggle('sel', m === n));
  side.textContent = '';
  side.appendChild(el('h2', n.node_id));
  const info = [n.feature_type, 'layer ' + n.layer, 'position ' + n.ctx_idx];
  if (n.activation !== null) info.push('activation ' + n.activation.toFixed(4));
  if (n.influence !== null) info.push('influence ' + n.influence.toFixed(4));
  if (n.clerp) info.push(n.clerp);
  side.appendChild(el('div', info.join(' · '), 'info'));
  if (n.feature_type === 'cross layer transcoder') showCard(n);
  linkList('incoming', D.links.filter(l => l.t === n), l => l.s);
  linkList('outgoing', D.links.filter(l => l.s === n), l => l.t);
}
function showCard(n) {
  if (!D.card_tokens) return;
  const key = n.node_id.split('_').slice(0, 2).join('_'), c = D.cards[key];
  const box = el('div', undefined); box.id = 'card';
  box.appendChild(el('h2', 'feature ' + key + ' on ' + D.card_tokens.toLocaleString('en')
    + ' held-out tokens'));
  if (!c) { box.appendChild(el('div', 'no card', 'muted')); side.appendChild(box); return; }
  box.appendChild(el('div', 'density ' + (100 * c.density).toPrecision(3) + '% · max '
    + c.max_act.toFixed(3), 'density'));
  box.appendChild(el('div', 'raises ' + c.top_logits.map(t => JSON.stringify(t)).join(' ')));
  box.appendChild(el('div', 'lowers ' + c.bottom_logits.map(t => JSON.stringify(t)).join(' ')));
  if (!c.examples.length) box.appendChild(el('div', 'never active on these tokens', 'muted'));
  c.examples.forEach(e => {
    const row = el('div', undefined, 'ex');
    row.appendChild(el('span', e.act.toFixed(3), 'act'));
    e.tokens.forEach((t, i) => {
      const s = el('span', t.replace(/\n/g, '⏎'), i === e.index ? 'top' : undefined);
      s.style.background = 'rgba(255,136,0,' + Math.max(0, e.acts[i]) / c.max_act + ')';
      s.title = e.acts[i].toFixed(3);
      row.appendChild(s);
    });
    box.appendChild(row);
  });
  side.appendChild(box);
}
const picked = new Set();
function toggle(n) {
  picked.has(n) ? picked.delete(n) : picked.add(n);
  n.g.classList.toggle('picked', picked.has(n));
}
document.getElementById('group').addEventListener('click', () => {
  if (!picked.size) return;
  const name = 'supernode ' + (D.qParams.supernodes.length + 1);
  D.qParams.supernodes.push([name, ...[...picked].map(n => n.node_id)]);
  const li = el('li', name + ': ' + [...picked].map(n => n.node_id).join(', '));
  document.getElementById('supernodes').appendChild(li);
  picked.forEach(n => n.g.classList.remove('picked')); picked.clear();
});
document.getElementById('title').textContent = D.metadata.prompt;
document.body.dataset.ready = '1';
"""

HTML = """<!doctype html><html><head><meta charset="utf-8"><title>attribution graph</title>
<style>{css}</style></head><body><div id="plot"></div><div id="side">
<div id="title"></div><button id="group">group selected (shift-click) into a supernode</button>
<ul id="supernodes"></ul><div id="detail">click a node</div></div>
<script type="application/json" id="graph-data">{data}</script><script>{js}</script></body></html>
"""


def page_html(graph: dict[str, Any], n_layers: int, cards: FeatureCards | None = None) -> str:
    """The page of a graph JSON (`graph_json`) of an n_layers model, with the features' `cards`
    if given, as one HTML string."""
    extra = {"n_layers": n_layers, "cards": {}, "card_tokens": 0}
    if cards is not None:
        extra |= {"cards": cards.by_key(), "card_tokens": cards.n_tokens}
    data = _script_json(graph | extra)
    return HTML.replace("{css}", CSS).replace("{js}", JS).replace("{data}", data)


def write_page(
    graph: dict[str, Any], n_layers: int, path: str | Path, cards: FeatureCards | None = None
) -> Path:
    """Write `page_html` to `path`; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    html = page_html(graph, n_layers, cards)
    atomic_write(out, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"))
    return out
