"""One self-contained HTML report: plotly.js inlined once, every figure a div, every text escaped.

Nothing is fetched when the file is opened (no CDN, no fonts, no MathJax), so it reads offline.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechscope.files import write_text
from mechscope.report.sections import Section

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;
 padding:1.5em 2em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table.timings{border-collapse:collapse;margin:1em 0}
.timings td,.timings th{border:1px solid #ccc;padding:3px 10px;text-align:left}
.timings td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600} .failed{color:#b42318;font-weight:600}
.question{color:#444} .finding{background:#f4f8fb;border-left:4px solid #4a90c2;padding:.5em .8em}
.error{background:#fdf0ef;border-left:4px solid #b42318;padding:.5em .8em;white-space:pre-wrap}
pre.cmd{background:#f6f6f6;padding:.5em .8em;overflow-x:auto} .meta{color:#666;font-size:.9em}
details pre{max-height:30em;overflow:auto;background:#fafafa;padding:.5em;font-size:.8em}
.figure{margin:1em 0}
.incomplete{background:#fff4e5;border-left:4px solid #b54708;padding:.5em .8em}
"""
PAGE_WIDTH = 1200  # px of content (body max-width); wider figures are drawn at this width


def jsonable(x: Any) -> Any:
    """`x` with tuples as lists and non-finite floats as None (strict JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, str | int | bool) or x is None:
        return x
    if hasattr(x, "tolist"):
        return jsonable(x.tolist())
    return str(x)


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def plotly_js() -> str:
    """The plotly.js bundle that the installed plotly writes (offline)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def figure_div(fig: Any, div_id: str) -> str:
    """One figure as a div plus its script; plotly.js itself is not included. A figure with a
    fixed width wider than the page is drawn at the page's width instead (no sideways scroll)."""
    if (fig.layout.width or 0) > PAGE_WIDTH:
        fig = type(fig)(fig).update_layout(width=None, autosize=True)
    return str(
        fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            include_mathjax=False,
            div_id=div_id,
            config={"displaylogo": False, "responsive": True},
        )
    )


def _timings(sections: Sequence[Section], total: float) -> str:
    rows = []
    for s in sections:
        status = (
            '<span class="ok">ok</span>'
            if s.ok
            else f'<span class="failed">failed</span>: {_e(s.error)}'
        )
        rows.append(
            f'<tr><td><a href="#{_e(s.key)}">{_e(s.title)}</a></td><td>{status}</td>'
            f'<td class="num">{s.seconds:.1f} s</td><td class="num">{s.cpu_seconds:.1f} s</td></tr>'
        )
    cpu = sum(s.cpu_seconds for s in sections)
    rows.append(
        f'<tr><th>total</th><th></th><td class="num"><b>{total:.1f} s</b></td>'
        f'<td class="num"><b>{cpu:.1f} s</b></td></tr>'
    )
    return (
        '<table class="timings" id="timings"><tr><th>stage</th><th>status</th>'
        "<th>wall time</th><th>CPU time</th></tr>" + "".join(rows) + "</table>"
    )


def _section(s: Section) -> str:
    parts = [f'<section id="{_e(s.key)}" class="section">', f"<h2>{_e(s.title)}</h2>"]
    parts.append(f'<p class="question"><b>Asked.</b> {_e(s.question)}</p>')
    if s.ok:
        parts.append(f'<p class="finding"><b>Found.</b> {_e(s.finding)}</p>')
    else:
        parts.append(f'<p class="error"><b>failed:</b> {_e(s.error)}</p>')
    parts.append("<p><b>Rerun alone:</b></p>")
    parts.append('<pre class="cmd">' + _e("\n".join(s.commands)) + "</pre>")
    for label, href in s.links:
        parts.append(f'<p>See <a href="{_e(href)}">{_e(label)}</a>.</p>')
    for i, fig in enumerate(s.figures):
        parts.append(f'<div class="figure">{figure_div(fig, f"fig-{s.key}-{i}")}</div>')
    if s.numbers:
        numbers = json.dumps(jsonable(s.numbers), indent=1)
        parts.append(f"<details><summary>all numbers</summary><pre>{_e(numbers)}</pre></details>")
    parts.append(f'<p class="meta">{s.seconds:.1f} s</p></section>')
    return "\n".join(parts)


def run_state(sections: Sequence[Section], meta: dict[str, Any]) -> tuple[bool, str]:
    """(complete?, one sentence): which of the planned stages (`meta["stages"]`) have run, and
    which have not when the run stopped early (interrupted, or still running)."""
    planned = list(meta.get("stages") or [s.key for s in sections])
    ran = [s.key for s in sections]
    missing = [k for k in planned if k not in ran]
    if not missing:
        return True, f"stages: {', '.join(ran)} (all {len(planned)} planned stages ran)"
    return False, (
        f"Incomplete: {len(ran)} of {len(planned)} stages ran ({', '.join(ran) or 'none'}); "
        f"not run: {', '.join(missing)}. The run was interrupted (or is still running); run the "
        "same `mechscope demo` command again for the whole report."
    )


def render_report(
    sections: Sequence[Section], meta: dict[str, Any], total_seconds: float | None = None
) -> str:
    """The report page: title, settings, a table of stage timings, then one block per section."""
    total = sum(s.seconds for s in sections) if total_seconds is None else total_seconds
    mode = "quick (CI settings)" if meta.get("quick") else "full"
    info = ", ".join(
        f"{k}: {v}"
        for k, v in meta.items()
        if k not in ("quick", "config", "stages") and v is not None
    )
    complete, state = run_state(sections, meta)
    state_class = "meta" if complete else "incomplete"
    body = "\n".join(_section(s) for s in sections)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mechscope report</title>
<style>{_CSS}</style>
<script type="text/javascript">{plotly_js()}</script>
</head><body>
<h1>mechscope report</h1>
<p class="meta">{_e(mode)} run; {_e(info)}</p>
<p class="{state_class}" id="run-state">{_e(state)}</p>
<p>Every method of mechscope on the bundled models. Each section says what was asked, what was
found, and the command that reruns it alone with the same settings; all numbers are also in the
JSON file next to this page. Wall time depends on whatever else the machine runs; CPU time is
this process's own (all threads).</p>
{_timings(sections, total)}
{body}
</body></html>
"""


def write_report(
    path: str | Path,
    sections: Sequence[Section],
    meta: dict[str, Any],
    total_seconds: float | None = None,
) -> Path:
    """Write the HTML report to `path` (atomically: a reader never sees half a file)."""
    path = Path(path)
    write_text(path, render_report(sections, meta, total_seconds))
    return path


def report_json(
    sections: Sequence[Section], meta: dict[str, Any], total_seconds: float
) -> dict[str, Any]:
    """Every number of the report, by section key, with timings and errors."""
    return jsonable(
        {
            "meta": meta,
            "complete": run_state(sections, meta)[0],
            "total_seconds": total_seconds,
            "sections": {
                s.key: {
                    "title": s.title,
                    "ok": s.ok,
                    "error": s.error,
                    "seconds": s.seconds,
                    "cpu_seconds": s.cpu_seconds,
                    "question": s.question,
                    "finding": s.finding,
                    "commands": s.commands,
                    "links": [href for _, href in s.links],
                    "numbers": s.numbers,
                }
                for s in sections
            },
        }
    )
