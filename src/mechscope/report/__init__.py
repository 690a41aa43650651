"""`mechscope demo`: every method on the bundled models, one self-contained HTML report.

>>> from mechscope.report import run_demo
>>> result = run_demo(Path("report.html"), quick=True)   # report.html + report.json
>>> [(s.title, s.seconds, s.error) for s in result.sections]

Modules: `sections` (one function per method, each calling only that method's public API),
`render` (the offline HTML: plotly.js inlined once), `demo` (`run_demo`: progress, isolation of
failing stages, timings), `cli` (`demo_command`).
"""

from mechscope.report.demo import STAGE_NAMES, DemoResult, run_demo
from mechscope.report.render import render_report, write_report
from mechscope.report.sections import DemoConfig, Section

__all__ = [
    "STAGE_NAMES",
    "DemoConfig",
    "DemoResult",
    "Section",
    "render_report",
    "run_demo",
    "write_report",
]
