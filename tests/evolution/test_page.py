"""The interactive page: self-contained, escaped, served on 127.0.0.1 only, works in chromium."""

from __future__ import annotations

import urllib.request

import pytest

from mechscope.evolution.page import HOST, make_server, page_html, write_page

from .conftest import EVIL


def test_html_is_self_contained_and_escaped(evil_result) -> None:
    html = page_html(evil_result)
    assert "<script>window.__xss" not in html  # the label never appears as markup
    assert "\\u003cscript\\u003ewindow.__xss=1\\u003c/script\\u003e" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" in html  # only the Neuronpedia link template, built at click time
    assert "src=" not in html.split("<script type=")[0]  # no external resources


def test_server_binds_localhost_only(evil_result) -> None:
    server = make_server(page_html(evil_result), port=0)
    try:
        assert server.server_address[0] == HOST == "127.0.0.1"
        import threading

        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "evolution-data" in body
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_page_in_headless_chromium(evil_result, tmp_path, chromium) -> None:
    exe, sync_playwright = chromium
    path = write_page(evil_result, tmp_path / "page.html")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 800})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: errors.append("dialog: " + d.message))
            page.goto(path.as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=20_000)
            # loads: one column per layer, every feature listed
            assert page.locator(".column").count() == 2
            assert page.locator('.column[data-l="0"] .node').count() == 12
            # the label with HTML special characters is text, not markup
            node = page.locator('.node[data-id="1_0"] .lab')
            assert node.inner_text() == EVIL
            assert page.evaluate("window.__xss") is None
            assert page.locator("img").count() == 0
            # search: by label text, then by layer_feature (selects it)
            page.fill("#search", "feature 7")
            assert page.locator(".node").count() == 2  # L0 feature 7, L1 feature 7
            page.fill("#search", "1_4")
            assert page.locator("#detail h2").inner_text() == "feature 1_4"
            # active-token counts: the feature's, and each gate parent's beside it
            act = [l.active.tolist() for l in evil_result.layers]
            detail = page.locator("#detail").inner_text()
            assert f"AND of 0_4 ({act[0][4]:,}), 0_5 ({act[0][5]:,})" in detail
            assert f"active on {act[1][4]:,} tokens (act > 0.2 × max)" in detail
            assert page.locator("#summary").inner_text().endswith("active on >= 50 tokens)")
            # clicking a node shows its neighbours with weights
            page.fill("#search", "")
            for l, f in ((0, 2), (1, 6), (1, 9)):  # 1_9 is dead: 0, below the floor
                n = page.locator(f'.node[data-id="{l}_{f}"] .n')
                assert n.inner_text() == f"{act[l][f]:,}"
                assert ("low" in n.get_attribute("class").split()) == (act[l][f] < 50)
            page.click('.node[data-id="0_2"]')
            nbrs = page.locator("#detail .nbr")
            assert nbrs.count() >= 1
            assert nbrs.first.get_attribute("data-id") == "1_2"
            assert nbrs.first.locator(".w").inner_text() == "1.000"
            assert page.locator('.node.nbr[data-id="1_2"]').count() == 1
            assert page.locator("#wires line").count() >= 1
            assert "passes through" in page.locator("#detail").inner_text()
            link = page.locator("a.neuronpedia")
            assert link.get_attribute("href") == "https://www.neuronpedia.org/gpt2-small/0-res-jb/2"
            # the escaped label in the detail panel and as a neighbour
            page.click('.node[data-id="1_0"]')
            assert page.locator("#detail .label").inner_text() == EVIL
            page.click('.node[data-id="0_0"]')
            assert page.locator('#detail .nbr[data-id="1_0"]').inner_text().endswith(EVIL)
            # filters: a threshold above every weight hides the neighbours; layers toggle
            page.fill("#threshold", "1.5")
            assert page.locator("#detail .nbr").count() == 0
            page.select_option("#measure", "jaccard")
            page.uncheck('.layer-toggle input[data-l="1"]')
            assert page.locator(".column").count() == 1
            assert page.evaluate("window.__xss") is None
        finally:
            browser.close()
    assert errors == []
