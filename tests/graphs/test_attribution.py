"""Attribution graphs against known answers: completeness, the closed-form two-layer edges,
finite differences in the frozen replacement model, the literal one-backward-per-node
implementation, and the frozen model reproducing the real run."""

from __future__ import annotations

import copy

import pytest
import torch

from mechscope.errors import GraphError
from mechscope.graphs import attribute, attribute_literal
from mechscope.graphs.attribution import select_logits, setup
from mechscope.graphs.handbuilt import exact_model
from mechscope.graphs.replacement import frozen_forward

TOKS = torch.tensor([0, 3, 5, 7, 2, 9, 4])


@pytest.fixture(scope="module", params=["LN", "RMS"])
def model(request):
    return exact_model(normalization=request.param, seed=1)


def _perturb_tc(tcs, seed=0):
    """Make the transcoders inexact (error nodes carry the rest) and give them a skip term."""
    from mechscope.sae.transcoder import Transcoder

    g = torch.Generator().manual_seed(seed)
    out = []
    for tc in tcs:
        new = Transcoder(tc.cfg, skip=True).to(torch.float64)
        with torch.no_grad():
            for name, p in new.named_parameters():
                if name == "W_skip":
                    p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
                else:
                    src = getattr(tc, name)
                    p.copy_(src + 0.2 * torch.randn(src.shape, generator=g, dtype=src.dtype))
        out.append(new.eval())
    return out


