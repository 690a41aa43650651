"""Interventions through hooks and KV-cached steered generation, held to literal references: the
whole sequence recomputed each step, and the same edits written by hand as hooks."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import SteeringError
from mechscope.models.lean import LeanModel, as_lean
from mechscope.sae import SAEConfig, SparseAutoencoder, resolve
from mechscope.steering import (
    AblateDirection,
    AddDirection,
    FeatureEdit,
    generate,
    hooks_for,
    intervene,
    next_token,
)

HOOK = "blocks.0.hook_resid_post"
SAE = "blocks.0.hook_resid_post__local__l1-2"


@pytest.fixture(scope="module")
def code_sae():
    return resolve(SAE, "code-2l")[1]


def _prompt(tokenizer, text: str = "def parse(self, path):\n    return") -> torch.Tensor:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return torch.tensor([[tokenizer.bos_token_id, *ids]])


def _random_sae(d_in: int, hook: str = HOOK) -> SparseAutoencoder:
    cfg = SAEConfig(d_in=d_in, d_sae=4 * d_in, architecture="topk", k=8, hook_name=hook)
    return SparseAutoencoder(cfg, seed=1)


@pytest.fixture(params=["code-2l", "llama"])
def setup(request, tokenizer, toy_model):
    """(lean model, prompts [2, 7], SAE at HOOK, a direction [d_model]): code-2l with its bundled
    SAE, and a Llama toy (grouped-query attention, rotary positions) with a random SAE."""
    if request.param == "code-2l":
        lean = as_lean(request.getfixturevalue("gpt2_2l"))
        texts = ("def parse(self, path):", "import os\nimport sys\n")
        prompt = torch.cat([_prompt(tokenizer, t)[:, :7] for t in texts])
        sae = resolve(SAE, "code-2l")[1]
    else:
        lean = as_lean(toy_model("llama"))
        assert lean.n_kv_heads < lean.n_heads and lean.rotary
        g = torch.Generator().manual_seed(0)
        prompt = torch.randint(1, lean.W_E.shape[0], (2, 7), generator=g)
        sae = _random_sae(lean.W_E.shape[1])
    direction = torch.randn(lean.W_E.shape[1], generator=torch.Generator().manual_seed(3))
    return lean, prompt, sae, direction


def test_lean_incremental_forward_with_hooks_equals_the_full_run(setup):
    """LeanModel.forward(start_pos, prefix_kv) with hooks (the extension steering uses) gives the
    full hooked run's last logits, and its hooks see only the new positions."""
    lean, prompt, _, direction = setup
    hook = {"blocks.1.hook_resid_pre": lambda x: x + direction.to(x.dtype)}
    full, cache = lean.run_with_cache(prompt, hook)
    p = prompt.shape[1] - 2
    kv = [
        (cache[lean.key_hook(l)][:, :p], cache[f"blocks.{l}.attn.hook_v"][:, :p])
        for l in range(lean.n_layers)
    ]
    seen: dict[str, torch.Tensor] = {}
    out = lean(prompt, hook, seen, start_pos=p, prefix_kv=kv)
    torch.testing.assert_close(out, full[:, p:], atol=1e-5, rtol=1e-5)
    assert seen["hook_embed"].shape[1] == 2
    assert seen["blocks.0.attn.hook_pattern"].shape[-2:] == (2, prompt.shape[1])


