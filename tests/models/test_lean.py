"""LeanModel equals the bridge's hooked run on every bundled model."""

import pytest
import torch

import mechscope
from mechscope.models.lean import LeanModel
from mechscope.tasks import make_task


@pytest.mark.parametrize("name", ["code-attn4", "code-2l", "code-4l", "code-llama-2l"])
def test_lean_matches_bridge_logits_and_hooks(name, tokenizer):
    bridge = mechscope.load_model(name)
    lean = LeanModel(bridge)
    tokens = make_task("docstring", tokenizer, n=6, seed=5).clean_tokens
    with torch.no_grad():
        ref, ref_cache = bridge.run_with_cache(tokens)
        out, cache = lean.run_with_cache(tokens)
    # fp32 with another summation order: 1e-5 relative (code-attn4's logits reach ~20)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    shared = [k for k in cache if k in ref_cache and "attn_scores" not in k]
    assert len(shared) > 10 * bridge.cfg.n_layers // 2
    for k in shared:
        assert torch.allclose(cache[k], ref_cache[k], atol=1e-5), k
    # per-head hooks exist even where the bridge has none, and add up
    l = bridge.cfg.n_layers - 1
    result = cache[f"blocks.{l}.attn.hook_result"]
    assert torch.allclose(
        result.sum(2) + lean.layers[l].b_O, cache[f"blocks.{l}.hook_attn_out"], atol=1e-5
    )


def test_lean_hooks_intervene(attn4, tokenizer):
    lean = LeanModel(attn4)
    tokens = make_task("docstring", tokenizer, n=4, seed=1).clean_tokens
    base = lean(tokens)

    def zero_head(x):
        x = x.clone()
        x[:, :, 0] = 0
        return x

    patched = lean(tokens, hooks={"blocks.3.attn.hook_result": zero_head})
    assert not torch.allclose(base, patched)
    q_in = lean(tokens, hooks={"blocks.1.hook_q_input": lambda x: x * 0.5})
    assert not torch.allclose(base, q_in)
    with pytest.raises(KeyError, match="Unknown hook names"):
        lean(tokens, hooks={"blocks.9.attn.hook_result": zero_head})


@pytest.mark.parametrize("fixture", ["attn4", "gpt2_2l"])
def test_partial_runs_equal_the_full_run(fixture, tokenizer, request):
    """Running only the last query positions, or only positions p.. from cached keys and values,
    gives the full run's logits at the positions read."""
    lean = LeanModel(request.getfixturevalue(fixture))
    tokens = make_task("docstring", tokenizer, n=3, seed=2).clean_tokens
    full, cache = lean.run_with_cache(tokens)
    last = lean(tokens, logit_pos=[-1, 30])
    assert torch.allclose(last, full[:, [-1, 30]], atol=1e-5)
    for layer, p in [(1, 0), (1, 17), (lean.n_layers - 1, 40)]:
        kv = [
            (cache[f"blocks.{l}.attn.hook_k"][:, :p], cache[f"blocks.{l}.attn.hook_v"][:, :p])
            for l in range(lean.n_layers)
        ]
        out = lean(
            tokens,
            start_layer=layer,
            resid=cache[f"blocks.{layer}.hook_resid_pre"][:, p:],
            logit_pos=[-1],
            start_pos=p,
            prefix_kv=kv,
        )
        assert torch.allclose(out, full[:, -1:], atol=1e-5), (layer, p)
    with pytest.raises(ValueError, match="start_pos"):
        lean(tokens, start_layer=1, resid=cache["blocks.1.hook_resid_pre"][:, 5:], start_pos=5)
    with pytest.raises(ValueError, match="logit_pos"):
        lean(
            tokens,
            start_layer=1,
            resid=cache["blocks.1.hook_resid_pre"][:, 5:],
            start_pos=5,
            prefix_kv=kv,
            logit_pos=[2],
        )


@pytest.mark.parametrize("source", ["attn4", "qwen3"])
def test_run_with_cache_names_and_stop(source, tokenizer, request, toy_model, monkeypatch):
    """`run_with_cache(names=...)` gives the named activations of a full hooked forward (after
    the hooks' replacements), and runs no block after the last hook named (or `stop_after`)."""
    bridge = request.getfixturevalue(source) if source == "attn4" else toy_model(source)
    lean = LeanModel(bridge)
    tokens = make_task("docstring", tokenizer, n=3, seed=4).clean_tokens
    names = ["blocks.0.attn.hook_result", "blocks.1.hook_q_input", "blocks.0.hook_resid_post"]
    seen: dict[str, torch.Tensor] = {}

    def double(x):  # an intervention on a hook before the last one named
        return 2 * x

    def grab(name):
        def hook(x):
            seen[name] = x.clone()

        return hook

    with torch.no_grad():
        full = lean(tokens, hooks={"blocks.0.attn.hook_z": double, **{n: grab(n) for n in names}})
    ran: list[int] = []
    block = lean._block
    monkeypatch.setattr(lean, "_block", lambda l, *a: ran.append(l) or block(l, *a))
    late = "blocks.1.hook_resid_post"  # after the last hook named, in the last block run
    with torch.no_grad():
        logits, cache = lean.run_with_cache(
            tokens, {"blocks.0.attn.hook_z": double, late: grab(late)}, names=names
        )
    assert logits is None and list(cache) == sorted(names, key=lean.hook_names().index)
    assert late not in seen
    for n in names:
        torch.testing.assert_close(cache[n], seen[n], rtol=0, atol=0)
    assert cache["blocks.1.hook_q_input"].shape[2] == lean.n_heads  # shape as the hook fires
    assert ran == [0, 1]  # stopped inside block 1: no later block ran, nor the rest of block 1
    ran.clear()
    _, cache = lean.run_with_cache(tokens, names=names[:1], stop_after="blocks.1.hook_resid_pre")
    assert ran == [0, 1] and list(cache) == names[:1]
    ran.clear()
    logits, cache = lean.run_with_cache(
        tokens, {"blocks.0.attn.hook_z": double}, names=names, stop_after="logits"
    )
    assert ran == list(range(lean.n_layers)) and logits is not None
    torch.testing.assert_close(logits, full, rtol=0, atol=0)
    with pytest.raises(ValueError, match="comes before hook"):
        lean.run_with_cache(tokens, names=names, stop_after="blocks.0.hook_resid_pre")
    with pytest.raises(KeyError, match="Unknown hook names"):
        lean.run_with_cache(tokens, names=["blocks.99.hook_resid_post"])
