"""load_model on every path, checked against independent forwards of the same weights."""

import itertools
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import mechscope
from mechscope.artefacts import TOKENIZER_DIR, model_dir
from mechscope.models import ModelLoadError, revisions


def _native_forward(sd: dict[str, torch.Tensor], cfg: dict, tokens: torch.Tensor) -> torch.Tensor:
    """A from-scratch attention-only transformer over the raw (unfolded) saved weights."""
    b, p = tokens.shape
    h, dh = cfg["n_heads"], cfg["d_head"]
    x = sd["tok_embed.weight"][tokens] + sd["pos.weight"][:p]
    mask = torch.ones(p, p, dtype=torch.bool).triu(1)
    for l in range(cfg["n_layers"]):
        pre = f"layers.{l}."
        y = F.layer_norm(
            x, (x.shape[-1],), sd[pre + "ln1.weight"], sd[pre + "ln1.bias"], cfg.get("eps", 1e-5)
        )

        def proj(n, y=y, pre=pre):
            return (
                F.linear(y, sd[pre + f"attn.{n}.weight"], sd[pre + f"attn.{n}.bias"])
                .view(b, p, h, dh)
                .transpose(1, 2)
            )

        q, k, v = proj("q"), proj("k"), proj("v")
        att = (q @ k.transpose(-1, -2) / dh**0.5).masked_fill(mask, float("-inf")).softmax(-1)
        z = (att @ v).transpose(1, 2).reshape(b, p, h * dh)
        x = x + F.linear(z, sd[pre + "attn.o.weight"], sd[pre + "attn.o.bias"])
    x = F.layer_norm(
        x, (x.shape[-1],), sd["ln_out.weight"], sd["ln_out.bias"], cfg.get("eps", 1e-5)
    )
    return F.linear(x, sd["head.weight"], sd.get("head.bias"))


@pytest.fixture(scope="module")
def tokens(tokenizer):
    from mechscope.tasks import make_task

    return make_task("docstring", tokenizer, n=8, seed=7).clean_tokens


