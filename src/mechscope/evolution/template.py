"""The interactive page's HTML, CSS and JavaScript (no CDN, no external files).

The data travels as JSON inside `<script type="application/json">` with `<`, `>` and `&` written
as \\u escapes; the script builds every element with `textContent`/`setAttribute`, never
`innerHTML`, so labels and token contexts show as text whatever characters they hold.
"""

CSS = """
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.35 system-ui, sans-serif; color: #222; background: #fafafa; }
header { padding: 8px 12px; background: #fff; border-bottom: 1px solid #ddd; }
header h1 { font-size: 16px; margin: 0 0 6px 0; }
.controls { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; }
.controls label { display: inline-flex; gap: 4px; align-items: center; }
#search { width: 260px; padding: 3px 6px; }
#threshold { width: 70px; }
#summary { color: #555; margin-top: 4px; }
main { display: flex; height: calc(100vh - 92px); }
#board { position: relative; flex: 1; display: flex; gap: 28px; padding: 8px 16px;
  overflow-x: auto; }
#wires { position: absolute; left: 0; top: 0; pointer-events: none; overflow: visible; }
.column { flex: 0 0 230px; display: flex; flex-direction: column; background: #fff;
  border: 1px solid #ddd; border-radius: 4px; min-height: 0; }
.column h2 { font-size: 13px; margin: 0; padding: 6px; border-bottom: 1px solid #eee; }
.column .hook { color: #777; font-weight: normal; font-size: 11px; display: block; }
.list { overflow-y: auto; flex: 1; }
.node { display: flex; gap: 4px; padding: 2px 6px; cursor: pointer; white-space: nowrap;
  border-left: 4px solid transparent; }
.node .lab { flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis; }
.node .n, .support { color: #888; font-size: 11px; font-variant-numeric: tabular-nums; }
.node .n.low, .support.low { color: #c0392b; }
.node.sel .n { color: #dde; }
.node:hover { background: #eef4fb; }
.node.dead { color: #aaa; }
.node.sel { background: #1f77b4; color: #fff; }
.node.nbr { background: #fff3c4; border-left-color: #f0a500; }
.node.comm { border-left-color: #2ca02c; }
.node .idx { color: #888; font-variant-numeric: tabular-nums; }
.node.sel .idx { color: #dde; }
.more { color: #888; padding: 4px 6px; font-style: italic; }
#detail { width: 420px; overflow-y: auto; background: #fff; border-left: 1px solid #ddd;
  padding: 10px 12px; }
#detail h3 { margin: 10px 0 4px 0; font-size: 13px; }
#detail .label { font-family: monospace; font-size: 14px; background: #f3f3f3; padding: 2px 4px; }
.nbr-list { list-style: none; margin: 0; padding: 0; }
.nbr-list li { padding: 1px 0; cursor: pointer; }
.nbr-list li:hover { text-decoration: underline; }
.w { display: inline-block; width: 56px; font-variant-numeric: tabular-nums; color: #1f77b4; }
.ex { font-family: monospace; white-space: pre-wrap; word-break: break-all; margin: 3px 0;
  padding: 2px 4px; background: #f7f7f7; }
.ex b { background: #ffd54f; }
.ex .act { color: #888; margin-right: 6px; }
.badge { display: inline-block; padding: 0 5px; margin-right: 4px; border-radius: 3px;
  font-size: 11px; background: #eee; }
.badge.pass { background: #d4edda; } .badge.new { background: #fde2e1; }
.badge.gate { background: #e2d9f3; }
.muted { color: #888; }
"""