@pytest.mark.parametrize("sampled", [False, True])
def test_cached_generation_equals_full_recompute(setup, sampled):
    """Token for token, with and without interventions (at all, new and listed positions; a
    random transcoder's feature edited at the MLP output after an SAE edit at the MLP input),
    greedy and sampled: the KV-cached loop equals re-running the whole sequence each step."""
    from mechscope.sae.transcoder import Transcoder
    from mechscope.steering import TranscoderEdit

    lean, prompt, sae, direction = setup
    n, d = prompt.shape[1], lean.W_E.shape[1]
    hook = "blocks.1.ln2.hook_normalized"
    tc = Transcoder(SAEConfig(d, 4 * d, hook_name=hook, apply_b_dec_to_input=False), seed=2)
    plans = [
        [],
        [FeatureEdit(HOOK, sae, 5, "clamp", 6.0)],
        [
            AddDirection("blocks.1.hook_resid_pre", direction, 2.0, "new"),
            AblateDirection(HOOK, direction, (1, n + 2)),
            FeatureEdit(HOOK, sae, 7, "scale", 3.0, (0, n - 1, n + 1)),
        ],
        [
            AddDirection("blocks.1.hook_mlp_in", direction, 1.0, (2, n)),
            TranscoderEdit(tc, 3, "clamp", 4.0),
            TranscoderEdit(tc, 8, "scale", 0.0, "new"),
        ],
    ]
    kw = dict(temperature=0.9, top_k=50, top_p=0.95, seed=4) if sampled else {}
    outs = []
    for ivs in plans:
        cached = generate(lean, prompt, ivs, 10, **kw)
        full = generate(lean, prompt, ivs, 10, kv_cache=False, **kw)
        assert torch.equal(cached.tokens, full.tokens), ivs
        assert torch.equal(cached.tokens[:, :n], prompt)
        outs.append(cached.new_tokens)
    assert not torch.equal(outs[0], outs[2])  # the interventions do steer
    assert not torch.equal(outs[0], outs[3])


