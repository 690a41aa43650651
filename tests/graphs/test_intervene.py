"""Feature interventions: the frozen model's change equals the graph's prediction; in the real
model, zeroing an exact transcoder's feature equals zeroing that MLP neuron."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import GraphError
from mechscope.graphs import attribute
from mechscope.graphs.handbuilt import exact_model
from mechscope.graphs.intervene import FeatureEdit, frozen_logits, intervene, real_logits

TOKS = torch.tensor([0, 3, 5, 7, 2, 9, 4])


@pytest.fixture(scope="module")
def model():
    return exact_model(seed=3)


def test_no_edit_is_the_real_run(model) -> None:
    lean, tcs = model
    real = lean.forward(TOKS[None])[0, -1]
    torch.testing.assert_close(real_logits(lean, tcs, TOKS, []), real)
    torch.testing.assert_close(frozen_logits(lean, tcs, TOKS, []), real, atol=1e-6, rtol=1e-6)


def test_frozen_change_equals_the_graph(model) -> None:
    lean, tcs = model
    g = attribute(lean, tcs, TOKS)
    feats = g.active_features.tolist()
    acts = g.activation_values.tolist()
    edits = [
        FeatureEdit(*feats[0], 0.0),
        FeatureEdit(*feats[len(feats) // 2], 2 * acts[len(feats) // 2]),
        FeatureEdit(*feats[-1], -1.5),
    ]
    res = intervene(lean, tcs, g, edits)
    torch.testing.assert_close(
        torch.tensor(res.frozen), torch.tensor(res.predicted), atol=1e-5, rtol=1e-4
    )
    assert max(abs(x) for x in res.predicted) > 1e-3
    assert len(res.real) == g.n_logits


def test_real_zeroing_is_neuron_ablation(model) -> None:
    lean, tcs = model
    g = attribute(lean, tcs, TOKS)
    l, p, f = g.active_features.tolist()[0]

    def ablate(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[0, p, f] = 0
        return x

    want = lean.forward(TOKS[None], hooks={f"blocks.{l}.mlp.hook_post": ablate})[0, -1]
    got = real_logits(lean, tcs, TOKS, [FeatureEdit(l, p, f, 0.0)])
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    assert not torch.allclose(got, lean.forward(TOKS[None])[0, -1])


def test_bad_edits(model) -> None:
    lean, tcs = model
    with pytest.raises(GraphError, match="feature out of range"):
        real_logits(lean, tcs, TOKS, [FeatureEdit(0, 1, 999, 0.0)])
    with pytest.raises(GraphError, match="position out of range"):
        frozen_logits(lean, tcs, TOKS, [FeatureEdit(0, 30, 1, 0.0)])
    with pytest.raises(GraphError, match="layer:pos:feature=value"):
        FeatureEdit.parse("1:2=3")
    assert FeatureEdit.parse("1:2:3=0.5") == FeatureEdit(1, 2, 3, 0.5)


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
    with pytest.raises(GraphError, match="out of range"):
        sae_logits(lean, sae, TOKS, [(0, 99, 1.0)])
