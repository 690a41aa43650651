"""Every declared family at toy size: LeanModel equals HF's logits and the bridge's hooks."""

import pytest
import torch

import mechscope
from mechscope import metrics
from mechscope.errors import ModelLoadError
from mechscope.models.declare import FAMILIES
from mechscope.models.lean import LeanModel
from mechscope.models.toy import TOYS, save_toy

# hooks LeanModel fires that TransformerLens 3.9's bridge does not fire for that family (its
# per-head hooks are missing for some attention classes; hook_rot_* for some rotary ones)
BRIDGE_LACKS = {
    "opt": ("hook_q_input", "hook_k_input", "hook_v_input", "hook_result"),
    "gptj": ("hook_q_input", "hook_k_input", "hook_v_input", "hook_result", "hook_rot_", "mlp_in"),
    "gpt_neox": ("hook_rot_",),
    "phi3": ("hook_rot_",),
    "phi": ("hook_mlp_in",),
}

# hooks whose bridge value is not what its name says: GPT-J's and OPT's hook_attn_scores are not
# the scores whose softmax is their hook_pattern (ours are; the test checks that instead)
BRIDGE_DIFFERS = {"gptj": ("attn_scores",), "opt": ("attn_scores",)}

_cache: dict[str, tuple] = {}


def _models(family, toy_dir):
    if family not in _cache:
        from transformers import AutoModelForCausalLM

        folder = toy_dir(family)
        bridge = mechscope.load_model(folder)
        hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
        _cache[family] = bridge, hf
    return _cache[family]


def _tokens(n=3, pos=14, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 4000, (n, pos), generator=g)


def test_every_declared_family_has_a_toy():
    assert set(TOYS) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lean_logits_equal_hf(family, toy_dir):
    """float32; compared after subtracting each position's mean logit, the one thing
    TransformerLens's compatibility mode changes (`center_unembed`)."""
    bridge, hf = _models(family, toy_dir)
    tokens = _tokens()
    with torch.no_grad():
        ref = hf(tokens).logits
        out = LeanModel(bridge)(tokens)
    centre = lambda x: x - x.mean(-1, keepdim=True)  # noqa: E731
    scale = max(1.0, float(ref.abs().max()))
    torch.testing.assert_close(centre(out), centre(ref), rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lean_hooks_equal_the_bridges(family, toy_dir):
    bridge, _ = _models(family, toy_dir)
    lean = LeanModel(bridge)
    tokens = _tokens(seed=1)
    with torch.no_grad():
        _, cache = lean.run_with_cache(tokens)
        _, ref = bridge.run_with_cache(tokens)
    assert list(cache) == lean.hook_names()  # a name exists exactly where a hook fires
    lacks = BRIDGE_LACKS.get(family, ())
    compared = 0
    for name, x in cache.items():
        if name not in ref:
            assert any(s in name for s in lacks), f"{name}: the bridge does not fire it"
            continue
        y = ref[name]
        if any(s in name for s in BRIDGE_DIFFERS.get(family, ())):
            x, y = x.softmax(-1), ref[name.replace("attn_scores", "pattern")]
        elif "attn_scores" in name:  # masked entries: -inf here, a large negative there
            keep = torch.isfinite(x)
            x, y = x[keep], y[keep]
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4 * max(1.0, float(y.abs().max())))
        compared += 1
    assert compared >= 20


def test_sliding_window_is_exercised(toy_dir):
    """Mistral's toy has an 8-token window and the prompts are 14 long: without the window
    LeanModel would differ from HF."""
    bridge, hf = _models("mistral", toy_dir)
    lean = LeanModel(bridge)
    tokens = _tokens()
    with torch.no_grad():
        ref = hf(tokens).logits
        lean.arch.window = [None] * lean.n_layers
        wrong = lean(tokens)
    assert (wrong - ref).abs().max() > 1e-3


def test_llama3_rope_scaling_and_gemma3_per_layer_rotary(tmp_path, toy_dir):
    """Rope scaling comes from HF's own rotary module (Llama-3's frequency bands); Gemma-3's local
    and global layers rotate with different bases."""
    from transformers import AutoModelForCausalLM

    rope = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
        "rope_theta": 10000.0,
    }
    folder = save_toy("llama", tmp_path / "llama3", rope_parameters=rope)
    lean = LeanModel(mechscope.load_model(folder))
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    tokens = _tokens(pos=40)
    with torch.no_grad():
        out, ref = lean(tokens), hf(tokens).logits
    centre = lambda x: x - x.mean(-1, keepdim=True)  # noqa: E731
    torch.testing.assert_close(centre(out), centre(ref), rtol=0, atol=1e-5 * float(ref.abs().max()))
    default = LeanModel(_models("llama", toy_dir)[0]).arch.rotary[0]
    assert not torch.allclose(lean.arch.rotary[0].inv_freq, default.inv_freq)
    g3 = LeanModel(_models("gemma3_text", toy_dir)[0])
    assert g3.arch.window == [8, None]
    assert not torch.allclose(g3.arch.rotary[0].inv_freq, g3.arch.rotary[1].inv_freq)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bf16_runs_give_float32_metrics(family, toy_dir):
    lean32 = LeanModel(_models(family, toy_dir)[0])
    lean16 = LeanModel(mechscope.load_model(toy_dir(family), dtype="bfloat16"))
    tokens = _tokens()
    answers, wrong = torch.tensor([5, 6, 7]), torch.tensor([8, 9, 10])
    with torch.no_grad():
        d32 = metrics.logit_diff(lean32(tokens), answers, wrong)
        lo16 = lean16(tokens)
        d16 = metrics.logit_diff(lo16, answers, wrong)
    assert lo16.dtype == torch.bfloat16 and d16.dtype == torch.float32
    assert (d16 - d32).abs().max() < 0.1


def test_a_hook_of_another_family_lists_this_models_hooks(toy_dir):
    lean = LeanModel(_models("gpt2", toy_dir)[0])
    with pytest.raises(KeyError, match=r"blocks\.0\.attn\.hook_rot_q.*hook_embed"):
        lean(_tokens(), hooks={"blocks.0.attn.hook_rot_q": lambda x: x})
    assert "hook_pos_embed" in lean.hook_names()
    llama = LeanModel(_models("llama", toy_dir)[0])
    assert "hook_pos_embed" not in llama.hook_names()  # rotary: no position embedding


@pytest.mark.parametrize(
    ("family", "key", "value", "says"),
    [
        ("llama", "model_type", "llama_but_new", r"'llama_but_new' is not declared.*gemma2"),
        ("phi", "qk_layernorm", True, r"q/k LayerNorm \(Phi\)"),
        ("opt", "do_layer_norm_before", False, "post-LayerNorm blocks"),
    ],
)
def test_undeclared_architectures_and_options_are_refused(family, key, value, says, toy_dir):
    bridge, _ = _models(family, toy_dir)
    hf_cfg = bridge.original_model.config
    old = getattr(hf_cfg, key)
    setattr(hf_cfg, key, value)
    try:
        with pytest.raises(ModelLoadError, match=says):
            LeanModel(bridge)
    finally:
        setattr(hf_cfg, key, old)
