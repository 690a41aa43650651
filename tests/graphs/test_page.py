"""The offline graph page: self-contained and escaped; in chromium every node is drawn, a click
lists the node's links and shows a feature's card, and shift-click + group makes a supernode."""

from __future__ import annotations

import pytest
import torch

from mechscope.graphs import attribute, graph_json
from mechscope.graphs.cards import feature_cards
from mechscope.graphs.handbuilt import exact_model
from mechscope.graphs.page import page_html, write_page

EVIL = "<script>window.__xss=1</script>&"


@pytest.fixture(scope="module")
def data():
    lean, tcs = exact_model(seed=1)
    g = attribute(lean, tcs, torch.tensor([0, 3, 5, 7, 2, 9, 4]), prompt=EVIL)
    g.token_strs[1] = EVIL
    graph = graph_json(g)
    kept = torch.tensor(
        [
            [int(x) for x in n["node_id"].split("_")[:2]]
            for n in graph["nodes"]
            if n["feature_type"] == "cross layer transcoder"
        ]
    ).unique(dim=0)
    batches = [torch.randint(0, 12, (2, 16), generator=torch.Generator().manual_seed(0))]
    cards = feature_cards(lean, tcs, kept[1:], batches, k=4)  # the first feature gets no card
    next(c for c in cards.cards if c.examples).examples[0].tokens[0] = EVIL
    return graph, g.n_layers, cards, kept[0].tolist()


def test_html_is_self_contained_and_escaped(data) -> None:
    html = page_html(*data[:3])
    assert "<script>window.__xss" not in html
    assert "\\u003cscript\\u003ewindow.__xss=1" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html and "src=" not in html


@pytest.mark.slow
def test_page_in_headless_chromium(data, tmp_path, chromium) -> None:
    graph, n_layers, cards, no_card = data
    exe, sync_playwright = chromium
    path = write_page(graph, n_layers, tmp_path / "g.html", cards)
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
            # a feature's card: its examples, the top token marked, its activation shown
            feature_nodes = [
                n for n in graph["nodes"] if n["feature_type"] == "cross layer transcoder"
            ]
            card = max(cards.cards, key=lambda c: len(c.examples))
            node = next(n for n in feature_nodes if n["node_id"].startswith(f"{card.key}_"))
            page.locator(f'.node[data-id="{node["node_id"]}"]').click()
            assert page.locator("#card h2").inner_text().startswith(f"feature {card.key} on ")
            assert page.locator("#card .ex").count() == len(card.examples) > 0
            first = page.locator("#card .ex").first
            assert first.locator(".act").inner_text() == f"{card.examples[0].act:.3f}"
            top = card.examples[0].tokens[card.examples[0].index]
            assert first.locator(".top").inner_text() == top
            density = page.locator("#card .density").inner_text().split()
            assert density[0] == "density" and density[1].endswith("%")
            assert float(density[1][:-1]) == pytest.approx(100 * card.density, rel=1e-2)
            # the incoming links still follow the card
            assert page.locator("#detail ul.in").count() == 1
            prefix = f"{no_card[0]}_{no_card[1]}_"
            nid = next(n["node_id"] for n in feature_nodes if n["node_id"].startswith(prefix))
            page.locator(f'.node[data-id="{nid}"]').click()
            assert page.locator("#card").inner_text().endswith("no card")
            assert page.evaluate("window.__xss") is None
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
