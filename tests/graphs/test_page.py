"""The offline graph page: self-contained and escaped; in chromium every node is drawn, a click
lists the node's links, and shift-click + group makes a supernode."""

from __future__ import annotations

import pytest
import torch

from mechscope.graphs import attribute, graph_json
from mechscope.graphs.handbuilt import exact_model
from mechscope.graphs.page import page_html, write_page

EVIL = "<script>window.__xss=1</script>&"


@pytest.fixture(scope="module")
def data():
    lean, tcs = exact_model(seed=1)
    g = attribute(lean, tcs, torch.tensor([0, 3, 5, 7, 2, 9, 4]), prompt=EVIL)
    g.token_strs[1] = EVIL
    return graph_json(g), g.n_layers


def test_html_is_self_contained_and_escaped(data) -> None:
    html = page_html(*data)
    assert "<script>window.__xss" not in html
    assert "\\u003cscript\\u003ewindow.__xss=1" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html and "src=" not in html


@pytest.mark.slow
def test_page_in_headless_chromium(data, tmp_path, chromium) -> None:
    graph, n_layers = data
    exe, sync_playwright = chromium
    path = write_page(graph, n_layers, tmp_path / "g.html")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 800})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=20_000)
            assert page.locator(".node").count() == len(graph["nodes"])
            assert page.locator("line").count() == len(graph["links"])
            assert page.locator("#title").inner_text() == EVIL
            assert page.evaluate("window.__xss") is None
            logit = next(n for n in graph["nodes"] if n["is_target_logit"])
            page.locator(f'.node[data-id="{logit["node_id"]}"]').click()
            assert page.locator("#detail h2").first.inner_text() == logit["node_id"]
            incoming = [l for l in graph["links"] if l["target"] == logit["node_id"]]
            assert page.locator("#detail ul.in li").count() == len(incoming)
            best = max(incoming, key=lambda l: abs(l["weight"]))
            assert page.locator("#detail ul.in li").first.get_attribute("data-id") == best["source"]
            # clicking a listed link moves to that node
            page.locator("#detail ul.in li").first.click()
            assert page.locator("#detail h2").first.inner_text() == best["source"]
            feats = page.locator('.node:has(circle[fill="#9cf"])')
            feats.nth(0).click(modifiers=["Shift"])
            feats.nth(1).click(modifiers=["Shift"])
            page.click("#group")
            assert page.locator("#supernodes li").count() == 1
            assert page.evaluate("JSON.parse(JSON.stringify(D.qParams.supernodes))")[0][0] == (
                "supernode 1"
            )
            assert errors == []
        finally:
            browser.close()
