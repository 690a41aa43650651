"""Feature evolution on every declared family's toy model, with random SAEs at both layers'
residual streams: the streamed statistics equal the measures recomputed from codes of the bridge's
cached activations (`run_with_cache`) by the textbook formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mechscope.evolution import EvolutionConfig, compute_evolution
from mechscope.evolution.stats import MEASURES
from mechscope.models.declare import FAMILIES
from mechscope.sae import SAEConfig, SparseAutoencoder

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def _batches() -> list[torch.Tensor]:
    """Two [4, 16] batches of random tokens, BOS (0) first."""
    g = torch.Generator().manual_seed(2)
    out = []
    for _ in range(2):
        t = torch.randint(1, 4096, (4, 16), generator=g)
        t[:, 0] = 0
        out.append(t)
    return out


def _sae(acts: torch.Tensor, hook: str, seed: int) -> SparseAutoencoder:
    """A random SAE centred on the activations acts [n, d] (b_dec their mean), so its features
    fire on part of the tokens rather than always or never."""
    d = acts.shape[-1]
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=2 * d, hook_name=hook), seed=seed)
    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0))
        # unit-norm encoder columns (SAELens's init has norm 0.1): pre-activations then stand
        # well clear of the float rounding between the bridge's activations and LeanModel's
        sae.W_enc.copy_(F.normalize(sae.W_enc, dim=0))
    return sae


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_streamed_statistics_equal_a_recomputation_from_cached_codes(
    family, toy_model, dense_reference
) -> None:
    bridge = toy_model(family)
    batches = _batches()
    with torch.no_grad():
        cached = [bridge.run_with_cache(t, names_filter=lambda n: n in HOOKS)[1] for t in batches]
    acts = [torch.cat([c[h][t != 0] for c, t in zip(cached, batches, strict=True)]) for h in HOOKS]
    saes = [_sae(a, h, seed=l) for l, (a, h) in enumerate(zip(acts, HOOKS, strict=True))]
    cfg = EvolutionConfig(min_abs=0.0, min_abs_mi=0.0, top_k=None, algorithms=("louvain",))
    result = compute_evolution(bridge, saes, batches, cfg, model_name=family)
    with torch.no_grad():
        x, y = (sae.encode(a) for sae, a in zip(saes, acts, strict=True))
    assert result.n_tokens == x.shape[0] == 2 * 4 * 15
    for info, c in zip(result.layers, (x, y), strict=True):
        freq = (c > 0).float().mean(0)
        assert float(((freq > 0) & (freq < 1)).float().mean()) > 0.5  # most features vary
        # a pre-activation within rounding of 0 may fire in one run and not the other: one token
        torch.testing.assert_close(info.freq, freq, atol=1.01 / x.shape[0], rtol=0)
        torch.testing.assert_close(info.max_act, c.max(0).values.clamp_min(0), atol=1e-5, rtol=1e-5)
    ref = dense_reference(x, y, 0.2 * x.max(0).values, 0.2 * y.max(0).values)
    w0, w1 = (F.normalize(s.W_dec, dim=-1) for s in saes)
    ref["decoder_cosine"] = w0 @ w1.T
    sims = result.pairs[0].sims
    assert set(sims) == {*MEASURES, "decoder_cosine"}
    for m, s in sims.items():
        torch.testing.assert_close(s.dense().double(), ref[m].double(), atol=1e-4, rtol=1e-4, msg=m)