JS = r"""
"use strict";
const D = JSON.parse(document.getElementById("evolution-data").textContent);
const S = { measure: D.defaults.measure, threshold: D.defaults.threshold, query: "",
  algo: D.algorithms[0] || null, layers: new Set(D.layers.map((_, i) => i)), sel: null };
const MAX_ROWS = 300;
const $ = (id) => document.getElementById(id);
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
const nid = (l, f) => l + "_" + f;
const fmt = (w) => (Math.abs(w) >= 0.01 || w === 0 ? w.toFixed(3) : w.toExponential(1));
const fmtInt = (n) => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
// active-token count of a feature (the gates' support), red below the floor
function support(l, f, cls) {
  const n = D.layers[l].active[f];
  return el("span", cls + (n < D.min_support ? " low" : ""), fmtInt(n));
}

// -- indexes --------------------------------------------------------------------------------
const edgeIndex = {};  // "pair|measure" -> {fwd: Map(i -> [[j, w]]), back: Map(j -> [[i, w]])}
function edges(p, m) {
  const key = p + "|" + m;
  if (edgeIndex[key]) return edgeIndex[key];
  const fwd = new Map(), back = new Map();
  for (const [i, j, w] of D.pairs[p].measures[m] || []) {
    if (!fwd.has(i)) fwd.set(i, []);
    if (!back.has(j)) back.set(j, []);
    fwd.get(i).push([j, w]);
    back.get(j).push([i, w]);
  }
  return (edgeIndex[key] = { fwd, back });
}
const commIndex = {};  // algo -> Map(node id -> community index)
function community(algo, id) {
  if (!algo) return null;
  if (!commIndex[algo]) {
    const m = new Map();
    D.communities[algo].forEach((c, k) => c.forEach((n) => m.set(n, k)));
    commIndex[algo] = m;
  }
  const k = commIndex[algo].get(id);
  return k === undefined ? null : k;
}
function neighbours(l, f) {
  const out = { prev: [], next: [] };
  if (l > 0) out.prev = (edges(l - 1, S.measure).back.get(f) || []).map(([i, w]) => [l - 1, i, w]);
  if (l < D.layers.length - 1)
    out.next = (edges(l, S.measure).fwd.get(f) || []).map(([j, w]) => [l + 1, j, w]);
  for (const k of ["prev", "next"])
    out[k] = out[k].filter((x) => x[2] >= S.threshold).sort((a, b) => b[2] - a[2]);
  return out;
}
function matches(l, f, q) {
  if (!q) return true;
  if (String(f) === q || nid(l, f) === q) return true;
  return D.layers[l].labels[f].toLowerCase().includes(q);
}

// -- controls -------------------------------------------------------------------------------
function setupControls() {
  document.title = "Feature evolution: " + D.model;
  $("title").textContent = "Feature evolution: " + D.model;
  const ms = $("measure");
  for (const m of D.measures) {
    const o = el("option", null, m);
    o.value = m;
    if (m === S.measure) o.selected = true;
    ms.appendChild(o);
  }
  ms.addEventListener("change", () => { S.measure = ms.value; refresh(); });
  const th = $("threshold");
  th.value = String(S.threshold);
  th.addEventListener("input", () => {
    const v = parseFloat(th.value);
    if (!Number.isNaN(v)) { S.threshold = v; refresh(); }
  });
  const al = $("algo");
  for (const a of D.algorithms) {
    const o = el("option", null, a);
    o.value = a;
    al.appendChild(o);
  }
  al.addEventListener("change", () => { S.algo = al.value; refresh(); });
  const lt = $("layers");
  D.layers.forEach((L, l) => {
    const lab = el("label", "layer-toggle");
    const cb = el("input");
    cb.type = "checkbox";
    cb.checked = true;
    cb.setAttribute("data-l", String(l));
    cb.addEventListener("change", () => {
      if (cb.checked) S.layers.add(l); else S.layers.delete(l);
      renderColumns();
    });
    lab.appendChild(cb);
    lab.appendChild(document.createTextNode("L" + l));
    lt.appendChild(lab);
  });
  const sr = $("search");
  sr.addEventListener("input", () => {
    S.query = sr.value.trim().toLowerCase();
    const m = /^(\d+)_(\d+)$/.exec(S.query);
    if (m && +m[1] < D.layers.length && +m[2] < D.layers[+m[1]].labels.length) {
      S.sel = [+m[1], +m[2]];
      renderDetail();
    }
    renderColumns();
  });
  $("summary").textContent = D.summary;
  $("board").addEventListener("scroll", drawWires);
  window.addEventListener("resize", drawWires);
}

// -- columns --------------------------------------------------------------------------------
function renderColumns() {
  const board = $("board");
  for (const c of Array.from(board.querySelectorAll(".column"))) c.remove();
  const nb = S.sel ? neighbours(S.sel[0], S.sel[1]) : { prev: [], next: [] };
  const nbrIds = new Set([...nb.prev, ...nb.next].map(([l, f]) => nid(l, f)));
  const selComm = S.sel ? community(S.algo, nid(S.sel[0], S.sel[1])) : null;
  D.layers.forEach((L, l) => {
    if (!S.layers.has(l)) return;
    const col = el("div", "column");
    col.setAttribute("data-l", String(l));
    const h = el("h2", null, "layer " + l);
    h.appendChild(el("span", "hook", L.hook));
    h.appendChild(el("span", "hook", L.sae));
    col.appendChild(h);
    const list = el("div", "list");
    list.addEventListener("scroll", drawWires);
    let shown = 0, hidden = 0;
    const pinned = S.sel && S.sel[0] === l ? S.sel[1] : -1;
    for (let f = 0; f < L.labels.length; f++) {
      const id = nid(l, f);
      const keep = f === pinned || nbrIds.has(id) || matches(l, f, S.query);
      if (!keep) continue;
      if (shown >= MAX_ROWS && f !== pinned && !nbrIds.has(id)) { hidden++; continue; }
      shown++;
      const n = el("div", "node");
      n.setAttribute("data-id", id);
      if (L.freq[f] === 0) n.classList.add("dead");
      if (f === pinned) n.classList.add("sel");
      if (nbrIds.has(id)) n.classList.add("nbr");
      if (selComm !== null && community(S.algo, id) === selComm) n.classList.add("comm");
      n.appendChild(el("span", "idx", "#" + f));
      n.appendChild(el("span", "lab", L.labels[f]));
      n.appendChild(support(l, f, "n"));
      n.title = L.labels[f] + " · active on " + fmtInt(L.active[f]) + " tokens";
      n.addEventListener("click", () => select(l, f));
      list.appendChild(n);
    }
    if (hidden) list.appendChild(el("div", "more", hidden + " more: refine the search"));
    col.appendChild(list);
    board.appendChild(col);
  });
  const sel = board.querySelector(".node.sel");
  if (sel) sel.scrollIntoView({ block: "center" });
  drawWires();
}

function drawWires() {
  const svg = $("wires");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const board = $("board");
  svg.setAttribute("width", String(board.scrollWidth));
  svg.setAttribute("height", String(board.clientHeight));
  if (!S.sel) return;
  const src = board.querySelector(".node.sel");
  if (!src) return;
  const b = board.getBoundingClientRect();
  const r0 = src.getBoundingClientRect();
  const nb = neighbours(S.sel[0], S.sel[1]);
  for (const [l, f, w] of [...nb.prev, ...nb.next]) {
    const t = board.querySelector('.node[data-id="' + nid(l, f) + '"]');
    if (!t) continue;
    const r1 = t.getBoundingClientRect();
    const left = l < S.sel[0];
    const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
    line.setAttribute("x1", String((left ? r0.left : r0.right) - b.left + board.scrollLeft));
    line.setAttribute("y1", String(r0.top + r0.height / 2 - b.top));
    line.setAttribute("x2", String((left ? r1.right : r1.left) - b.left + board.scrollLeft));
    line.setAttribute("y2", String(r1.top + r1.height / 2 - b.top));
    line.setAttribute("stroke", "#f0a500");
    line.setAttribute("stroke-width", String(0.5 + 3 * Math.max(0, Math.min(1, w))));
    svg.appendChild(line);
  }
}

// -- detail ---------------------------------------------------------------------------------
function select(l, f) {
  S.sel = [l, f];
  renderDetail();
  renderColumns();
}

function nbrList(items) {
  const ul = el("ul", "nbr-list");
  if (!items.length) ul.appendChild(el("li", "muted", "none above the threshold"));
  for (const [l, f, w] of items) {
    const li = el("li", "nbr");
    li.setAttribute("data-id", nid(l, f));
    li.appendChild(el("span", "w", fmt(w)));
    li.appendChild(el("span", "idx", nid(l, f) + " "));
    li.appendChild(el("span", null, D.layers[l].labels[f]));
    li.addEventListener("click", () => select(l, f));
    ul.appendChild(li);
  }
  return ul;
}

function renderDetail() {
  const d = $("detail");
  while (d.firstChild) d.removeChild(d.firstChild);
  if (!S.sel) {
    d.appendChild(el("p", "muted", "Click a feature (or search 'layer_feature', e.g. 1_23)."));
    return;
  }
  const [l, f] = S.sel;
  const L = D.layers[l];
  d.appendChild(el("h2", null, "feature " + nid(l, f)));
  d.appendChild(el("span", "label", L.labels[f]));
  d.appendChild(el("p", "muted", L.hook + " · " + L.sae));
  const act = el("p", "active", "active on " + fmtInt(L.active[f]) + " tokens (act > "
    + D.rel_threshold + " × max)");
  if (L.active[f] < D.min_support)
    act.appendChild(el("span", "support low", " below the AND / OR floor of "
      + fmtInt(D.min_support)));
  d.appendChild(act);
  d.appendChild(el("p", null, "fires (act > 0) on " + (100 * L.freq[f]).toFixed(3)
    + "% of tokens, max " + L.max[f].toFixed(3)));
  const badges = el("p");
  if (l < D.pairs.length) {
    const bn = D.pairs[l].best_next[f];
    badges.appendChild(el("span", bn >= D.tau ? "badge pass" : "badge",
      bn >= D.tau ? "passes through (r " + fmt(bn) + ")" : "disappears (best r " + fmt(bn) + ")"));
  }
  if (l > 0) {
    const P = D.pairs[l - 1];
    const bp = P.best_prev[f];
    badges.appendChild(el("span", bp >= D.tau ? "badge pass" : "badge new",
      bp >= D.tau ? "kept (r " + fmt(bp) + ")" : "appears (best r " + fmt(bp) + ")"));
    for (const [kind, rows] of [["AND", P.and], ["OR", P.or]])
      for (const g of rows)
        if (g[0] === f) {
          const b = el("span", "badge gate", kind + " of ");
          g.slice(1).forEach((p, k) => {
            if (k) b.appendChild(document.createTextNode(", "));
            b.appendChild(document.createTextNode(nid(l - 1, p) + " ("));
            b.appendChild(support(l - 1, p, "support"));
            b.appendChild(document.createTextNode(")"));
          });
          badges.appendChild(b);
        }
  }
  d.appendChild(badges);
  const c = community(S.algo, nid(l, f));
  if (c !== null) {
    const members = D.communities[S.algo][c];
    d.appendChild(el("h3", null, "community " + c + " (" + S.algo + ", " + members.length
      + " features)"));
    d.appendChild(el("p", "community", members.slice(0, 60).join(" ")
      + (members.length > 60 ? " …" : "")));
  }
  if (L.neuronpedia) {
    const a = el("a", "neuronpedia", "Neuronpedia: " + L.neuronpedia + "/" + f);
    a.setAttribute("href", "https://www.neuronpedia.org/" + encodeURI(L.neuronpedia) + "/" + f);
    a.setAttribute("target", "_blank");
    a.setAttribute("rel", "noopener noreferrer");
    d.appendChild(a);
  }
  const nb = neighbours(l, f);
  d.appendChild(el("h3", null, "previous layer (" + S.measure + " ≥ " + S.threshold + ")"));
  d.appendChild(nbrList(nb.prev));
  d.appendChild(el("h3", null, "next layer (" + S.measure + " ≥ " + S.threshold + ")"));
  d.appendChild(nbrList(nb.next));
  d.appendChild(el("h3", null, "top activations"));
  const exs = L.examples[f] || [];
  if (!exs.length) d.appendChild(el("p", "muted", "never active on the tokens read"));
  for (const [act, left, tok, right] of exs) {
    const p = el("div", "ex");
    p.appendChild(el("span", "act", act.toFixed(2)));
    p.appendChild(document.createTextNode(left));
    p.appendChild(el("b", null, tok));
    p.appendChild(document.createTextNode(right));
    d.appendChild(p);
  }
}

function refresh() { renderDetail(); renderColumns(); }
setupControls();
refresh();
document.body.setAttribute("data-ready", "1");
"""

HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
  content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline';
  img-src data:">
<title>Feature evolution</title>
<style>{css}</style>
</head>
<body>
<header>
  <h1 id="title">Feature evolution</h1>
  <div class="controls">
    <input id="search" type="search" placeholder="search: layer_feature (1_23), index or label">
    <label>measure <select id="measure"></select></label>
    <label>threshold <input id="threshold" type="number" step="0.05"></label>
    <label>communities <select id="algo"></select></label>
    <span id="layers"></span>
  </div>
  <div id="summary"></div>
</header>
<main>
  <div id="board"><svg id="wires"></svg></div>
  <aside id="detail"></aside>
</main>
<script type="application/json" id="evolution-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""
