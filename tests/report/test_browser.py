"""The quick demo's report in headless Chromium: every section renders, plotly draws, no errors.

Set MECHSCOPE_UPDATE_SCREENSHOT=1 to also refresh docs/figures/demo_report.png (the first screen).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

DOCS_PNG = Path(__file__).resolve().parents[2] / "docs" / "figures" / "demo_report.png"


@pytest.mark.slow
def test_report_in_headless_chromium(quick_demo, tmp_path, chromium) -> None:
    exe, sync_playwright = chromium
    titles = [s.title for s in quick_demo.sections]
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(quick_demo.html.as_uri())
            page.wait_for_selector(".js-plotly-plot", timeout=60_000)
            page.wait_for_load_state("load")
            headings = page.locator("section h2").all_inner_texts()
            assert headings == titles
            for s in quick_demo.sections:
                assert page.locator(f"section#{s.key} .finding").is_visible(), s.key
            n_figs = sum(len(s.figures) for s in quick_demo.sections)
            plots = page.locator(".js-plotly-plot")
            assert plots.count() == n_figs
            assert page.locator(".js-plotly-plot .main-svg").count() >= n_figs  # drawn
            assert page.locator("#timings tr").count() == len(titles) + 2
            shot = tmp_path / "demo_report.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("MECHSCOPE_UPDATE_SCREENSHOT"):
                DOCS_PNG.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, DOCS_PNG)
        finally:
            browser.close()
    assert errors == []