def test_frozen_model_reproduces_the_real_run(model) -> None:
    lean, tcs = model
    tcs = _perturb_tc(tcs)
    s = setup(lean, tcs, TOKS)
    ins, final = frozen_forward(lean, s.fz, tcs, s.embed, s.writes)
    for l in range(lean.n_layers):
        torch.testing.assert_close(ins[l], s.fz.tc_in[l], atol=1e-6, rtol=1e-6)
    real = lean.forward(TOKS[None])[0, -1]
    logits = final @ lean.W_U + lean.b_U
    torch.testing.assert_close(logits, real, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("exact", [True, False])
def test_completeness(model, exact: bool) -> None:
    """Each target's value = sum of its incoming edges + its bias (kappa), exactly."""
    lean, tcs = model
    tcs = tcs if exact else _perturb_tc(tcs)
    g = attribute(lean, tcs, TOKS, batch_size=5)
    targets = list(range(g.n_features)) + [g.logit_index(i) for i in range(g.n_logits)]
    total = g.adjacency.double().sum(1) + g.bias
    torch.testing.assert_close(total[targets], g.values[targets], atol=2e-6, rtol=1e-6)
    errors = g.adjacency[:, g.n_features : g.token_index(0)]
    assert (errors.abs().max() < 1e-12) == exact  # exact transcoders: error nodes carry nothing
    # the logit targets' values are the real demeaned logits (b_U's demeaned part in the bias)
    real = lean.forward(TOKS[None])[0, -1]
    want = (real - real.mean())[g.logit_tokens]
    torch.testing.assert_close(total[g.logit_index(0) :], want, atol=1e-6, rtol=1e-6)


def test_batched_equals_literal(model) -> None:
    lean, tcs = model
    tcs = _perturb_tc(tcs, seed=3)
    g = attribute(lean, tcs, TOKS, batch_size=4)
    ref = attribute_literal(lean, tcs, TOKS)
    assert torch.equal(g.active_features, ref.active_features)
    torch.testing.assert_close(g.adjacency, ref.adjacency, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g.bias, ref.bias)


def test_edges_equal_finite_differences(model) -> None:
    """Column s = the change of every target when source s's value is doubled, in the frozen
    replacement model (affine, so the difference is exact)."""
    lean, tcs = model
    tcs = _perturb_tc(tcs, seed=4)
    g = attribute(lean, tcs, TOKS)
    s = setup(lean, tcs, TOKS)
    L, n = lean.n_layers, len(TOKS)

    def targets(embed, writes):
        ins, final = frozen_forward(lean, s.fz, tcs, embed, writes)
        feats = [ins[l, p] @ tcs[l].W_enc[:, f] for l, p, f in s.feats.tolist()]
        return torch.stack(feats + [final @ v for v in s.logit_vecs])

    base = targets(s.embed, s.writes)
    rows = list(range(g.n_features)) + [g.logit_index(i) for i in range(g.n_logits)]
    checked = 0
    for l, p, f in s.feats.tolist()[::7]:
        w = s.writes.clone()
        w[l, p] += s.fz.codes[l][p, f] * tcs[l].W_dec[f]
        col = g.feature_index(l, p, f)
        torch.testing.assert_close(
            (targets(s.embed, w) - base).float(), g.adjacency[rows, col], atol=1e-5, rtol=1e-4
        )
        checked += 1
    for l in range(L):
        w = s.writes.clone()
        w[l, n - 2] += s.fz.errors[l, n - 2]
        torch.testing.assert_close(
            (targets(s.embed, w) - base).float(),
            g.adjacency[rows, g.error_index(l, n - 2)],
            atol=1e-5,
            rtol=1e-4,
        )
    for p in (0, 3):
        e = s.embed.clone()
        e[p] *= 2
        torch.testing.assert_close(
            (targets(e, s.writes) - base).float(),
            g.adjacency[rows, g.token_index(p)],
            atol=1e-5,
            rtol=1e-4,
        )
    assert checked > 3


def test_closed_form_two_layer_edges() -> None:
    """Without norms, a layer-0 feature s to a layer-1 feature t (Dunefsky et al.):
    A = a_s * (d_s . w_t [c_s = c_t] + sum_h P_h[c_t, c_s] (d_s W_V^h W_O^h) . w_t)."""
    lean, tcs = exact_model(normalization=None, seed=2)
    g = attribute(lean, tcs, TOKS)
    s = setup(lean, tcs, TOKS)
    w1 = lean.layers[1]
    P = s.fz.patterns[1]  # [H, q, k]
    ov = torch.einsum("hmd,hdn->hmn", w1.W_V, w1.W_O)
    seen = 0
    for i, (ls, cs, fs) in enumerate(s.feats.tolist()):
        if ls != 0:
            continue
        d = s.acts[i] * tcs[0].W_dec[fs]
        for j, (lt, ct, ft) in enumerate(s.feats.tolist()):
            if lt != 1:
                continue
            wt = tcs[1].W_enc[:, ft]
            want = (cs == ct) * (d @ wt) + sum(
                P[h, ct, cs] * (d @ ov[h] @ wt) for h in range(lean.n_heads)
            )
            assert float(g.adjacency[j, i]) == pytest.approx(
                float(want.detach()), abs=1e-6, rel=1e-5
            )
            seen += 1
    assert seen > 50
    # nothing flows backwards: a feature never feeds one at an earlier position or layer
    for j, (lt, ct, _) in enumerate(s.feats.tolist()):
        for i, (ls, cs, _) in enumerate(s.feats.tolist()):
            if ls >= lt or cs > ct:
                assert g.adjacency[j, i] == 0


def test_exact_graph_is_the_mlp_neurons() -> None:
    """With exact transcoders the active features are the model's firing ReLU neurons."""
    lean, tcs = exact_model(seed=5)
    g = attribute(lean, tcs, TOKS)
    cache: dict = {}
    lean.forward(TOKS[None], cache=cache)
    for l in range(lean.n_layers):
        post = cache[f"blocks.{l}.mlp.hook_post"][0]
        post[0] = 0  # the BOS position is excluded
        want = post.nonzero().tolist()
        got = [[p, f] for ll, p, f in g.active_features.tolist() if ll == l]
        assert got == want


def test_select_logits() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    ids, _ = select_logits(logits, desired_logit_prob=0.9)
    assert ids.tolist() == [0, 1, 2]
    ids, _ = select_logits(logits, max_n_logits=2)
    assert ids.tolist() == [0, 1]


def test_bad_inputs(model) -> None:
    lean, tcs = model
    with pytest.raises(GraphError, match="context is 16"):
        attribute(lean, tcs, torch.zeros(17, dtype=torch.long))
    with pytest.raises(GraphError, match="one transcoder per layer"):
        attribute(lean, tcs[:1], TOKS)
    with pytest.raises(GraphError, match="float32"):
        attribute(lean, [tcs[0], copy.deepcopy(tcs[1]).float()], TOKS)
    with pytest.raises(GraphError, match="GiB, over max_bytes"):
        attribute(lean, tcs, TOKS, max_bytes=1000)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2_2l", "llama_2l"])
def test_bundled_models(request, name: str) -> None:
    """code-2l (LayerNorm, learned positions) and code-llama-2l (RMSNorm with gains, rotary,
    grouped-query attention, gated MLPs) with random skip transcoders: the frozen model
    reproduces the real logits and every row is complete, to float32 precision."""
    from mechscope.graphs.attribution import prompt_tokens
    from mechscope.models.lean import as_lean
    from mechscope.sae.config import SAEConfig
    from mechscope.sae.transcoder import INPUT_HOOK, Transcoder

    lean = as_lean(request.getfixturevalue(name))
    d = int(lean.W_E.shape[1])
    tcs = []
    for l in range(lean.n_layers):
        cfg = SAEConfig(d, 256, hook_name=INPUT_HOOK.format(layer=l), apply_b_dec_to_input=False)
        tc = Transcoder(cfg, skip=True, seed=l)
        with torch.no_grad():
            tc.b_enc.fill_(-0.05)
            tc.W_skip.normal_(0, 0.02, generator=torch.Generator().manual_seed(l))
        tcs.append(tc.eval())
    toks = prompt_tokens(lean, "def area(width, height):\n    return width *")
    s = setup(lean, tcs, toks)
    with torch.no_grad():
        _, final = frozen_forward(lean, s.fz, tcs, s.embed, s.writes)
        real = lean.forward(toks[None])[0, -1]
    scale = float(real.abs().max())
    torch.testing.assert_close(final @ lean.W_U + lean.b_U, real, atol=2e-6 * scale, rtol=0)
    g = attribute(lean, tcs, toks)
    assert g.n_features > 100
    rows = list(range(g.n_features)) + [g.logit_index(i) for i in range(g.n_logits)]
    total = g.adjacency.double().sum(1) + g.bias
    torch.testing.assert_close(total[rows], g.values[rows], atol=2e-6 * scale, rtol=0)
    # the real demeaned logits, whatever folding moved into b_U (code-2l: ln_final's bias)
    want = (real - real.mean()).double()[g.logit_tokens]
    torch.testing.assert_close(g.values[g.logit_index(0) :], want, atol=2e-6 * scale, rtol=0)


def test_feature_budget(model) -> None:
    """max_feature_nodes keeps that many features; their rows are the full graph's rows with the
    other features' columns dropped; a budget >= the active count gives the full graph."""
    lean, tcs = model
    tcs = _perturb_tc(tcs, seed=7)
    full = attribute(lean, tcs, TOKS)
    same = attribute(lean, tcs, TOKS, max_feature_nodes=10_000)
    torch.testing.assert_close(same.adjacency, full.adjacency)
    k = full.n_features // 3
    g = attribute(lean, tcs, TOKS, max_feature_nodes=k, batch_size=4, update_interval=2)
    assert g.n_features == k and g.meta["n_active"] == full.n_features
    idx = [full.feature_index(*f) for f in g.active_features.tolist()]
    assert idx == sorted(idx)
    keep = idx + list(range(full.n_features, full.adjacency.shape[0]))
    rows = idx + [full.logit_index(i) for i in range(full.n_logits)]
    g_rows = list(range(k)) + [g.logit_index(i) for i in range(g.n_logits)]
    torch.testing.assert_close(
        g.adjacency[g_rows][:, : len(keep)], full.adjacency[rows][:, keep], atol=1e-7, rtol=1e-6
    )
    # the first pick is the feature with the largest direct influence on the logits
    from mechscope.graphs.prune import normalize_rows

    A = normalize_rows(full.adjacency)
    w = torch.zeros(A.shape[0])
    w[full.logit_index(0) :] = full.logit_probs
    direct = (w @ A)[: full.n_features]
    first = attribute(lean, tcs, TOKS, max_feature_nodes=1)
    assert full.feature_index(*first.active_features[0].tolist()) == int(direct.argmax())
