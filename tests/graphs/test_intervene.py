"""Feature interventions: for every edit kind the frozen model's change equals the graph's
prediction; in the real model, with exact transcoders, editing a feature equals editing that MLP
neuron by a hand-written hook; the edit syntax and bad edits."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import GraphError
from mechscope.graphs import attribute
from mechscope.graphs.handbuilt import exact_model
from mechscope.graphs.intervene import (
    FeatureEdit,
    check_edits,
    frozen_logits,
    intervene,
    parse_edits,
    real_logits,
)

TOKS = torch.tensor([0, 3, 5, 7, 2, 9, 4])


@pytest.fixture(scope="module")
def model():
    return exact_model(seed=3)


@pytest.fixture(scope="module")
def graph(model):
    lean, tcs = model
    return attribute(lean, tcs, TOKS)


def test_no_edit_is_the_real_run(model) -> None:
    lean, tcs = model
    real = lean.forward(TOKS[None])[0, -1]
    torch.testing.assert_close(real_logits(lean, tcs, TOKS, []), real)
    torch.testing.assert_close(frozen_logits(lean, tcs, TOKS, []), real, atol=1e-6, rtol=1e-6)


def _plans(graph) -> dict[str, list[FeatureEdit]]:
    """Edits of every kind on the graph's active features (several at once, two layers)."""
    feats = graph.active_features.tolist()
    acts = graph.activation_values.tolist()
    first, mid, last = feats[0], feats[len(feats) // 2], feats[-1]
    return {
        "clamp": [FeatureEdit(*mid, 2.5 * acts[len(feats) // 2])],
        "scale": [FeatureEdit(*last, 3.0, "scale"), FeatureEdit(*first, -0.5, "scale")],
        "zero": [FeatureEdit(*first, 0.0, "zero"), FeatureEdit(*last, 0.0)],
        "mixed": [
            FeatureEdit(*first, 0.0),
            FeatureEdit(*mid, 2.0, "scale"),
            FeatureEdit(*last, -1.5),
        ],
    }


@pytest.mark.parametrize("kind", ["clamp", "scale", "zero", "mixed"])
def test_frozen_change_equals_the_graph(model, graph, kind) -> None:
    """The frozen model is affine in the MLP writes, so for every edit kind its change of each
    logit target equals the graph's prediction."""
    lean, tcs = model
    res = intervene(lean, tcs, graph, _plans(graph)[kind])
    assert res.predicted is not None
    torch.testing.assert_close(
        torch.tensor(res.frozen), torch.tensor(res.predicted), atol=1e-9, rtol=1e-7
    )
    assert max(abs(x) for x in res.predicted) > 1e-3
    assert len(res.real) == graph.n_logits


def test_prediction_of_features_without_a_node(model, graph) -> None:
    """Zeroing or scaling an inactive feature changes nothing (predicted 0); clamping one to a
    value moves the frozen model but the graph has no node for it (None); so has an edit at the
    excluded first position of a feature active there."""
    lean, tcs = model
    active = {tuple(f) for f in graph.active_features.tolist()}
    inactive = next(
        (0, p, f) for p in range(1, len(TOKS)) for f in range(16) if (0, p, f) not in active
    )
    res = intervene(
        lean, tcs, graph, [FeatureEdit(*inactive, 0.0), FeatureEdit(*inactive, 4.0, "scale")]
    )
    assert res.predicted == [0.0] * graph.n_logits
    assert max(abs(x) for x in res.frozen) < 1e-12 and max(abs(x) for x in res.real) < 1e-12
    res = intervene(lean, tcs, graph, [FeatureEdit(*inactive, 1.0)])
    assert res.moves == [(0.0, 1.0)]
    assert res.predicted is None and max(abs(x) for x in res.frozen) > 1e-4
    codes0 = tcs[0].encode(_mlp_inputs(lean, tcs)[0][0])
    f0 = int(codes0.argmax())
    assert codes0[f0] > 0
    res = intervene(lean, tcs, graph, [FeatureEdit(0, 0, f0, 0.0)])
    assert res.predicted is None and max(abs(x) for x in res.frozen) > 1e-6


def test_no_prediction_for_features_left_out_of_the_graph(model, graph) -> None:
    """With max_feature_nodes a dropped active feature has no node: editing it has no
    prediction; editing a kept one still matches the frozen model."""
    lean, tcs = model
    small = attribute(lean, tcs, TOKS, max_feature_nodes=3)
    kept = {tuple(f) for f in small.active_features.tolist()}
    dropped = next(f for f in graph.active_features.tolist() if tuple(f) not in kept)
    assert intervene(lean, tcs, small, [FeatureEdit(*dropped, 0.0)]).predicted is None
    res = intervene(lean, tcs, small, [FeatureEdit(*next(iter(kept)), 2.0, "scale")])
    assert res.predicted is not None
    torch.testing.assert_close(
        torch.tensor(res.frozen), torch.tensor(res.predicted), atol=1e-9, rtol=1e-7
    )


def _mlp_inputs(lean, tcs) -> list[torch.Tensor]:
    from mechscope.sae.transcoder import mlp_input

    cache: dict = {}
    lean.forward(TOKS[None], cache=cache)
    return [mlp_input(lean, l, cache[f"blocks.{l}.hook_mlp_in"][0]) for l in range(len(tcs))]


@pytest.mark.parametrize("kind", ["clamp", "scale", "zero", "mixed"])
def test_real_edit_is_a_neuron_edit(model, graph, kind) -> None:
    """With exact transcoders a feature is an MLP neuron (codes = hook_post, W_dec = W_out), so
    editing features equals editing those neurons (at mlp.hook_post, later layers recomputed)."""
    lean, tcs = model
    edits = _plans(graph)[kind]

    def neurons(l: int):
        def hook(x: torch.Tensor) -> torch.Tensor:
            x = x.clone()
            for e in edits:
                if e.layer == l:
                    a = x[0, e.pos, e.feature]
                    x[0, e.pos, e.feature] = {"clamp": e.value, "scale": a * e.value, "zero": 0}[
                        e.op
                    ]
            return x

        return hook

    hooks = {f"blocks.{l}.mlp.hook_post": neurons(l) for l in range(len(tcs))}
    want = lean.forward(TOKS[None], hooks=hooks)[0, -1]
    got = real_logits(lean, tcs, TOKS, edits)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    assert not torch.allclose(got, lean.forward(TOKS[None])[0, -1])


def test_parse_edits() -> None:
    assert parse_edits("1:2:3=0.5", 7) == [FeatureEdit(1, 2, 3, 0.5)]
    assert parse_edits("1:2:3=0", 7) == [FeatureEdit(1, 2, 3, 0.0, "clamp")]
    assert parse_edits("0:3,-1:4*2", 7) == [
        FeatureEdit(0, 3, 4, 2.0, "scale"),
        FeatureEdit(0, -1, 4, 2.0, "scale"),
    ]
    assert [e.pos for e in parse_edits("1:all:3=1", 5)] == [1, 2, 3, 4]
    for bad in ("1:2=3", "1:2:3", "1:x:3=1", "a:1:2=3", "1:2:3=y", "1:2:3:4=1"):
        with pytest.raises(GraphError, match="LAYER:POS:FEATURE=VALUE"):
            parse_edits(bad, 7)


def test_bad_edits(model, graph) -> None:
    lean, tcs = model
    with pytest.raises(GraphError, match="feature out of range"):
        real_logits(lean, tcs, TOKS, [FeatureEdit(0, 1, 999, 0.0)])
    with pytest.raises(GraphError, match="position out of range"):
        frozen_logits(lean, tcs, TOKS, [FeatureEdit(0, 30, 1, 0.0)])
    with pytest.raises(GraphError, match="layer out of range"):
        intervene(lean, tcs, graph, [FeatureEdit(2, 1, 1, 0.0)])
    with pytest.raises(GraphError, match="position out of range"):
        check_edits(tcs, len(TOKS), parse_edits("0:-8:1=0", len(TOKS)))


def test_sae_edits(model) -> None:
    """Setting an SAE feature moves the hook's activation by exactly (v - a) W_dec[f] at that
    position; setting it to its own value changes nothing."""
    from mechscope.graphs.intervene import sae_logits
    from mechscope.sae.config import SAEConfig
    from mechscope.sae.model import SparseAutoencoder

    lean, _ = model
    hook = "blocks.0.hook_resid_post"
    sae = SparseAutoencoder(SAEConfig(8, 24, hook_name=hook), seed=2).to(torch.float64)
    cache: dict = {}
    lean.forward(TOKS[None], cache=cache)
    x = cache[hook][0]
    a = sae.encode(x).detach()
    p, f = (a[1:] > 0).nonzero()[0].tolist()
    p += 1
    real = lean.forward(TOKS[None])[0, -1]
    torch.testing.assert_close(sae_logits(lean, sae, TOKS, [(p, f, float(a[p, f]))]), real)
    want_x = x.clone()
    want_x[p] += (3.0 - a[p, f]) * sae.W_dec[f]
    want = lean.forward(TOKS[None], hooks={hook: lambda _: want_x[None]})[0, -1]
    torch.testing.assert_close(sae_logits(lean, sae, TOKS, [(p, f, 3.0)]), want)
    torch.testing.assert_close(sae_logits(lean, sae, TOKS, [(p - len(TOKS), f, 3.0)]), want)
    with pytest.raises(GraphError, match="out of range"):
        sae_logits(lean, sae, TOKS, [(0, 99, 1.0)])


# -- `mechscope graph --edit` --------------------------------------------------------------------
PROMPT = "def area(width, height):\n    return width *"


def _table(output: str) -> list[list[str]]:
    """The cells of the rows of the printed change table."""
    return [
        [c.strip() for c in line.split("│")[1:-1]]
        for line in output.splitlines()
        if line.count("│") == 5 and not line.startswith("┃")
    ]


def test_graph_edit_cli(tmp_path) -> None:
    """Every edit kind from the CLI: the frozen model's change printed equals the graph's
    prediction; an edit at the first position (no node there) has no prediction."""
    from typer.testing import CliRunner

    from mechscope.cli import app

    runner = CliRunner()
    base = ["graph", "--prompt", PROMPT, "--out", str(tmp_path / "g.json")]
    r = runner.invoke(app, [*base, "--edit", "1:-1:9*2", "--edit", "0:all:173=0"])
    assert r.exit_code == 0, r.output
    rows = _table(r.output)
    assert len(rows) >= 2 and all(row[1] == row[2] for row in rows), r.output
    assert any(float(row[1]) != 0 for row in rows)
    assert "activations (real run -> edited): 1:12:9 " in r.output
    r = runner.invoke(app, [*base, "--edit", "1:0:5=3"])
    assert r.exit_code == 0, r.output
    assert all(row[2] == "n/a" for row in _table(r.output)) and "no node" in r.output


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("0:40:1=0", "position out of range"),
        ("0:3,-30:1=0", "position out of range"),
        ("2:1:1=0", "layer out of range"),
        ("1:1:99999=0", "feature out of range"),
        ("1:1:1", "LAYER:POS:FEATURE=VALUE"),
    ],
)
def test_graph_bad_edits_exit_2_before_any_work(tmp_path, monkeypatch, edit, message) -> None:
    from typer.testing import CliRunner

    import mechscope.graphs
    from mechscope.cli import app

    def refuse(*a, **k):
        raise AssertionError("the graph was computed for a bad edit")

    monkeypatch.setattr(mechscope.graphs, "attribute", refuse)
    args = ["graph", "--prompt", PROMPT, "--out", str(tmp_path / "g.json"), "--edit", edit]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and message in r.output, r.output
