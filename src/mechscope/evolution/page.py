"""The interactive feature-evolution page: one self-contained HTML file (no network), or served
from memory on 127.0.0.1.

One column per layer (search, layer toggles); clicking a feature shows its neighbours in the
previous and next layers ranked by the chosen measure above the chosen threshold (and draws them),
its classification, community, top activating tokens in context and, for a known SAELens release,
its Neuronpedia page. Each feature and each AND / OR parent shows its active-token count (the
support the gates' `min_support` floor reads). Every label reaches the page as JSON and is shown
as text.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Any

from mechscope.errors import EvolutionError
from mechscope.evolution.result import EvolutionResult
from mechscope.evolution.template import CSS, HTML, JS
from mechscope.files import write_text

HOST = "127.0.0.1"  # never another interface: the page is for the local user


def _r(x: float) -> float:
    return round(float(x), 4)


def page_data(
    result: EvolutionResult, measure: str | None = None, threshold: float | None = None
) -> dict[str, Any]:
    """The JSON the page reads (numbers rounded to 4 decimals)."""
    cfg = result.config
    counts = result.counts()
    summary = (
        f"{len(result.layers)} layers, {sum(result.sizes)} features, {result.n_tokens:,} tokens; "
        f"pass-through r >= {cfg['tau']:g}: "
        + ", ".join(f"L{r['layer']}->L{r['layer'] + 1} {r['pass_through']}" for r in counts[:-1])
        + "; AND / OR: "
        + ", ".join(f"L{r['layer']} {r['and']} / {r['or']}" for r in counts[1:])
        + f" (features active on >= {cfg['min_support']} tokens)"
    )
    return {
        "model": result.model,
        "summary": summary,
        "tau": cfg["tau"],
        "rel_threshold": cfg["rel_threshold"],
        "min_support": cfg["min_support"],
        "measures": result.measures,
        "algorithms": list(result.communities),
        "defaults": {
            "measure": measure or cfg["graph_measure"],
            "threshold": cfg["graph_threshold"] if threshold is None else threshold,
        },
        "layers": [
            {
                "hook": l.hook,
                "sae": l.sae,
                "neuronpedia": l.neuronpedia,
                # 4 significant digits: a feature firing once in 1M tokens is not 0 (dead)
                "freq": [float(f"{v:.4g}") for v in l.freq.tolist()],
                "max": [_r(v) for v in l.max_act.tolist()],
                "active": l.active.tolist(),
                "labels": l.labels,
                "examples": [[[_r(e[0]), e[1], e[2], e[3]] for e in ex] for ex in l.examples],
            }
            for l in result.layers
        ],
        "pairs": [
            {
                "measures": {
                    m: [
                        [i, j, _r(w)]
                        for i, j, w in zip(
                            s.rows.tolist(), s.cols.tolist(), s.values.tolist(), strict=True
                        )
                    ]
                    for m, s in p.sims.items()
                },
                "best_next": [_r(v) for v in p.classification.best_next.tolist()],
                "best_prev": [_r(v) for v in p.classification.best_prev.tolist()],
                "and": p.classification.and_gates.tolist(),
                "or": p.classification.or_gates.tolist(),
            }
            for p in result.pairs
        ],
        "communities": result.communities,
    }


def _script_json(data: Any) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' survive (no `</script>` can close it)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page_html(
    result: EvolutionResult, measure: str | None = None, threshold: float | None = None
) -> str:
    """The page as one HTML string (CSS, JavaScript and data inline)."""
    if measure is not None and measure not in result.measures:
        raise EvolutionError(f"measure {measure!r} not stored; stored: {result.measures}")
    data = _script_json(page_data(result, measure, threshold))
    return HTML.replace("{css}", CSS).replace("{js}", JS).replace("{data}", data)


def write_page(result: EvolutionResult, path: str | Path, **kwargs: Any) -> Path:
    path = Path(path)
    write_text(path, page_html(result, **kwargs))
    return path


def make_server(html: str, port: int = 8765) -> http.server.ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1:port (0 = any free port) answering every GET with the page."""
    body = html.encode("utf-8")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in ("/", "/index.html"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    if not 0 <= port <= 65535:
        raise EvolutionError(f"--port {port} is out of range: give 1-65535 (0: any free port)")
    try:
        return http.server.ThreadingHTTPServer((HOST, port), Handler)
    except OSError as e:
        raise EvolutionError(
            f"cannot serve on {HOST}:{port}: {e.strerror or e}; give another --port"
        ) from e


def serve(html: str, port: int = 8765, block: bool = True) -> http.server.ThreadingHTTPServer:
    """Serve the page on http://127.0.0.1:port/ (blocks until Ctrl-C unless block=False, where it
    runs in a daemon thread; call .shutdown() to stop)."""
    server = make_server(html, port)
    if block:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