def test_zero_inactive_and_clamp_to_current_change_nothing(gpt2_2l, tokenizer, code_sae):
    lean = as_lean(gpt2_2l)
    prompt = _prompt(tokenizer)
    _, cache = lean.run_with_cache(prompt, names=[HOOK])
    codes = code_sae.encode(cache[HOOK])[0].detach()  # [pos, d_sae]
    inactive = int((codes == 0).all(0).nonzero()[0])
    active = int(codes[-1].argmax())
    assert codes[-1, active] > 0
    clean = lean(prompt)[:, -1]
    last = prompt.shape[1] - 1
    for iv in (
        FeatureEdit(HOOK, code_sae, inactive, "zero"),
        FeatureEdit(HOOK, code_sae, active, "clamp", float(codes[-1, active]), (last,)),
        FeatureEdit(HOOK, code_sae, active, "scale", 1.0),
    ):
        effect = intervene(lean, prompt, [iv])
        torch.testing.assert_close(effect.logits, clean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(effect.clean_logits, clean, atol=1e-5, rtol=1e-5)
        assert float(effect.kl[0]) < 1e-6
    zeroed = intervene(lean, prompt, [FeatureEdit(HOOK, code_sae, active, "zero")])
    assert float(zeroed.kl[0]) > 1e-4  # zeroing an active feature does change the prediction


def test_feature_edit_is_a_delta_along_the_decoder_row(gpt2_2l, tokenizer, code_sae):
    """Clamping keeps the SAE's reconstruction error: the edited activation is x plus
    (value - code) * W_dec[f], and its own code for f is the clamped value (ReLU SAE, other
    features unchanged up to the decoder rows' overlap)."""
    lean = as_lean(gpt2_2l)
    prompt = _prompt(tokenizer)
    f = 11
    iv = FeatureEdit(HOOK, code_sae, f, "clamp", 5.0)
    _, clean = lean.run_with_cache(prompt, names=[HOOK])
    _, edited = lean.run_with_cache(prompt, hooks_for([iv], 0, prompt.shape[1]), names=[HOOK])
    x = clean[HOOK]
    code = code_sae.encode(x)[..., f]
    expected = x + (5.0 - code).unsqueeze(-1) * code_sae.W_dec[f]
    torch.testing.assert_close(edited[HOOK], expected.detach(), atol=1e-5, rtol=1e-5)


def test_activation_addition_and_ablation_equal_hand_written_hooks(setup):
    lean, prompt, _, direction = setup
    hook = "blocks.1.hook_resid_pre"
    at = (1, 3)

    def by_hand(x):
        x = x.clone()
        x[:, list(at)] += 3.0 * direction.to(x.dtype)
        return x

    effect = intervene(lean, prompt, [AddDirection(hook, direction, 3.0, at)])
    torch.testing.assert_close(effect.logits, lean(prompt, {hook: by_hand})[:, -1])
    assert float(effect.kl.min()) > 0
    u = direction / direction.norm()
    _, cache = lean.run_with_cache(
        prompt, hooks_for([AblateDirection(hook, direction)], 0, prompt.shape[1]), names=[hook]
    )
    assert float((cache[hook] @ u).abs().max()) < 1e-4
    projected = lambda x: x - (x @ u.to(x.dtype)).unsqueeze(-1) * u  # noqa: E731
    ablated = intervene(lean, prompt, [AblateDirection(hook, direction)])
    torch.testing.assert_close(ablated.logits, lean(prompt, {hook: projected})[:, -1])


def test_top_changes_are_the_largest_moves(gpt2_2l, tokenizer, code_sae):
    effect = intervene(
        gpt2_2l, _prompt(tokenizer), [FeatureEdit(HOOK, code_sae, 11, "clamp", 10.0)]
    )
    changes = effect.top_changes(5)
    moves = [abs(n - c) for _, c, n in changes]
    assert moves == sorted(moves, reverse=True) and len(changes) == 5
    t, c, n = changes[0]
    assert n - c == pytest.approx(float(effect.logprob_change[0, t]), abs=1e-5)
    assert effect.to_dict(tokenizer, k=5)["top_changes"][0][0]["token"] == t


def test_next_token_sampling():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert int(next_token(logits)) == 1
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert int(next_token(logits, 1.0, top_k=1, generator=g())) == 1
    assert int(next_token(logits, 1.0, top_p=0.01, generator=g())) == 1
    same_seed = {int(next_token(logits, 5.0, top_k=2, generator=g())) for _ in range(3)}
    assert len(same_seed) == 1
    rng = torch.Generator().manual_seed(1)
    seen = {int(next_token(logits, 5.0, top_k=2, generator=rng)) for _ in range(200)}
    assert seen == {1, 3}


def test_bad_interventions_are_refused_before_any_work(gpt2_2l, tokenizer, code_sae, toy_model):
    lean = as_lean(gpt2_2l)
    prompt = _prompt(tokenizer)
    d = lean.W_E.shape[1]
    cases = [
        (FeatureEdit("blocks.7.hook_resid_post", code_sae, 0), "no hook"),
        (FeatureEdit(HOOK, code_sae, code_sae.d_sae), "out of range"),
        (FeatureEdit("blocks.1.hook_resid_post", code_sae, 0), "trained at"),
        (FeatureEdit(HOOK, _random_sae(d + 1), 0), "d_in"),
        (AddDirection(HOOK, torch.ones(d - 1)), "width"),
        (AddDirection("blocks.0.attn.hook_z", torch.ones(d)), r"\[batch, pos, d\]"),
        (AddDirection(HOOK, torch.ones(d), positions=(-1,)), "outside the context"),
        (AddDirection(HOOK, torch.ones(d), positions="new"), "generated tokens only"),
    ]
    for iv, match in cases:
        with pytest.raises(SteeringError, match=match):
            intervene(lean, prompt, [iv])
    n_ctx = int(gpt2_2l.cfg.n_ctx)
    with pytest.raises(SteeringError, match="context"):
        generate(lean, torch.zeros(1, n_ctx - 3, dtype=torch.long), [], 4)
    with pytest.raises(SteeringError, match="temperature"):
        generate(lean, prompt, [], 2, temperature=-1)
    llama = LeanModel(toy_model("llama"))
    with pytest.raises(SteeringError, match="d_in"):
        generate(llama, torch.ones(1, 3, dtype=torch.long), [FeatureEdit(HOOK, code_sae, 0)], 2)


# -- transcoder features -------------------------------------------------------------------------
TC_LAYER = 1


@pytest.fixture(scope="module")
def code_tc(gpt2_2l, tokenizer):
    """(code-2l's bundled layer-1 transcoder, its feature most active at the last position of
    _prompt(), the positions where that feature is active)."""
    from mechscope.graphs import load_bundled_transcoders

    tc = load_bundled_transcoders("code-2l")[TC_LAYER]
    _, cache = gpt2_2l.run_with_cache(_prompt(tokenizer))
    codes = tc.encode(cache[f"blocks.{TC_LAYER}.ln2.hook_normalized"])[0].detach()
    f = int(codes[-1].argmax())
    return tc, f, tuple(codes[:, f].nonzero()[:, 0].tolist())


def _bridge_edit(tc, f: int, op: str, value: float, positions) -> list:
    """circuit-tracer's edit written by hand as bridge hooks: at hook_mlp_out add
    (new - a) * W_dec[f], a read off ln2.hook_normalized, at `positions` ('all' or a list)."""
    seen = {}

    def grab(x, hook):
        seen["x"] = x

    def edit(y, hook):
        a = tc.encode(seen["x"])[..., f]
        new = {"clamp": torch.full_like(a, value), "scale": a * value, "zero": 0 * a}[op]
        at = slice(None) if positions == "all" else list(positions)
        y = y.clone()
        y[:, at] += (new - a)[:, at, None] * tc.W_dec[f]
        return y

    return [
        (f"blocks.{TC_LAYER}.ln2.hook_normalized", grab),
        (f"blocks.{TC_LAYER}.hook_mlp_out", edit),
    ]


@pytest.mark.parametrize(
    ("op", "value", "positions"),
    [("clamp", 6.0, "all"), ("scale", 20.0, "active"), ("zero", 0.0, "all")],
)
def test_transcoder_edit_equals_a_hand_written_bridge_hook(
    gpt2_2l, tokenizer, code_tc, op, value, positions
):
    from mechscope.steering import TranscoderEdit

    tc, f, active = code_tc
    positions = active if positions == "active" else positions
    prompt = _prompt(tokenizer)
    effect = intervene(gpt2_2l, prompt, [TranscoderEdit(tc, f, op, value, positions)])
    with torch.no_grad():
        want = gpt2_2l.run_with_hooks(prompt, fwd_hooks=_bridge_edit(tc, f, op, value, positions))
    torch.testing.assert_close(effect.logits, want[:, -1], atol=1e-4, rtol=1e-4)
    assert float(effect.kl[0]) > 1e-4


def test_transcoder_steering_equals_a_literal_loop(gpt2_2l, tokenizer, code_tc):
    """Greedy KV-cached generation with a clamped transcoder feature equals re-running the
    bridge on the whole sequence each step with the edit as hand-written hooks; sampled, the
    cache equals recomputation; and the edit does steer."""
    from mechscope.steering import TranscoderEdit

    tc, f, _ = code_tc
    prompt = _prompt(tokenizer, "def foo(")
    got = generate(gpt2_2l, prompt, [TranscoderEdit(tc, f, "clamp", 8.0)], 6)
    tokens = prompt
    with torch.no_grad():
        for _ in range(6):
            logits = gpt2_2l.run_with_hooks(
                tokens, fwd_hooks=_bridge_edit(tc, f, "clamp", 8.0, "all")
            )
            tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(got.tokens, tokens)
    assert not torch.equal(got.tokens, generate(gpt2_2l, prompt, [], 6).tokens)
    kw = dict(temperature=0.9, top_k=50, seed=4)
    scaled = [TranscoderEdit(tc, f, "scale", 4.0, "new")]
    assert torch.equal(
        generate(gpt2_2l, prompt, scaled, 6, **kw).tokens,
        generate(gpt2_2l, prompt, scaled, 6, kv_cache=False, **kw).tokens,
    )


def test_bad_transcoder_edits(gpt2_2l, tokenizer, code_tc, attn4):
    from mechscope.sae.transcoder import Transcoder
    from mechscope.steering import TranscoderEdit

    lean = as_lean(gpt2_2l)
    prompt = _prompt(tokenizer)
    real = code_tc[0]

    def tc(d_in: int, layer: int) -> Transcoder:
        hook = f"blocks.{layer}.ln2.hook_normalized"
        return Transcoder(SAEConfig(d_in, 16, hook_name=hook, apply_b_dec_to_input=False))

    far, narrow = tc(128, 4), tc(64, 0)
    cases = [
        (TranscoderEdit(far, 0), "2 layers"),
        (TranscoderEdit(narrow, 0), "d_in=64"),
        (TranscoderEdit(real, real.d_sae), "out of range"),
        (TranscoderEdit(real, 0, positions=(99,)), "outside the context"),
    ]
    for iv, match in cases:
        with pytest.raises(SteeringError, match=match):
            intervene(lean, prompt, [iv])
    with pytest.raises(SteeringError, match="need the model"):
        hooks_for([TranscoderEdit(real, 0)], 0, 3)
    with pytest.raises(SteeringError, match="no MLPs"):
        generate(attn4, torch.ones(1, 3, dtype=torch.long), [TranscoderEdit(real, 0)], 2)