def test_attn4_matches_independent_pytorch_forward(attn4, tokens):
    folder = model_dir("code-attn4")
    sd = {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
    cfg = json.loads((folder / "config.json").read_text())
    with torch.no_grad():
        ref = _native_forward(sd, cfg, tokens).log_softmax(-1)
        out = attn4(tokens).log_softmax(-1)
    assert (ref - out).abs().max() < 1e-4


def test_gpt2_matches_hf_forward(gpt2_2l, tokens):
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(
        str(model_dir("code-2l")), attn_implementation="eager", dtype=torch.float32
    )
    with torch.no_grad():
        ref = hf(tokens).logits.log_softmax(-1)
        out = gpt2_2l(tokens).log_softmax(-1)
    assert (ref - out).abs().max() < 1e-4


@pytest.mark.parametrize("revision", [None, "step-300"])
def test_llama_matches_hf_forward(revision, tokens, tmp_path):
    from transformers import LlamaForCausalLM

    folder = model_dir("code-llama-2l")
    weights = folder / "model.safetensors"
    if revision is not None:
        weights = folder / "checkpoints" / f"{revision}.safetensors"
    (tmp_path / "config.json").symlink_to(folder / "config.json")
    (tmp_path / "model.safetensors").symlink_to(weights)
    hf = LlamaForCausalLM.from_pretrained(  # HF's own loader, not mechscope's
        str(tmp_path), attn_implementation="eager", dtype=torch.float32
    )
    model = mechscope.load_model("code-llama-2l", revision=revision)
    assert type(model).__name__ == "TransformerBridge"
    window = torch.randint(1, 4096, (2, 96), generator=torch.Generator().manual_seed(0))
    window[:, 0] = 0  # BOS, then a full context: every rotary position
    for batch in (tokens, window):
        with torch.no_grad():
            ref, out = hf(batch).logits, model(batch)
        # compatibility mode centres the unembedding: logits agree up to a shift per position
        ref, out = ref - ref.mean(-1, keepdim=True), out - out.mean(-1, keepdim=True)
        assert (ref - out).abs().max() < 1e-5 * ref.abs().max(), (ref - out).abs().max()


def test_llama_has_grouped_query_hooks(llama_2l, tokens):
    cfg = llama_2l.cfg
    assert (cfg.n_heads, cfg.n_key_value_heads, cfg.d_head) == (4, 2, 32)
    assert cfg.normalization_type == "RMS" and cfg.positional_embedding_type == "rotary"
    _, cache = llama_2l.run_with_cache(tokens)
    assert cache["blocks.0.attn.hook_q"].shape == (*tokens.shape, 4, 32)
    assert cache["blocks.0.attn.hook_k"].shape == (*tokens.shape, 2, 32)
    assert cache["blocks.0.attn.hook_pattern"].shape[1] == 4
    assert cache["blocks.1.mlp.hook_post"].shape == (*tokens.shape, 400)
    # per-head results add up to the attention output (Llama has no b_O)
    result = cache["blocks.1.attn.hook_result"]
    assert torch.allclose(result.sum(2), cache["blocks.1.hook_attn_out"], atol=1e-5)
    assert llama_2l.fine_grained_hooks and "blocks.0.hook_mlp_in" in cache


def test_bundled_models_have_tl_hook_names(attn4, gpt2_2l, tokens):
    _, cache = gpt2_2l.run_with_cache(tokens)
    h = gpt2_2l.cfg.n_heads
    assert cache["blocks.0.hook_q_input"].shape == (*tokens.shape, h, gpt2_2l.cfg.d_model)
    result = cache["blocks.1.attn.hook_result"]
    assert result.shape == (*tokens.shape, h, gpt2_2l.cfg.d_model)
    # per-head results add up to the attention output (plus b_O)
    total = result.sum(2) + gpt2_2l.b_O[1]
    assert torch.allclose(total, cache["blocks.1.hook_attn_out"], atol=1e-5)
    assert "blocks.0.hook_mlp_in" in cache
    assert gpt2_2l.fine_grained_hooks
    # TL-native attention has no per-head hooks in the bridge: LeanModel serves them (test_lean.py)
    assert not attn4.fine_grained_hooks
    _, cache = attn4.run_with_cache(tokens)
    assert cache["blocks.3.attn.hook_z"].shape[2] == attn4.cfg.n_heads


def test_local_hf_directory_loads_like_a_hub_model(tmp_path, gpt2_2l, tokens):
    shutil.copy(model_dir("code-2l") / "config.json", tmp_path)
    shutil.copy(model_dir("code-2l") / "model.safetensors", tmp_path)
    for f in TOKENIZER_DIR.glob("tokenizer*.json"):
        shutil.copy(f, tmp_path)
    local = mechscope.load_model(tmp_path)
    with torch.no_grad():
        assert torch.allclose(local(tokens), gpt2_2l(tokens), atol=1e-5)


def _lm_loss(model, tokens):
    logits = model(tokens)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["code-2l", "code-4l", "code-llama-2l"])
def test_checkpoints_load_and_loss_decreases(name, tokens):
    revs = revisions(name)
    assert len(revs) >= 7 and revs[-1] == "main"
    from mechscope.data import load_tokenizer
    from mechscope.data.mixture import TokenStream

    stream = TokenStream(load_tokenizer(TOKENIZER_DIR), {"docstring": 0.5, "ioi": 0.5}, 96, seed=99)
    batch = next(stream.batches(16))
    losses = []
    with torch.no_grad():
        for rev in [revs[0], revs[2], revs[4], revs[-1]]:
            losses.append(float(_lm_loss(mechscope.load_model(name, revision=rev), batch)))
    assert all(a > b for a, b in itertools.pairwise(losses)), losses


def test_unknown_name_lists_the_zoo():
    with pytest.raises(ModelLoadError, match=r"Bundled models: .*code-attn4"):
        mechscope.load_model("no-such-model-anywhere")


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="No model directory"):
        mechscope.load_model(str(tmp_path / "absent"))


def test_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        mechscope.load_model(tmp_path)


def test_unsupported_architecture_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "foo", "architectures": ["FooForCausalLM"]})
    )
    with pytest.raises(
        ModelLoadError, match=r"FooForCausalLM.*not supported.*Supported architectures include"
    ):
        mechscope.load_model(tmp_path)


def test_unknown_revision_lists_revisions():
    with pytest.raises(ModelLoadError, match="Available: step-0"):
        mechscope.load_model("code-2l", revision="step-123456")
