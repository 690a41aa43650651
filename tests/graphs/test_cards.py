"""Feature cards: the streamed top activations equal a brute-force sort of every token's
activation read off the model's own MLP neurons (exact transcoders), and the cards reach
circuit-tracer's feature files and `mechscope graph`."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import mechscope.graphs.cards as cards_mod
from mechscope.cli import app
from mechscope.errors import GraphError
from mechscope.graphs.cards import (
    CardExample,
    FeatureCard,
    feature_cards,
    feature_file,
    write_feature_files,
)
from mechscope.graphs.export import cantor
from mechscope.graphs.handbuilt import exact_model

K, BEFORE, AFTER, SPECIAL = 5, 3, 2, 0


@pytest.fixture(scope="module")
def model():
    lean, tcs = exact_model(seed=1)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 12, (3, 16), generator=g) for _ in range(4)]
    for b in batches:
        b[:, 0] = SPECIAL  # a BOS at every row's start
    return lean, tcs, batches


def brute_force(lean, batches, layer: int, feature: int):
    """Every non-special token's activation (the MLP's hidden ReLU, which the exact transcoder
    reproduces): (density, each token's (act, window tokens, window acts, index), the top K
    with act > 0)."""
    rows = []
    for b in batches:
        _, cache = lean.run_with_cache(b, names=[f"blocks.{layer}.mlp.hook_post"])
        acts = cache[f"blocks.{layer}.mlp.hook_post"][..., feature]
        for r in range(b.shape[0]):
            toks = b[r].tolist()
            a = [0.0 if t == SPECIAL else float(x) for t, x in zip(toks, acts[r], strict=True)]
            for p, t in enumerate(toks):
                if t != SPECIAL:
                    lo, hi = max(0, p - BEFORE), min(len(toks), p + AFTER + 1)
                    rows.append((a[p], [str(x) for x in toks[lo:hi]], a[lo:hi], p - lo))
    density = sum(r[0] > 0 for r in rows) / len(rows)
    top = sorted(rows, key=lambda r: -r[0])[:K]
    return density, rows, [r for r in top if r[0] > 0]


def test_top_activations_equal_brute_force(model, monkeypatch) -> None:
    lean, tcs, batches = model
    # token 0 plays a special token (BOS): left out of the examples and the density
    monkeypatch.setattr(cards_mod, "special_ids", lambda lean: [SPECIAL])
    feats = torch.tensor([[l, f] for l in (1, 0) for f in range(16)] + [[0, 3]])
    res = feature_cards(lean, tcs, feats, batches, k=K, before=BEFORE, after=AFTER)
    assert res.n_tokens == sum(int((b != SPECIAL).sum()) for b in batches)
    assert [(c.layer, c.feature) for c in res.cards] == [(l, f) for l in (0, 1) for f in range(16)]
    n_examples = 0
    for card in res.cards:
        density, rows, top = brute_force(lean, batches, card.layer, card.feature)
        assert card.density == pytest.approx(density, abs=1e-12)
        assert len(card.examples) == len(top)
        assert card.max_act == pytest.approx(top[0][0] if top else 0.0, rel=1e-6)
        for e, (act, *_) in zip(card.examples, top, strict=True):
            assert e.act == pytest.approx(act, rel=1e-6)
            # the window of a token with this activation (equal prefixes tie: any of them)
            tied = [r for r in rows if abs(r[0] - e.act) <= 1e-6 * e.act]
            assert any(
                (e.tokens, e.index) == (r[1], r[3]) and e.acts == pytest.approx(r[2], abs=1e-6)
                for r in tied
            ), (e, tied)
            assert e.acts[e.index] == pytest.approx(e.act)
        n_examples += len(top)
    assert n_examples > 20  # the features fire: the comparison is not vacuous
    # the decoder's direct logit effects, largest first
    card = res.cards[0]
    direct = tcs[0].W_dec[card.feature] @ lean.W_U
    assert card.top_logits == [str(t) for t in direct.topk(5).indices.tolist()]
    assert card.bottom_logits == [str(t) for t in (-direct).topk(5).indices.tolist()]


def test_feature_files_and_bad_input(model, tmp_path) -> None:
    lean, tcs, batches = model
    res = feature_cards(lean, tcs, torch.tensor([[1, 4], [0, 7]]), batches, k=3)
    folder = write_feature_files(res, tmp_path, "scan")
    for card in res.cards:
        data = json.loads((folder / f"{cantor(card.layer, card.feature)}.json").read_text())
        assert data == json.loads(json.dumps(feature_file(card, "scan")))
        assert set(data) == {
            "transcoder_id", "index", "examples_quantiles", "top_logits", "bottom_logits",
            "act_min", "act_max", "quantile_values", "histogram", "activation_frequency",
        }  # fmt: skip
        assert data["index"] == card.feature and data["activation_frequency"] == card.density
        ex = data["examples_quantiles"][0]["examples"]
        assert [e["tokens"] for e in ex] == [e.tokens for e in card.examples]
        assert [e["tokens_acts_list"][e["train_token_ind"]] for e in ex] == pytest.approx(
            [e.act for e in card.examples]
        )
    # a window seen before (the corpus repeats lines) is flagged as circuit-tracer does
    card = FeatureCard(0, 1, 0.5, 2.0, [CardExample(2.0, ["a", "b"], [2.0, 0.0], 0)] * 2)
    flags = [
        e["is_repeated_datapoint"]
        for e in feature_file(card, "s")["examples_quantiles"][0]["examples"]
    ]
    assert flags == [False, True]
    assert feature_cards(lean, tcs, torch.zeros(0, 2), batches).cards == []
    with pytest.raises(GraphError, match="feature id out of range for layer 1"):
        feature_cards(lean, tcs, torch.tensor([[1, 16]]), batches)
    with pytest.raises(GraphError, match="there are 2 transcoders"):
        feature_cards(lean, tcs, torch.tensor([[2, 0]]), batches)
    with pytest.raises(GraphError, match="one shape"):
        feature_cards(lean, tcs, torch.tensor([[0, 0]]), [batches[0], batches[1][:1]])


@pytest.mark.slow
def test_graph_cli_writes_cards(tmp_path) -> None:
    out = tmp_path / "g.json"
    args = ["graph", "--prompt", "def f(x):\n    return x", "--out", str(out)]
    r = CliRunner().invoke(app, [*args, "--card-tokens", "2000"])
    assert r.exit_code == 0, r.output
    assert "held-out tokens" in r.output
    data = json.loads(out.read_text())
    assert set(data) == {"metadata", "qParams", "nodes", "links"}  # circuit-tracer's schema
    feats = {
        (int(n["layer"]), int(n["node_id"].split("_")[1]), n["feature"])
        for n in data["nodes"]
        if n["feature_type"] == "cross layer transcoder"
    }
    assert feats
    files = {p.name for p in (tmp_path / "features" / "mechscope").iterdir()}
    assert files == {f"{c}.json" for _, _, c in feats}
    html = out.with_suffix(".html").read_text()
    assert all(f'"{l}_{f}":' in html for l, f, _ in feats)
    r = CliRunner().invoke(app, [*args, "--card-tokens", "0", "--out", str(tmp_path / "n.json")])
    assert r.exit_code == 0 and "held-out tokens" not in r.output, r.output
    assert '"card_tokens":0' in (tmp_path / "n.html").read_text()
    r = CliRunner().invoke(app, [*args, "--card-tokens", "-1"])
    assert r.exit_code == 2 and "at least one token" in r.output, r.output
